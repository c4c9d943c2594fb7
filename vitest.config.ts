import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Tests exercise real worker threads; forks keep each file's threads in its own process.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: more parallel files only adds noise to deadline-based tests.
    maxWorkers: 2,
  },
});
