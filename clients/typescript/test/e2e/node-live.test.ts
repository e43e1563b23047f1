/**
 * The core client on Node 20 (sockets from the `ws` package) against the
 * real wse-server: publications, recovery, E2E, signing, msgpack and C:
 * frames.
 */

import { afterEach, describe, expect, test } from 'vitest';
import WebSocket from 'ws';

import { WSEClient, type WSEClientOptions, type WSEMessage } from '../../src/core/index.js';
import { startServer, waitFor, type RunningServer } from '../support/wse-server.js';

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
