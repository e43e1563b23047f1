/**
 * Network monitor: turns heartbeat round trips into latency, jitter and
 * loss, and those into a quality grade. Pure bookkeeping: the client
 * reports each ping it sends and each PONG it gets, with the time.
 *
 * Grades (all three measures must meet a grade's bounds):
 *
 * | grade     | latency  | jitter  | loss   |
 * |-----------|----------|---------|--------|
 * | excellent | < 100 ms | < 30 ms | < 1 %  |
 * | good      | < 250 ms | < 75 ms | < 5 %  |
 * | fair      | < 600 ms | < 200ms | < 15 % |
 * | poor      | anything else              |
 */

export type Quality = 'excellent' | 'good' | 'fair' | 'poor';

export interface NetworkMetrics {
  /** Mean round trip of the recent samples, ms (null before the first). */
  latencyMs: number | null;
  /** Mean absolute difference of consecutive round trips, ms. */
  jitterMs: number | null;
  /** Fraction of recent pings with no PONG within the timeout, 0..1. */
  loss: number;
  /** Round trips kept (most recent last). */
  samples: readonly number[];
}

export interface NetworkMonitorOptions {
  /** Round trips kept for the averages. */
  window?: number;
  /** A ping with no PONG after this long counts as lost, ms. */
  pongTimeoutMs?: number;
}

export class NetworkMonitor {
  private readonly rtts: number[] = [];
  /** Ping timestamps awaiting a PONG, oldest first. */
  private readonly pending = new Map<number, number>();
  /** Outcome of recent pings: true answered, false lost. */
  private readonly outcomes: boolean[] = [];
  private readonly window: number;
  private readonly pongTimeoutMs: number;

  constructor(options: NetworkMonitorOptions = {}) {
    this.window = options.window ?? 20;
    this.pongTimeoutMs = options.pongTimeoutMs ?? 10_000;
  }

  /** A ping went out carrying `timestamp`, at `now`. */
  pingSent(timestamp: number, now: number): void {
    this.expire(now);
    this.pending.set(timestamp, now);
    while (this.pending.size > this.window) {
      const oldest = this.pending.keys().next();
      if (oldest.done === true) break;
      this.pending.delete(oldest.value);
      this.record(false);
    }
  }

  /** A PONG echoed `clientTimestamp`; returns the round trip or null. */
  pongReceived(clientTimestamp: number, now: number): number | null {
    const sentAt = this.pending.get(clientTimestamp);
    if (sentAt === undefined) return null;
    this.pending.delete(clientTimestamp);
    const rtt = Math.max(0, now - sentAt);
    this.rtts.push(rtt);
    if (this.rtts.length > this.window) this.rtts.shift();
    this.record(true);
    return rtt;
  }

  /** Counts pings past the PONG timeout as lost. */
  expire(now: number): void {
    for (const [ts, sentAt] of this.pending) {
      if (now - sentAt < this.pongTimeoutMs) break;
      this.pending.delete(ts);
      this.record(false);
    }
  }

  /** Forgets outstanding pings (the connection they went on is gone). */
  connectionLost(): void {
    this.pending.clear();
  }

  metrics(): NetworkMetrics {
    const n = this.rtts.length;
    const latencyMs = n === 0 ? null : this.rtts.reduce((a, b) => a + b) / n;
    let jitterMs: number | null = null;
    if (n >= 2) {
      let sum = 0;
      for (let i = 1; i < n; i++)
        sum += Math.abs(this.rtts[i]! - this.rtts[i - 1]!);
      jitterMs = sum / (n - 1);
    }
    const lost = this.outcomes.filter((ok) => !ok).length;
    const loss = this.outcomes.length === 0 ? 0 : lost / this.outcomes.length;
    return { latencyMs, jitterMs, loss, samples: [...this.rtts] };
  }

  quality(): Quality {
    return gradeQuality(this.metrics());
  }

  private record(answered: boolean): void {
    this.outcomes.push(answered);
    if (this.outcomes.length > this.window) this.outcomes.shift();
  }
}

/** The grade of a set of metrics (see the table in the module docs). */
export function gradeQuality(m: NetworkMetrics): Quality {
  const latency = m.latencyMs ?? 0;
  const jitter = m.jitterMs ?? 0;
  for (const [grade, bound] of GRADES) {
    if (
      latency < bound.latency &&
      jitter < bound.jitter &&
      m.loss < bound.loss
    ) {
      return grade;
    }
  }
  return 'poor';
}

/** 0 for excellent up to 3 for poor (used by the adaptive backoff). */
export function qualityPenalty(q: Quality): number {
  return QUALITY_ORDER.indexOf(q);
}

export const QUALITY_ORDER: readonly Quality[] = [
  'excellent',
  'good',
  'fair',
  'poor',
];

const GRADES: ReadonlyArray<
  readonly [Quality, { latency: number; jitter: number; loss: number }]
> = [
  ['excellent', { latency: 100, jitter: 30, loss: 0.01 }],
  ['good', { latency: 250, jitter: 75, loss: 0.05 }],
  ['fair', { latency: 600, jitter: 200, loss: 0.15 }],
];
