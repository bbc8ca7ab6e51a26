import { defineConfig } from 'drizzle-kit'

// Works for both drivers: PGlite when DATABASE_URL is unset, node-postgres otherwise.
// `drizzle-kit generate` needs no connection; `db:migrate` uses scripts/migrate.ts, which goes through the app's own config.
const url = process.env.DATABASE_URL
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/infra/db/schema/*.ts',
  out: './drizzle',
  ...(url ? { dbCredentials: { url } } : { driver: 'pglite', dbCredentials: { url: `${process.env.DATA_DIR ?? './data'}/pglite` } }),
})
