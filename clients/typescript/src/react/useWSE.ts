/**
 * `useWSE`: real-time updates in a React component.
 *
 * Components that pass the same endpoint set share one client and one
 * connection (see `registry.ts`); each one adds its topics while mounted.
 * The returned state comes from `useSyncExternalStore`, so it is
 * consistent under concurrent rendering. The shared client is read the
 * same way, so a render that commits after its client was dropped (see
 * `registry.ts`) renders again with the registered one. Options other
 * than `endpoints` and `topics` are read when the shared client is
 * created.
 */

import { useCallback, useEffect, useMemo, useSyncExternalStore } from 'react';

import type {
  SendOptions,
  SendResult,
  WSEClient,
  WSEClientOptions,
} from '../core/index.js';
import {
  acquire,
  addTopics,
  entryFor,
  release,
  removeTopics,
  subscribeEntries,
} from './registry.js';
import type { ConnectionHealth, WSEStats } from './view.js';

export type UseWSEOptions = Omit<WSEClientOptions, 'topics'> & {
  topics?: readonly string[];
};

export interface UseWSEResult {
  isConnected: boolean;
  connectionHealth: ConnectionHealth;
  /** Topics the server confirmed on the shared connection. */
  activeTopics: readonly string[];
  stats: WSEStats;
  subscribe: (topics: string | readonly string[]) => void;
  unsubscribe: (topics: string | readonly string[]) => void;
  sendMessage: (
    type: string,
    payload: unknown,
    options?: SendOptions,
  ) => Promise<SendResult>;
  forceReconnect: () => void;
  /** The shared client, for anything the hook does not cover. */
  client: WSEClient;
}

export function useWSE(options: UseWSEOptions): UseWSEResult {
  const entryNow = () => entryFor(options as WSEClientOptions);
  const entry = useSyncExternalStore(subscribeEntries, entryNow, entryNow);
  const { client, view } = entry;
  const snapshot = useSyncExternalStore(
    view.subscribe,
    view.getSnapshot,
    view.getSnapshot,
  );

  useEffect(() => {
    acquire(entry);
    return () => release(entry);
  }, [entry]);

  const topicsKey = JSON.stringify([...(options.topics ?? [])].sort());
  useEffect(() => {
    const topics = JSON.parse(topicsKey) as string[];
    addTopics(entry, topics);
    return () => removeTopics(entry, topics);
  }, [entry, topicsKey]);

  const subscribe = useCallback(
    (topics: string | readonly string[]) => client.subscribe(topics),
    [client],
  );
  const unsubscribe = useCallback(
    (topics: string | readonly string[]) => client.unsubscribe(topics),
    [client],
  );
  const sendMessage = useCallback(
    (type: string, payload: unknown, opts?: SendOptions) =>
      client.sendMessage(type, payload, opts),
    [client],
  );
  const forceReconnect = useCallback(() => client.forceReconnect(), [client]);

  return useMemo(
    () => ({
      ...snapshot,
      subscribe,
      unsubscribe,
      sendMessage,
      forceReconnect,
      client,
    }),
    [snapshot, subscribe, unsubscribe, sendMessage, forceReconnect, client],
  );
}
