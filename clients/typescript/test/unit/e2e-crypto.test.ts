/**
 * E2E and signing against the known-answer vectors of
 * scripts/e2e_vectors.py (computed with Python `cryptography`, the library
 * the 2.x Python client uses), so this WebCrypto code, the Rust server and
 * an independent implementation agree byte for byte.
 */

import { describe, expect, test } from 'vitest';

import {
  E2EKeyPair,
  E2ESession,
  importHmacKey,
  signJson,
  verifySignature,
  WSEError,
} from '../../src/core/index.js';

const V = {
  clientScalar:
    '2329f36e7d62747357f144328cd33604a820d8c635f053e97973606821bd239a',
  clientPublic:
    'BGBLKh27MtSiNsx3S/FT5vKVR+sRy7SW97dASbmE5k7UAk5nhE8hvT3v6kYzhZ2hebonQUIlFAcJaPuuh3mQCOw=',
  serverPublic:
    'BNtZy0FrIV9gW3bg1dl2dXp2Veax+M/Gf0VkIPO+eY0SZVtK61kqJL8Km1bWkZKiYmBB00Nm0G18XeJ1bw+PD1o=',
  sharedX: 'f09ada6cd2ceeb4ad3420e0ffcb2c5e30c482b64803f6d8b1c43381f37d5a991',
  signingKey:
    'a95c92d5587dc17080551c1f09ab255e708995e108f25aa24325989d9e5686fe',
  plaintext: '{"c":"U","t":"price","p":{"sym":"ACME","px":101.25},"v":1}',
  frame:
    '453a000102030405060708090a0b0a709de9dfc40f2c90be132f735942253a888ae75b779c2351cce5d4fd58a48ead648131a5ba0d3f552890b94e0f5794fb5def69d6a72ad614574d402d3f32dd905ae2ef346fabd8c921',
  signInput: '{"c":"U","t":"note","p":{"text":"hello"},"v":1}',
  signed:
    '{"c":"U","t":"note","p":{"text":"hello"},"v":1,"sig":"cBh5ZOBnx5qg4QsWpw0SCbPCTdNsE+bifA6+tcsxqko="}',
  signedEmpty: '{"sig":"EzJKHxd/INmRg5cveF7C5PWYO7dfUyxp2iiK3Obhxt0="}',
};

function hex(s: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(s.match(/../g)!.map((b) => parseInt(b, 16)));
}

function b64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '');
}

describe('E2E key agreement and sealing (PROTOCOL §5)', () => {
  test('ECDH of the vector keys gives the vector x-coordinate', async () => {
    const pub = Uint8Array.from(atob(V.clientPublic), (c) => c.charCodeAt(0));
    const jwk = {
      kty: 'EC',
      crv: 'P-256',
      d: b64url(hex(V.clientScalar)),
      x: b64url(pub.slice(1, 33)),
      y: b64url(pub.slice(33)),
    };
    const priv = await crypto.subtle.importKey(
      'jwk',
      jwk,
      { name: 'ECDH', namedCurve: 'P-256' },
      false,
      ['deriveBits'],
    );
    const serverRaw = Uint8Array.from(atob(V.serverPublic), (c) =>
      c.charCodeAt(0),
    );
    const server = await crypto.subtle.importKey(
      'raw',
      serverRaw,
      { name: 'ECDH', namedCurve: 'P-256' },
      false,
      [],
    );
    const x = new Uint8Array(
      await crypto.subtle.deriveBits(
        { name: 'ECDH', public: server },
        priv,
        256,
      ),
    );
    expect(Buffer.from(x).toString('hex')).toBe(V.sharedX);
  });

  test('opens the vector frame with keys derived from the x-coordinate', async () => {
    const session = await E2ESession.fromIkm(hex(V.sharedX));
    const plain = await session.open(hex(V.frame));
    expect(new TextDecoder().decode(plain)).toBe(V.plaintext);
    expect(await verifySignature(session.signingKey, V.signed)).toBe('valid');
  });

  test('round-trips between two fresh key pairs with random IVs', async () => {
    const [a, b] = await Promise.all([
      E2EKeyPair.generate(),
      E2EKeyPair.generate(),
    ]);
    expect(atob(a.publicKeyBase64).length).toBe(65);
    const [sa, sb] = await Promise.all([
      a.agree(b.publicKeyBase64),
      b.agree(a.publicKeyBase64),
    ]);
    const text = new TextEncoder().encode(V.plaintext);
    const f1 = await sa.seal(text);
    const f2 = await sa.seal(text);
    expect(
      Buffer.from(f1.slice(2, 14)).equals(Buffer.from(f2.slice(2, 14))),
    ).toBe(false);
    expect(new TextDecoder().decode(await sb.open(f1))).toBe(V.plaintext);
  });

  test('refuses tampered frames and unusable server keys', async () => {
    const session = await E2ESession.fromIkm(hex(V.sharedX));
    const frame = hex(V.frame);
    frame[20] = frame[20]! ^ 1;
    await expect(session.open(frame)).rejects.toMatchObject({
      code: 'DECRYPT_FAILED',
    });
    await expect(session.open(hex('453a0001'))).rejects.toMatchObject({
      code: 'DECRYPT_FAILED',
    });
    const pair = await E2EKeyPair.generate();
    await expect(pair.agree('AAAA')).rejects.toBeInstanceOf(WSEError);
    const offCurve = btoa(
      String.fromCharCode(4, ...new Uint8Array(64).fill(1)),
    );
    await expect(pair.agree(offCurve)).rejects.toMatchObject({
      code: 'KEY_EXCHANGE_FAILED',
    });
  });
});

describe('signing (PROTOCOL §6)', () => {
  test('produces the vector signatures', async () => {
    const key = await importHmacKey(hex(V.signingKey));
    expect(await signJson(key, V.signInput)).toBe(V.signed);
    expect(await signJson(key, '{}')).toBe(V.signedEmpty);
    expect(await verifySignature(key, V.signedEmpty)).toBe('valid');
  });

  test('tells unsigned, valid and tampered frames apart', async () => {
    const key = await importHmacKey('a shared secret of reasonable length');
    const signed = await signJson(key, '{"t":"x","p":{"n":1}}');
    expect(await verifySignature(key, signed)).toBe('valid');
    expect(await verifySignature(key, signed.replace('"n":1', '"n":2'))).toBe(
      'invalid',
    );
    expect(await verifySignature(key, '{"t":"x"}')).toBe('unsigned');
    expect(await verifySignature(key, '{"t":"x","sig":"!!"}')).toBe('invalid');
    const other = await importHmacKey('another secret');
    expect(await verifySignature(other, signed)).toBe('invalid');
  });
});
