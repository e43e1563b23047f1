/**
 * Client state in zustand vanilla stores (no React here; the React entry
 * binds them with `useStore`).
 *
 * - the WSE store: connection state, latency history, network grade,
 *   diagnostics counters and subscriptions; written by the client, read by
 *   the UI.
 * - the message-queue store: the outbound priority buffer. Messages wait
 *   here for a connection or for a rate-limit token; the highest priority
 *   leaves first, FIFO within one priority. Bounded: when full, a new
 *   message evicts the oldest of the lowest priority below its own, else it
 *   is refused.
 */

import { createStore, type StoreApi } from 'zustand/vanilla';

import type { Quality } from './network-monitor.js';
import type { BreakerState } from './circuit-breaker.js';

export type ConnectionState =
  | 'idle'
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'disconnected'
  | 'stopped';

/** Counters of everything the client noticed; they only grow. */
export interface Diagnostics {
  messagesReceived: number;
  messagesSent: number;
  bytesReceived: number;
  bytesSent: number;
  connects: number;
  reconnectAttempts: number;
  duplicatesDropped: number;
  seqGaps: number;
  topicGaps: number;
  recoveriesRequested: number;
  recoveriesSucceeded: number;
  recoveriesFailed: number;
  epochChanges: number;
  invalidFrames: number;
  decryptFailures: number;
  badSignatures: number;
  /** Sealed messages whose signature matched no key (kept: GCM-authenticated). */
  unverifiableSignatures: number;
  verifiedMessages: number;
  encryptedMessages: number;
  serverErrors: number;
  heartbeatTimeouts: number;
  offlineQueued: number;
  offlineReplayed: number;
  offlineExpired: number;
  bufferEvicted: number;
}

export interface WSEState {
  connectionState: ConnectionState;
  endpoint: string | null;
  connectionId: string | null;
  userId: string | null;
  /** Whether an E2E session is active on the current connection. */
  encrypted: boolean;
  circuit: BreakerState;
  quality: Quality | 'offline';
  latencyMs: number | null;
  jitterMs: number | null;
  loss: number;
  /** Recent heartbeat round trips, ms, oldest first (bounded). */
  latencyHistory: number[];
  /** Topics the server confirmed. */
  subscriptions: string[];
  /** Topics the server refused, with its reason. */
  failedSubscriptions: Record<string, string>;
  lastError: { code: string; message: string } | null;
  lastClose: { code: number; reason: string } | null;
  diagnostics: Diagnostics;
}

export interface QueuedMessage {
  type: string;
  payload: unknown;
  priority: number;
  correlationId?: string;
  /** When the caller sent it, ms since the epoch. */
  createdAt: number;
  /** Arrival order, for FIFO within a priority. */
  order: number;
}

export interface MessageQueueState {
  items: QueuedMessage[];
  capacity: number;
  /** Messages evicted or refused because the buffer was full. */
  dropped: number;
  /** Adds a message; returns it queued, or null when refused (full). */
  enqueue(message: Omit<QueuedMessage, 'order'>): QueuedMessage | null;
  /** Removes and returns the next message to send. */
  dequeue(): QueuedMessage | undefined;
  /** Returns a dequeued message to its place (its write found no socket). */
  putBack(message: QueuedMessage): void;
  clear(): void;
}

export type WSEStore = StoreApi<WSEState>;
export type MessageQueueStore = StoreApi<MessageQueueState>;

export function initialDiagnostics(): Diagnostics {
  return {
    messagesReceived: 0,
    messagesSent: 0,
    bytesReceived: 0,
    bytesSent: 0,
    connects: 0,
    reconnectAttempts: 0,
    duplicatesDropped: 0,
    seqGaps: 0,
    topicGaps: 0,
    recoveriesRequested: 0,
    recoveriesSucceeded: 0,
    recoveriesFailed: 0,
    epochChanges: 0,
    invalidFrames: 0,
    decryptFailures: 0,
    badSignatures: 0,
    unverifiableSignatures: 0,
    verifiedMessages: 0,
    encryptedMessages: 0,
    serverErrors: 0,
    heartbeatTimeouts: 0,
    offlineQueued: 0,
    offlineReplayed: 0,
    offlineExpired: 0,
    bufferEvicted: 0,
  };
}

export function initialWSEState(): WSEState {
  return {
    connectionState: 'idle',
    endpoint: null,
    connectionId: null,
    userId: null,
    encrypted: false,
    circuit: 'closed',
    quality: 'offline',
    latencyMs: null,
    jitterMs: null,
    loss: 0,
    latencyHistory: [],
    subscriptions: [],
    failedSubscriptions: {},
    lastError: null,
    lastClose: null,
    diagnostics: initialDiagnostics(),
  };
}

export function createWSEStore(): WSEStore {
  return createStore<WSEState>()(() => initialWSEState());
}

/** Adds `n` to one diagnostics counter. */
export function bump(store: WSEStore, counter: keyof Diagnostics, n = 1): void {
  store.setState((s) => ({
    diagnostics: { ...s.diagnostics, [counter]: s.diagnostics[counter] + n },
  }));
}

/** Appends a round trip to the bounded latency history. */
export function pushLatency(store: WSEStore, rtt: number): void {
  store.setState((s) => ({
    latencyHistory: [...s.latencyHistory, rtt].slice(-LATENCY_HISTORY),
  }));
}

export function createMessageQueueStore(
  capacity: number = DEFAULT_BUFFER_CAPACITY,
): MessageQueueStore {
  if (!(capacity >= 1)) throw new RangeError('buffer capacity must be >= 1');
  let order = 0;
  return createStore<MessageQueueState>()((set, get) => ({
    items: [],
    capacity,
    dropped: 0,
    enqueue(message) {
      const item: QueuedMessage = { ...message, order: order++ };
      const items = get().items;
      if (items.length < capacity) {
        set({ items: insertByPriority(items, item) });
        return item;
      }
      // Full: evict the oldest message of the lowest priority, if lower.
      const victim = lowestPriorityIndex(items);
      const lowest = items[victim];
      if (lowest === undefined || lowest.priority >= item.priority) {
        set({ dropped: get().dropped + 1 });
        return null;
      }
      const kept = items.filter((_, i) => i !== victim);
      set({ items: insertByPriority(kept, item), dropped: get().dropped + 1 });
      return item;
    },
    dequeue() {
      const [head, ...rest] = get().items;
      if (head !== undefined) set({ items: rest });
      return head;
    },
    putBack(message) {
      const items = [...get().items, message].sort(
        (a, b) => b.priority - a.priority || a.order - b.order,
      );
      set({ items });
    },
    clear() {
      set({ items: [] });
    },
  }));
}

/** Highest priority first; FIFO within one priority. */
function insertByPriority(
  items: QueuedMessage[],
  item: QueuedMessage,
): QueuedMessage[] {
  const at = items.findIndex((m) => m.priority < item.priority);
  const out = [...items];
  out.splice(at < 0 ? out.length : at, 0, item);
  return out;
}

/** Index of the oldest message among those of the lowest priority. */
function lowestPriorityIndex(items: QueuedMessage[]): number {
  const last = items[items.length - 1];
  if (last === undefined) return -1;
  return items.findIndex((m) => m.priority === last.priority);
}

/** Round trips kept in `latencyHistory`. */
export const LATENCY_HISTORY = 100;
/** Messages the outbound buffer holds by default. */
export const DEFAULT_BUFFER_CAPACITY = 1_000;

/**
 * The default stores: the first client of a page uses them, so that
 * `useWSEStore` and `useMessageQueueStore` read the usual connection.
 */
export const wseStore: WSEStore = createWSEStore();
export const messageQueueStore: MessageQueueStore = createMessageQueueStore();
