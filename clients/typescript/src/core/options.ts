/**
 * Options of {@link WSEClient}, their defaults and their validation. Bad
 * options fail fast with `INVALID_ARGUMENT` (or a RangeError from the
 * component that owns the bound).
 */

import {
  resolveReconnect,
  type ReconnectOptions,
  type ResolvedReconnectOptions,
} from './backoff.js';
import type { CircuitBreakerOptions } from './circuit-breaker.js';
import type { OutboundFormat } from './codec.js';
import { WSEError } from './errors.js';
import type { OfflineOptions } from './offline-queue.js';
import type { EndpointSpec, PoolOptions } from './pool.js';
import type {
  ConnectionQuality,
  QueryClientLike,
  QuerySettings,
} from './quality.js';
import type { RateLimitOptions } from './rate-limiter.js';
import type { MessageQueueStore, WSEStore } from './stores.js';
import type { WebSocketFactory } from './websocket.js';

export interface EncryptionOptions {
  /** Ask the server for E2E (PROTOCOL §5). */
  enabled?: boolean;
  /** Close instead of going on in plaintext when the server refuses. */
  required?: boolean;
}

export interface WSEClientOptions {
  /** ws:// or wss:// URLs of the endpoint (path included, e.g. `/wse`). */
  endpoints: ReadonlyArray<string | EndpointSpec>;
  /** Topics to subscribe to on every connection. */
  topics?: readonly string[];
  /**
   * A JWT for runtimes that can set headers (sent as `Authorization:
   * Bearer` and the `access_token` cookie). Browsers send their cookie and
   * ignore this, unless `tokenInQuery` (the server must enable query
   * tokens).
   */
  token?: string;
  tokenInQuery?: boolean;
  /**
   * Called after a 4401/4403 close; resolve (with a new token, or nothing
   * when the cookie was refreshed) to retry, reject to stop.
   */
  refreshAuthToken?: () => Promise<string | null | undefined | void>;
  reconnection?: ReconnectOptions;
  circuitBreaker?: CircuitBreakerOptions;
  pool?: PoolOptions;
  encryption?: boolean | EncryptionOptions;
  /** Shared secret for §6 signatures when not on E2E. */
  signingSecret?: string;
  /** Sign outbound JSON (needs E2E or `signingSecret`). */
  signOutbound?: boolean;
  /** Drop inbound messages without a valid signature. */
  requireSignatures?: boolean;
  /** `msgpack`: ask for `M:` frames (`?format=msgpack`) and send them. */
  format?: OutboundFormat;
  /** Persist messages sent while disconnected (IndexedDB). */
  offline?: boolean | OfflineOptions;
  /** TanStack Query client to retune with the network grade. */
  queryClient?: QueryClientLike;
  querySettings?: Partial<Record<ConnectionQuality, QuerySettings>>;
  /** Outbound token bucket (default 100 messages, 100 per second). */
  rateLimit?: RateLimitOptions;
  /** Outbound priority buffer capacity (default 1,000 messages). */
  bufferCapacity?: number;
  /** Client ping interval, ms (default 15,000). */
  heartbeatIntervalMs?: number;
  /** A connection silent this long is replaced, ms (default 45,000). */
  livenessTimeoutMs?: number;
  /** Limit for the WebSocket to open, ms (default 10,000). */
  connectTimeoutMs?: number;
  /** Wait for `server_ready` before sending `client_hello`, ms (10,000). */
  readyTimeoutMs?: number;
  /** Cap on an inbound message after inflating, bytes (default 16 MiB). */
  maxMessageBytes?: number;
  /** Frames waiting to be decoded before the client reconnects (10,000). */
  maxPendingFrames?: number;
  /** How to open a socket (default: the global WebSocket). */
  createWebSocket?: WebSocketFactory;
  /** Where window events go (default `window` when there is one). */
  eventTarget?: EventTarget | null;
  store?: WSEStore;
  queueStore?: MessageQueueStore;
  /** Sent in `client_hello`. */
  clientVersion?: string;
  now?: () => number;
  random?: () => number;
}

export interface ResolvedTimers {
  heartbeatMs: number;
  livenessTimeoutMs: number;
  connectTimeoutMs: number;
  readyTimeoutMs: number;
}

export function resolveEncryption(
  option: WSEClientOptions['encryption'],
): Required<EncryptionOptions> {
  if (option === undefined || typeof option === 'boolean') {
    return { enabled: option === true, required: false };
  }
  return {
    enabled: option.enabled ?? true,
    required: option.required ?? false,
  };
}

export function resolveTimers(o: WSEClientOptions): ResolvedTimers {
  const timers = {
    heartbeatMs: o.heartbeatIntervalMs ?? 15_000,
    livenessTimeoutMs: o.livenessTimeoutMs ?? 45_000,
    connectTimeoutMs: o.connectTimeoutMs ?? 10_000,
    readyTimeoutMs: o.readyTimeoutMs ?? 10_000,
  };
  for (const [name, value] of Object.entries(timers)) {
    if (!(value > 0) || !Number.isFinite(value)) {
      throw new WSEError(
        'INVALID_ARGUMENT',
        `${name} must be a positive number`,
      );
    }
  }
  if (timers.livenessTimeoutMs <= timers.heartbeatMs) {
    throw new WSEError(
      'INVALID_ARGUMENT',
      'livenessTimeoutMs must be longer than heartbeatIntervalMs',
    );
  }
  return timers;
}

export function resolveReconnection(
  o: WSEClientOptions,
): ResolvedReconnectOptions {
  try {
    return resolveReconnect(o.reconnection);
  } catch (err) {
    throw new WSEError('INVALID_ARGUMENT', String(err));
  }
}

/**
 * PROTOCOL §3 topic names: 1 to 256 bytes of UTF-8, no ASCII control
 * characters, no spaces; `*` and `?` are wildcards (subscriptions only).
 */
export function validateTopic(topic: string): void {
  const bytes = new TextEncoder().encode(topic).length;
  // eslint-disable-next-line no-control-regex
  if (bytes < 1 || bytes > 256 || /[\u0000-\u001f\u007f ]/.test(topic)) {
    throw new WSEError(
      'INVALID_ARGUMENT',
      `invalid topic ${JSON.stringify(topic)}: 1-256 bytes, no spaces or control characters`,
    );
  }
}

/** Stable key of an endpoint set (order does not matter). */
export function endpointKey(
  endpoints: ReadonlyArray<string | EndpointSpec>,
): string {
  return endpoints
    .map((e) => (typeof e === 'string' ? e : `${e.url}#${e.weight ?? 1}`))
    .sort()
    .join(' ');
}
