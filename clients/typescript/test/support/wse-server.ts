/**
 * Starts the real `wse-server` binary (env WSE_SERVER, else the repo's
 * release build) on a free loopback port, and stops it.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../../..');

export function serverBinary(): string {
  const bin =
    process.env['WSE_SERVER'] ??
    path.join(repoRoot, 'target/release/wse-server');
  if (!existsSync(bin)) {
    throw new Error(`wse-server binary not found at ${bin} (set WSE_SERVER)`);
  }
  return path.resolve(bin);
}

export interface RunningServer {
  /** ws://127.0.0.1:PORT/wse */
  url: string;
  port: number;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** Starts wse-server with extra flags; `port` 0 picks a free one. */
export async function startServer(
  flags: string[] = [],
  port = 0,
): Promise<RunningServer> {
  const args = ['--host', '127.0.0.1', '--port', String(port), '--shards', '2'];
  const proc = spawn(serverBinary(), [...args, ...flags], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stderr?.resume();
  const lines = createInterface({ input: proc.stdout! });
  const first = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error('wse-server did not start within 10 s')),
      10_000,
    );
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`wse-server exited with ${code}`));
    });
  });
  const match = /listening on (\S+):(\d+)/.exec(first);
  if (match === null) throw new Error(`unexpected first line: ${first}`);
  const listenPort = Number(match[2]);
  return {
    url: `ws://127.0.0.1:${listenPort}/wse`,
    port: listenPort,
    proc,
    stop: () => stopProcess(proc),
  };
}

export function stopProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), 6_000);
    proc.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    proc.kill('SIGTERM');
  });
}

/** Resolves when `check` is true, polling; rejects after `timeoutMs`. */
export async function waitFor(
  check: () => boolean,
  timeoutMs = 5_000,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
