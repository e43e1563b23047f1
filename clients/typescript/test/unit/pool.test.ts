import { describe, expect, test } from 'vitest';

import { ConnectionPool } from '../../src/core/index.js';

const A = 'ws://a.test/wse';
const B = 'ws://b.test/wse';
const C = 'ws://c.test/wse';

describe('ConnectionPool', () => {
  test('round-robin walks the endpoints in order', () => {
    const p = new ConnectionPool([A, B, C], { strategy: 'round-robin' });
    expect([p.select(0), p.select(0), p.select(0), p.select(0)]).toEqual([
      A,
      B,
      C,
      A,
    ]);
  });

  test('least-connections picks the endpoint with the fewest live connections', () => {
    const p = new ConnectionPool([A, B], { strategy: 'least-connections' });
    p.recordSuccess(A);
    expect(p.select(0)).toBe(B);
    p.recordSuccess(B);
    p.recordSuccess(B);
    expect(p.select(0)).toBe(A);
    p.recordClosed(B);
    p.recordClosed(B);
    expect(p.select(0)).toBe(B);
  });

  test('weighted-random follows score times weight', () => {
    const p = new ConnectionPool([
      { url: A, weight: 1 },
      { url: B, weight: 3 },
    ]);
    expect(p.select(0, () => 0.2)).toBe(A);
    expect(p.select(0, () => 0.3)).toBe(B);
  });

  test('fails over from an endpoint that just failed, and back after its cool-down', () => {
    const p = new ConnectionPool([A, B], {
      strategy: 'round-robin',
      cooldownMs: 1_000,
    });
    p.recordFailure(A, 0);
    expect([p.select(10), p.select(10)]).toEqual([B, B]);
    p.recordFailure(B, 20);
    const both = [p.select(30), p.select(30)].sort();
    expect(both).toEqual([A, B]);
    expect([p.select(2_000), p.select(2_000)].sort()).toEqual([A, B]);
  });

  test('scores health: failures, drains and latency cost, successes earn', () => {
    const p = new ConnectionPool([A, B]);
    p.recordDrain(A, 0);
    p.recordFailure(A, 0);
    expect(p.health()[0]!.score).toBe(25);
    p.recordSuccess(A);
    expect(p.health()[0]!.score).toBe(35);
    p.recordLatency(B, 1_000);
    expect(p.health()[1]!.score).toBe(80);
    p.recordLatency(B, 100);
    expect(p.health()[1]!.score).toBe(100);
    // Both unhealthy or cooling down: the best score wins.
    p.recordFailure(B, 0);
    p.recordFailure(B, 0);
    p.recordFailure(B, 0);
    expect(p.select(1)).toBe(A);
  });

  test('refuses empty lists and URLs that are not ws:// or wss://', () => {
    expect(() => new ConnectionPool([])).toThrowError(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => new ConnectionPool(['http://x/wse'])).toThrow(/ws:\/\//);
    expect(() => new ConnectionPool(['not a url'])).toThrow(/not a URL/);
  });
});
