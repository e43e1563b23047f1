import { describe, expect, test } from 'vitest';

import {
  E2ESession,
  importHmacKey,
  MessageProcessor,
  signJson,
  type WSEMessage,
} from '../../src/core/index.js';

async function processor(opts: {
  keys?: CryptoKey[];
  session?: E2ESession | null;
  requireSignatures?: boolean;
  maxPending?: number;
}) {
  const p = new MessageProcessor({
    maxMessageBytes: 1 << 20,
    maxPending: opts.maxPending ?? 100,
    session: () => opts.session ?? null,
    signingKeys: async () => opts.keys ?? [],
    requireSignatures: opts.requireSignatures ?? false,
  });
  const delivered: WSEMessage[] = [];
  const rejected: string[] = [];
  let unverifiable = 0;
  p.on('message', (m) => delivered.push(m));
  p.on('rejected', (e) => rejected.push(e.code));
  p.on('unverifiable', () => unverifiable++);
  return { p, delivered, rejected, unverifiable: () => unverifiable };
}

const text = (t: string, extra: object = {}) =>
  JSON.stringify({ t, p: 1, ...extra });

describe('MessageProcessor', () => {
  test('keeps frame order across async decryption', async () => {
    const session = await E2ESession.fromIkm(new Uint8Array(32).fill(7));
    const { p, delivered } = await processor({ session });
    for (let i = 0; i < 20; i++) {
      const frame = text('n', { id: `id${i}` });
      p.push(
        i % 2 === 0
          ? await session.seal(new TextEncoder().encode(frame))
          : frame,
      );
    }
    await p.idle();
    expect(delivered.map((m) => m.id)).toEqual(
      Array.from({ length: 20 }, (_, i) => `id${i}`),
    );
    expect(delivered.filter((m) => m.encrypted)).toHaveLength(10);
  });

  test('requireSignatures: unsigned plaintext is dropped, signed or sealed kept', async () => {
    const key = await importHmacKey('processor-test-secret');
    const session = await E2ESession.fromIkm(new Uint8Array(32).fill(1));
    const { p, delivered, rejected } = await processor({
      keys: [key],
      session,
      requireSignatures: true,
    });
    p.push(text('plain'));
    p.push(await signJson(key, text('signed')));
    p.push(await session.seal(new TextEncoder().encode(text('sealed'))));
    p.push(text('PONG'));
    p.push((await signJson(key, text('forged'))).replace('"p":1', '"p":2'));
    await p.idle();
    expect(delivered.map((m) => [m.type, m.verified])).toEqual([
      ['signed', true],
      ['sealed', false],
      ['PONG', false],
    ]);
    expect(rejected).toEqual(['BAD_SIGNATURE', 'BAD_SIGNATURE']);
  });

  test('a sealed message signed under an unknown key is kept and counted', async () => {
    const other = await importHmacKey('the server shared secret');
    const session = await E2ESession.fromIkm(new Uint8Array(32).fill(2));
    const { p, delivered, unverifiable } = await processor({
      keys: [session.signingKey],
      session,
    });
    const signed = await signJson(other, text('pub'));
    p.push(await session.seal(new TextEncoder().encode(signed)));
    await p.idle();
    expect(delivered.map((m) => [m.type, m.verified, m.encrypted])).toEqual([
      ['pub', false, true],
    ]);
    expect(unverifiable()).toBe(1);
  });

  test('reports overload past maxPending and drops frames of an old connection', async () => {
    const { p, delivered } = await processor({ maxPending: 2 });
    let overloads = 0;
    p.on('overload', () => overloads++);
    p.push(text('a', { id: '1' }));
    p.push(text('a', { id: '2' }));
    p.push(text('a', { id: '3' }));
    p.reset();
    await p.idle();
    expect(overloads).toBe(1);
    expect(delivered).toHaveLength(0);
  });
});
