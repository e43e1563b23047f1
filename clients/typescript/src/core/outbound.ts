/**
 * The outbound path: application messages into the priority buffer (or,
 * while disconnected, the offline queue), out through the token bucket, and
 * every message encoded (signed, sealed) and written in call order.
 *
 * Place in the data path: `WSEClient.sendMessage` → here → the connection
 * manager's socket. System messages (`client_hello`, heartbeats,
 * subscriptions) skip the buffer and the bucket but share the write order.
 * A buffered message whose write finds no open socket goes back to the
 * buffer, so a disconnect between dequeue and write loses nothing.
 *
 * With the offline queue on, a message is in the buffer or in IndexedDB,
 * never both: when the connection drops, the buffer moves to the queue
 * (`park`), and the replay on the next connection moves the queue back
 * into the buffer. All IndexedDB work (a send while disconnected, a park,
 * a replay) runs one operation at a time in call order, so a replay always
 * finds what an earlier park stored. Without the queue, the buffer simply
 * waits for the next connection.
 */

import { encodeMessage, type OutboundFormat } from './codec.js';
import type { E2ESession } from './e2e.js';
import { makeEnvelope, Priority, type SendOptions } from './envelope.js';
import { WSEError } from './errors.js';
import type { OfflineQueue } from './offline-queue.js';
import type { TokenBucket } from './rate-limiter.js';
import { signJson } from './signing.js';
import {
  bump,
  type MessageQueueStore,
  type QueuedMessage,
  type WSEStore,
} from './stores.js';

/** How `sendMessage` disposed of a message. */
export type SendResult = 'sent' | 'buffered' | 'queued-offline';

export interface OutboundOptions {
  store: WSEStore;
  queue: MessageQueueStore;
  bucket: TokenBucket;
  offline: OfflineQueue | null;
  format: OutboundFormat;
  signOutbound: boolean;
  /** True once the handshake is done on the current connection. */
  ready: () => boolean;
  session: () => E2ESession | null;
  /** The key to sign outbound JSON with, if any. */
  signingKey: () => Promise<CryptoKey | null>;
  /** Writes to the socket; false when there is no open one. */
  write: (data: string | Uint8Array<ArrayBuffer>) => boolean;
  fail: (error: WSEError) => void;
  now: () => number;
}

export class Outbound {
  /** Encoded writes, in call order. */
  private chain: Promise<unknown> = Promise.resolve();
  /** IndexedDB operations, one at a time in call order. */
  private offlineChain: Promise<unknown> = Promise.resolve();
  /**
   * Messages the pump has written. `send` reports `sent` for these only: a
   * message gone from the buffer may have been parked instead.
   */
  private readonly written = new WeakSet<QueuedMessage>();
  private pumpTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly o: OutboundOptions) {}

  /** See `WSEClient.sendMessage`. */
  async send(
    type: string,
    payload: unknown,
    options: SendOptions,
  ): Promise<SendResult> {
    if (typeof type !== 'string' || type.length === 0) {
      throw new WSEError('INVALID_ARGUMENT', 'message type must be a string');
    }
    const entry = {
      type,
      payload,
      priority: options.priority ?? Priority.NORMAL,
      createdAt: this.o.now(),
      ...(options.correlationId === undefined
        ? {}
        : { correlationId: options.correlationId }),
    };
    const offline = this.o.offline;
    if (!this.o.ready() && offline !== null) {
      await this.serial(() => offline.put(entry, this.o.now()));
      bump(this.o.store, 'offlineQueued');
      return 'queued-offline';
    }
    const queued = this.o.queue.getState().enqueue(entry);
    if (queued === null) {
      throw new WSEError('QUEUE_FULL', 'outbound buffer is full');
    }
    await this.pump();
    return this.written.has(queued) ? 'sent' : 'buffered';
  }

  /** Sends a system message now, bypassing buffer and rate limit. */
  system(type: string, payload: unknown, plaintext: boolean): void {
    void this.write(makeEnvelope(type, payload, this.o.now()), plaintext);
  }

  /** The connection is ready: replay the offline queue, then the buffer. */
  async flush(): Promise<void> {
    await this.serial(() => this.replayOffline());
    await this.pump();
  }

  /**
   * The connection is gone. With the offline queue on, the buffer moves
   * there; without it, the buffer waits for the next connection.
   */
  connectionLost(): void {
    if (this.o.offline !== null) void this.serial(() => this.park());
  }

  /** Stops the pump; the database closes once pending work is done. */
  dispose(): void {
    if (this.pumpTimer !== null) clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    const offline = this.o.offline;
    if (offline !== null) void this.serial(async () => offline.close());
  }

  /** Sends buffered messages while ready and the bucket allows. */
  private async pump(): Promise<void> {
    while (this.o.ready() && this.o.queue.getState().items.length > 0) {
      const wait = this.o.bucket.waitMs(this.o.now());
      if (wait > 0) {
        this.pumpTimer ??= setTimeout(() => {
          this.pumpTimer = null;
          void this.pump();
        }, wait);
        return;
      }
      const next = this.o.queue.getState().dequeue();
      if (next === undefined) return;
      this.o.bucket.tryTake(this.o.now());
      if (!(await this.write(envelopeOf(next), false))) {
        this.o.queue.getState().putBack(next);
        // The park of this disconnect may have run before the put-back.
        if (!this.o.ready()) this.connectionLost();
        return;
      }
      this.written.add(next);
    }
  }

  /**
   * Moves the whole buffer into the offline queue in one transaction, in
   * buffer order (priority, then arrival), under the queue's bounds.
   * Messages the full queue refuses stay in the buffer; those past the TTL
   * are dropped and counted. If the transaction fails, all of them go back
   * to the buffer. Never rejects.
   */
  private async park(): Promise<void> {
    const offline = this.o.offline;
    const items = this.o.queue.getState().items;
    if (offline === null || items.length === 0) return;
    this.o.queue.getState().clear();
    try {
      const { refused, expired } = await offline.putAll(items, this.o.now());
      for (const m of refused) this.o.queue.getState().putBack(m);
      const moved = items.length - refused.length - expired;
      if (moved > 0) bump(this.o.store, 'offlineQueued', moved);
      if (expired > 0) bump(this.o.store, 'offlineExpired', expired);
    } catch (err) {
      for (const m of items) this.o.queue.getState().putBack(m);
      this.o.fail(offlineError(err));
    }
  }

  /** Moves the offline queue into the buffer. Never rejects. */
  private async replayOffline(): Promise<void> {
    if (this.o.offline === null) return;
    try {
      const { entries, expired } = await this.o.offline.takeAll(this.o.now());
      if (expired > 0) bump(this.o.store, 'offlineExpired', expired);
      for (const entry of entries) {
        const kept = this.o.queue.getState().enqueue(entry) !== null;
        bump(this.o.store, kept ? 'offlineReplayed' : 'bufferEvicted');
      }
    } catch (err) {
      this.o.fail(offlineError(err));
    }
  }

  /** Runs `task` after every IndexedDB operation queued before it. */
  private serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.offlineChain.then(task);
    this.offlineChain = run.catch(() => {});
    return run;
  }

  /**
   * Encodes and writes in call order (encoding may await WebCrypto, so all
   * writes go through one promise chain). Resolves to false when there was
   * no open socket.
   */
  private write(env: object, plaintext: boolean): Promise<boolean> {
    const next = this.chain.then(() => this.encodeAndWrite(env, plaintext));
    this.chain = next.catch(() => {});
    return next.catch((err: unknown) => {
      this.o.fail(
        new WSEError(
          'INVALID_ARGUMENT',
          `cannot encode message: ${String(err)}`,
        ),
      );
      return true;
    });
  }

  private async encodeAndWrite(
    env: object,
    plaintext: boolean,
  ): Promise<boolean> {
    const key = this.o.signOutbound ? await this.o.signingKey() : null;
    const sign =
      key !== null ? (json: string) => signJson(key, json) : undefined;
    const data = await encodeMessage(env, {
      format: this.o.format,
      session: plaintext ? null : this.o.session(),
      ...(sign === undefined ? {} : { sign }),
    });
    if (!this.o.write(data)) return false;
    const bytes = typeof data === 'string' ? data.length : data.byteLength;
    bump(this.o.store, 'messagesSent');
    bump(this.o.store, 'bytesSent', bytes);
    return true;
  }
}

function offlineError(err: unknown): WSEError {
  return err instanceof WSEError
    ? err
    : new WSEError('QUEUE_FULL', String(err));
}

function envelopeOf(m: QueuedMessage): object {
  const options: SendOptions = { priority: m.priority };
  if (m.correlationId !== undefined) options.correlationId = m.correlationId;
  return makeEnvelope(m.type, m.payload, m.createdAt, options);
}
