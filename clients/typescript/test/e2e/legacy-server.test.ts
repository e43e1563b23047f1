/**
 * Compatibility: the core client on Node 20 (`ws` sockets) against the
 * published wse-server 2.5.1 engine, the server generation already
 * deployed. Handshake, publications, recovery over a reconnect, E2E.
 */

import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';

import {
  WSEClient,
  type WSEClientOptions,
  type WSEMessage,
} from '../../src/core/index.js';
import { startLegacyServer, type LegacyServer } from '../support/wse25.js';
import { waitFor } from '../support/wse-server.js';

let server: LegacyServer;
const clients: WSEClient[] = [];

beforeAll(async () => {
  server = await startLegacyServer();
});

afterAll(async () => {
  clients.forEach((c) => c.dispose());
  await server?.stop();
});

function client(extra: Partial<WSEClientOptions> = {}): WSEClient {
  const c = new WSEClient({
    endpoints: [server.url],
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

describe('wse-client against wse-server 2.5.1', () => {
  test('handshakes, subscribes and receives publications', async () => {
    const c = client({ topics: ['prices'] });
    const hello = collect(c, 'server_hello');
    const got = collect(c, 'prices');
    c.connect();
    await waitFor(
      () => c.activeTopics.includes('prices'),
      10_000,
      'subscribed',
    );
    expect(hello[0]!.payload).toMatchObject({ server_version: '2.5.1' });
    server.publish('prices', { sym: 'ACME', px: 101.25 });
    server.publish('prices', { sym: 'ACME', px: 101.5 });
    await waitFor(() => got.length === 2, 5_000, 'two publications');
    expect(got.map((m) => m.payload)).toEqual([
      { sym: 'ACME', px: 101.25 },
      { sym: 'ACME', px: 101.5 },
    ]);
    expect(got.map((m) => m.offset)).toEqual([0, 1]);
    await waitFor(() => c.getState().latencyMs !== null, 5_000, 'a PONG');
  });

  test('recovers publications missed during a reconnect', async () => {
    const c = client({ topics: ['ledger'] });
    const got = collect(c, 'ledger');
    c.connect();
    await waitFor(
      () => c.activeTopics.includes('ledger'),
      10_000,
      'subscribed',
    );
    server.publish('ledger', { n: 0 });
    await waitFor(() => got.length === 1, 5_000, 'first');
    const watcher = client({ topics: ['ledger'] });
    const watched = collect(watcher, 'ledger');
    watcher.connect();
    await waitFor(
      () => watcher.activeTopics.includes('ledger'),
      10_000,
      'watcher',
    );
    c.disconnect();
    for (let n = 1; n <= 3; n++) server.publish('ledger', { n });
    // Published once a subscriber that stayed has all three.
    await waitFor(() => watched.length === 3, 5_000, 'published while away');
    c.connect();
    await waitFor(() => got.length === 4, 10_000, 'the missed three');
    expect(got.map((m) => m.offset)).toEqual([0, 1, 2, 3]);
    expect(c.getState().diagnostics.recoveriesSucceeded).toBe(1);
  });

  test('agrees E2E keys with the 2.x engine', async () => {
    const c = client({ topics: ['vault'], encryption: { required: true } });
    const got = collect(c, 'vault');
    c.connect();
    await waitFor(() => c.activeTopics.includes('vault'), 10_000, 'subscribed');
    expect(c.getState().encrypted).toBe(true);
    server.publish('vault', { secret: true });
    await waitFor(() => got.length === 1, 5_000, 'sealed publication');
    expect(got[0]!.encrypted).toBe(true);
    expect(got[0]!.payload).toEqual({ secret: true });
  });
});
