import { describe, expect, test } from 'vitest';

import {
  backoffDelay,
  resolveReconnect,
  type BackoffStrategy,
} from '../../src/core/index.js';

const noJitter = (strategy: BackoffStrategy) =>
  resolveReconnect({
    strategy,
    baseDelayMs: 100,
    maxDelayMs: 1_000,
    jitter: 0,
  });
const seq = (strategy: BackoffStrategy) =>
  [0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, noJitter(strategy)));

describe('backoff', () => {
  test('exponential, linear and fibonacci grow as named and stop at the cap', () => {
    expect(seq('exponential')).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(seq('linear')).toEqual([100, 200, 300, 400, 500, 600]);
    expect(seq('fibonacci')).toEqual([100, 100, 200, 300, 500, 800]);
  });

  test('adaptive grows with flaps and with a poor network', () => {
    const o = noJitter('adaptive');
    expect(
      backoffDelay(0, o, Math.random, { flaps: 0, qualityPenalty: 0 }),
    ).toBe(100);
    expect(
      backoffDelay(0, o, Math.random, { flaps: 2, qualityPenalty: 0 }),
    ).toBe(400);
    expect(
      backoffDelay(0, o, Math.random, { flaps: 0, qualityPenalty: 3 }),
    ).toBe(800);
  });

  test('jitter spreads the delay within ±jitter', () => {
    const o = resolveReconnect({
      baseDelayMs: 1_000,
      maxDelayMs: 1_000,
      jitter: 0.2,
    });
    expect(backoffDelay(0, o, () => 0)).toBe(800);
    expect(backoffDelay(0, o, () => 0.5)).toBe(1_000);
    expect(backoffDelay(0, o, () => 0.999999)).toBe(1_200);
  });

  test('is infinite by default and refuses impossible options', () => {
    expect(resolveReconnect().maxAttempts).toBe(Infinity);
    expect(() => resolveReconnect({ baseDelayMs: 10, maxDelayMs: 5 })).toThrow(
      RangeError,
    );
    expect(() => resolveReconnect({ jitter: 2 })).toThrow(RangeError);
    expect(() => resolveReconnect({ maxAttempts: -1 })).toThrow(RangeError);
  });
});
