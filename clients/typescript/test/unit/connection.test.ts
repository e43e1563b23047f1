/**
 * The connection manager's close policy, failover, liveness and circuit
 * breaker, through the whole client against a scripted WebSocket server
 * (real sockets in the test process).
 */

import { afterEach, describe, expect, test } from 'vitest';

import {
  WSEClient,
  type WSEClientOptions,
  type WSEError,
} from '../../src/core/index.js';
import {
  scriptedOptions,
  startScripted,
  type ScriptedServer,
} from '../support/scripted-server.js';
import { waitFor } from '../support/wse-server.js';

const servers: ScriptedServer[] = [];
const clients: WSEClient[] = [];

afterEach(async () => {
  clients.splice(0).forEach((c) => c.dispose());
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function scripted(...args: Parameters<typeof startScripted>) {
  const s = await startScripted(...args);
  servers.push(s);
  return s;
}

function client(opts: WSEClientOptions): { c: WSEClient; errors: WSEError[] } {
  const c = new WSEClient(opts);
  const errors: WSEError[] = [];
  c.events.on('error', (e) => errors.push(e));
  clients.push(c);
  c.connect();
  return { c, errors };
}

describe('close policy', () => {
  test.each([
    [1000, null],
    [1008, 'POLICY_VIOLATION'],
    [4401, 'AUTH_FAILED'],
  ])('close %i stops for good (%s)', async (code, error) => {
    const s = await scripted();
    const { c, errors } = client(scriptedOptions(s.url));
    await waitFor(() => c.isConnected, 5_000, 'connected');
    s.close(code);
    await waitFor(
      () => c.getState().connectionState === 'stopped',
      5_000,
      'stopped',
    );
    await new Promise((r) => setTimeout(r, 150));
    expect(s.requests.length).toBe(1);
    expect(errors.map((e) => e.code)).toEqual(error === null ? [] : [error]);
    expect(c.getState().lastClose?.code).toBe(code);
  });

  test('1011 and 1012 reconnect with backoff, and subscriptions follow', async () => {
    const s = await scripted();
    const { c } = client(scriptedOptions(s.url, { topics: ['a'] }));
    await waitFor(() => c.activeTopics.includes('a'), 5_000, 'subscribed');
    s.close(1011);
    await waitFor(
      () => s.requests.length === 2 && c.isConnected,
      5_000,
      'second',
    );
    s.close(1012);
    await waitFor(
      () => s.requests.length === 3 && c.isConnected,
      5_000,
      'third',
    );
    await waitFor(() => c.activeTopics.includes('a'), 5_000, 'resubscribed');
    expect(c.getState().diagnostics.connects).toBe(3);
  });

  test('4401 calls refreshAuthToken and retries with the new token', async () => {
    const s = await scripted({
      onConnection: (req) =>
        req.headers.authorization === 'Bearer fresh' ? undefined : 4401,
    });
    let refreshes = 0;
    const { c } = client(
      scriptedOptions(s.url, {
        token: 'stale',
        refreshAuthToken: async () => {
          refreshes++;
          return 'fresh';
        },
      }),
    );
    await waitFor(() => c.isConnected, 5_000, 'connected after refresh');
    expect(refreshes).toBe(1);
    expect(s.requests[0]!.headers.authorization).toBe('Bearer stale');
    expect(s.requests[1]!.headers.cookie).toBe('access_token=fresh');
  });

  test('a refresh that fails, or refreshes that do not help, stop the client', async () => {
    const s = await scripted({ onConnection: () => 4403 });
    let refreshes = 0;
    const { c, errors } = client(
      scriptedOptions(s.url, {
        refreshAuthToken: async () => {
          refreshes++;
        },
      }),
    );
    await waitFor(
      () => c.getState().connectionState === 'stopped',
      5_000,
      'stopped',
    );
    expect(refreshes).toBe(3);
    expect(errors.at(-1)?.code).toBe('AUTH_FAILED');
  });

  test('4300 fails over to the other endpoint at once', async () => {
    const a = await scripted();
    const b = await scripted();
    const { c } = client(
      scriptedOptions([a.url, b.url], { pool: { strategy: 'round-robin' } }),
    );
    await waitFor(() => c.isConnected, 5_000, 'connected');
    const first = c.getState().endpoint;
    const [drained, other] = first === a.url ? [a, b] : [b, a];
    drained.close(4300, 'lame duck');
    await waitFor(
      () => other.requests.length === 1 && c.isConnected,
      5_000,
      'failover',
    );
    expect(c.getState().endpoint).toBe(other.url);
    expect(
      c.endpointHealth().find((e) => e.url === drained.url)!.score,
    ).toBeLessThan(100);
  });
});

describe('liveness and retries', () => {
  test('a silent connection is replaced after the liveness timeout', async () => {
    const s = await scripted();
    const { c } = client(
      scriptedOptions(s.url, {
        heartbeatIntervalMs: 50,
        livenessTimeoutMs: 200,
      }),
    );
    await waitFor(() => c.isConnected, 5_000, 'connected');
    // Stop answering: pause the socket so nothing reaches the client.
    s.sockets[0]!.pause();
    await waitFor(() => s.requests.length === 2, 5_000, 'a new connection');
    expect(c.getState().lastClose).toMatchObject({
      code: 4000,
      reason: 'heartbeat timeout',
    });
  });

  test('heartbeats measure latency', async () => {
    const s = await scripted();
    const { c } = client(
      scriptedOptions(s.url, {
        heartbeatIntervalMs: 30,
        livenessTimeoutMs: 1_000,
      }),
    );
    await waitFor(
      () => c.getState().latencyHistory.length >= 3,
      5_000,
      'three PONGs',
    );
    expect(
      s.received.filter((m) => m.t === 'ping').length,
    ).toBeGreaterThanOrEqual(3);
    expect(c.getState().quality).toBe('excellent');
  });

  test('the circuit breaker stops the retry storm against a dead endpoint', async () => {
    const s = await scripted();
    const dead = s.url;
    await s.stop();
    servers.length = 0;
    const { c } = client(
      scriptedOptions(dead, {
        reconnection: { baseDelayMs: 1, maxDelayMs: 5, jitter: 0 },
        circuitBreaker: { failureThreshold: 3, openMs: 60_000 },
      }),
    );
    await waitFor(
      () => c.getState().diagnostics.reconnectAttempts >= 2,
      5_000,
      'attempts',
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(c.getState().diagnostics.reconnectAttempts).toBe(2);
    expect(c.getState().circuit).toBe('open');
  });

  test('maxAttempts ends with RECONNECT_EXHAUSTED', async () => {
    const s = await scripted();
    const dead = s.url;
    await s.stop();
    servers.length = 0;
    const { c, errors } = client(
      scriptedOptions(dead, {
        reconnection: { baseDelayMs: 1, maxDelayMs: 5, maxAttempts: 2 },
      }),
    );
    await waitFor(
      () => c.getState().connectionState === 'stopped',
      5_000,
      'stopped',
    );
    expect(errors.at(-1)?.code).toBe('RECONNECT_EXHAUSTED');
  });
});
