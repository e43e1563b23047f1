#!/usr/bin/env node
// The live dashboard in one command (`npm run demo`, or `make tsclient-demo`
// from the repository root):
//
//   1. builds the package (tsc → dist/) and the dashboard (vite → build/demo);
//   2. starts wse-server (env WSE_SERVER, else ../../target/release/wse-server)
//      on 127.0.0.1 with client publishing on;
//   3. starts a publisher (the package's core client on Node, `ws` sockets)
//      that sends market ticks and notifications;
//   4. serves the dashboard on http://127.0.0.1:5173 (DEMO_PORT) and prints
//      the URL. Ctrl-C stops everything.
//
// `--screenshot FILE` instead opens the dashboard in headless Chromium
// (Debian's /usr/bin/chromium through playwright-core), waits for live
// data, saves a PNG and exits. `--seconds N` exits after N seconds.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const repo = path.resolve(root, '../..');
const args = parseArgs(process.argv.slice(2));

main().catch((err) => {
  console.error(`demo: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});

async function main() {
  const outDir = path.join(root, 'build/demo');
  buildAll(outDir);
  const server = await startWseServer();
  const cleanups = [() => server.kill('SIGTERM')];
  const stop = () => {
    cleanups.reverse().forEach((fn) => fn());
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  const publisher = await startPublisher(server.url);
  cleanups.push(() => publisher.stop());
  const site = await serve(outDir, Number(process.env.DEMO_PORT ?? 5173));
  cleanups.push(() => site.close());
  const page = `${site.url}/?ws=${encodeURIComponent(server.url)}`;

  if (args.screenshot !== undefined) {
    await screenshot(page, path.resolve(args.screenshot));
    stop();
    return;
  }
  console.log(`demo: wse-server on ${server.url}`);
  console.log(`demo: dashboard on ${page}`);
  console.log('demo: Ctrl-C to stop');
  if (args.seconds !== undefined) setTimeout(stop, args.seconds * 1000);
}

function buildAll(outDir) {
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], {
    cwd: root,
    stdio: 'inherit',
  });
  const vite = path.join(root, 'node_modules/vite/bin/vite.js');
  execFileSync(
    process.execPath,
    [vite, 'build', '--config', 'demo/vite.config.mjs', '--outDir', outDir],
    { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] },
  );
}

async function startWseServer() {
  const bin =
    process.env.WSE_SERVER ?? path.join(repo, 'target/release/wse-server');
  if (!existsSync(bin)) {
    throw new Error(
      `no wse-server at ${bin}: run \`make build\` or set WSE_SERVER`,
    );
  }
  const flags = ['--host', '127.0.0.1', '--port', process.env.WSE_PORT ?? '0'];
  const proc = spawn(bin, [...flags, '--allow-client-publish'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout }).once('line', resolve);
    proc.once('exit', (code) =>
      reject(new Error(`wse-server exited with ${code}`)),
    );
  });
  const match = /listening on (\S+)/.exec(line);
  if (match === null) throw new Error(`unexpected wse-server output: ${line}`);
  proc.url = `ws://${match[1]}/wse`;
  return proc;
}

async function startPublisher(url) {
  const { WSEClient } = await import(path.join(root, 'dist/core/index.js'));
  const { default: WebSocket } = await import('ws');
  const client = new WSEClient({
    endpoints: [url],
    createWebSocket: (u, { headers }) => new WebSocket(u, { headers }),
    eventTarget: null,
  });
  client.connect();
  const prices = { ACME: 101.25, GLOBEX: 48.1, INITECH: 12.4, UMBRELLA: 230.5 };
  const symbols = Object.keys(prices);
  let n = 0;
  const tick = setInterval(() => {
    if (!client.isConnected) return;
    const sym = symbols[n++ % symbols.length];
    const change = Math.round((Math.random() - 0.5) * prices[sym] * 0.8) / 100;
    prices[sym] = Math.round((prices[sym] + change) * 100) / 100;
    void client.publish('market', { sym, price: prices[sym], change });
  }, 300);
  const notes = setInterval(() => {
    if (!client.isConnected) return;
    const level = ['info', 'info', 'warning'][n % 3];
    void client.publish('notifications', { level, text: `event #${n}` });
  }, 2_500);
  return {
    stop() {
      clearInterval(tick);
      clearInterval(notes);
      client.dispose();
    },
  };
}

function serve(dir, port) {
  const types = {
    '.html': 'text/html',
    '.js': 'text/javascript',
    '.css': 'text/css',
  };
  const server = createServer((req, res) => {
    const rel = decodeURIComponent(
      new URL(req.url ?? '/', 'http://x').pathname,
    );
    let file = path.join(dir, path.normalize(rel));
    if (!file.startsWith(dir) || !existsSync(file)) {
      res.writeHead(404).end('not found');
      return;
    }
    if (statSync(file).isDirectory()) file = path.join(file, 'index.html');
    res.writeHead(200, {
      'content-type': types[path.extname(file)] ?? 'application/octet-stream',
    });
    res.end(readFileSync(file));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        close: () => server.close(),
      });
    });
  });
}

async function screenshot(url, file) {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
    ],
  });
  try {
    const page = await browser.newPage({
      viewport: { width: 1280, height: 760 },
    });
    await page.goto(url);
    // Live data: a full stream, a latency line, and every symbol quoted.
    await page.waitForFunction(
      () =>
        document.querySelectorAll('[data-testid=stream] tbody tr').length >=
          14 &&
        document.querySelector('[data-testid=sparkline] polyline') !== null &&
        document.querySelectorAll('tbody tr').length >= 18,
      undefined,
      { timeout: 30_000 },
    );
    await page.waitForTimeout(6_000);
    await page.screenshot({ path: file });
    console.log(`demo: screenshot saved to ${file}`);
  } finally {
    await browser.close();
  }
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--screenshot') out.screenshot = argv[++i];
    else if (argv[i] === '--seconds') out.seconds = Number(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return out;
}
