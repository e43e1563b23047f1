/**
 * Connection manager: one WebSocket at a time, chosen from the pool, kept
 * alive and replaced when it dies.
 *
 * Place in the data path: it owns the socket and the timers (connect
 * timeout, heartbeat, liveness); frames go out to the client unparsed, and
 * the client hands back what to send. It knows close codes (PROTOCOL §9),
 * not envelopes.
 *
 * Close policy:
 *
 * | close                   | action                                        |
 * |-------------------------|-----------------------------------------------|
 * | `stop()` by the caller  | stop                                          |
 * | 1000, 1001              | stop (normal close)                           |
 * | 1008                    | stop, `POLICY_VIOLATION`                      |
 * | 4401, 4403              | `refreshAuthToken()` then retry; stop without |
 * |                         | one, or after 3 refreshes in a row, or if it  |
 * |                         | throws (`AUTH_FAILED`)                        |
 * | 4300 (lame duck)        | retry at once, steering away from the endpoint|
 * | 4429 (rate limited)     | retry after `maxDelayMs`                      |
 * | anything else           | retry with backoff                            |
 *
 * Retries follow the backoff strategy, pass the circuit breaker (open after
 * repeated failures: no attempt until its cool-down ends) and stop after
 * `maxAttempts` (infinite by default). Liveness: every `heartbeatMs` the
 * `heartbeat` event asks the client to send a ping; a socket that delivers
 * no frame for `livenessTimeoutMs` is dropped and replaced.
 */

import {
  backoffDelay,
  type BackoffContext,
  type ResolvedReconnectOptions,
} from './backoff.js';
import type { CircuitBreaker } from './circuit-breaker.js';
import { Emitter } from './emitter.js';
import { WSEError } from './errors.js';
import type { ConnectionPool } from './pool.js';
import type { FrameData } from './codec.js';
import type { WebSocketFactory, WebSocketLike } from './websocket.js';

export type ManagerState =
  'idle' | 'connecting' | 'open' | 'reconnecting' | 'stopped';

export interface CloseInfo {
  code: number;
  reason: string;
  endpoint: string;
  /** Delay before the next attempt, or null when the manager stopped. */
  retryInMs: number | null;
}

export interface ManagerEvents {
  state: ManagerState;
  open: { socket: WebSocketLike; endpoint: string };
  frame: FrameData;
  close: CloseInfo;
  heartbeat: undefined;
  /** Emitted once when the manager gives up; `null` for a requested stop. */
  stopped: WSEError | null;
  attempt: { endpoint: string; attempt: number };
}

export interface ManagerOptions {
  pool: ConnectionPool;
  reconnect: ResolvedReconnectOptions;
  breaker: CircuitBreaker;
  createSocket: WebSocketFactory;
  /** The URL to open for an endpoint (adds query parameters). */
  url: (endpoint: string) => string;
  /** Headers for runtimes that can set them (token). */
  headers: () => Record<string, string>;
  refreshAuthToken?: (() => Promise<unknown>) | undefined;
  heartbeatMs: number;
  livenessTimeoutMs: number;
  connectTimeoutMs: number;
  /** 0 (excellent) .. 3 (poor), read by the adaptive strategy. */
  qualityPenalty: () => number;
  now: () => number;
  random: () => number;
}

export class ConnectionManager extends Emitter<ManagerEvents> {
  private socket: WebSocketLike | null = null;
  private endpoint: string | null = null;
  private currentState: ManagerState = 'idle';
  private attempt = 0;
  private flaps = 0;
  private authRefreshes = 0;
  private everOpened = false;
  private openedAt: number | null = null;
  private lastFrameAt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;

  constructor(private readonly o: ManagerOptions) {
    super();
  }

  get state(): ManagerState {
    return this.currentState;
  }

  get currentEndpoint(): string | null {
    return this.endpoint;
  }

  /** Starts connecting; a no-op while already running. */
  start(): void {
    if (this.currentState !== 'idle' && this.currentState !== 'stopped') return;
    this.attempt = 0;
    this.authRefreshes = 0;
    this.open();
  }

  /** Closes for good (1000); no reconnect follows. */
  stop(): void {
    if (this.currentState === 'stopped' || this.currentState === 'idle') return;
    this.clearTimers();
    this.dropSocket(1000, 'client stop');
    this.finish(null);
  }

  /** Drops the current socket and connects again at once. */
  reconnectNow(): void {
    if (this.currentState === 'stopped' || this.currentState === 'idle') {
      this.start();
      return;
    }
    this.clearTimers();
    const endpoint = this.endpoint;
    const wasOpen = this.dropSocket(4000, 'client reconnect');
    if (endpoint !== null && wasOpen) this.o.pool.recordClosed(endpoint);
    this.attempt = 0;
    this.open();
  }

  /** The server admitted the connection: token refreshes start over. */
  admitted(): void {
    this.authRefreshes = 0;
  }

  /** Sends on the open socket; false when there is none. */
  send(data: string | Uint8Array<ArrayBuffer>): boolean {
    const socket = this.socket;
    if (socket === null || this.currentState !== 'open') return false;
    socket.send(data);
    return true;
  }

  private open(): void {
    const now = this.o.now();
    if (!this.o.breaker.allow(now)) {
      this.setState('reconnecting');
      this.schedule(Math.max(this.o.breaker.waitMs(now), MIN_BREAKER_WAIT_MS));
      return;
    }
    const endpoint = this.o.pool.select(now, this.o.random);
    this.endpoint = endpoint;
    this.setState(
      this.everOpened || this.attempt > 0 ? 'reconnecting' : 'connecting',
    );
    this.emit('attempt', { endpoint, attempt: this.attempt });

    let socket: WebSocketLike;
    try {
      socket = this.o.createSocket(this.o.url(endpoint), {
        headers: this.o.headers(),
      });
    } catch (err) {
      this.o.pool.recordFailure(endpoint, now);
      this.o.breaker.recordFailure(now);
      this.afterClose(1006, `socket creation failed: ${String(err)}`, endpoint);
      return;
    }
    this.socket = socket;
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => this.handleOpen(socket, endpoint);
    socket.onmessage = (event: { data: FrameData }) => {
      this.lastFrameAt = this.o.now();
      this.emit('frame', event.data);
    };
    socket.onerror = () => {};
    socket.onclose = (event: { code?: number; reason?: string }) =>
      this.handleClose(
        socket,
        endpoint,
        event.code ?? 1006,
        event.reason ?? '',
      );
    this.connectTimer = setTimeout(() => {
      if (this.socket !== socket || this.currentState === 'open') return;
      this.dropSocket(4000, 'connect timeout');
      this.handleClose(socket, endpoint, 1006, 'connect timeout', true);
    }, this.o.connectTimeoutMs);
  }

  private handleOpen(socket: WebSocketLike, endpoint: string): void {
    if (this.socket !== socket) return;
    this.clearTimer('connectTimer');
    const now = this.o.now();
    this.openedAt = now;
    this.lastFrameAt = now;
    this.everOpened = true;
    this.o.pool.recordSuccess(endpoint);
    this.o.breaker.recordSuccess();
    this.setState('open');
    this.emit('open', { socket, endpoint });
    this.heartbeatTimer = setInterval(() => this.tick(), this.o.heartbeatMs);
  }

  private tick(): void {
    const silentFor = this.o.now() - this.lastFrameAt;
    if (silentFor >= this.o.livenessTimeoutMs && this.socket !== null) {
      const socket = this.socket;
      this.dropSocket(4000, 'heartbeat timeout');
      this.handleClose(
        socket,
        this.endpoint ?? '',
        4000,
        'heartbeat timeout',
        true,
      );
      return;
    }
    this.emit('heartbeat', undefined);
  }

  private handleClose(
    socket: WebSocketLike,
    endpoint: string,
    code: number,
    reason: string,
    forced = false,
  ): void {
    if (this.socket !== socket && !forced) return;
    this.socket = null;
    this.clearTimers();
    const now = this.o.now();
    if (this.openedAt !== null) {
      this.o.pool.recordClosed(endpoint);
      const lived = now - this.openedAt;
      this.flaps = lived < this.o.reconnect.stableAfterMs ? this.flaps + 1 : 0;
      this.openedAt = null;
      this.attempt = 0;
    } else {
      this.o.pool.recordFailure(endpoint, now);
      this.o.breaker.recordFailure(now);
    }
    this.afterClose(code, reason, endpoint);
  }

  private afterClose(code: number, reason: string, endpoint: string): void {
    const stop = (error: WSEError | null): void => {
      this.emit('close', { code, reason, endpoint, retryInMs: null });
      this.finish(error);
    };
    if (code === 1000 || code === 1001) return stop(null);
    if (code === 1008) {
      return stop(new WSEError('POLICY_VIOLATION', `closed 1008: ${reason}`));
    }
    if (code === 4401 || code === 4403)
      return this.refreshAuth(code, reason, endpoint);
    if (this.attempt >= this.o.reconnect.maxAttempts) {
      return stop(
        new WSEError(
          'RECONNECT_EXHAUSTED',
          `gave up after ${this.attempt} retries`,
        ),
      );
    }
    let delay = this.nextDelay();
    if (code === 4300) {
      this.o.pool.recordDrain(endpoint, this.o.now());
      delay = 0;
    } else if (code === 4429) {
      delay = Math.max(delay, this.o.reconnect.maxDelayMs);
    }
    this.emit('close', { code, reason, endpoint, retryInMs: delay });
    this.setState('reconnecting');
    this.schedule(delay);
  }

  private refreshAuth(code: number, reason: string, endpoint: string): void {
    const refresh = this.o.refreshAuthToken;
    const fail = (why: string): void => {
      this.emit('close', { code, reason, endpoint, retryInMs: null });
      this.finish(
        new WSEError('AUTH_FAILED', `closed ${code} (${reason}): ${why}`),
      );
    };
    if (refresh === undefined) return fail('no refreshAuthToken callback');
    if (this.authRefreshes >= MAX_AUTH_REFRESHES) {
      return fail(`${MAX_AUTH_REFRESHES} token refreshes did not help`);
    }
    this.authRefreshes++;
    this.emit('close', { code, reason, endpoint, retryInMs: 0 });
    this.setState('reconnecting');
    refresh().then(
      () => {
        if (this.currentState === 'reconnecting') this.open();
      },
      (err: unknown) => fail(`refreshAuthToken failed: ${String(err)}`),
    );
  }

  private nextDelay(): number {
    const context: BackoffContext = {
      flaps: this.flaps,
      qualityPenalty: this.o.qualityPenalty(),
    };
    const delay = backoffDelay(
      this.attempt,
      this.o.reconnect,
      this.o.random,
      context,
    );
    this.attempt++;
    return delay;
  }

  private schedule(delayMs: number): void {
    this.clearTimer('retryTimer');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.currentState === 'reconnecting') this.open();
    }, delayMs);
  }

  /** Detaches and closes the socket; true when it had opened. */
  private dropSocket(code: number, reason: string): boolean {
    const socket = this.socket;
    this.socket = null;
    const wasOpen = this.openedAt !== null;
    this.openedAt = null;
    if (socket === null) return false;
    socket.onopen = socket.onmessage = socket.onclose = null;
    socket.onerror = () => {};
    try {
      socket.close(code, reason);
    } catch {
      // Closing a socket that is still connecting throws in some runtimes.
    }
    return wasOpen;
  }

  private finish(error: WSEError | null): void {
    this.clearTimers();
    this.setState('stopped');
    this.emit('stopped', error);
  }

  private setState(state: ManagerState): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.emit('state', state);
  }

  private clearTimers(): void {
    this.clearTimer('retryTimer');
    this.clearTimer('connectTimer');
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  private clearTimer(name: 'retryTimer' | 'connectTimer'): void {
    const timer = this[name];
    if (timer !== null) clearTimeout(timer);
    this[name] = null;
  }
}

/** Consecutive 4401/4403 refreshes before giving up. */
const MAX_AUTH_REFRESHES = 3;
/** Poll interval while the breaker is open and reports no wait. */
const MIN_BREAKER_WAIT_MS = 100;
