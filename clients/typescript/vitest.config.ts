import { defineConfig } from 'vitest/config';

// Unit tests: jsdom with fake-indexeddb; real sockets where a test needs
// a server (the `ws` package's server in the test process).
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/unit/**/*.test.tsx'],
    environment: 'jsdom',
    setupFiles: ['test/unit/setup.ts'],
    testTimeout: 10_000,
  },
});
