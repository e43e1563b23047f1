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
 * TODO(#9): messages already in the in-memory buffer when the connection
 * drops stay in memory (sent on the next connection, lost on a page
 * reload); with the offline queue on, they could move to IndexedDB.
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
  private chain: Promise<unknown> = Promise.resolve();
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
    if (!this.o.ready() && this.o.offline !== null) {
      await this.o.offline.put(entry, this.o.now());
      bump(this.o.store, 'offlineQueued');
      return 'queued-offline';
    }
    const queued = this.o.queue.getState().enqueue(entry);
    if (queued === null) {
      throw new WSEError('QUEUE_FULL', 'outbound buffer is full');
    }
    await this.pump();
    const waiting = this.o.queue.getState().items.includes(queued);
    return waiting ? 'buffered' : 'sent';
  }

  /** Sends a system message now, bypassing buffer and rate limit. */
  system(type: string, payload: unknown, plaintext: boolean): void {
    void this.write(makeEnvelope(type, payload, this.o.now()), plaintext);
  }

  /** The connection is ready: replay the offline queue, then the buffer. */
  async flush(): Promise<void> {
    await this.replayOffline();
    await this.pump();
  }

  dispose(): void {
    if (this.pumpTimer !== null) clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    this.o.offline?.close();
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
        return;
      }
    }
  }

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
      this.o.fail(
        err instanceof WSEError ? err : new WSEError('QUEUE_FULL', String(err)),
      );
    }
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

function envelopeOf(m: QueuedMessage): object {
  const options: SendOptions = { priority: m.priority };
  if (m.correlationId !== undefined) options.correlationId = m.correlationId;
  return makeEnvelope(m.type, m.payload, m.createdAt, options);
}
