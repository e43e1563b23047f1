import { describe, expect, test } from 'vitest';

import {
  categoryOf,
  makeEnvelope,
  Priority,
  toMessage,
  uuidv7,
} from '../../src/core/index.js';

const flags = { verified: false, encrypted: false, format: 'json' } as const;

describe('envelope', () => {
  test('derives the category from the type (PROTOCOL §3)', () => {
    expect(categoryOf('server_ready')).toBe('WSE');
    expect(categoryOf('PONG')).toBe('WSE');
    expect(categoryOf('orders_snapshot')).toBe('S');
    expect(categoryOf('snapshot_users')).toBe('S');
    expect(categoryOf('price')).toBe('U');
  });

  test('reads inbound aliases and publication fields', () => {
    const msg = toMessage(
      {
        type: 'news',
        payload: { a: 1 },
        tp: 'news',
        e: '0a0b0c0d',
        o: 7,
        seq: 3,
        pri: 8,
      },
      flags,
    );
    expect(msg).toMatchObject({
      type: 'news',
      payload: { a: 1 },
      category: 'U',
      topic: 'news',
      epoch: '0a0b0c0d',
      offset: 7,
      seq: 3,
      priority: 8,
    });
  });

  test('refuses objects that are not envelopes', () => {
    expect(toMessage([1, 2], flags)).toBeNull();
    expect(toMessage({ p: 1 }, flags)).toBeNull();
    expect(toMessage({ t: '' }, flags)).toBeNull();
    expect(toMessage('text', flags)).toBeNull();
  });

  test('ignores offsets that are not safe non-negative integers', () => {
    const msg = toMessage({ t: 'x', tp: 'x', e: 'e', o: -1, seq: 1.5 }, flags);
    expect(msg?.offset).toBeUndefined();
    expect(msg?.seq).toBeUndefined();
  });

  test('builds outbound envelopes with priority only when not NORMAL', () => {
    const now = Date.UTC(2026, 0, 15, 10, 30, 0, 123);
    const plain = makeEnvelope('chat', { text: 'hi' }, now);
    expect(plain).toMatchObject({
      c: 'U',
      t: 'chat',
      v: 1,
      ts: '2026-01-15T10:30:00.123Z',
    });
    expect(plain.pri).toBeUndefined();
    const urgent = makeEnvelope('chat', null, now, {
      priority: Priority.HIGH,
      correlationId: 'r1',
    });
    expect(urgent.pri).toBe(8);
    expect(urgent.cid).toBe('r1');
  });

  test('makes UUIDv7 ids that carry the time and sort by it', () => {
    const a = uuidv7(1_700_000_000_000);
    const b = uuidv7(1_700_000_000_001);
    expect(a).toMatch(
      /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    expect(parseInt(a.replace(/-/g, '').slice(0, 12), 16)).toBe(
      1_700_000_000_000,
    );
    expect(a < b).toBe(true);
  });
});
