/**
 * Builds the package (`tsc`, into dist/) and a page with vite that imports
 * it as `wse-client`, so the browser runs the published output.
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'vite';

export const packageRoot = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../..',
);

/** Runs `tsc -p tsconfig.build.json` (the package's ESM output). */
export function buildPackage(): void {
  execFileSync(
    process.execPath,
    [
      path.join(packageRoot, 'node_modules/typescript/bin/tsc'),
      '-p',
      'tsconfig.build.json',
    ],
    { cwd: packageRoot, stdio: 'inherit' },
  );
}

/** Bundles the page in `pageDir` into a fresh temporary directory. */
export async function buildPage(
  pageDir: string,
  outDir?: string,
): Promise<string> {
  const out = outDir ?? mkdtempSync(path.join(tmpdir(), 'wse-page-'));
  await build({
    root: pageDir,
    logLevel: 'warn',
    configFile: false,
    base: './',
    resolve: {
      alias: { 'wse-client': path.join(packageRoot, 'dist/index.js') },
    },
    esbuild: { jsx: 'automatic' },
    build: {
      outDir: out,
      emptyOutDir: true,
      sourcemap: true,
      chunkSizeWarningLimit: 2048,
    },
  });
  return out;
}
