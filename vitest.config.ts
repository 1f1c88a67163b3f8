import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // tfjs-wasm initialises once per worker; forks keep tests isolated and memory bounded.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
