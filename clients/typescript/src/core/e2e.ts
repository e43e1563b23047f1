/**
 * End-to-end encryption (PROTOCOL.md §5) and signing keys (§6) on WebCrypto.
 *
 * Place in the data path: the connection manager makes a {@link E2EKeyPair}
 * before `client_hello`, sends its public key, and turns the server's key
 * from `server_hello` into an {@link E2ESession}; the codec then opens
 * inbound `E:` frames and seals outbound messages with it.
 *
 * Key agreement: ECDH on P-256 gives the 32-byte x-coordinate (the IKM);
 * HKDF-SHA256 with no salt derives the AES-256-GCM key (info
 * `wse-encryption/aes-gcm-key`) and the HMAC-SHA256 signing key (info
 * `wse-signing/hmac-sha256`). A frame is `E:`, a 12-byte random IV, the
 * ciphertext and the 16-byte tag, with no additional data. WebCrypto keeps
 * the private key non-extractable; no key bytes leave this module except the
 * public key.
 */

import {
  concatBytes,
  fromBase64,
  startsWith,
  toBase64,
  utf8Encode,
} from './bytes.js';
import { WSEError } from './errors.js';

/** The client's ephemeral key pair for one connection. */
export class E2EKeyPair {
  private constructor(
    private readonly privateKey: CryptoKey,
    /** 65-byte uncompressed SEC1 point in standard base64. */
    readonly publicKeyBase64: string,
  ) {}

  /** A fresh P-256 key pair; throws when WebCrypto is unavailable. */
  static async generate(): Promise<E2EKeyPair> {
    const pair = await subtle().generateKey(
      { name: 'ECDH', namedCurve: 'P-256' },
      false,
      ['deriveBits'],
    );
    const raw = new Uint8Array(await subtle().exportKey('raw', pair.publicKey));
    return new E2EKeyPair(pair.privateKey, toBase64(raw));
  }

  /**
   * Agrees on session keys with the server's public key (base64 of the
   * 65-byte point). Throws `KEY_EXCHANGE_FAILED` on a malformed key.
   */
  async agree(serverPublicKeyBase64: string): Promise<E2ESession> {
    let ikm: ArrayBuffer;
    try {
      const raw = fromBase64(serverPublicKeyBase64);
      if (raw.length !== PUBLIC_KEY_LEN || raw[0] !== 0x04) {
        throw new Error(`expected a ${PUBLIC_KEY_LEN}-byte uncompressed point`);
      }
      const peer = await subtle().importKey(
        'raw',
        raw,
        { name: 'ECDH', namedCurve: 'P-256' },
        false,
        [],
      );
      ikm = await subtle().deriveBits(
        { name: 'ECDH', public: peer },
        this.privateKey,
        256,
      );
    } catch (err) {
      throw new WSEError(
        'KEY_EXCHANGE_FAILED',
        `server public key unusable: ${String(err)}`,
      );
    }
    return E2ESession.fromIkm(new Uint8Array(ikm));
  }
}

/** The keys agreed for one connection. */
export class E2ESession {
  private constructor(
    private readonly aesKey: CryptoKey,
    /** HMAC key of PROTOCOL §6 on this connection. */
    readonly signingKey: CryptoKey,
  ) {}

  /** Derives both keys from the ECDH x-coordinate (exposed for tests). */
  static async fromIkm(ikm: Uint8Array<ArrayBuffer>): Promise<E2ESession> {
    const base = await subtle().importKey('raw', ikm, 'HKDF', false, [
      'deriveKey',
      'deriveBits',
    ]);
    const aesKey = await subtle().deriveKey(
      hkdfParams(AES_KEY_INFO),
      base,
      { name: 'AES-GCM', length: 256 },
      false,
      ['encrypt', 'decrypt'],
    );
    const signingBytes = await subtle().deriveBits(
      hkdfParams(SIGNING_KEY_INFO),
      base,
      256,
    );
    return new E2ESession(aesKey, await importHmacKey(signingBytes));
  }

  /** `E:` + IV + ciphertext + tag of `plaintext`, under a fresh random IV. */
  async seal(
    plaintext: Uint8Array<ArrayBuffer>,
  ): Promise<Uint8Array<ArrayBuffer>> {
    const iv = globalThis.crypto.getRandomValues(new Uint8Array(IV_LEN));
    const sealed = await subtle().encrypt(
      { name: 'AES-GCM', iv, tagLength: 128 },
      this.aesKey,
      plaintext,
    );
    return concatBytes(E_PREFIX, iv, new Uint8Array(sealed));
  }

  /** The plaintext of an `E:` frame; throws `DECRYPT_FAILED`. */
  async open(frame: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    if (!startsWith(frame, 'E:') || frame.length < MIN_FRAME_LEN) {
      throw new WSEError('DECRYPT_FAILED', 'E: frame too short');
    }
    const iv = frame.slice(2, 2 + IV_LEN);
    const body = frame.slice(2 + IV_LEN);
    try {
      const plain = await subtle().decrypt(
        { name: 'AES-GCM', iv, tagLength: 128 },
        this.aesKey,
        body,
      );
      return new Uint8Array(plain);
    } catch {
      throw new WSEError('DECRYPT_FAILED', 'E: frame failed authentication');
    }
  }
}

/** An HMAC-SHA256 key from raw bytes (a shared secret or HKDF output). */
export async function importHmacKey(
  secret: ArrayBuffer | Uint8Array<ArrayBuffer> | string,
): Promise<CryptoKey> {
  const bytes = typeof secret === 'string' ? utf8Encode(secret) : secret;
  return subtle().importKey(
    'raw',
    bytes,
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign', 'verify'],
  );
}

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (s === undefined) {
    throw new WSEError(
      'KEY_EXCHANGE_FAILED',
      'WebCrypto (crypto.subtle) is unavailable: a secure context is needed',
    );
  }
  return s;
}

function hkdfParams(info: Uint8Array<ArrayBuffer>): HkdfParams {
  // An empty salt is RFC 5869's "not provided": HMAC pads it to zeros.
  return { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info };
}

const E_PREFIX = utf8Encode('E:');
const AES_KEY_INFO = utf8Encode('wse-encryption/aes-gcm-key');
const SIGNING_KEY_INFO = utf8Encode('wse-signing/hmac-sha256');
const PUBLIC_KEY_LEN = 65;
const IV_LEN = 12;
const TAG_LEN = 16;
const MIN_FRAME_LEN = 2 + IV_LEN + TAG_LEN;
