/**
 * The snapshot `useWSE` renders from, as an external store for
 * `useSyncExternalStore`. Connection state, grade and topics publish at
 * once; counters and latency, which change with every message, at most
 * every `throttleMs`, so a busy stream does not re-render every component
 * per message.
 */

import type {
  ConnectionState,
  Diagnostics,
  Quality,
  WSEClient,
  WSEState,
} from '../core/index.js';

/** What the hook shows as health: the grade when connected. */
export type ConnectionHealth =
  Quality | 'connecting' | 'reconnecting' | 'offline';

export interface WSEStats {
  connectionState: ConnectionState;
  endpoint: string | null;
  connectionId: string | null;
  encrypted: boolean;
  latencyMs: number | null;
  jitterMs: number | null;
  loss: number;
  latencyHistory: readonly number[];
  diagnostics: Diagnostics;
  /** Messages waiting in the outbound buffer. */
  queued: number;
}

export interface ViewSnapshot {
  isConnected: boolean;
  connectionHealth: ConnectionHealth;
  activeTopics: readonly string[];
  stats: WSEStats;
}

export class ClientView {
  private snapshot: ViewSnapshot;
  private readonly listeners = new Set<() => void>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly unsubscribe: Array<() => void>;

  constructor(
    private readonly client: WSEClient,
    private readonly throttleMs = 250,
  ) {
    this.snapshot = this.build();
    this.unsubscribe = [
      client.store.subscribe((state, prev) => this.changed(state, prev)),
      client.queueStore.subscribe(() => this.schedule()),
    ];
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): ViewSnapshot => this.snapshot;

  dispose(): void {
    this.unsubscribe.forEach((off) => off());
    if (this.timer !== null) clearTimeout(this.timer);
    this.listeners.clear();
  }

  private changed(state: WSEState, prev: WSEState): void {
    const urgent =
      state.connectionState !== prev.connectionState ||
      state.quality !== prev.quality ||
      state.subscriptions !== prev.subscriptions ||
      state.encrypted !== prev.encrypted;
    if (urgent) this.publish();
    else this.schedule();
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => this.publish(), this.throttleMs);
  }

  private publish(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.snapshot = this.build();
    for (const listener of [...this.listeners]) listener();
  }

  private build(): ViewSnapshot {
    const s = this.client.store.getState();
    const isConnected = s.connectionState === 'connected';
    return {
      isConnected,
      connectionHealth: health(s, isConnected),
      activeTopics: s.subscriptions,
      stats: {
        connectionState: s.connectionState,
        endpoint: s.endpoint,
        connectionId: s.connectionId,
        encrypted: s.encrypted,
        latencyMs: s.latencyMs,
        jitterMs: s.jitterMs,
        loss: s.loss,
        latencyHistory: s.latencyHistory,
        diagnostics: s.diagnostics,
        queued: this.client.queueStore.getState().items.length,
      },
    };
  }
}

function health(s: WSEState, isConnected: boolean): ConnectionHealth {
  if (isConnected) return s.quality === 'offline' ? 'good' : s.quality;
  if (s.connectionState === 'connecting') return 'connecting';
  if (s.connectionState === 'reconnecting') return 'reconnecting';
  return 'offline';
}
