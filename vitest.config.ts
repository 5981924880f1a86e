import { defineConfig } from 'vitest/config';

export default defineConfig({
  // @app/<lib> aliases come from tsconfig.json's paths.
  resolve: { tsconfigPaths: true },
  test: {
    globals: true,
    root: './',
    include: ['apps/**/*.spec.ts', 'libs/**/*.spec.ts', 'test/**/*.spec.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // 2 cores: e2e files boot api + worker each; more forks than cores only adds contention.
    maxWorkers: 2,
  },
});
