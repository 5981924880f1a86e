import { defineConfig } from 'vitest/config';

// The fleet benchmark alone (npm run bench:fleet): minutes of worker processes, so it is kept
// out of `npm test` and `npm run bench`.
export default defineConfig({
  resolve: { tsconfigPaths: true },
  test: {
    globals: true,
    root: './',
    include: ['bench/fleet.bench-run.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 300_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
