/**
 * The real services every machine of this project runs (see ../shared/ARCHITECTURE.md).
 * Each test file gets its own PostgreSQL database and its own Redis key prefix.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { createDatabase, type DatabaseHandle } from '../../src/infra/db/client'

export const PG_ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`
}

export function uniqueRedisPrefix(): string {
  return `${uniqueName('gwtest')}:`
}

export interface TestDatabase {
  url: string
  name: string
  drop(): Promise<void>
}

/** A fresh, empty database (not migrated). Drop it in afterAll. */
export async function createEmptyDatabase(): Promise<TestDatabase> {
  const name = uniqueName('gw_t')
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
  await admin.connect()
  try {
    await admin.query(`CREATE DATABASE "${name}"`)
  } finally {
    await admin.end()
  }
  const url = new URL(PG_ADMIN_URL)
  url.pathname = `/${name}`
  return {
    url: url.toString(),
    name,
    drop: async () => {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL })
      await c.connect()
      try {
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
      } finally {
        await c.end()
      }
    },
  }
}

/** A fresh, migrated database with a drizzle handle. */
export async function createTestDatabase(): Promise<TestDatabase & { handle: DatabaseHandle }> {
  const empty = await createEmptyDatabase()
  const handle = await createDatabase({ databaseUrl: empty.url, pgliteDir: 'memory://' })
  return {
    ...empty,
    handle,
    drop: async () => {
      await handle.close()
      await empty.drop()
    },
  }
}
