/**
 * Adaptive quality manager: watches the network grade and, when it
 * changes, tells the page (`wse:quality-change` on `window`, and listeners)
 * and retunes an optional TanStack Query client: with a good real-time
 * channel cached data stays fresh longer and polling is off; on a poor one,
 * or with no connection, queries go stale sooner and poll as a fallback.
 *
 * The QueryClient is typed structurally, so the package does not depend on
 * TanStack Query; any object with `getDefaultOptions` and
 * `setDefaultOptions` (QueryClient from `@tanstack/query-core` or
 * `@tanstack/react-query`, v4 or v5) works.
 */

import type { NetworkMetrics, Quality } from './network-monitor.js';

/** The part of TanStack Query's QueryClient this module uses. */
export interface QueryClientLike {
  getDefaultOptions(): { queries?: object; mutations?: object };
  setDefaultOptions(options: { queries?: object; mutations?: object }): void;
}

/** Query defaults applied for one grade. */
export interface QuerySettings {
  staleTime: number;
  /** Polling interval in ms, or false for none. */
  refetchInterval: number | false;
}

/** Grade of the connection as the quality manager sees it. */
export type ConnectionQuality = Quality | 'offline';

export interface QualityChange {
  from: ConnectionQuality;
  to: ConnectionQuality;
  metrics: NetworkMetrics;
}

export const DEFAULT_QUERY_SETTINGS: Record<ConnectionQuality, QuerySettings> =
  {
    excellent: { staleTime: 300_000, refetchInterval: false },
    good: { staleTime: 60_000, refetchInterval: false },
    fair: { staleTime: 30_000, refetchInterval: 60_000 },
    poor: { staleTime: 10_000, refetchInterval: 30_000 },
    offline: { staleTime: 0, refetchInterval: 15_000 },
  };

export class AdaptiveQualityManager {
  private current: ConnectionQuality = 'offline';
  private readonly listeners = new Set<(change: QualityChange) => void>();

  constructor(
    private readonly queryClient: QueryClientLike | null = null,
    private readonly settings: Record<
      ConnectionQuality,
      QuerySettings
    > = DEFAULT_QUERY_SETTINGS,
    private readonly target: EventTarget | null = defaultTarget(),
  ) {
    this.apply(this.current);
  }

  get quality(): ConnectionQuality {
    return this.current;
  }

  /** Reports the latest grade; acts only when it differs from the last. */
  update(to: ConnectionQuality, metrics: NetworkMetrics): void {
    if (to === this.current) return;
    const change: QualityChange = { from: this.current, to, metrics };
    this.current = to;
    this.apply(to);
    for (const listener of this.listeners) listener(change);
    this.target?.dispatchEvent(
      new CustomEvent('wse:quality-change', { detail: change }),
    );
  }

  onChange(listener: (change: QualityChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private apply(quality: ConnectionQuality): void {
    if (this.queryClient === null) return;
    const current = this.queryClient.getDefaultOptions();
    this.queryClient.setDefaultOptions({
      ...current,
      queries: { ...current.queries, ...this.settings[quality] },
    });
  }
}

function defaultTarget(): EventTarget | null {
  return typeof window === 'undefined' ? null : window;
}
