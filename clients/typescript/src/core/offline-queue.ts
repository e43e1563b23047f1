/**
 * Offline queue: messages sent while disconnected, and those still in the
 * outbound buffer when a connection drops, kept in IndexedDB (via `idb`) so
 * that they survive a page reload, and handed back on reconnect in priority
 * order (highest first, oldest first within a priority).
 *
 * Bounds, both named options: `maxSize` entries (when full, a new message
 * evicts the oldest entry of the lowest priority below its own, else it is
 * refused with `QUEUE_FULL`) and `ttlMs` (older entries are discarded, not
 * replayed). Time is a parameter (`now`, ms).
 */

import { openDB, type DBSchema, type IDBPDatabase } from 'idb';

import { WSEError } from './errors.js';

export interface OfflineOptions {
  /** Off unless set: `true` or options turn the queue on. */
  enabled?: boolean;
  /** IndexedDB database name; one per endpoint set is a good choice. */
  dbName?: string;
  maxSize?: number;
  ttlMs?: number;
}

export interface OfflineEntry {
  type: string;
  payload: unknown;
  priority: number;
  correlationId?: string;
  createdAt: number;
}

interface StoredEntry extends OfflineEntry {
  key?: number;
}

interface OfflineDB extends DBSchema {
  messages: { key: number; value: StoredEntry };
}

export class OfflineQueue {
  private db: Promise<IDBPDatabase<OfflineDB>> | null = null;
  readonly maxSize: number;
  readonly ttlMs: number;
  readonly dbName: string;

  constructor(options: OfflineOptions = {}) {
    this.dbName = options.dbName ?? 'wse-offline-queue';
    this.maxSize = options.maxSize ?? 1_000;
    this.ttlMs = options.ttlMs ?? 24 * 60 * 60 * 1000;
    if (!(this.maxSize >= 1) || !(this.ttlMs > 0)) {
      throw new WSEError(
        'INVALID_ARGUMENT',
        'offline queue: need maxSize >= 1 and ttlMs > 0',
      );
    }
  }

  /**
   * Stores a message; throws `QUEUE_FULL` when it cannot be kept. One
   * already past `ttlMs` is not stored (it would not be replayed).
   */
  async put(entry: OfflineEntry, now: number): Promise<void> {
    const { refused } = await this.putAll([entry], now);
    if (refused.length > 0) {
      throw new WSEError(
        'QUEUE_FULL',
        `offline queue holds ${this.maxSize} messages`,
      );
    }
  }

  /**
   * Stores messages in one transaction, in the order given, each under the
   * bounds of `put`. Returns the entries refused for want of room and how
   * many were not stored because they were already past `ttlMs`. Only the
   * fields of `OfflineEntry` are stored.
   */
  async putAll<E extends OfflineEntry>(
    entries: readonly E[],
    now: number,
  ): Promise<{ refused: E[]; expired: number }> {
    const db = await this.open();
    const tx = db.transaction('messages', 'readwrite');
    const live: StoredEntry[] = [];
    for (const old of await tx.store.getAll()) {
      if (this.isLive(old, now)) live.push(old);
      else if (old.key !== undefined) await tx.store.delete(old.key);
    }
    const refused: E[] = [];
    let expired = 0;
    for (const entry of entries) {
      if (!this.isLive(entry, now)) {
        expired++;
        continue;
      }
      if (live.length >= this.maxSize) {
        const victim = evictionVictim(live);
        if (victim?.key === undefined || victim.priority >= entry.priority) {
          refused.push(entry);
          continue;
        }
        await tx.store.delete(victim.key);
        live.splice(live.indexOf(victim), 1);
      }
      const stored = fieldsOf(entry);
      live.push({ ...stored, key: await tx.store.add(stored) });
    }
    await tx.done;
    return { refused, expired };
  }

  /**
   * Removes and returns every live entry in replay order; `expired` counts
   * the entries dropped for their age.
   */
  async takeAll(
    now: number,
  ): Promise<{ entries: OfflineEntry[]; expired: number }> {
    const db = await this.open();
    const tx = db.transaction('messages', 'readwrite');
    const all = await tx.store.getAll();
    await tx.store.clear();
    await tx.done;
    const live = all.filter((e) => this.isLive(e, now));
    const entries = sortForReplay(live).map(({ key: _key, ...e }) => e);
    return { entries, expired: all.length - live.length };
  }

  async size(): Promise<number> {
    return (await this.open()).count('messages');
  }

  close(): void {
    const db = this.db;
    this.db = null;
    void db?.then((d) => d.close()).catch(() => {});
  }

  private isLive(entry: OfflineEntry, now: number): boolean {
    return now - entry.createdAt <= this.ttlMs;
  }

  private open(): Promise<IDBPDatabase<OfflineDB>> {
    if (typeof indexedDB === 'undefined') {
      return Promise.reject(
        new WSEError('INVALID_ARGUMENT', 'offline queue: no IndexedDB here'),
      );
    }
    this.db ??= openDB<OfflineDB>(this.dbName, 1, {
      upgrade(db) {
        db.createObjectStore('messages', {
          keyPath: 'key',
          autoIncrement: true,
        });
      },
    });
    return this.db;
  }
}

/** Highest priority first, then oldest, then insertion order. */
function sortForReplay(entries: StoredEntry[]): StoredEntry[] {
  return [...entries].sort(
    (a, b) =>
      b.priority - a.priority ||
      a.createdAt - b.createdAt ||
      (a.key ?? 0) - (b.key ?? 0),
  );
}

/** The entry a full queue gives up first: the oldest of the lowest priority. */
function evictionVictim(entries: StoredEntry[]): StoredEntry | undefined {
  let victim: StoredEntry | undefined;
  for (const e of entries) {
    if (
      victim === undefined ||
      e.priority < victim.priority ||
      (e.priority === victim.priority && e.createdAt < victim.createdAt)
    ) {
      victim = e;
    }
  }
  return victim;
}

/** An entry without whatever else the caller's object carries. */
function fieldsOf(e: OfflineEntry): OfflineEntry {
  const { type, payload, priority, createdAt, correlationId } = e;
  return correlationId === undefined
    ? { type, payload, priority, createdAt }
    : { type, payload, priority, createdAt, correlationId };
}
