/**
 * The WSE envelope (PROTOCOL.md §3): what every message looks like once its
 * frame has been opened, and how outbound messages are built.
 *
 * Place in the data path: `codec` turns frames into plain objects, this
 * module turns those objects into {@link WSEMessage}s (aliases resolved,
 * category derived) for the processor; outbound, the client builds envelopes
 * here before `codec` serialises them. Pure functions, no I/O, no clock: the
 * time of a message is a parameter.
 */

/** Message priority on the wire (`pri`); higher leaves first. */
export const Priority = {
  CRITICAL: 10,
  HIGH: 8,
  NORMAL: 5,
  LOW: 3,
  BACKGROUND: 1,
} as const;
export type PriorityValue = (typeof Priority)[keyof typeof Priority];

/** Category (`c`): system messages, snapshots and updates. */
export type Category = 'WSE' | 'S' | 'U';

/** A decoded inbound message, as handlers and window events receive it. */
export interface WSEMessage {
  /** Event type (`t`); also the name of the window event it is dispatched as. */
  readonly type: string;
  /** Payload (`p`), any JSON value. */
  readonly payload: unknown;
  readonly category: Category;
  /** Priority, NORMAL (5) when the sender gave none. */
  readonly priority: number;
  readonly id?: string;
  /** Creation time as sent (ISO-8601). */
  readonly timestamp?: string;
  /** Per-connection sequence number of direct messages. */
  readonly seq?: number;
  readonly correlationId?: string;
  /** Topic, epoch and offset: present on topic publications only. */
  readonly topic?: string;
  readonly epoch?: string;
  readonly offset?: number;
  /** True when the frame carried a signature that was checked (PROTOCOL §6). */
  readonly verified: boolean;
  /** True when the message arrived sealed in an `E:` frame (PROTOCOL §5). */
  readonly encrypted: boolean;
  /** Wire format of the frame (PROTOCOL §4); inside `E:` for sealed ones. */
  readonly format: 'json' | 'compressed' | 'zlib' | 'msgpack';
}

/** An outbound envelope, ready for serialisation. */
export interface OutboundEnvelope {
  c: Category;
  t: string;
  p: unknown;
  id: string;
  ts: string;
  v: 1;
  seq?: number;
  pri?: number;
  cid?: string;
}

/** Options of one outbound message. */
export interface SendOptions {
  /** PROTOCOL §3 priority; NORMAL by default. */
  priority?: number;
  /** Correlation id, echoed by the server on replies. */
  correlationId?: string;
}

/** PROTOCOL §3 category rule: derived from the type when absent. */
export function categoryOf(type: string): Category {
  if (type.includes('_snapshot') || type.startsWith('snapshot_')) return 'S';
  return SYSTEM_TYPES.has(type) ? 'WSE' : 'U';
}

/**
 * Builds a {@link WSEMessage} from a decoded JSON or msgpack object; `null`
 * when the object is not an envelope (no string `t`/`type`).
 */
export function toMessage(
  raw: unknown,
  flags: Pick<WSEMessage, 'verified' | 'encrypted' | 'format'>,
): WSEMessage | null {
  if (!isRecord(raw)) return null;
  const type = raw['t'] ?? raw['type'];
  if (typeof type !== 'string' || type.length === 0) return null;
  const payload = 'p' in raw ? raw['p'] : raw['payload'];
  const category = raw['c'];
  const msg: Mutable<WSEMessage> = {
    type,
    payload: payload ?? null,
    category: isCategory(category) ? category : categoryOf(type),
    priority: typeof raw['pri'] === 'number' ? raw['pri'] : Priority.NORMAL,
    ...flags,
  };
  copyString(raw, 'id', msg, 'id');
  copyString(raw, 'ts', msg, 'timestamp');
  copyString(raw, 'cid', msg, 'correlationId');
  copyString(raw, 'tp', msg, 'topic');
  copyString(raw, 'e', msg, 'epoch');
  copyInteger(raw, 'seq', msg, 'seq');
  copyInteger(raw, 'o', msg, 'offset');
  return msg;
}

/** A fresh outbound envelope; `now` is the creation time in ms. */
export function makeEnvelope(
  type: string,
  payload: unknown,
  now: number,
  options: SendOptions = {},
): OutboundEnvelope {
  const env: OutboundEnvelope = {
    c: categoryOf(type),
    t: type,
    p: payload,
    id: uuidv7(now),
    ts: new Date(now).toISOString(),
    v: 1,
  };
  if (options.priority !== undefined && options.priority !== Priority.NORMAL) {
    env.pri = options.priority;
  }
  if (options.correlationId !== undefined) env.cid = options.correlationId;
  return env;
}

/**
 * A UUIDv7 (RFC 9562): 48 bits of milliseconds, then random bits. The ids
 * of one client sort by creation time, like the server's.
 */
export function uuidv7(now: number): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  let ms = Math.max(0, Math.floor(now));
  for (let i = 5; i >= 0; i--) {
    bytes[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  bytes[6] = (bytes[6]! & 0x0f) | 0x70;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0'));
  return [
    hex.slice(0, 4).join(''),
    hex.slice(4, 6).join(''),
    hex.slice(6, 8).join(''),
    hex.slice(8, 10).join(''),
    hex.slice(10).join(''),
  ].join('-');
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function isCategory(value: unknown): value is Category {
  return value === 'WSE' || value === 'S' || value === 'U';
}

function copyString<K extends keyof WSEMessage>(
  raw: Record<string, unknown>,
  key: string,
  msg: Mutable<WSEMessage>,
  field: K,
): void {
  const value = raw[key];
  if (typeof value === 'string')
    (msg as Record<string, unknown>)[field] = value;
}

function copyInteger<K extends keyof WSEMessage>(
  raw: Record<string, unknown>,
  key: string,
  msg: Mutable<WSEMessage>,
  field: K,
): void {
  const value = raw[key];
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) {
    (msg as Record<string, unknown>)[field] = value;
  }
}

/** PROTOCOL §3: the types whose category is `WSE`. */
const SYSTEM_TYPES: ReadonlySet<string> = new Set([
  'server_ready',
  'server_hello',
  'client_hello_ack',
  'connection_state_change',
  'subscription_update',
  'snapshot_complete',
  'error',
  'ping',
  'pong',
  'PONG',
]);
