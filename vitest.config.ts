import { defineConfig } from 'vitest/config'

export default defineConfig({
  // Vite prefers graphql's "module" build (index.mjs) for test files, while the app and its CommonJS
  // dependencies load index.js: two realms, and graphql refuses types from the other one.
  resolve: { alias: [{ find: /^graphql$/, replacement: 'graphql/index.js' }] },
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores on CI: more workers only add contention on PostgreSQL and sharp.
    maxWorkers: 2,
  },
})
