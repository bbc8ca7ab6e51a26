import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDatabase } from '../src/infra/db/client'
import { createEmptyDatabase, createTestDatabase, type TestDatabase } from './helpers/services'

describe('database', () => {
  let t: Awaited<ReturnType<typeof createTestDatabase>>
  beforeAll(async () => {
    t = await createTestDatabase()
  })
  afterAll(() => t.drop())

  it('applies the migrations on PostgreSQL', async () => {
    const r = await t.handle.db.execute<{ n: number }>(sql`select count(*)::int as n from information_schema.tables where table_name in ('files','file_versions','emails','email_tokens','outbox_messages')`)
    expect(r.rows[0]).toEqual({ n: 5 })
  })

  it('lets two instances migrate the same database at once', async () => {
    const empty: TestDatabase = await createEmptyDatabase()
    try {
      const [a, b] = await Promise.all([
        createDatabase({ databaseUrl: empty.url, pgliteDir: 'memory://' }),
        createDatabase({ databaseUrl: empty.url, pgliteDir: 'memory://' }),
      ])
      await a.ping()
      await b.ping()
      await Promise.all([a.close(), b.close()])
    } finally {
      await empty.drop()
    }
  })

  it('runs the same migrations on PGlite', async () => {
    const h = await createDatabase({ pgliteDir: 'memory://' })
    try {
      const r = await h.db.execute<{ n: number }>(sql`select count(*)::int as n from information_schema.tables where table_name = 'files'`)
      expect(r.rows[0]).toEqual({ n: 1 })
    } finally {
      await h.close()
    }
  })
})
