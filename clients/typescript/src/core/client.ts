/**
 * WSEClient: the framework-free client. It composes the services of this
 * package and speaks the session part of PROTOCOL.md: the handshake
 * (`server_ready`, `client_hello`, `server_hello`, E2E key agreement),
 * heartbeats, subscriptions with recovery, and outbound messages.
 *
 * Data path:
 *
 * ```
 * socket ─► ConnectionManager ─► MessageProcessor (decode, verify, dedup,
 *   seq and topic positions) ─► WSEClient: system messages handled here,
 *   the rest to handlers and as CustomEvents on window
 * sendMessage ─► priority buffer (message-queue store) ─► token bucket ─►
 *   encode (sign, seal) ─► socket;  while disconnected ─► offline queue,
 *   and the buffer moves there when the connection drops
 * ```
 *
 * State for the UI lives in the zustand stores (`store`, `queueStore`);
 * React reads them through `useSyncExternalStore`.
 */

import { CircuitBreaker } from './circuit-breaker.js';
import type { FrameData } from './codec.js';
import { ConnectionManager, type CloseInfo } from './connection.js';
import { E2EKeyPair, importHmacKey, type E2ESession } from './e2e.js';
import { Emitter } from './emitter.js';
import { isRecord, type SendOptions, type WSEMessage } from './envelope.js';
import { WSEError } from './errors.js';
import { NetworkMonitor, qualityPenalty } from './network-monitor.js';
import { OfflineQueue } from './offline-queue.js';
import { Outbound, type SendResult } from './outbound.js';
import {
  endpointKey,
  resolveEncryption,
  resolveReconnection,
  resolveTimers,
  validateTopic,
  type ResolvedTimers,
  type WSEClientOptions,
} from './options.js';
import { ConnectionPool } from './pool.js';
import { MessageProcessor, type TopicGap } from './processor.js';
import {
  AdaptiveQualityManager,
  DEFAULT_QUERY_SETTINGS,
  type QualityChange,
} from './quality.js';
import { TokenBucket } from './rate-limiter.js';
import {
  bump,
  createMessageQueueStore,
  createWSEStore,
  pushLatency,
  type ConnectionState,
  type MessageQueueStore,
  type WSEState,
  type WSEStore,
} from './stores.js';
import { globalWebSocketFactory } from './websocket.js';
import { Subscriptions, type RecoveryOutcome } from './subscriptions.js';

export type MessageHandler = (message: WSEMessage) => void;

export type { SendResult } from './outbound.js';

export interface ClientEvents {
  state: ConnectionState;
  /** The handshake finished; subscriptions and queued messages follow. */
  ready: { connectionId: string | null; encrypted: boolean };
  close: CloseInfo;
  error: WSEError;
  recovery: RecoveryOutcome;
  gap: TopicGap;
  quality: QualityChange;
}

export class WSEClient {
  readonly store: WSEStore;
  readonly queueStore: MessageQueueStore;
  readonly events = new Emitter<ClientEvents>();
  /** Stable key of this client's endpoint set. */
  readonly key: string;

  private readonly o: WSEClientOptions;
  private readonly timers: ResolvedTimers;
  private readonly encryption: { enabled: boolean; required: boolean };
  private readonly pool: ConnectionPool;
  private readonly breaker: CircuitBreaker;
  private readonly manager: ConnectionManager;
  private readonly processor: MessageProcessor;
  private readonly monitor: NetworkMonitor;
  private readonly quality: AdaptiveQualityManager;
  private readonly outbound: Outbound;
  private readonly subs: Subscriptions;
  private readonly handlers = new Map<string, Set<MessageHandler>>();
  private readonly target: EventTarget | null;
  private readonly now: () => number;
  private token: string | undefined;
  /** The key of `signingSecret` (PROTOCOL §6), when one is configured. */
  private readonly sharedKey: Promise<CryptoKey> | null;
  private session: E2ESession | null = null;
  private keyPair: Promise<E2EKeyPair> | null = null;
  private ready = false;
  private helloSent = false;
  private readyTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(options: WSEClientOptions) {
    this.o = options;
    this.key = endpointKey(options.endpoints);
    this.now = options.now ?? Date.now;
    this.token = options.token;
    this.timers = resolveTimers(options);
    this.encryption = resolveEncryption(options.encryption);
    if (
      options.requireSignatures === true &&
      options.format === 'msgpack' &&
      !this.encryption.enabled
    ) {
      throw new WSEError(
        'INVALID_ARGUMENT',
        'requireSignatures with msgpack needs encryption: M: frames carry no signature',
      );
    }
    this.store = options.store ?? createWSEStore();
    this.queueStore =
      options.queueStore ?? createMessageQueueStore(options.bufferCapacity);
    this.target =
      options.eventTarget !== undefined
        ? options.eventTarget
        : typeof window === 'undefined'
          ? null
          : window;
    this.pool = new ConnectionPool(options.endpoints, options.pool);
    this.breaker = new CircuitBreaker(options.circuitBreaker);
    this.monitor = new NetworkMonitor({
      pongTimeoutMs: this.timers.heartbeatMs * 2,
    });
    this.quality = new AdaptiveQualityManager(
      options.queryClient ?? null,
      { ...DEFAULT_QUERY_SETTINGS, ...options.querySettings },
      this.target,
    );
    this.outbound = new Outbound({
      store: this.store,
      queue: this.queueStore,
      bucket: new TokenBucket(options.rateLimit),
      offline: resolveOffline(options),
      format: options.format ?? 'json',
      signOutbound: options.signOutbound ?? false,
      ready: () => this.ready,
      session: () => this.session,
      signingKey: () => this.outboundSigningKey(),
      write: (data) => this.manager.send(data),
      fail: (error) => this.fail(error),
      now: this.now,
    });
    this.sharedKey =
      options.signingSecret === undefined
        ? null
        : importHmacKey(options.signingSecret);
    this.subs = new Subscriptions(this.store, (env) => this.sendSystem(env));
    for (const topic of options.topics ?? []) validateTopic(topic);
    this.subs.want(options.topics ?? []);

    this.processor = new MessageProcessor({
      maxMessageBytes: options.maxMessageBytes ?? 16 * 1024 * 1024,
      maxPending: options.maxPendingFrames ?? 10_000,
      session: () => this.session,
      signingKeys: () => this.inboundSigningKeys(),
      requireSignatures: options.requireSignatures ?? false,
    });
    this.manager = new ConnectionManager({
      pool: this.pool,
      reconnect: resolveReconnection(options),
      breaker: this.breaker,
      createSocket: options.createWebSocket ?? globalWebSocketFactory,
      url: (endpoint) => this.url(endpoint),
      headers: () => this.headers(),
      refreshAuthToken:
        options.refreshAuthToken === undefined
          ? undefined
          : () => this.refreshToken(),
      heartbeatMs: this.timers.heartbeatMs,
      livenessTimeoutMs: this.timers.livenessTimeoutMs,
      connectTimeoutMs: this.timers.connectTimeoutMs,
      qualityPenalty: () => qualityPenalty(this.monitor.quality()),
      now: this.now,
      random: options.random ?? Math.random,
    });
    this.wire();
  }

  // ── lifecycle ─────────────────────────────────────────────────────────

  connect(): void {
    this.manager.start();
  }

  /** Closes for good; call `connect()` to start again. */
  disconnect(): void {
    this.manager.stop();
  }

  /** Drops the connection and reconnects at once (with recovery). */
  forceReconnect(): void {
    this.manager.reconnectNow();
  }

  get isConnected(): boolean {
    return this.ready;
  }

  /** Topics the server confirmed. */
  get activeTopics(): string[] {
    return this.store.getState().subscriptions;
  }

  getState(): WSEState {
    return this.store.getState();
  }

  /** The endpoints with their health scores. */
  endpointHealth(): ReturnType<ConnectionPool['health']> {
    return this.pool.health();
  }

  // ── subscriptions ─────────────────────────────────────────────────────

  subscribe(topics: string | readonly string[]): void {
    const list = typeof topics === 'string' ? [topics] : [...topics];
    list.forEach(validateTopic);
    const added = this.subs.want(list);
    if (this.ready && added.length > 0)
      this.subs.sendSubscribe(added, this.processor.topics);
  }

  unsubscribe(topics: string | readonly string[]): void {
    const list = typeof topics === 'string' ? [topics] : [...topics];
    const removed = this.subs.unwant(list);
    for (const topic of removed) this.processor.topics.forget(topic);
    if (this.ready && removed.length > 0) this.subs.sendUnsubscribe(removed);
  }

  /**
   * Asks the application for snapshots of topics (PROTOCOL §7
   * `sync_request`); they arrive as `*_snapshot` messages, then
   * `snapshot_complete`. Throws `NOT_CONNECTED` while not connected.
   */
  requestSnapshot(topics: string | readonly string[]): void {
    const list = typeof topics === 'string' ? [topics] : [...topics];
    list.forEach(validateTopic);
    if (!this.ready) {
      throw new WSEError('NOT_CONNECTED', 'sync_request needs a connection');
    }
    this.sendSystem({ t: 'sync_request', p: { topics: list } });
  }

  // ── handlers ──────────────────────────────────────────────────────────

  /** Calls `handler` for every message of `type` (`*`: every message). */
  on(type: string, handler: MessageHandler): () => void {
    let set = this.handlers.get(type);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(type, set);
    }
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }

  // ── outbound ──────────────────────────────────────────────────────────

  /**
   * Sends an application message. Connected: it joins the priority buffer
   * and leaves as the rate limit allows (`sent` when it left at once).
   * Disconnected: stored in the offline queue when enabled, else kept in
   * the buffer until the next connection. With the offline queue on, what
   * is still in the buffer when the connection drops moves there too.
   * Throws `QUEUE_FULL` when neither can take it.
   */
  sendMessage(
    type: string,
    payload: unknown,
    options: SendOptions = {},
  ): Promise<SendResult> {
    return this.outbound.send(type, payload, options);
  }

  /** Publishes to a topic (PROTOCOL §7 `publish`, an ext). */
  publish(
    topic: string,
    data: unknown,
    options: SendOptions & { type?: string } = {},
  ): Promise<SendResult> {
    validateTopic(topic);
    const payload: Record<string, unknown> = { topic, data };
    if (options.type !== undefined) payload['type'] = options.type;
    if (options.priority !== undefined) payload['pri'] = options.priority;
    return this.sendMessage('publish', payload, options);
  }

  /** Stops timers and listeners for good (the React registry calls it). */
  dispose(): void {
    this.disconnect();
    this.clearReadyTimer();
    this.outbound.dispose();
    this.manager.clear();
    this.processor.clear();
  }

  // ── internals ─────────────────────────────────────────────────────────

  private wire(): void {
    const m = this.manager;
    m.on('state', (s) => {
      if (s === 'open') return;
      this.unready();
      this.setState(s === 'stopped' ? 'stopped' : s === 'idle' ? 'idle' : s);
    });
    m.on('attempt', ({ endpoint, attempt }) => {
      if (attempt > 0) bump(this.store, 'reconnectAttempts');
      this.store.setState({
        endpoint,
        circuit: this.breaker.state(this.now()),
      });
    });
    m.on('open', ({ endpoint }) => this.handleOpen(endpoint));
    m.on('frame', (data: FrameData) => this.processor.push(data));
    m.on('close', (info) => this.handleClose(info));
    m.on('heartbeat', () => this.heartbeat());
    m.on('stopped', (error) => {
      if (error !== null) this.fail(error);
    });

    const p = this.processor;
    p.on('message', (msg) => this.handleMessage(msg));
    p.on('received', (n) => bump(this.store, 'bytesReceived', n));
    p.on('rejected', (err) => this.handleRejected(err));
    p.on('duplicate', () => bump(this.store, 'duplicatesDropped'));
    p.on('unverifiable', () => bump(this.store, 'unverifiableSignatures'));
    p.on('seqGap', () => bump(this.store, 'seqGaps'));
    p.on('topicGap', (gap) => {
      bump(this.store, 'topicGaps');
      this.events.emit('gap', gap);
      if (this.ready) this.subs.recoverGap(gap, this.processor.topics);
    });
    p.on('epochChange', () => bump(this.store, 'epochChanges'));
    p.on('overload', () => {
      this.fail(
        new WSEError('INVALID_FRAME', 'inbound backlog over its bound'),
      );
      this.manager.reconnectNow();
    });

    this.quality.onChange((change) => {
      this.store.setState({ quality: change.to });
      this.events.emit('quality', change);
    });
  }

  private handleOpen(endpoint: string): void {
    this.processor.reset();
    this.session = null;
    this.helloSent = false;
    this.unready();
    bump(this.store, 'connects');
    this.store.setState({ endpoint, encrypted: false });
    this.keyPair = this.encryption.enabled ? E2EKeyPair.generate() : null;
    // 2.x servers may never send server_ready: say hello after a while.
    this.readyTimer = setTimeout(
      () => void this.sendHello(),
      this.timers.readyTimeoutMs,
    );
  }

  private handleClose(info: CloseInfo): void {
    this.clearReadyTimer();
    this.unready();
    this.session = null;
    this.monitor.connectionLost();
    this.subs.connectionLost();
    this.quality.update('offline', this.monitor.metrics());
    this.store.setState({
      lastClose: { code: info.code, reason: info.reason },
      connectionId: null,
      encrypted: false,
      circuit: this.breaker.state(this.now()),
    });
    this.events.emit('close', info);
  }

  private handleMessage(msg: WSEMessage): void {
    bump(this.store, 'messagesReceived');
    if (msg.verified) bump(this.store, 'verifiedMessages');
    if (msg.encrypted) bump(this.store, 'encryptedMessages');
    switch (msg.type) {
      case 'server_ready':
        this.onServerReady(msg);
        break;
      case 'server_hello':
        void this.onServerHello(msg);
        break;
      case 'ping':
        this.sendSystem({ t: 'PONG', p: this.pongPayload(msg) }, true);
        return;
      case 'PONG':
      case 'pong':
        this.onPong(msg);
        return;
      case 'subscription_update':
        this.subs.handleAnswer(msg, this.processor.topics, (outcome) => {
          this.events.emit('recovery', outcome);
          this.target?.dispatchEvent(
            new CustomEvent('wse:recovery', { detail: outcome }),
          );
        });
        break;
      case 'error':
        this.onServerError(msg);
        return;
    }
    this.dispatch(msg);
  }

  private dispatch(msg: WSEMessage): void {
    for (const key of [msg.type, '*']) {
      for (const handler of [...(this.handlers.get(key) ?? [])]) {
        try {
          handler(msg);
        } catch (err) {
          queueMicrotask(() => {
            throw err;
          });
        }
      }
    }
    this.target?.dispatchEvent(new CustomEvent(msg.type, { detail: msg }));
  }

  private onServerReady(msg: WSEMessage): void {
    const details = isRecord(msg.payload) ? msg.payload['details'] : undefined;
    const info = isRecord(details) ? details : {};
    this.store.setState({
      connectionId: stringOrNull(info['connection_id']),
      userId: stringOrNull(info['user_id']),
    });
    this.manager.admitted();
    void this.sendHello();
  }

  private async sendHello(): Promise<void> {
    this.clearReadyTimer();
    if (this.helloSent || this.manager.state !== 'open') return;
    this.helloSent = true;
    const features = {
      compression: true,
      encryption: this.encryption.enabled,
      msgpack: this.o.format === 'msgpack',
      recovery: true,
      priority_queue: true,
      signing: this.sharedKey !== null || this.encryption.enabled,
    };
    const payload: Record<string, unknown> = {
      client_version: this.o.clientVersion ?? CLIENT_VERSION,
      protocol_version: 1,
      features,
    };
    if (this.keyPair !== null) {
      try {
        payload['encryption_public_key'] = (await this.keyPair).publicKeyBase64;
      } catch (err) {
        this.keyPair = null;
        features.encryption = false;
        this.fail(new WSEError('KEY_EXCHANGE_FAILED', String(err)));
        if (this.encryption.required) return this.manager.stop();
      }
    }
    this.sendSystem({ t: 'client_hello', p: payload }, true);
    if (this.keyPair === null) this.becomeReady();
  }

  private async onServerHello(msg: WSEMessage): Promise<void> {
    if (this.ready || this.keyPair === null) return;
    const p = isRecord(msg.payload) ? msg.payload : {};
    const serverKey = p['encryption_public_key'];
    if (typeof serverKey === 'string') {
      try {
        this.session = await (await this.keyPair).agree(serverKey);
        this.store.setState({ encrypted: true });
        return this.becomeReady();
      } catch (err) {
        this.fail(
          err instanceof WSEError
            ? err
            : new WSEError('KEY_EXCHANGE_FAILED', String(err)),
        );
      }
    }
    if (this.encryption.required) {
      this.fail(new WSEError('KEY_EXCHANGE_FAILED', 'server refused E2E'));
      return this.manager.stop();
    }
    this.becomeReady();
  }

  private becomeReady(): void {
    if (this.ready || this.manager.state !== 'open') return;
    this.ready = true;
    this.setState('connected');
    this.subs.resubscribe(this.processor.topics);
    this.heartbeat();
    this.events.emit('ready', {
      connectionId: this.store.getState().connectionId,
      encrypted: this.session !== null,
    });
    void this.outbound.flush();
  }

  /**
   * The connection is no longer usable (closed, stopped, or replaced by
   * `forceReconnect`): sends wait for the next one, and the buffer goes to
   * the offline queue when it is on.
   */
  private unready(): void {
    if (!this.ready) return;
    this.ready = false;
    this.outbound.connectionLost();
  }

  private heartbeat(): void {
    const now = this.now();
    this.monitor.pingSent(now, now);
    this.sendSystem({ t: 'ping', p: { timestamp: now } }, true);
    this.updateQuality();
  }

  private onPong(msg: WSEMessage): void {
    const p = isRecord(msg.payload) ? msg.payload : {};
    const sent = p['client_timestamp'];
    if (typeof sent !== 'number') return;
    const rtt = this.monitor.pongReceived(sent, this.now());
    if (rtt === null) return;
    pushLatency(this.store, rtt);
    const endpoint = this.manager.currentEndpoint;
    if (endpoint !== null) this.pool.recordLatency(endpoint, rtt);
    this.updateQuality();
  }

  private updateQuality(): void {
    this.monitor.expire(this.now());
    const metrics = this.monitor.metrics();
    this.store.setState({
      latencyMs: metrics.latencyMs,
      jitterMs: metrics.jitterMs,
      loss: metrics.loss,
    });
    if (this.ready || metrics.latencyMs !== null) {
      this.quality.update(this.monitor.quality(), metrics);
    }
  }

  private pongPayload(ping: WSEMessage): Record<string, unknown> {
    const p = isRecord(ping.payload) ? ping.payload : {};
    return {
      server_time: p['server_time'] ?? null,
      client_timestamp: this.now(),
    };
  }

  private onServerError(msg: WSEMessage): void {
    const p = isRecord(msg.payload) ? msg.payload : {};
    const code = typeof p['code'] === 'string' ? p['code'] : 'UNKNOWN';
    const text = typeof p['message'] === 'string' ? p['message'] : '';
    bump(this.store, 'serverErrors');
    const error = new WSEError('SERVER_ERROR', `${code}: ${text}`, p);
    this.fail(error);
    for (const handler of [...(this.handlers.get('error') ?? [])]) handler(msg);
    this.target?.dispatchEvent(new CustomEvent('wse:error', { detail: msg }));
  }

  private handleRejected(err: WSEError): void {
    const counter =
      err.code === 'DECRYPT_FAILED'
        ? 'decryptFailures'
        : err.code === 'BAD_SIGNATURE'
          ? 'badSignatures'
          : 'invalidFrames';
    bump(this.store, counter);
    this.fail(err);
  }

  /** Sends a system message now, bypassing buffer and rate limit. */
  private sendSystem(env: { t: string; p: unknown }, plaintext = false): void {
    this.outbound.system(env.t, env.p, plaintext);
  }

  /**
   * The key a signature verifies under (PROTOCOL §6): the E2E session's
   * signing key once E2E is agreed, else the shared secret.
   */
  private async inboundSigningKeys(): Promise<CryptoKey[]> {
    if (this.session !== null) return [this.session.signingKey];
    if (this.sharedKey !== null) return [await this.sharedKey];
    return [];
  }

  /** The key to sign with (§6): E2E when agreed, else the shared secret. */
  private async outboundSigningKey(): Promise<CryptoKey | null> {
    if (this.session !== null) return this.session.signingKey;
    return this.sharedKey === null ? null : await this.sharedKey;
  }

  private url(endpoint: string): string {
    const url = new URL(endpoint);
    url.searchParams.set(
      'client_version',
      this.o.clientVersion ?? CLIENT_VERSION,
    );
    url.searchParams.set('protocol_version', '1');
    if (this.o.format === 'msgpack') url.searchParams.set('format', 'msgpack');
    if (this.o.tokenInQuery === true && this.token !== undefined) {
      url.searchParams.set('token', this.token);
    }
    return url.toString();
  }

  private headers(): Record<string, string> {
    if (this.token === undefined) return {};
    return {
      Authorization: `Bearer ${this.token}`,
      Cookie: `access_token=${this.token}`,
    };
  }

  private async refreshToken(): Promise<void> {
    const fresh = await this.o.refreshAuthToken?.();
    if (typeof fresh === 'string' && fresh.length > 0) this.token = fresh;
  }

  private setState(state: ConnectionState): void {
    this.store.setState({
      connectionState: state,
      circuit: this.breaker.state(this.now()),
    });
    this.events.emit('state', state);
  }

  private fail(error: WSEError): void {
    this.store.setState({
      lastError: { code: error.code, message: error.message },
    });
    this.events.emit('error', error);
  }

  private clearReadyTimer(): void {
    if (this.readyTimer !== null) clearTimeout(this.readyTimer);
    this.readyTimer = null;
  }
}

function resolveOffline(o: WSEClientOptions): OfflineQueue | null {
  const opt = o.offline;
  if (opt === undefined || opt === false) return null;
  if (opt === true) return new OfflineQueue({ dbName: dbNameFor(o) });
  if (opt.enabled === false) return null;
  return new OfflineQueue({ dbName: dbNameFor(o), ...opt });
}

function dbNameFor(o: WSEClientOptions): string {
  return `wse-offline:${endpointKey(o.endpoints)}`;
}

function stringOrNull(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

export const CLIENT_VERSION = 'wse-client-ts/0.1.0';
