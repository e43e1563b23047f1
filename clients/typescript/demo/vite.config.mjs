// Builds the dashboard from the package's built output (dist/), imported
// as `wse-client` the way an application imports the published package.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vite';

const here = path.dirname(fileURLToPath(import.meta.url));

export default defineConfig({
  root: here,
  base: './',
  logLevel: 'warn',
  resolve: {
    alias: { 'wse-client': path.resolve(here, '../dist/index.js') },
  },
  esbuild: { jsx: 'automatic' },
  build: { emptyOutDir: true, chunkSizeWarningLimit: 2048 },
});
