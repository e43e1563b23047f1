/**
 * Frame formats (PROTOCOL.md §4): from WebSocket frame data to a decoded
 * object, and from an envelope to the data to send.
 *
 * Inbound, text frames are JSON (a legacy `WSE{`, `S{` or `U{` prefix is
 * stripped); binary frames are told apart by their first bytes: `C:` (zlib
 * stream), bare zlib (`0x78`), `M:` (msgpack map), `E:` (sealed; the
 * plaintext is JSON, or `M:` and msgpack) and `{` (JSON). Inflating stops at
 * `maxMessageBytes` so a zlib bomb costs at most that much memory.
 *
 * The JSON text is kept beside the decoded value, because a signature (§6)
 * covers the text as sent, not a re-serialisation of it.
 */

import {
  decode as msgpackDecode,
  encode as msgpackEncode,
} from '@msgpack/msgpack';
import { Inflate } from 'pako';

import { concatBytes, startsWith, utf8Decode, utf8Encode } from './bytes.js';
import type { E2ESession } from './e2e.js';
import { WSEError } from './errors.js';

/** What a WebSocket hands over for one message. */
export type FrameData = string | ArrayBuffer | ArrayBufferView;

/** Wire format of a decoded frame. */
export type FrameFormat = 'json' | 'compressed' | 'zlib' | 'msgpack';

export interface DecodedFrame {
  /** The decoded object (not yet checked to be an envelope). */
  readonly value: unknown;
  /** The JSON text, when the message was JSON (needed for §6 signatures). */
  readonly text: string | null;
  readonly format: FrameFormat;
  readonly encrypted: boolean;
  /** Bytes as received (for statistics). */
  readonly wireBytes: number;
}

export interface DecodeOptions {
  /** Cap on inflated and decrypted sizes, in bytes. */
  maxMessageBytes: number;
  /** The E2E session, once agreed; `E:` frames fail without one. */
  session: E2ESession | null;
}

/** Decodes one frame; throws {@link WSEError} for anything unreadable. */
export async function decodeFrame(
  data: FrameData,
  options: DecodeOptions,
): Promise<DecodedFrame> {
  if (typeof data === 'string') {
    return {
      ...parseJsonText(stripLegacyPrefix(data)),
      wireBytes: data.length,
    };
  }
  const bytes = toBytes(data);
  if (startsWith(bytes, 'E:')) {
    if (options.session === null) {
      throw new WSEError('DECRYPT_FAILED', 'E: frame before key agreement');
    }
    const plain = await options.session.open(bytes);
    const inner = startsWith(plain, 'M:')
      ? msgpackFrame(plain.subarray(2), options)
      : parseJsonBytes(plain);
    return { ...inner, encrypted: true, wireBytes: bytes.length };
  }
  return { ...decodeBinary(bytes, options), wireBytes: bytes.length };
}

/** Decodes an unencrypted binary frame (sync: nothing here awaits). */
export function decodeBinary(
  bytes: Uint8Array,
  options: Pick<DecodeOptions, 'maxMessageBytes'>,
): Omit<DecodedFrame, 'wireBytes'> {
  if (startsWith(bytes, 'C:')) {
    const json = inflateCapped(bytes.subarray(2), options.maxMessageBytes);
    return { ...parseJsonBytes(json), format: 'compressed' };
  }
  if (bytes[0] === ZLIB_HEADER) {
    const json = inflateCapped(bytes, options.maxMessageBytes);
    return { ...parseJsonBytes(json), format: 'zlib' };
  }
  if (startsWith(bytes, 'M:')) return msgpackFrame(bytes.subarray(2), options);
  if (bytes[0] === OPEN_BRACE) return parseJsonBytes(bytes);
  throw new WSEError(
    'INVALID_FRAME',
    `binary frame with unknown prefix 0x${(bytes[0] ?? 0).toString(16)}`,
  );
}

/** Outbound wire format chosen by the client. */
export type OutboundFormat = 'json' | 'msgpack';

/**
 * The data to send for one envelope: JSON text, or `M:` + msgpack; sealed
 * into an `E:` frame when a session is given. `sign` post-processes JSON
 * text (PROTOCOL §6) before sealing.
 */
export async function encodeMessage(
  envelope: object,
  options: {
    format: OutboundFormat;
    session: E2ESession | null;
    sign?: (json: string) => Promise<string>;
  },
): Promise<string | Uint8Array<ArrayBuffer>> {
  if (options.format === 'msgpack') {
    const packed = concatBytes(M_PREFIX, msgpackEncode(envelope));
    return options.session === null ? packed : options.session.seal(packed);
  }
  let json = JSON.stringify(envelope);
  if (options.sign !== undefined) json = await options.sign(json);
  return options.session === null
    ? json
    : options.session.seal(utf8Encode(json));
}

/** Inflates a zlib stream, failing with `INFLATE_LIMIT` past `limit`. */
export function inflateCapped(input: Uint8Array, limit: number): Uint8Array {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const inflater = new Inflate({ chunkSize: INFLATE_CHUNK });
  inflater.onData = (chunk) => {
    total += chunk.length;
    if (total > limit) throw new InflateLimit();
    chunks.push(chunk);
  };
  inflater.onEnd = () => {};
  try {
    inflater.push(input, true);
  } catch (err) {
    if (err instanceof InflateLimit) {
      throw new WSEError(
        'INFLATE_LIMIT',
        `compressed frame inflates past ${limit} bytes`,
      );
    }
    throw new WSEError('INVALID_FRAME', `bad zlib data: ${String(err)}`);
  }
  if (inflater.err !== 0 || !inflater.ended) {
    throw new WSEError(
      'INVALID_FRAME',
      `bad zlib data: ${inflater.msg || 'truncated stream'}`,
    );
  }
  return concatBytes(...chunks);
}

function msgpackFrame(
  body: Uint8Array,
  options: Pick<DecodeOptions, 'maxMessageBytes'>,
): Omit<DecodedFrame, 'wireBytes'> {
  if (body.length > options.maxMessageBytes) {
    throw new WSEError('INVALID_FRAME', 'msgpack frame over the size limit');
  }
  try {
    const value = msgpackDecode(body);
    return { value, text: null, format: 'msgpack', encrypted: false };
  } catch (err) {
    throw new WSEError('INVALID_FRAME', `bad msgpack: ${String(err)}`);
  }
}

function parseJsonBytes(bytes: Uint8Array): Omit<DecodedFrame, 'wireBytes'> {
  let text: string;
  try {
    text = utf8Decode(bytes);
  } catch {
    throw new WSEError('INVALID_FRAME', 'JSON frame is not valid UTF-8');
  }
  return parseJsonText(text);
}

function parseJsonText(text: string): Omit<DecodedFrame, 'wireBytes'> {
  try {
    return { value: JSON.parse(text), text, format: 'json', encrypted: false };
  } catch {
    throw new WSEError('INVALID_FRAME', 'text frame is not JSON');
  }
}

function stripLegacyPrefix(text: string): string {
  for (const prefix of LEGACY_PREFIXES) {
    if (text.startsWith(prefix)) return text.slice(prefix.length - 1);
  }
  return text;
}

function toBytes(data: ArrayBuffer | ArrayBufferView): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  return new Uint8Array(data);
}

class InflateLimit extends Error {}

const M_PREFIX = utf8Encode('M:');
const ZLIB_HEADER = 0x78;
const OPEN_BRACE = 0x7b;
const LEGACY_PREFIXES = ['WSE{', 'S{', 'U{'] as const;
const INFLATE_CHUNK = 64 * 1024;
