import { describe, expect, test } from 'vitest';

import { OfflineQueue, Priority } from '../../src/core/index.js';

let n = 0;
const fresh = (opts: { maxSize?: number; ttlMs?: number } = {}) =>
  new OfflineQueue({ dbName: `offline-test-${n++}`, ...opts });
const entry = (type: string, priority: number, createdAt = 0) => ({
  type,
  payload: { type },
  priority,
  createdAt,
});

describe('OfflineQueue (IndexedDB)', () => {
  test('hands entries back by priority, oldest first within one, and empties', async () => {
    const q = fresh();
    await q.put(entry('n-old', Priority.NORMAL, 1), 10);
    await q.put(entry('low', Priority.LOW, 2), 10);
    await q.put(entry('crit', Priority.CRITICAL, 3), 10);
    await q.put(entry('n-new', Priority.NORMAL, 4), 10);
    expect(await q.size()).toBe(4);
    const { entries, expired } = await q.takeAll(10);
    expect(entries.map((e) => e.type)).toEqual([
      'crit',
      'n-old',
      'n-new',
      'low',
    ]);
    expect(entries[0]!.payload).toEqual({ type: 'crit' });
    expect(expired).toBe(0);
    expect(await q.size()).toBe(0);
    q.close();
  });

  test('survives reopening the database (a page reload)', async () => {
    const name = `offline-reload-${n++}`;
    const first = new OfflineQueue({ dbName: name });
    await first.put(entry('kept', Priority.NORMAL), 0);
    first.close();
    const second = new OfflineQueue({ dbName: name });
    expect((await second.takeAll(0)).entries.map((e) => e.type)).toEqual([
      'kept',
    ]);
    second.close();
  });

  test('drops entries past their TTL', async () => {
    const q = fresh({ ttlMs: 1_000 });
    await q.put(entry('old', Priority.HIGH, 0), 0);
    await q.put(entry('young', Priority.LOW, 900), 900);
    const { entries, expired } = await q.takeAll(1_500);
    expect(entries.map((e) => e.type)).toEqual(['young']);
    expect(expired).toBe(1);
    q.close();
  });

  test('when full, evicts a lower priority or refuses with QUEUE_FULL', async () => {
    const q = fresh({ maxSize: 2 });
    await q.put(entry('bg', Priority.BACKGROUND), 0);
    await q.put(entry('n', Priority.NORMAL), 0);
    await expect(
      q.put(entry('bg2', Priority.BACKGROUND), 0),
    ).rejects.toMatchObject({
      code: 'QUEUE_FULL',
    });
    await q.put(entry('high', Priority.HIGH), 0);
    expect((await q.takeAll(0)).entries.map((e) => e.type)).toEqual([
      'high',
      'n',
    ]);
    expect(() => fresh({ maxSize: 0 })).toThrowError(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    q.close();
  });

  test('when full, evicts the oldest of the lowest priority', async () => {
    const q = fresh({ maxSize: 2 });
    await q.put(entry('bg-old', Priority.BACKGROUND, 1), 10);
    await q.put(entry('bg-new', Priority.BACKGROUND, 2), 10);
    await q.put(entry('n', Priority.NORMAL, 3), 10);
    expect((await q.takeAll(10)).entries.map((e) => e.type)).toEqual([
      'n',
      'bg-new',
    ]);
    q.close();
  });

  test('putAll stores a batch under the same bounds and reports what it could not keep', async () => {
    const q = fresh({ maxSize: 3, ttlMs: 500 });
    await q.put(entry('bg', Priority.BACKGROUND, 900), 900);
    const batch = [
      { ...entry('crit', Priority.CRITICAL, 950), order: 1 },
      { ...entry('stale', Priority.HIGH, 0), order: 2 },
      { ...entry('n1', Priority.NORMAL, 960), order: 3 },
      { ...entry('n2', Priority.NORMAL, 970), order: 4 },
      { ...entry('low', Priority.LOW, 980), order: 5 },
    ];
    const { refused, expired } = await q.putAll(batch, 1_000);
    // n2 evicts bg; low finds nothing below it.
    expect(refused).toEqual([batch[4]]);
    expect(expired).toBe(1);
    const { entries } = await q.takeAll(1_000);
    expect(entries.map((e) => e.type)).toEqual(['crit', 'n1', 'n2']);
    expect(entries[0]).not.toHaveProperty('order');
    q.close();
  });
});
