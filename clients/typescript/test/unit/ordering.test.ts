import { describe, expect, test } from 'vitest';

import { IdWindow, SeqTracker, TopicTracker } from '../../src/core/index.js';

describe('IdWindow', () => {
  test('admits an id once and forgets the oldest past its capacity', () => {
    const w = new IdWindow(2);
    expect(w.admit('a')).toBe(true);
    expect(w.admit('a')).toBe(false);
    w.admit('b');
    w.admit('c');
    expect(w.size).toBe(2);
    expect(w.admit('a')).toBe(true);
  });
});

describe('SeqTracker', () => {
  test('reports jumps and never waits for the missing ones', () => {
    const s = new SeqTracker();
    expect(s.observe(1)).toBeNull();
    expect(s.observe(2)).toBeNull();
    expect(s.observe(5)).toEqual({ expected: 3, received: 5, missing: 2 });
    expect(s.observe(6)).toBeNull();
  });

  test('restarts at server_ready (seq 1) and after reset', () => {
    const s = new SeqTracker();
    s.observe(1);
    s.observe(2);
    expect(s.observe(1)).toBeNull();
    expect(s.observe(2)).toBeNull();
    s.reset();
    expect(s.observe(7)).toBeNull();
  });
});

describe('TopicTracker', () => {
  test('delivers consecutive offsets and drops repeats', () => {
    const t = new TopicTracker();
    expect(t.observe('a', 'e1', 0)).toEqual({ kind: 'deliver', gap: null });
    expect(t.observe('a', 'e1', 1)).toEqual({ kind: 'deliver', gap: null });
    expect(t.observe('a', 'e1', 1)).toEqual({ kind: 'duplicate' });
    expect(t.observe('a', 'e1', 0)).toEqual({ kind: 'duplicate' });
  });

  test('reports a jump, delivers at once, and lets replays fill the hole', () => {
    const t = new TopicTracker();
    t.observe('a', 'e1', 0);
    expect(t.observe('a', 'e1', 4)).toEqual({
      kind: 'deliver',
      gap: { from: 1, to: 3 },
    });
    expect(t.position('a')).toEqual({ epoch: 'e1', offset: 0 });
    expect(t.observe('a', 'e1', 2).kind).toBe('deliver');
    expect(t.missing('a')).toEqual([
      [1, 1],
      [3, 3],
    ]);
    expect(t.observe('a', 'e1', 1).kind).toBe('deliver');
    expect(t.observe('a', 'e1', 3).kind).toBe('deliver');
    expect(t.observe('a', 'e1', 3).kind).toBe('duplicate');
    expect(t.position('a')).toEqual({ epoch: 'e1', offset: 4 });
  });

  test('a new epoch resets the baseline', () => {
    const t = new TopicTracker();
    t.observe('a', 'e1', 10);
    expect(t.observe('a', 'e2', 0)).toEqual({
      kind: 'new-epoch',
      previousEpoch: 'e1',
    });
    expect(t.observe('a', 'e2', 1).kind).toBe('deliver');
  });

  test('resync moves to the server position, keeping newer live messages', () => {
    const t = new TopicTracker();
    t.observe('a', 'e1', 5);
    t.resync('a', 'e1', 3);
    expect(t.position('a')).toEqual({ epoch: 'e1', offset: 5 });
    t.resync('a', 'e9', 3);
    expect(t.position('a')).toEqual({ epoch: 'e9', offset: 3 });
    expect(t.observe('a', 'e9', 3).kind).toBe('duplicate');
    t.resync('a', null, null);
    expect(t.position('a')).toBeNull();
  });

  test('keeps a bounded number of topics and holes', () => {
    const t = new TopicTracker(2, 2);
    t.observe('a', 'e', 0);
    t.observe('b', 'e', 0);
    t.observe('c', 'e', 0);
    expect(t.topicNames()).toEqual(['b', 'c']);
    t.observe('b', 'e', 2);
    t.observe('b', 'e', 4);
    t.observe('b', 'e', 6);
    expect(t.missing('b')).toEqual([
      [3, 3],
      [5, 5],
    ]);
  });
});
