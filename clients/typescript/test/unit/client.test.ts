/**
 * The client's session logic against a scripted server: handshake,
 * processing (dedup, seq and topic gaps, recovery requests), dispatch to
 * handlers and window events, and the outbound path (priority buffer,
 * rate limit, offline queue).
 */

import { afterEach, describe, expect, test } from 'vitest';

import {
  OfflineQueue,
  Priority,
  WSEClient,
  type WSEClientOptions,
  type WSEMessage,
} from '../../src/core/index.js';
import {
  scriptedOptions,
  startScripted,
  type ScriptedServer,
} from '../support/scripted-server.js';
import { waitFor } from '../support/wse-server.js';

const servers: ScriptedServer[] = [];
const clients: WSEClient[] = [];
let dbCounter = 0;

afterEach(async () => {
  clients.splice(0).forEach((c) => c.dispose());
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function setup(
  extra: Partial<WSEClientOptions> = {},
  script: Parameters<typeof startScripted>[0] = {},
) {
  const s = await startScripted(script);
  servers.push(s);
  const c = new WSEClient(scriptedOptions(s.url, extra));
  clients.push(c);
  return { s, c };
}

const pub = (topic: string, o: number, extra: object = {}) => ({
  c: 'U',
  t: topic,
  p: { o },
  id: `${topic}-${o}`,
  tp: topic,
  e: 'e1',
  o,
  ...extra,
});

/** One token, then one every 500 ms: a burst waits in the buffer. */
const SLOW = { capacity: 1, refillPerSecond: 2 };

/** Sends one message that takes the token, then three that wait. */
async function sendFour(c: WSEClient) {
  return [
    await c.sendMessage('chat', 'first'),
    await c.sendMessage('chat', 'low', { priority: Priority.LOW }),
    await c.sendMessage('chat', 'normal'),
    await c.sendMessage('chat', 'critical', { priority: Priority.CRITICAL }),
  ];
}

/** Payloads of the `chat` messages a server received, in order. */
function chat(s: ScriptedServer): unknown[] {
  return s.received.filter((m) => m.t === 'chat').map((m) => m.p);
}

async function waitForAsync(
  check: () => Promise<boolean>,
  what: string,
): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function collect(c: WSEClient, type: string): WSEMessage[] {
  const got: WSEMessage[] = [];
  c.on(type, (m) => got.push(m));
  return got;
}

describe('handshake', () => {
  test('answers server_ready with client_hello, then subscribes', async () => {
    const { s, c } = await setup({
      topics: ['a', 'b'],
      clientVersion: 'test/1',
    });
    c.connect();
    await waitFor(() => c.activeTopics.length === 2, 5_000, 'subscribed');
    const [hello, sub] = s.received;
    expect(hello).toMatchObject({
      t: 'client_hello',
      p: { client_version: 'test/1', protocol_version: 1 },
    });
    expect(sub).toMatchObject({
      t: 'subscription_update',
      p: { action: 'subscribe', topics: ['a', 'b'] },
    });
    expect(c.getState()).toMatchObject({
      connectionState: 'connected',
      connectionId: 'c1',
      userId: 'u1',
    });
    const url = new URL(s.requests[0]!.url!, 'ws://x');
    expect(url.searchParams.get('client_version')).toBe('test/1');
  });

  test('says hello anyway when server_ready never comes (2.x servers)', async () => {
    const { s, c } = await setup({ readyTimeoutMs: 50 }, { ready: false });
    c.connect();
    await waitFor(() => c.isConnected, 5_000, 'ready');
    // The hello is on its way once the client says it is connected.
    await waitFor(() => s.received.length > 0, 5_000, 'client_hello');
    expect(s.received[0]!.t).toBe('client_hello');
  });

  test('with encryption required, a server without E2E is left', async () => {
    const { c } = await setup({ encryption: { required: true } });
    const errors: string[] = [];
    c.events.on('error', (e) => errors.push(e.code));
    c.connect();
    await waitFor(
      () => c.getState().connectionState === 'stopped',
      5_000,
      'stopped',
    );
    expect(errors).toContain('KEY_EXCHANGE_FAILED');
    expect(c.isConnected).toBe(false);
  });

  test('msgpack format asks for M: frames in the URL', async () => {
    const { s, c } = await setup({ format: 'msgpack' });
    c.connect();
    await waitFor(() => s.requests.length === 1, 5_000, 'request');
    expect(
      new URL(s.requests[0]!.url!, 'ws://x').searchParams.get('format'),
    ).toBe('msgpack');
  });
});

describe('inbound processing', () => {
  test('dispatches to handlers, "*" and window CustomEvents by type', async () => {
    const target = new EventTarget();
    const { s, c } = await setup({ topics: ['news'], eventTarget: target });
    const typed = collect(c, 'news');
    const all = collect(c, '*');
    const events: unknown[] = [];
    target.addEventListener('news', (e) =>
      events.push((e as CustomEvent).detail),
    );
    c.connect();
    await waitFor(() => c.activeTopics.includes('news'), 5_000, 'subscribed');
    s.send(pub('news', 0));
    await waitFor(() => typed.length === 1, 5_000, 'delivered');
    expect(events).toEqual([typed[0]]);
    expect(all.some((m) => m.type === 'news')).toBe(true);
  });

  test('drops repeated ids and offsets, counts seq gaps without waiting', async () => {
    const { s, c } = await setup({ topics: ['news'] });
    const got = collect(c, 'news');
    const direct = collect(c, 'note');
    c.connect();
    await waitFor(() => c.activeTopics.includes('news'), 5_000, 'subscribed');
    s.send(pub('news', 0));
    s.send(pub('news', 0));
    s.send(pub('news', 1, { id: 'other-id' }));
    s.send(pub('news', 1, { id: 'third-id' }));
    s.send({ t: 'note', p: 1, seq: 10 });
    s.send({ t: 'note', p: 2, seq: 11 });
    await waitFor(() => direct.length === 2, 5_000, 'direct messages');
    expect(got.map((m) => m.offset)).toEqual([0, 1]);
    const d = c.getState().diagnostics;
    expect(d.duplicatesDropped).toBe(2);
    expect(d.seqGaps).toBe(1);
  });

  test('a gap in offsets asks for recovery once, and a filtered topic never', async () => {
    const { s, c } = await setup(
      { topics: ['news', 'deals'] },
      { filtered: ['deals'] },
    );
    const got = collect(c, 'news');
    const gaps: unknown[] = [];
    c.events.on('gap', (g) => gaps.push(g));
    c.connect();
    await waitFor(() => c.activeTopics.length === 2, 5_000, 'subscribed');
    s.send(pub('news', 0));
    s.send(pub('news', 3));
    s.send(pub('news', 5));
    s.send(pub('deals', 0));
    s.send(pub('deals', 7));
    await waitFor(() => got.length === 3, 5_000, 'delivered despite gaps');
    await waitFor(
      () => s.received.some((m) => m.p['recover'] === true),
      5_000,
      'recovery request',
    );
    await new Promise((r) => setTimeout(r, 50));
    const requests = s.received.filter((m) => m.p['recover'] === true);
    expect(requests).toHaveLength(1);
    expect(requests[0]!.p).toMatchObject({
      topics: ['news'],
      recovery: { news: { epoch: 'e1', offset: 0 } },
    });
    expect(gaps).toHaveLength(3);
    expect(c.getState().diagnostics.recoveriesFailed).toBe(1);
  });

  test('server errors surface as events, not window "error"', async () => {
    const target = new EventTarget();
    const { s, c } = await setup({ eventTarget: target });
    const seen: string[] = [];
    target.addEventListener('wse:error', () => seen.push('wse:error'));
    target.addEventListener('error', () => seen.push('error'));
    const errors: string[] = [];
    c.events.on('error', (e) => errors.push(e.message));
    c.connect();
    await waitFor(() => c.isConnected, 5_000, 'ready');
    s.send({ t: 'error', p: { code: 'FORBIDDEN', message: 'no' } });
    s.send('not json' as unknown as object);
    await waitFor(() => errors.length === 2, 5_000, 'errors');
    expect(errors[0]).toBe('FORBIDDEN: no');
    expect(seen).toEqual(['wse:error']);
    expect(c.getState().diagnostics.invalidFrames).toBe(1);
  });
});

describe('outbound', () => {
  test('messages sent before the connection leave by priority once ready', async () => {
    const { s, c } = await setup();
    await c.sendMessage('chat', 'normal');
    await c.sendMessage('chat', 'critical', { priority: Priority.CRITICAL });
    await c.sendMessage('chat', 'low', { priority: Priority.LOW });
    expect(c.queueStore.getState().items).toHaveLength(3);
    c.connect();
    await waitFor(
      () => s.received.filter((m) => m.t === 'chat').length === 3,
      5_000,
      'sent',
    );
    const sent = s.received.filter((m) => m.t === 'chat').map((m) => m.p);
    expect(sent).toEqual(['critical', 'normal', 'low']);
    expect(await c.sendMessage('chat', 'now')).toBe('sent');
  });

  test('the token bucket paces outbound messages', async () => {
    const { s, c } = await setup({
      rateLimit: { capacity: 2, refillPerSecond: 20 },
    });
    c.connect();
    await waitFor(() => c.isConnected, 5_000, 'ready');
    const results = await Promise.all(
      [0, 1, 2, 3].map((i) => c.sendMessage('burst', i)),
    );
    expect(results.slice(0, 2)).toEqual(['sent', 'sent']);
    expect(results[2]).toBe('buffered');
    const start = Date.now();
    await waitFor(
      () => s.received.filter((m) => m.t === 'burst').length === 4,
      5_000,
      'all',
    );
    expect(Date.now() - start).toBeGreaterThanOrEqual(60);
  });

  test('the offline queue keeps messages across clients and replays them by priority', async () => {
    const dbName = `client-offline-${dbCounter++}`;
    const { s, c } = await setup({ offline: { dbName } });
    expect(
      await c.sendMessage('order', 'bg', { priority: Priority.BACKGROUND }),
    ).toBe('queued-offline');
    expect(
      await c.sendMessage('order', 'high', { priority: Priority.HIGH }),
    ).toBe('queued-offline');
    c.dispose();
    // A new client (a reloaded page) with the same database sends them.
    const next = new WSEClient(scriptedOptions(s.url, { offline: { dbName } }));
    clients.push(next);
    next.connect();
    await waitFor(
      () => s.received.filter((m) => m.t === 'order').length === 2,
      5_000,
      'replayed',
    );
    expect(s.received.filter((m) => m.t === 'order').map((m) => m.p)).toEqual([
      'high',
      'bg',
    ]);
    expect(next.getState().diagnostics.offlineReplayed).toBe(2);
  });

  test('with the offline queue on, the buffer moves to IndexedDB when the connection drops and survives a reload', async () => {
    const dbName = `client-offline-${dbCounter++}`;
    const { s, c } = await setup({ offline: { dbName }, rateLimit: SLOW });
    c.connect();
    await waitFor(() => c.isConnected, 5_000, 'ready');
    expect(await sendFour(c)).toEqual([
      'sent',
      'buffered',
      'buffered',
      'buffered',
    ]);

    await s.stop();
    const stored = new OfflineQueue({ dbName });
    await waitForAsync(async () => (await stored.size()) === 3, 'parked');
    stored.close();
    expect(c.queueStore.getState().items).toEqual([]);
    expect(c.getState().diagnostics.offlineQueued).toBe(3);
    c.dispose();

    // A new client (a reloaded page) with the same database sends them.
    const { s: s2, c: next } = await setup({ offline: { dbName } });
    next.connect();
    await waitFor(() => chat(s2).length === 3, 5_000, 'replayed');
    await new Promise((r) => setTimeout(r, 100));
    expect(chat(s2)).toEqual(['critical', 'normal', 'low']);
    expect(next.getState().diagnostics.offlineReplayed).toBe(3);
  });

  test('with the offline queue on, a reconnect sends what the drop parked once, by priority', async () => {
    const dbName = `client-offline-${dbCounter++}`;
    const { s, c } = await setup({ offline: { dbName }, rateLimit: SLOW });
    c.connect();
    await waitFor(() => c.isConnected, 5_000, 'ready');
    await sendFour(c);

    s.close(4000, 'drop');
    await waitFor(() => chat(s).length === 4, 10_000, 'sent after reconnect');
    await new Promise((r) => setTimeout(r, 100));
    expect(chat(s)).toEqual(['first', 'critical', 'normal', 'low']);
    expect(s.requests).toHaveLength(2);
    const d = c.getState().diagnostics;
    expect([d.offlineQueued, d.offlineReplayed]).toEqual([3, 3]);
    expect(c.queueStore.getState().items).toEqual([]);
    const stored = new OfflineQueue({ dbName });
    expect(await stored.size()).toBe(0);
    stored.close();
  });

  test('a full offline queue leaves what it refuses in the buffer', async () => {
    const dbName = `client-offline-${dbCounter++}`;
    const { s, c } = await setup({
      offline: { dbName, maxSize: 2 },
      rateLimit: SLOW,
    });
    c.connect();
    await waitFor(() => c.isConnected, 5_000, 'ready');
    await sendFour(c);

    await s.stop();
    await waitFor(
      () => c.getState().diagnostics.offlineQueued === 2,
      5_000,
      'parked',
    );
    expect(c.queueStore.getState().items.map((m) => m.payload)).toEqual([
      'low',
    ]);
    const stored = new OfflineQueue({ dbName });
    expect(await stored.size()).toBe(2);
    stored.close();
  });

  test('a message whose write finds the connection gone is parked too', async () => {
    const dbName = `client-offline-${dbCounter++}`;
    const { c } = await setup({ offline: { dbName } });
    c.connect();
    await waitFor(() => c.isConnected, 5_000, 'ready');
    // The pump has taken the message from the buffer; its write is pending.
    const sent = c.sendMessage('chat', 'in flight');
    c.disconnect();
    expect(await sent).toBe('buffered');
    const stored = new OfflineQueue({ dbName });
    await waitForAsync(async () => (await stored.size()) === 1, 'parked');
    stored.close();
    expect(c.queueStore.getState().items).toEqual([]);
  });

  test('with the offline queue off, the buffer waits in memory for the next connection', async () => {
    const { s, c } = await setup({ rateLimit: SLOW });
    c.connect();
    await waitFor(() => c.isConnected, 5_000, 'ready');
    await sendFour(c);

    const kept: number[] = [];
    c.events.on('close', () => kept.push(c.queueStore.getState().items.length));
    s.close(4000, 'drop');
    await waitFor(() => chat(s).length === 4, 10_000, 'sent after reconnect');
    expect(kept).toEqual([3]);
    expect(chat(s)).toEqual(['first', 'critical', 'normal', 'low']);
    expect(c.getState().diagnostics.offlineQueued).toBe(0);
  });

  test('bad arguments are refused with INVALID_ARGUMENT', async () => {
    const { c } = await setup();
    expect(() => c.subscribe('has space')).toThrowError(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => c.subscribe('x'.repeat(257))).toThrow(/invalid topic/);
    await expect(c.sendMessage('', 1)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
    expect(
      () =>
        new WSEClient(
          scriptedOptions('ws://x/wse', { heartbeatIntervalMs: -1 }),
        ),
    ).toThrow(/heartbeatMs/);
  });
});
