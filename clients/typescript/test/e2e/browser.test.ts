/**
 * wse-client in real headless Chromium against the real wse-server: a
 * page built from the package's dist/ renders two components on `useWSE`
 * (one shared connection), receives publications as window events,
 * recovers what it missed over a plain reconnect, resyncs after a server
 * restart (new epoch), and opens E2E-sealed messages with WebCrypto.
 */

import path from 'node:path';

import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';

import { WSEClient } from '../../src/core/index.js';
import { buildPackage, buildPage, packageRoot } from '../support/build.js';
import {
  launchChromium,
  serveDirectory,
  type LaunchedBrowser,
  type StaticServer,
} from '../support/chromium.js';
import {
  startServer,
  waitFor,
  type RunningServer,
} from '../support/wse-server.js';

interface PageMessage {
  payload: unknown;
  epoch?: string;
  offset?: number;
  encrypted: boolean;
}

let server: RunningServer;
let site: StaticServer;
let chromium: LaunchedBrowser;
let page: Page;
let publisher: WSEClient;
/** What the publisher itself receives of `ticks` (it is a subscriber too). */
const echoed: number[] = [];
const pageErrors: string[] = [];

beforeAll(async () => {
  buildPackage();
  const out = await buildPage(path.join(packageRoot, 'test/e2e/page'));
  site = await serveDirectory(out);
  server = await startServer(['--allow-client-publish']);
  chromium = await launchChromium();
  page = await chromium.browser.newPage();
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  await page.goto(`${site.url}/?ws=${encodeURIComponent(server.url)}`);
  publisher = startPublisher(server.url);
});

afterAll(async () => {
  publisher?.dispose();
  await chromium?.close();
  await site?.close();
  await server?.stop();
});

function startPublisher(url: string): WSEClient {
  const client = new WSEClient({
    endpoints: [url],
    createWebSocket: (u, { headers }) => new WebSocket(u, { headers }),
    eventTarget: null,
    reconnection: { baseDelayMs: 100, maxDelayMs: 1_000 },
    topics: ['ticks'],
  });
  client.on('ticks', (m) => echoed.push(m.offset ?? -1));
  client.connect();
  return client;
}

async function pageValue<T>(fn: string): Promise<T> {
  return page.evaluate(fn) as Promise<T>;
}

async function until(
  fn: string,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  await page
    .waitForFunction(fn, undefined, { timeout: timeoutMs })
    .catch((err) => {
      throw new Error(`timed out waiting for ${what}: ${String(err)}`);
    });
}

const received = () => pageValue<PageMessage[]>('window.__wse.received');

describe('wse-client in headless Chromium', () => {
  test('two components share one connection and get a publication', async () => {
    await until(
      "window.__wse.hook && window.__wse.hook.isConnected && window.__wse.hook.activeTopics.includes('ticks')",
      'the hook to connect and subscribe',
    );
    await waitFor(() => publisher.isConnected, 5_000, 'publisher');
    await publisher.publish('ticks', { i: 0 });
    await until('window.__wse.received.length === 1', 'the first publication');
    const [first] = await received();
    expect(first!.payload).toEqual({ i: 0 });
    expect(first!.offset).toBe(0);
    expect(await pageValue<number>('window.__wse.liveClients()')).toBe(1);
    expect(await pageValue<number>('window.__wse.storeConnects()')).toBe(1);
    await until(
      "document.getElementById('topics').textContent.split(',').sort().join() === 'other,ticks'",
      'the second component topics',
    );
  });

  test('recovers what it missed over a plain reconnect', async () => {
    await page.evaluate('window.__wse.hook.client.disconnect()');
    await until('!window.__wse.hook.isConnected', 'the disconnect');
    for (let i = 1; i <= 4; i++) await publisher.publish('ticks', { i });
    // The server has published all four once a subscriber has them.
    await waitFor(() => echoed.includes(4), 5_000, 'the four publications');
    await page.evaluate('window.__wse.hook.client.connect()');
    await until('window.__wse.received.length === 5', 'the four missed ones');
    const offsets = (await received()).map((m) => m.offset);
    expect(offsets).toEqual([0, 1, 2, 3, 4]);
    const recoveries = await pageValue<
      Array<{ recovered: boolean; count: number }>
    >('window.__wse.recoveries');
    expect(recoveries).toEqual([
      expect.objectContaining({ topic: 'ticks', recovered: true, count: 4 }),
    ]);
  });

  test('survives a server restart and resyncs to the new epoch', async () => {
    const before = await received();
    const oldEpoch = before[0]!.epoch;
    const port = server.port;
    await server.stop();
    await until(
      '!window.__wse.hook.isConnected',
      'the page to notice the restart',
    );
    server = await startServer(['--allow-client-publish'], port);
    await until(
      'window.__wse.hook.isConnected && window.__wse.recoveries.length === 2',
      'reconnect and the recovery answer',
      15_000,
    );
    const outcome = (
      await pageValue<Array<{ recovered: boolean; epoch: string | null }>>(
        'window.__wse.recoveries',
      )
    )[1]!;
    expect(outcome).toMatchObject({ topic: 'ticks', recovered: false });
    await waitFor(() => publisher.isConnected, 10_000, 'publisher reconnect');
    await publisher.publish('ticks', { i: 'after restart' });
    await until(
      'window.__wse.received.length === 6',
      'a publication after restart',
    );
    const last = (await received())[5]!;
    expect(last.payload).toEqual({ i: 'after restart' });
    expect(last.epoch).not.toBe(oldEpoch);
    expect(last.offset).toBe(0);
  });

  test('decrypts an E2E message with WebCrypto', async () => {
    const encrypted = await page.evaluate(
      "window.__wse.startEncrypted('secret')",
    );
    expect(encrypted).toBe(true);
    await publisher.publish('secret', { code: 42 });
    await until('window.__wse.secret.length === 1', 'the sealed publication');
    const [msg] = await pageValue<PageMessage[]>('window.__wse.secret');
    expect(msg!.encrypted).toBe(true);
    expect(msg!.payload).toEqual({ code: 42 });
    expect(pageErrors).toEqual([]);
  });
});
