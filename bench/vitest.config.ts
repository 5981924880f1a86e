import { defineConfig } from 'vitest/config';

// Benchmarks print figures; they assert nothing about speed (that belongs here, not in tests).
export default defineConfig({
  resolve: { tsconfigPaths: true },
  test: {
    globals: true,
    root: './',
    include: ['bench/**/*.bench-run.ts'],
    // Minutes of worker processes: run alone with `npm run bench:fleet`.
    exclude: ['bench/fleet.bench-run.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 300_000,
    fileParallelism: false,
  },
});
