/**
 * Reconnect delays: exponential, linear, fibonacci and adaptive, with
 * jitter. Pure: the attempt number, the random source and the facts the
 * adaptive strategy reads are parameters.
 */

export type BackoffStrategy =
  'exponential' | 'linear' | 'fibonacci' | 'adaptive';

export interface ReconnectOptions {
  strategy?: BackoffStrategy;
  /** Delay of the first retry, ms. */
  baseDelayMs?: number;
  /** No delay is longer than this, ms (before jitter). */
  maxDelayMs?: number;
  /** Retries before giving up; Infinity (the default) never gives up. */
  maxAttempts?: number;
  /** Jitter as a fraction of the delay: 0.2 spreads it over ±20 %. */
  jitter?: number;
  /**
   * Adaptive only: a connection that lived shorter than this (ms) counts as
   * a flap, so the next delay keeps growing instead of starting over.
   */
  stableAfterMs?: number;
}

export type ResolvedReconnectOptions = Required<ReconnectOptions>;

export const DEFAULT_RECONNECT: ResolvedReconnectOptions = {
  strategy: 'exponential',
  baseDelayMs: 1_000,
  maxDelayMs: 30_000,
  maxAttempts: Infinity,
  jitter: 0.2,
  stableAfterMs: 10_000,
};

/** What the adaptive strategy knows about recent history. */
export interface BackoffContext {
  /** Consecutive short-lived connections before this attempt. */
  flaps: number;
  /** 0 (excellent) to 3 (poor) network quality when last measured. */
  qualityPenalty: number;
}

/**
 * Delay before retry `attempt` (0-based), jitter applied, in ms. `random`
 * returns a number in [0, 1).
 */
export function backoffDelay(
  attempt: number,
  options: ResolvedReconnectOptions,
  random: () => number = Math.random,
  context: BackoffContext = { flaps: 0, qualityPenalty: 0 },
): number {
  const base = rawDelay(attempt, options, context);
  const capped = Math.min(base, options.maxDelayMs);
  const spread = capped * Math.min(Math.max(options.jitter, 0), 1);
  return Math.max(0, Math.round(capped - spread + 2 * spread * random()));
}

/** Validates and fills in reconnect options; throws a RangeError. */
export function resolveReconnect(
  options: ReconnectOptions = {},
): ResolvedReconnectOptions {
  const r = { ...DEFAULT_RECONNECT, ...definedOnly(options) };
  if (!(r.baseDelayMs >= 0) || !(r.maxDelayMs >= r.baseDelayMs)) {
    throw new RangeError('reconnect: need 0 <= baseDelayMs <= maxDelayMs');
  }
  if (!(r.maxAttempts >= 0)) throw new RangeError('reconnect: maxAttempts < 0');
  if (!(r.jitter >= 0 && r.jitter <= 1)) {
    throw new RangeError('reconnect: jitter must be within [0, 1]');
  }
  return r;
}

function rawDelay(
  attempt: number,
  o: ResolvedReconnectOptions,
  ctx: BackoffContext,
): number {
  const n = Math.max(0, Math.min(attempt, MAX_EXPONENT));
  switch (o.strategy) {
    case 'linear':
      return o.baseDelayMs * (n + 1);
    case 'fibonacci':
      return o.baseDelayMs * fibonacci(n + 1);
    case 'adaptive': {
      // Flapping servers push the exponent up; a poor network doubles per
      // quality step, since retrying fast into loss mostly adds load.
      const exponent = Math.min(n + ctx.flaps, MAX_EXPONENT);
      return o.baseDelayMs * 2 ** exponent * 2 ** ctx.qualityPenalty;
    }
    case 'exponential':
      return o.baseDelayMs * 2 ** n;
  }
}

function fibonacci(n: number): number {
  let [a, b] = [1, 1];
  for (let i = 1; i < n; i++) [a, b] = [b, a + b];
  return a;
}

/** Copies the keys whose value is not undefined. */
export function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(
    Object.entries(value).filter(([, v]) => v !== undefined),
  ) as Partial<T>;
}

/** Past this, 2 ** n only overflows the cap anyway. */
const MAX_EXPONENT = 30;
