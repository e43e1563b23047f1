/**
 * One shared client per endpoint set, however many components use the
 * hook. Entries are reference counted by mounted hooks; the last release
 * disposes the client after a tick, so that React's StrictMode
 * unmount-and-remount (and quick route changes) keep the connection.
 * Topics are reference counted too: a topic is unsubscribed when no mounted
 * hook asks for it any more.
 *
 * TODO(#9): an entry created by a render that React discards before any
 * effect runs is never acquired and stays in the map: it holds no socket
 * (clients connect on acquire) but keeps its stores until the page unloads.
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
  client: WSEClient;
  view: ClientView;
  refs: number;
  topicRefs: Map<string, number>;
  disposeTimer: ReturnType<typeof setTimeout> | null;
}

const entries = new Map<string, Entry>();
let defaultStoresOwner: string | null = null;

/** The entry for an endpoint set, created (not connected) when missing. */
export function entryFor(options: WSEClientOptions): Entry {
  const key = endpointKey(options.endpoints);
  let entry = entries.get(key);
  if (entry === undefined) {
    const useDefaults = defaultStoresOwner === null;
    if (useDefaults) defaultStoresOwner = key;
    const client = new WSEClient({
      ...options,
      ...(useDefaults && options.store === undefined
        ? { store: wseStore }
        : {}),
      ...(useDefaults && options.queueStore === undefined
        ? { queueStore: messageQueueStore }
        : {}),
    });
    entry = {
      client,
      view: new ClientView(client),
      refs: 0,
      topicRefs: new Map(),
      disposeTimer: null,
    };
    entries.set(key, entry);
  }
  return entry;
}

/** A mounted hook holds the entry; the first one connects. */
export function acquire(entry: Entry): void {
  if (entry.disposeTimer !== null) clearTimeout(entry.disposeTimer);
  entry.disposeTimer = null;
  entry.refs++;
  if (entry.refs === 1) entry.client.connect();
}

/** A hook unmounted; the last one disposes the client after a tick. */
export function release(entry: Entry): void {
  entry.refs = Math.max(0, entry.refs - 1);
  if (entry.refs > 0 || entry.disposeTimer !== null) return;
  entry.disposeTimer = setTimeout(() => {
    entry.disposeTimer = null;
    if (entry.refs > 0) return;
    const key = entry.client.key;
    entries.delete(key);
    if (defaultStoresOwner === key) defaultStoresOwner = null;
    entry.view.dispose();
    entry.client.dispose();
  }, 0);
}

export function addTopics(entry: Entry, topics: readonly string[]): void {
  const fresh: string[] = [];
  for (const topic of topics) {
    const n = entry.topicRefs.get(topic) ?? 0;
    entry.topicRefs.set(topic, n + 1);
    if (n === 0) fresh.push(topic);
  }
  if (fresh.length > 0) entry.client.subscribe(fresh);
}

export function removeTopics(entry: Entry, topics: readonly string[]): void {
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
