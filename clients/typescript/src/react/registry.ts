/**
 * One shared client per endpoint set, however many components use the
 * hook. Entries are reference counted by mounted hooks; the last release
 * disposes the client after a tick, so that React's StrictMode
 * unmount-and-remount (and quick route changes) keep the connection.
 * Topics are reference counted too: a topic is unsubscribed when no mounted
 * hook asks for it any more.
 *
 * A render creates the entry (components rendered together must share it
 * before any effect runs), but React may discard a render without running
 * its effects. So an entry that no mounted hook holds is dropped
 * `UNCLAIMED_MS` after the last render that asked for it. A hook that
 * commits with an entry dropped in the meantime (a render that waited
 * longer, a hidden `<Activity>` shown again) does not revive it: entries
 * are an external store to the hook, which renders again with the entry
 * registered for its endpoint set.
 */

import {
  endpointKey,
  messageQueueStore,
  WSEClient,
  wseStore,
  type WSEClientOptions,
} from '../core/index.js';
import { ClientView } from './view.js';

interface Entry {
  readonly key: string;
  readonly client: WSEClient;
  readonly view: ClientView;
  /** Mounted hooks holding the entry; it is never dropped while above 0. */
  refs: number;
  topicRefs: Map<string, number>;
  /** Drops the entry; armed only while `refs` is 0. */
  dropTimer: ReturnType<typeof setTimeout> | null;
  /** Out of the map, client disposed; acquire and topics do nothing. */
  dropped: boolean;
}

const entries = new Map<string, Entry>();
const listeners = new Set<() => void>();
let defaultStoresOwner: string | null = null;

/**
 * The entry for an endpoint set, created (not connected) when missing.
 * Unless a mounted hook holds it, it is dropped `UNCLAIMED_MS` from now.
 */
export function entryFor(options: WSEClientOptions): Entry {
  const key = endpointKey(options.endpoints);
  const entry = entries.get(key) ?? register(key, options);
  if (entry.refs === 0) dropAfter(entry, UNCLAIMED_MS);
  return entry;
}

/** For `useSyncExternalStore`: `listener` runs when an entry is dropped. */
export function subscribeEntries(listener: () => void): () => void {
  listeners.add(listener);
  return () => {
    listeners.delete(listener);
  };
}

/** A mounted hook holds the entry; the first one connects. */
export function acquire(entry: Entry): void {
  if (entry.dropped) return;
  cancelDrop(entry);
  entry.refs++;
  if (entry.refs === 1) entry.client.connect();
}

/** A hook unmounted; the last one disposes the client after a tick. */
export function release(entry: Entry): void {
  if (entry.dropped) return;
  entry.refs = Math.max(0, entry.refs - 1);
  if (entry.refs === 0) dropAfter(entry, 0);
}

export function addTopics(entry: Entry, topics: readonly string[]): void {
  if (entry.dropped) return;
  const fresh: string[] = [];
  for (const topic of topics) {
    const n = entry.topicRefs.get(topic) ?? 0;
    entry.topicRefs.set(topic, n + 1);
    if (n === 0) fresh.push(topic);
  }
  if (fresh.length > 0) entry.client.subscribe(fresh);
}

export function removeTopics(entry: Entry, topics: readonly string[]): void {
  if (entry.dropped) return;
  const gone: string[] = [];
  for (const topic of topics) {
    const n = entry.topicRefs.get(topic) ?? 0;
    if (n <= 1) {
      entry.topicRefs.delete(topic);
      if (n === 1) gone.push(topic);
    } else {
      entry.topicRefs.set(topic, n - 1);
    }
  }
  if (gone.length > 0) entry.client.unsubscribe(gone);
}

/** Live clients (for tests and diagnostics). */
export function liveClientCount(): number {
  return entries.size;
}

function register(key: string, options: WSEClientOptions): Entry {
  const useDefaults = defaultStoresOwner === null;
  if (useDefaults) defaultStoresOwner = key;
  const client = new WSEClient({
    ...options,
    ...(useDefaults && options.store === undefined ? { store: wseStore } : {}),
    ...(useDefaults && options.queueStore === undefined
      ? { queueStore: messageQueueStore }
      : {}),
  });
  const entry: Entry = {
    key,
    client,
    view: new ClientView(client),
    refs: 0,
    topicRefs: new Map(),
    dropTimer: null,
    dropped: false,
  };
  entries.set(key, entry);
  return entry;
}

function dropAfter(entry: Entry, ms: number): void {
  cancelDrop(entry);
  entry.dropTimer = setTimeout(() => drop(entry), ms);
}

function cancelDrop(entry: Entry): void {
  if (entry.dropTimer !== null) clearTimeout(entry.dropTimer);
  entry.dropTimer = null;
}

function drop(entry: Entry): void {
  entry.dropTimer = null;
  entry.dropped = true;
  entries.delete(entry.key);
  if (defaultStoresOwner === entry.key) defaultStoresOwner = null;
  entry.view.dispose();
  entry.client.dispose();
  for (const listener of [...listeners]) listener();
}

/**
 * How long an entry that no mounted hook holds outlives the last render
 * that asked for it. Renders commit within milliseconds; the bound only
 * needs to be longer than that, since a later commit still works.
 */
export const UNCLAIMED_MS = 10_000;
