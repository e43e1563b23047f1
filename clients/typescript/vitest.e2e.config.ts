import { defineConfig } from 'vitest/config';

// End-to-end tests: the real wse-server (env WSE_SERVER), headless Chromium
// from Debian, and the published wse-server 2.5.1 under CPython 3.12.
export default defineConfig({
  test: {
    include: ['test/e2e/**/*.test.ts'],
    environment: 'node',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
