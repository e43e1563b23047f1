/**
 * HMAC-SHA256 signing of JSON text (PROTOCOL.md §6, an **ext**).
 *
 * The signer appends `"sig"` as the last key; the signed bytes are the JSON
 * text up to (not including) the `,"sig":` that starts that key, followed by
 * `}`. An object that was empty is sent as `{"sig":"..."}` and its signed
 * bytes are `{}`. Nothing is re-serialised, so a verifier needs no JSON
 * parser. The key is the E2E session's signing key on an E2E connection,
 * else a shared secret (see `e2e.ts`, `importHmacKey`).
 *
 * wse-server signs JSON text frames as §6 says: under the E2E key once E2E
 * is agreed (`server_hello` included), else under the shared secret; sealed
 * `E:` frames carry no signature, AES-GCM under the session key already
 * authenticates them; inbound plaintext on an E2E connection is checked
 * under the E2E key.
 */

import { fromBase64, toBase64, utf8Encode } from './bytes.js';

/** Outcome of {@link verifySignature}. */
export type SignatureCheck = 'unsigned' | 'valid' | 'invalid';

/** `json` (one JSON object) with `"sig"` appended as its last key. */
export async function signJson(key: CryptoKey, json: string): Promise<string> {
  const end = json.lastIndexOf('}');
  if (!json.startsWith('{') || end < 0) {
    throw new TypeError('signJson: text is not a JSON object');
  }
  const head = json.slice(0, end).trimEnd();
  const empty = head === '{';
  const signed = empty ? '{}' : `${head}}`;
  const mac = await crypto.subtle.sign('HMAC', key, utf8Encode(signed));
  const sig = `"sig":"${toBase64(new Uint8Array(mac))}"}`;
  return empty ? `{${sig}` : `${head},${sig}`;
}

/**
 * Checks the `"sig"` key of a JSON text frame: `unsigned` when the frame has
 * none as its last key, `valid` or `invalid` otherwise (constant-time check).
 */
export async function verifySignature(
  key: CryptoKey,
  json: string,
): Promise<SignatureCheck> {
  const parts = splitSignature(json);
  if (parts === null) return 'unsigned';
  let sig: Uint8Array<ArrayBuffer>;
  try {
    sig = fromBase64(parts.sig);
  } catch {
    return 'invalid';
  }
  if (sig.length !== MAC_LEN) return 'invalid';
  const ok = await crypto.subtle.verify(
    'HMAC',
    key,
    sig,
    utf8Encode(parts.signed),
  );
  return ok ? 'valid' : 'invalid';
}

/** True when the JSON text ends with a `"sig"` key (cheap pre-check). */
export function hasSignature(json: string): boolean {
  return splitSignature(json) !== null;
}

function splitSignature(json: string): { signed: string; sig: string } | null {
  const text = json.trimEnd();
  if (!text.endsWith('}')) return null;
  let at = text.lastIndexOf(MARK);
  let signedHead: string;
  if (at >= 0) {
    signedHead = text.slice(0, at);
    at += MARK.length;
  } else if (text.startsWith(EMPTY_MARK)) {
    signedHead = '{';
    at = EMPTY_MARK.length;
  } else {
    return null;
  }
  // The value: a base64 string, then only whitespace and the final brace.
  if (text[at] !== '"') return null;
  const close = text.indexOf('"', at + 1);
  if (close < 0 || text.slice(close + 1, -1).trim() !== '') return null;
  return { signed: `${signedHead}}`, sig: text.slice(at + 1, close) };
}

const MARK = ',"sig":';
const EMPTY_MARK = '{"sig":';
const MAC_LEN = 32;
