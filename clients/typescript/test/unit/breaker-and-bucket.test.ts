import { describe, expect, test } from 'vitest';

import { CircuitBreaker, TokenBucket } from '../../src/core/index.js';

describe('CircuitBreaker', () => {
  test('opens after the threshold within the window, then lets one probe through', () => {
    const b = new CircuitBreaker({
      failureThreshold: 3,
      windowMs: 1_000,
      openMs: 500,
    });
    b.recordFailure(0);
    b.recordFailure(10);
    expect(b.allow(20)).toBe(true);
    b.recordFailure(20);
    expect(b.state(30)).toBe('open');
    expect(b.allow(30)).toBe(false);
    expect(b.waitMs(30)).toBe(490);
    expect(b.state(520)).toBe('half-open');
    expect(b.allow(520)).toBe(true);
    expect(b.allow(521)).toBe(false);
    b.recordSuccess();
    expect(b.state(522)).toBe('closed');
  });

  test('a failed probe opens it again; old failures fall out of the window', () => {
    const b = new CircuitBreaker({
      failureThreshold: 2,
      windowMs: 100,
      openMs: 50,
    });
    b.recordFailure(0);
    b.recordFailure(500);
    expect(b.state(500)).toBe('closed');
    b.recordFailure(510);
    expect(b.state(511)).toBe('open');
    expect(b.allow(600)).toBe(true);
    b.recordFailure(600);
    expect(b.state(601)).toBe('open');
  });
});

describe('TokenBucket', () => {
  test('spends its capacity, then refills at the configured rate', () => {
    const t = new TokenBucket({ capacity: 3, refillPerSecond: 10 });
    expect([t.tryTake(0), t.tryTake(0), t.tryTake(0), t.tryTake(0)]).toEqual([
      true,
      true,
      true,
      false,
    ]);
    expect(t.waitMs(0)).toBe(100);
    expect(t.tryTake(100)).toBe(true);
    expect(t.available(10_000)).toBe(3);
    expect(() => new TokenBucket({ capacity: 0 })).toThrow(RangeError);
  });
});
