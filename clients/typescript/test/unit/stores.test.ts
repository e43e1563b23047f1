import { describe, expect, test } from 'vitest';

import {
  createMessageQueueStore,
  createWSEStore,
  Priority,
} from '../../src/core/index.js';
import { bump, LATENCY_HISTORY, pushLatency } from '../../src/core/stores.js';

const msg = (type: string, priority: number) => ({
  type,
  payload: null,
  priority,
  createdAt: 0,
});

describe('message queue store', () => {
  test('dequeues by priority, FIFO within one priority', () => {
    const q = createMessageQueueStore(10).getState();
    q.enqueue(msg('low', Priority.LOW));
    q.enqueue(msg('n1', Priority.NORMAL));
    q.enqueue(msg('crit', Priority.CRITICAL));
    q.enqueue(msg('n2', Priority.NORMAL));
    const order: string[] = [];
    for (let m = q.dequeue(); m !== undefined; m = q.dequeue())
      order.push(m.type);
    expect(order).toEqual(['crit', 'n1', 'n2', 'low']);
  });

  test('when full, evicts the oldest lowest priority below the newcomer, else refuses', () => {
    const store = createMessageQueueStore(2);
    const q = store.getState();
    q.enqueue(msg('bg1', Priority.BACKGROUND));
    q.enqueue(msg('bg2', Priority.BACKGROUND));
    expect(q.enqueue(msg('bg3', Priority.BACKGROUND))).toBeNull();
    expect(q.enqueue(msg('high', Priority.HIGH))?.type).toBe('high');
    expect(store.getState().items.map((m) => m.type)).toEqual(['high', 'bg2']);
    expect(store.getState().dropped).toBe(2);
    expect(() => createMessageQueueStore(0)).toThrow(RangeError);
  });
});

describe('WSE store', () => {
  test('counts diagnostics and keeps a bounded latency history', () => {
    const s = createWSEStore();
    bump(s, 'seqGaps');
    bump(s, 'bytesReceived', 100);
    expect(s.getState().diagnostics).toMatchObject({
      seqGaps: 1,
      bytesReceived: 100,
    });
    for (let i = 0; i < LATENCY_HISTORY + 5; i++) pushLatency(s, i);
    const h = s.getState().latencyHistory;
    expect(h.length).toBe(LATENCY_HISTORY);
    expect(h[0]).toBe(5);
  });
});
