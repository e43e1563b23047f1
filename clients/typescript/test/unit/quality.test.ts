import { QueryClient } from '@tanstack/query-core';
import { describe, expect, test } from 'vitest';

import {
  AdaptiveQualityManager,
  gradeQuality,
  NetworkMonitor,
  type QualityChange,
} from '../../src/core/index.js';

describe('NetworkMonitor', () => {
  test('measures latency and jitter from ping/PONG pairs', () => {
    const m = new NetworkMonitor();
    for (const [sent, rtt] of [
      [0, 40],
      [1_000, 60],
      [2_000, 50],
    ] as const) {
      m.pingSent(sent, sent);
      expect(m.pongReceived(sent, sent + rtt)).toBe(rtt);
    }
    const metrics = m.metrics();
    expect(metrics.latencyMs).toBe(50);
    expect(metrics.jitterMs).toBe(15);
    expect(metrics.loss).toBe(0);
    expect(m.quality()).toBe('excellent');
    expect(m.pongReceived(12345, 0)).toBeNull();
  });

  test('counts pings without a PONG past the timeout as lost', () => {
    const m = new NetworkMonitor({ pongTimeoutMs: 1_000 });
    m.pingSent(0, 0);
    m.pongReceived(0, 100);
    m.pingSent(1_000, 1_000);
    m.expire(1_500);
    expect(m.metrics().loss).toBe(0);
    m.expire(2_100);
    expect(m.metrics().loss).toBe(0.5);
    expect(m.quality()).toBe('poor');
  });

  test('grades by the worst of latency, jitter and loss', () => {
    const g = (latencyMs: number, jitterMs: number, loss: number) =>
      gradeQuality({ latencyMs, jitterMs, loss, samples: [] });
    expect(g(50, 10, 0)).toBe('excellent');
    expect(g(150, 10, 0)).toBe('good');
    expect(g(50, 100, 0)).toBe('fair');
    expect(g(50, 10, 0.1)).toBe('fair');
    expect(g(900, 10, 0)).toBe('poor');
  });
});

describe('AdaptiveQualityManager', () => {
  const metrics = { latencyMs: 10, jitterMs: 1, loss: 0, samples: [] };

  test('dispatches wse:quality-change on window once per change', () => {
    const seen: QualityChange[] = [];
    const listener = (e: Event) =>
      seen.push((e as CustomEvent<QualityChange>).detail);
    window.addEventListener('wse:quality-change', listener);
    const q = new AdaptiveQualityManager();
    q.update('excellent', metrics);
    q.update('excellent', metrics);
    q.update('poor', metrics);
    window.removeEventListener('wse:quality-change', listener);
    expect(seen.map((c) => [c.from, c.to])).toEqual([
      ['offline', 'excellent'],
      ['excellent', 'poor'],
    ]);
  });

  test('retunes a TanStack QueryClient: fresh and quiet when good, polling when poor', () => {
    const client = new QueryClient({
      defaultOptions: { queries: { retry: 2 } },
    });
    const q = new AdaptiveQualityManager(client, undefined, null);
    expect(client.getDefaultOptions().queries).toMatchObject({
      retry: 2,
      staleTime: 0,
      refetchInterval: 15_000,
    });
    q.update('excellent', metrics);
    expect(client.getDefaultOptions().queries).toMatchObject({
      retry: 2,
      staleTime: 300_000,
      refetchInterval: false,
    });
    q.update('poor', metrics);
    expect(client.getDefaultOptions().queries).toMatchObject({
      staleTime: 10_000,
      refetchInterval: 30_000,
    });
  });
});
