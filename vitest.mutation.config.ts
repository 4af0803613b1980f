/**
 * The vitest settings StrykerJS runs under (`npm run test:mutation`, bench/mutation.ts): only the in-process
 * test files that cover the module being mutated (GRIDPIPE_MUTATION_TESTS, comma-separated), since tests that
 * spawn dist/cli/main.js would not see the mutants.
 */
import { defineConfig } from 'vitest/config';

const files = (process.env.GRIDPIPE_MUTATION_TESTS ?? '').split(',').filter(Boolean);

export default defineConfig({
  test: {
    include: files.length ? files : ['test/policy/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
