/**
 * The published wse-server 2.5.1 (PyPI, CPython 3.12) behind the small
 * host script `wse25_host.py`. The interpreter comes from env WSE25_PYTHON,
 * else the repo's `.venv/wse25` (scripts/setup-wse25-venv.sh makes it).
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { stopProcess } from './wse-server.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../../..');

export interface LegacyServer {
  url: string;
  proc: ChildProcess;
  publish(topic: string, data: unknown): void;
  stop(): Promise<void>;
}

export async function startLegacyServer(): Promise<LegacyServer> {
  const python =
    process.env['WSE25_PYTHON'] ??
    path.join(repoRoot, '.venv/wse25/bin/python');
  if (!existsSync(python)) {
    throw new Error(
      `no Python with wse-server 2.5.1 at ${python}: run scripts/setup-wse25-venv.sh`,
    );
  }
  const port = await freePort();
  const proc = spawn(python, [path.join(here, 'wse25_host.py'), String(port)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: proc.stdout! });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error('2.5.1 host did not start')),
      15_000,
    );
    lines.once('line', (line) => {
      clearTimeout(timer);
      if (line.startsWith('listening')) resolve();
      else reject(new Error(`unexpected line from the host: ${line}`));
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`2.5.1 host exited with ${code}`));
    });
  });
  return {
    url: `ws://127.0.0.1:${port}/wse`,
    proc,
    publish(topic, data) {
      proc.stdin!.write(`${JSON.stringify({ publish: topic, data })}\n`);
    },
    stop() {
      proc.stdin!.end(`${JSON.stringify({ stop: true })}\n`);
      return stopProcess(proc);
    },
  };
}

/** A port free right now on 127.0.0.1 (the host binds it next). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port =
        typeof address === 'object' && address !== null ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
