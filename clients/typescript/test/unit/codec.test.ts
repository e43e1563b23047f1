import { encode } from '@msgpack/msgpack';
import { deflate } from 'pako';
import { describe, expect, test } from 'vitest';

import {
  decodeFrame,
  encodeMessage,
  inflateCapped,
  WSEError,
} from '../../src/core/index.js';

const options = { maxMessageBytes: 1024 * 1024, session: null };
const env = { c: 'U', t: 'news', p: { text: 'hello' }, v: 1 };
const json = JSON.stringify(env);

function withPrefix(prefix: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(prefix.length + body.length);
  out.set(new TextEncoder().encode(prefix));
  out.set(body, prefix.length);
  return out;
}

async function rejection(p: Promise<unknown>): Promise<WSEError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof WSEError) return err;
    throw err;
  }
  throw new Error('expected a WSEError');
}

describe('codec', () => {
  test('reads JSON text frames and strips legacy prefixes', async () => {
    expect((await decodeFrame(json, options)).value).toEqual(env);
    const legacy = await decodeFrame(`WSE${json}`, options);
    expect(legacy.value).toEqual(env);
    expect((await decodeFrame(`U${json}`, options)).text).toBe(json);
  });

  test('reads C: frames, bare zlib, M: frames and binary JSON', async () => {
    const z = deflate(new TextEncoder().encode(json));
    const c = await decodeFrame(withPrefix('C:', z), options);
    expect(c).toMatchObject({ value: env, format: 'compressed', text: json });
    expect((await decodeFrame(z.buffer, options)).format).toBe('zlib');
    const m = await decodeFrame(withPrefix('M:', encode(env)), options);
    expect(m).toMatchObject({ value: env, format: 'msgpack', text: null });
    const b = await decodeFrame(new TextEncoder().encode(json), options);
    expect(b).toMatchObject({ value: env, format: 'json' });
  });

  test('refuses unknown binary, bad JSON, bad zlib and early E: frames', async () => {
    expect(
      (await rejection(decodeFrame(new Uint8Array([1, 2]), options))).code,
    ).toBe('INVALID_FRAME');
    expect((await rejection(decodeFrame('{nope', options))).code).toBe(
      'INVALID_FRAME',
    );
    const truncated = deflate(new TextEncoder().encode(json)).subarray(0, 10);
    expect(
      (await rejection(decodeFrame(withPrefix('C:', truncated), options))).code,
    ).toBe('INVALID_FRAME');
    const sealed = withPrefix('E:', new Uint8Array(40));
    expect((await rejection(decodeFrame(sealed, options))).code).toBe(
      'DECRYPT_FAILED',
    );
    const badUtf8 = new Uint8Array([0x7b, 0xff, 0x7d]);
    expect((await rejection(decodeFrame(badUtf8, options))).code).toBe(
      'INVALID_FRAME',
    );
  });

  test('stops inflating a zlib bomb at the limit', () => {
    const bomb = deflate(new Uint8Array(8 * 1024 * 1024));
    expect(bomb.length).toBeLessThan(16 * 1024);
    expect(() => inflateCapped(bomb, 1024 * 1024)).toThrowError(
      expect.objectContaining({ code: 'INFLATE_LIMIT' }),
    );
    expect(inflateCapped(bomb, 8 * 1024 * 1024).length).toBe(8 * 1024 * 1024);
  });

  test('encodes JSON text, signed text and M: frames', async () => {
    expect(await encodeMessage(env, { format: 'json', session: null })).toBe(
      json,
    );
    const signed = await encodeMessage(env, {
      format: 'json',
      session: null,
      sign: async (text) => `${text.slice(0, -1)},"sig":"x"}`,
    });
    expect(signed).toBe(`${json.slice(0, -1)},"sig":"x"}`);
    const packed = await encodeMessage(env, {
      format: 'msgpack',
      session: null,
    });
    expect(typeof packed).not.toBe('string');
    const back = await decodeFrame(packed as Uint8Array, options);
    expect(back.value).toEqual(env);
  });
});
