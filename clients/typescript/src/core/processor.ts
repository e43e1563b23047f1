/**
 * Message processor: from raw inbound frames to delivered messages.
 *
 * Steps, for each frame in arrival order: decode the frame (`codec`: JSON,
 * `C:`, zlib, `M:`, `E:`), check its signature (§6) when it carries one,
 * build the envelope, drop a repeated message id, note `seq` gaps, and
 * judge topic publications by `(epoch, offset)`: repeats are dropped, gaps
 * and new epochs reported. Whatever survives is emitted as `message`.
 *
 * Frames are processed one at a time on a promise chain, because opening an
 * `E:` frame awaits WebCrypto and order must hold. Nothing waits for a
 * missing message: gaps are reported and the client asks for recovery.
 * Frames waiting on the chain are bounded (`maxPending`); past it the
 * processor emits `overload` and the client reconnects (and recovers).
 */

import { decodeFrame, type FrameData } from './codec.js';
import type { E2ESession } from './e2e.js';
import { Emitter } from './emitter.js';
import { toMessage, type WSEMessage } from './envelope.js';
import { WSEError } from './errors.js';
import { IdWindow, SeqTracker, TopicTracker, type SeqGap } from './ordering.js';
import { hasSignature, verifySignature } from './signing.js';

export interface TopicGap {
  topic: string;
  epoch: string;
  /** First and last missing offsets. */
  from: number;
  to: number;
}

export interface ProcessorEvents {
  message: WSEMessage;
  /** A frame that could not be used (decode, decrypt or signature). */
  rejected: WSEError;
  duplicate: WSEMessage;
  seqGap: SeqGap;
  topicGap: TopicGap;
  epochChange: { topic: string; previousEpoch: string | null; epoch: string };
  /** Bytes of every frame received, before decoding. */
  received: number;
  /** A sealed message whose signature matches none of the keys. */
  unverifiable: undefined;
  overload: number;
}

export interface ProcessorOptions {
  maxMessageBytes: number;
  maxPending: number;
  /** The E2E session of the current connection, if any. */
  session: () => E2ESession | null;
  /** Keys a signature may verify under (none: signatures are ignored). */
  signingKeys: () => Promise<CryptoKey[]>;
  /**
   * Drop messages that are neither signed validly nor sealed (an `E:` frame
   * is authenticated by AES-GCM under the session key); heartbeats, errors
   * and `server_hello` excepted.
   */
  requireSignatures: boolean;
  idWindow?: number;
}

export class MessageProcessor extends Emitter<ProcessorEvents> {
  readonly seq = new SeqTracker();
  readonly topics = new TopicTracker();
  private readonly ids: IdWindow;
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;
  /** Bumped on reset: frames of an earlier connection are discarded. */
  private generation = 0;

  constructor(private readonly o: ProcessorOptions) {
    super();
    this.ids = new IdWindow(o.idWindow);
  }

  /** Queues one frame; frames are processed in the order pushed. */
  push(data: FrameData): void {
    this.pending++;
    if (this.pending > this.o.maxPending) {
      this.emit('overload', this.pending);
    }
    const generation = this.generation;
    this.chain = this.chain.then(async () => {
      this.pending--;
      if (generation !== this.generation) return;
      await this.process(data);
    });
  }

  /** A new connection: `seq` restarts, queued frames of the old one go. */
  reset(): void {
    this.generation++;
    this.seq.reset();
  }

  /** Resolves when every frame pushed so far has been processed. */
  idle(): Promise<void> {
    return this.chain;
  }

  private async process(data: FrameData): Promise<void> {
    const message = await this.decode(data);
    if (message === null) return;
    if (message.id !== undefined && !this.ids.admit(message.id)) {
      this.emit('duplicate', message);
      return;
    }
    if (message.seq !== undefined) {
      const gap = this.seq.observe(message.seq);
      if (gap !== null) this.emit('seqGap', gap);
    }
    if (!this.judgeTopic(message)) return;
    this.emit('message', message);
  }

  private async decode(data: FrameData): Promise<WSEMessage | null> {
    try {
      const frame = await decodeFrame(data, {
        maxMessageBytes: this.o.maxMessageBytes,
        session: this.o.session(),
      });
      this.emit('received', frame.wireBytes);
      // server_hello is signed under the E2E key it lets the client derive
      // (PROTOCOL §6), so it cannot be checked before it is read; its key
      // is what any later signature is checked against.
      const verified = isServerHello(frame.value)
        ? false
        : await this.checkSignature(frame.text, frame.encrypted);
      const message = toMessage(frame.value, {
        verified,
        encrypted: frame.encrypted,
        format: frame.format,
      });
      if (message === null) {
        throw new WSEError('INVALID_FRAME', 'frame is not a WSE envelope');
      }
      const trusted = verified || message.encrypted || EXEMPT.has(message.type);
      if (this.o.requireSignatures && !trusted) {
        throw new WSEError('BAD_SIGNATURE', `unsigned ${message.type} dropped`);
      }
      return message;
    } catch (err) {
      this.emit('rejected', asWSEError(err));
      return null;
    }
  }

  /**
   * True when the text carried a signature valid under one of the keys.
   * A signature that matches no key drops a plaintext frame (throws). Inside
   * an `E:` frame AES-GCM has already authenticated the text (wse-server
   * puts no signature there); a signature that does not match is kept,
   * unverified, and counted (`unverifiable`).
   */
  private async checkSignature(
    text: string | null,
    sealed: boolean,
  ): Promise<boolean> {
    if (text === null || !hasSignature(text)) return false;
    const keys = await this.o.signingKeys();
    if (keys.length === 0 && !sealed) return false;
    for (const key of keys) {
      if ((await verifySignature(key, text)) === 'valid') return true;
    }
    if (sealed) {
      this.emit('unverifiable', undefined);
      return false;
    }
    throw new WSEError('BAD_SIGNATURE', 'signature does not match');
  }

  /** False when the publication repeats one already delivered. */
  private judgeTopic(message: WSEMessage): boolean {
    const { topic, epoch, offset } = message;
    if (topic === undefined || epoch === undefined || offset === undefined) {
      return true;
    }
    const verdict = this.topics.observe(topic, epoch, offset);
    switch (verdict.kind) {
      case 'duplicate':
        this.emit('duplicate', message);
        return false;
      case 'new-epoch':
        this.emit('epochChange', {
          topic,
          previousEpoch: verdict.previousEpoch,
          epoch,
        });
        return true;
      case 'deliver':
        if (verdict.gap !== null) {
          this.emit('topicGap', { topic, epoch, ...verdict.gap });
        }
        return true;
    }
  }
}

function isServerHello(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { t?: unknown }).t === 'server_hello'
  );
}

function asWSEError(err: unknown): WSEError {
  if (err instanceof WSEError) return err;
  return new WSEError('INVALID_FRAME', String(err));
}

/**
 * Messages `requireSignatures` lets through unsigned: heartbeats and errors
 * (never sealed, PROTOCOL §5) and the handshake, which comes before any
 * E2E key exists and carries no application data.
 */
const EXEMPT: ReadonlySet<string> = new Set([
  'server_ready',
  'ping',
  'PONG',
  'pong',
  'error',
  'server_hello',
]);
