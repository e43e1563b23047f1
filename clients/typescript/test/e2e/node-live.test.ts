/**
 * The core client on Node 20 (sockets from the `ws` package) against the
 * real wse-server: publications, recovery, E2E, signing, msgpack and C:
 * frames.
 */

import { afterEach, describe, expect, test } from 'vitest';
import WebSocket from 'ws';

import {
  WSEClient,
  type WSEClientOptions,
  type WSEMessage,
} from '../../src/core/index.js';
import {
  startServer,
  waitFor,
  type RunningServer,
} from '../support/wse-server.js';

const servers: RunningServer[] = [];
const clients: WSEClient[] = [];

afterEach(async () => {
  clients.splice(0).forEach((c) => c.dispose());
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

function client(url: string, extra: Partial<WSEClientOptions> = {}): WSEClient {
  const c = new WSEClient({
    endpoints: [url],
    createWebSocket: (u, { headers }) => new WebSocket(u, { headers }),
    eventTarget: null,
    reconnection: { baseDelayMs: 50, maxDelayMs: 500 },
    ...extra,
  });
  clients.push(c);
  return c;
}

function collect(c: WSEClient, type: string): WSEMessage[] {
  const got: WSEMessage[] = [];
  c.on(type, (m) => got.push(m));
  return got;
}

describe('core client against wse-server', () => {
  test('receives a publication from another client', async () => {
    const server = await startServer(['--allow-client-publish']);
    servers.push(server);
    const sub = client(server.url, { topics: ['news'] });
    const got = collect(sub, 'news');
    sub.connect();
    await waitFor(() => sub.activeTopics.includes('news'), 5_000, 'subscribed');
    const pub = client(server.url);
    pub.connect();
    await waitFor(() => pub.isConnected, 5_000, 'publisher ready');
    await pub.publish('news', { text: 'hello' });
    await waitFor(() => got.length === 1, 5_000, 'publication');
    expect(got[0]!.payload).toEqual({ text: 'hello' });
    expect(got[0]!.topic).toBe('news');
    expect(got[0]!.offset).toBe(0);
  });
});

describe('delivery guarantees against wse-server', () => {
  test('recovers publications missed during a reconnect', async () => {
    const server = await startServer(['--allow-client-publish']);
    servers.push(server);
    const sub = client(server.url, { topics: ['ticks'] });
    const got = collect(sub, 'ticks');
    sub.connect();
    await waitFor(
      () => sub.activeTopics.includes('ticks'),
      5_000,
      'subscribed',
    );
    const pub = client(server.url, { topics: ['ticks'] });
    const echoed = collect(pub, 'ticks');
    pub.connect();
    await waitFor(
      () => pub.activeTopics.includes('ticks'),
      5_000,
      'publisher ready',
    );
    for (let i = 0; i < 3; i++) await pub.publish('ticks', { i });
    await waitFor(() => got.length === 3, 5_000, 'first three');

    // Drop the subscriber, publish while it is away, let it come back.
    sub.disconnect();
    for (let i = 3; i < 8; i++) await pub.publish('ticks', { i });
    // The server has published them once a subscriber has them all.
    await waitFor(() => echoed.length === 8, 5_000, 'published while away');
    sub.connect();
    await waitFor(() => got.length === 8, 5_000, 'all eight');
    expect(got.map((m) => m.offset)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const d = sub.getState().diagnostics;
    expect(d.recoveriesSucceeded).toBe(1);
    expect(d.recoveriesFailed).toBe(0);
  });

  test('resyncs to the new epoch after a server restart', async () => {
    const first = await startServer(['--allow-client-publish']);
    servers.push(first);
    const port = first.port;
    const outcomes: Array<{ topic: string; recovered: boolean }> = [];
    const sub = client(first.url, { topics: ['ticks'] });
    sub.events.on('recovery', (o) => outcomes.push(o));
    const got = collect(sub, 'ticks');
    sub.connect();
    await waitFor(
      () => sub.activeTopics.includes('ticks'),
      5_000,
      'subscribed',
    );
    const pub = client(first.url);
    pub.connect();
    await waitFor(() => pub.isConnected, 5_000, 'publisher ready');
    for (let i = 0; i < 5; i++) await pub.publish('ticks', { i });
    await waitFor(() => got.length === 5, 5_000, 'five before restart');
    const oldEpoch = got[0]!.epoch;

    await first.stop();
    const second = await startServer(['--allow-client-publish'], port);
    servers.push(second);
    await waitFor(
      () => sub.isConnected && pub.isConnected,
      10_000,
      'reconnect',
    );
    await waitFor(() => outcomes.length === 1, 5_000, 'recovery answer');
    expect(outcomes[0]).toMatchObject({ topic: 'ticks', recovered: false });
    await waitFor(
      () => sub.activeTopics.includes('ticks'),
      5_000,
      'resubscribed',
    );
    await pub.publish('ticks', { i: 'after' });
    await waitFor(() => got.length === 6, 5_000, 'publication after restart');
    const last = got[5]!;
    expect(last.payload).toEqual({ i: 'after' });
    expect(last.epoch).not.toBe(oldEpoch);
    expect(last.offset).toBe(0);
    expect(sub.getState().diagnostics.recoveriesFailed).toBe(1);
  });
});

describe('frame formats and security against wse-server', () => {
  test('agrees E2E keys and opens sealed publications', async () => {
    const server = await startServer(['--allow-client-publish']);
    servers.push(server);
    const sub = client(server.url, { topics: ['secret'], encryption: true });
    const got = collect(sub, 'secret');
    sub.connect();
    await waitFor(
      () => sub.activeTopics.includes('secret'),
      5_000,
      'subscribed',
    );
    expect(sub.getState().encrypted).toBe(true);
    const pub = client(server.url, { encryption: { required: true } });
    pub.connect();
    await waitFor(() => pub.isConnected, 5_000, 'publisher ready');
    await pub.publish('secret', { code: 42 });
    await waitFor(() => got.length === 1, 5_000, 'sealed publication');
    expect(got[0]!.encrypted).toBe(true);
    expect(got[0]!.payload).toEqual({ code: 42 });
    expect(sub.getState().diagnostics.decryptFailures).toBe(0);
  });

  test('verifies signed publications with the shared secret', async () => {
    const secret = 'node-live-signing-secret-0123456789';
    const server = await startServer([
      '--allow-client-publish',
      '--signing-secret',
      secret,
      '--sign-outbound',
      '*',
    ]);
    servers.push(server);
    const sub = client(server.url, {
      topics: ['signed'],
      signingSecret: secret,
      requireSignatures: true,
    });
    const got = collect(sub, 'signed');
    sub.connect();
    await waitFor(
      () => sub.activeTopics.includes('signed'),
      5_000,
      'subscribed',
    );
    const pub = client(server.url);
    pub.connect();
    await waitFor(() => pub.isConnected, 5_000, 'publisher ready');
    await pub.publish('signed', { n: 1 });
    await waitFor(() => got.length === 1, 5_000, 'signed publication');
    expect(got[0]!.verified).toBe(true);

    // The same server seen with the wrong secret: everything is refused.
    const wrong = client(server.url, {
      topics: ['signed'],
      signingSecret: 'not-the-secret-not-the-secret-000',
    });
    wrong.connect();
    await waitFor(
      () => wrong.getState().diagnostics.badSignatures > 0,
      5_000,
      'bad signatures counted',
    );
    expect(wrong.isConnected).toBe(false);
  });

  test('signed and sealed: E2E clients with and without the shared secret', async () => {
    const secret = 'node-live-signing-secret-0123456789';
    const server = await startServer([
      '--allow-client-publish',
      '--signing-secret',
      secret,
      '--sign-outbound',
      '*',
    ]);
    servers.push(server);
    const e2e = { encryption: { required: true }, requireSignatures: true };
    const withSecret = client(server.url, {
      ...e2e,
      topics: ['both'],
      signingSecret: secret,
    });
    const e2eOnly = client(server.url, { ...e2e, topics: ['both'] });
    const packed = client(server.url, {
      ...e2e,
      topics: ['both'],
      format: 'msgpack',
    });
    const got = [withSecret, e2eOnly, packed].map((c) => collect(c, 'both'));
    [withSecret, e2eOnly, packed].forEach((c) => c.connect());
    await waitFor(
      () =>
        [withSecret, e2eOnly, packed].every((c) =>
          c.activeTopics.includes('both'),
        ),
      5_000,
      'subscribed',
    );
    await withSecret.publish('both', { n: 7 });
    await waitFor(() => got.every((g) => g.length === 1), 5_000, 'delivered');
    // Sealed frames carry no signature (PROTOCOL §6: AES-GCM authenticates
    // them), whether or not the client also holds the shared secret; the
    // plaintext ones (server_hello, PONG) verified under the E2E key.
    for (const received of [got[0]![0], got[1]![0]]) {
      expect(received).toMatchObject({
        encrypted: true,
        verified: false,
        payload: { n: 7 },
      });
    }
    for (const c of [withSecret, e2eOnly]) {
      expect(c.getState().diagnostics.unverifiableSignatures).toBe(0);
      expect(c.getState().diagnostics.badSignatures).toBe(0);
    }
    // msgpack inside E: is never signed (signing covers JSON text only).
    expect(got[2]![0]).toMatchObject({
      encrypted: true,
      format: 'msgpack',
      payload: { n: 7 },
    });
    expect(withSecret.getState().diagnostics.badSignatures).toBe(0);
  });

  test('reads msgpack and C: frames', async () => {
    const server = await startServer([
      '--allow-client-publish',
      '--compression-threshold',
      '64',
      '--disable-permessage-deflate',
    ]);
    servers.push(server);
    const packed = client(server.url, { topics: ['big'], format: 'msgpack' });
    const plain = client(server.url, { topics: ['big'] });
    const gotPacked = collect(packed, 'big');
    const gotPlain = collect(plain, 'big');
    packed.connect();
    plain.connect();
    await waitFor(
      () => packed.activeTopics.length === 1 && plain.activeTopics.length === 1,
      5_000,
      'subscribed',
    );
    const data = {
      rows: Array.from({ length: 50 }, (_, i) => ({ i, v: 'x'.repeat(10) })),
    };
    await plain.publish('big', data);
    await waitFor(
      () => gotPacked.length === 1 && gotPlain.length === 1,
      5_000,
      'both',
    );
    expect(gotPacked[0]!.payload).toEqual(data);
    expect(gotPacked[0]!.format).toBe('msgpack');
    expect(gotPlain[0]!.payload).toEqual(data);
    expect(gotPlain[0]!.format).toBe('compressed');
  });
});
