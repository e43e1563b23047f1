/**
 * Connection pool: the endpoints a client may use, each with a health
 * score, and the choice of the next one to connect to.
 *
 * Health score, 0..100, starts at 100: a failed attempt costs 25, a
 * connection that opens earns 10, a lame-duck close (4300) costs 50, and
 * latency above 200 ms costs up to 20. An endpoint that failed within the
 * last `cooldownMs` is skipped while another one has not (failover); one
 * whose score is under `minHealthyScore` (40) is skipped until its
 * cool-down has passed. When every endpoint is skipped, the best score wins.
 * Among the remaining endpoints the strategy picks:
 *
 * - `weighted-random`: chance proportional to score × weight (default);
 * - `least-connections`: fewest live connections opened through this pool
 *   (ties: best score);
 * - `round-robin`: the next one in list order.
 *
 * Time and randomness are parameters.
 */

import { WSEError } from './errors.js';

export type PoolStrategy =
  'weighted-random' | 'least-connections' | 'round-robin';

export interface EndpointSpec {
  url: string;
  /** Relative weight for `weighted-random`, default 1. */
  weight?: number;
}

export interface PoolOptions {
  strategy?: PoolStrategy;
  minHealthyScore?: number;
  cooldownMs?: number;
}

export interface EndpointHealth {
  readonly url: string;
  readonly weight: number;
  score: number;
  connections: number;
  failures: number;
  successes: number;
  lastFailureAt: number | null;
  latencyMs: number | null;
}

export class ConnectionPool {
  private readonly endpoints: EndpointHealth[];
  private readonly strategy: PoolStrategy;
  private readonly minHealthy: number;
  private readonly cooldownMs: number;
  private cursor = -1;

  constructor(
    endpoints: ReadonlyArray<string | EndpointSpec>,
    options: PoolOptions = {},
  ) {
    if (endpoints.length === 0) {
      throw new WSEError('INVALID_ARGUMENT', 'at least one endpoint is needed');
    }
    this.endpoints = endpoints.map((e) => {
      const spec = typeof e === 'string' ? { url: e } : e;
      validateUrl(spec.url);
      return {
        url: spec.url,
        weight: spec.weight ?? 1,
        score: MAX_SCORE,
        connections: 0,
        failures: 0,
        successes: 0,
        lastFailureAt: null,
        latencyMs: null,
      };
    });
    this.strategy = options.strategy ?? 'weighted-random';
    this.minHealthy = options.minHealthyScore ?? 40;
    this.cooldownMs = options.cooldownMs ?? 30_000;
  }

  /** The endpoint to try next. */
  select(now: number, random: () => number = Math.random): string {
    const healthy = this.endpoints.filter((e) => this.isHealthy(e, now));
    const fresh = healthy.filter((e) => !this.coolingDown(e, now));
    const candidates = fresh.length > 0 ? fresh : healthy;
    return candidates.length === 0
      ? this.best(this.endpoints).url
      : this.pick(candidates, random);
  }

  recordSuccess(url: string): void {
    const e = this.get(url);
    e.successes++;
    e.connections++;
    e.score = Math.min(MAX_SCORE, e.score + SUCCESS_GAIN);
  }

  recordFailure(url: string, now: number, penalty = FAILURE_COST): void {
    const e = this.get(url);
    e.failures++;
    e.lastFailureAt = now;
    e.score = Math.max(0, e.score - penalty);
  }

  /** A lame-duck close (4300): steer away from this endpoint. */
  recordDrain(url: string, now: number): void {
    this.recordFailure(url, now, DRAIN_COST);
  }

  /** A connection opened through `recordSuccess` closed. */
  recordClosed(url: string): void {
    const e = this.get(url);
    e.connections = Math.max(0, e.connections - 1);
  }

  recordLatency(url: string, latencyMs: number): void {
    const e = this.get(url);
    const before = latencyPenalty(e.latencyMs);
    e.latencyMs = latencyMs;
    e.score = clamp(e.score + before - latencyPenalty(latencyMs));
  }

  health(): readonly Readonly<EndpointHealth>[] {
    return this.endpoints.map((e) => ({ ...e }));
  }

  get urls(): string[] {
    return this.endpoints.map((e) => e.url);
  }

  private pick(healthy: EndpointHealth[], random: () => number): string {
    switch (this.strategy) {
      case 'round-robin':
        return this.nextInOrder(healthy).url;
      case 'least-connections':
        return this.best(
          healthy.filter(
            (e) =>
              e.connections === Math.min(...healthy.map((h) => h.connections)),
          ),
        ).url;
      case 'weighted-random':
        return weightedPick(healthy, random).url;
    }
  }

  private isHealthy(e: EndpointHealth, now: number): boolean {
    return e.score >= this.minHealthy || !this.coolingDown(e, now);
  }

  private coolingDown(e: EndpointHealth, now: number): boolean {
    return e.lastFailureAt !== null && now - e.lastFailureAt < this.cooldownMs;
  }

  private best(candidates: EndpointHealth[]): EndpointHealth {
    return candidates.reduce((a, b) => (b.score > a.score ? b : a));
  }

  private nextInOrder(healthy: EndpointHealth[]): EndpointHealth {
    for (let step = 1; step <= this.endpoints.length; step++) {
      const i = (this.cursor + step) % this.endpoints.length;
      const e = this.endpoints[i]!;
      if (healthy.includes(e)) {
        this.cursor = i;
        return e;
      }
    }
    return healthy[0]!;
  }

  private get(url: string): EndpointHealth {
    const e = this.endpoints.find((x) => x.url === url);
    if (e === undefined) {
      throw new WSEError('INVALID_ARGUMENT', `unknown endpoint ${url}`);
    }
    return e;
  }
}

function weightedPick(
  candidates: EndpointHealth[],
  random: () => number,
): EndpointHealth {
  const weights = candidates.map((e) => Math.max(e.score, 1) * e.weight);
  let r = random() * weights.reduce((a, b) => a + b, 0);
  for (let i = 0; i < candidates.length; i++) {
    r -= weights[i]!;
    if (r < 0) return candidates[i]!;
  }
  return candidates[candidates.length - 1]!;
}

function latencyPenalty(latencyMs: number | null): number {
  if (latencyMs === null || latencyMs <= 200) return 0;
  return Math.min(LATENCY_COST_MAX, (latencyMs - 200) / 40);
}

function validateUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new WSEError('INVALID_ARGUMENT', `not a URL: ${url}`);
  }
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new WSEError('INVALID_ARGUMENT', `not a ws:// or wss:// URL: ${url}`);
  }
}

function clamp(score: number): number {
  return Math.min(MAX_SCORE, Math.max(0, score));
}

const MAX_SCORE = 100;
const SUCCESS_GAIN = 10;
const FAILURE_COST = 25;
const DRAIN_COST = 50;
const LATENCY_COST_MAX = 20;
