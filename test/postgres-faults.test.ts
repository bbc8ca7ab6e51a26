/**
 * PostgreSQL going away under the app, through a TCP proxy in front of the shared server (which
 * keeps running for everyone else). bench/faults/postgres-outage.ts runs the same under load.
 */
import { sql } from 'drizzle-orm'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createDatabase, type DatabaseHandle } from '../src/infra/db/client'
import { buildTestApp, type TestApp } from './helpers/app'
import { startFakeResend, type FakeResend } from './helpers/fake-resend'
import { createEmptyDatabase, PG_ADMIN_URL, type TestDatabase } from './helpers/services'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy'

const REMIND = `mutation($input: EventReminderInput!) { scheduleEventReminder(input: $input) {
  __typename ... on ScheduleEventReminderSuccess { email { id } } ... on Error { message } } }`

let database: TestDatabase
let proxy: TcpProxy
const proxiedUrl = () => {
  const url = new URL(database.url)
  url.port = String(proxy.port)
  return url.toString()
}

beforeAll(async () => {
  database = await createEmptyDatabase()
  proxy = await startTcpProxy(Number(new URL(PG_ADMIN_URL).port || 5432))
})
afterAll(async () => {
  await proxy.stop()
  await database.drop()
})
afterEach(() => proxy.start())

describe('a database connection dropped mid-transaction', () => {
  let handle: DatabaseHandle
  beforeAll(async () => {
    handle = await createDatabase({ databaseUrl: proxiedUrl(), pgliteDir: 'memory://' })
  })
  afterAll(() => handle.close())

  it('fails that transaction, leaves the process running, and the next query gets a fresh connection', async () => {
    let release!: () => void
    const between = new Promise<void>((resolve) => (release = resolve))
    const tx = handle.db.transaction(async (t) => {
      await t.execute(sql`select 1`)
      await between
      await t.execute(sql`select 2`)
    })
    // Between two statements the client is checked out with no query running: an unhandled
    // 'error' event there used to take the whole process down.
    await new Promise((resolve) => setTimeout(resolve, 50))
    proxy.cutAll()
    await new Promise((resolve) => setTimeout(resolve, 50))
    release()
    await expect(tx).rejects.toThrow()
    const again = await handle.db.execute<{ n: number }>(sql`select 3 as n`)
    expect(again.rows).toEqual([{ n: 3 }])
  })
})

describe('the app while its database is unreachable', () => {
  let fake: FakeResend
  let t: TestApp
  beforeAll(async () => {
    fake = await startFakeResend()
    process.env.RESEND_BASE_URL = fake.url
    t = await buildTestApp({ database: { ...database, url: proxiedUrl() }, env: { RESEND_API_KEY: 're_test_key' } })
  })
  afterAll(async () => {
    await t.close()
    await fake.close()
  })

  it('answers requests that need it with an error and readiness with 503, and serves them again once it is back', async () => {
    const admin = t.token('admin')
    await proxy.stop()
    const down = await t.gql('{ campaigns(first: 1) { edges { node { id } } } }', {}, admin)
    expect(down.data).toBeNull()
    // A clear, retryable error rather than a generic internal one; no driver detail leaks.
    expect(down.errors?.[0]).toMatchObject({ message: 'The database is unavailable at the moment; retry shortly', extensions: { code: 'SERVICE_UNAVAILABLE' } })
    const ready = await t.app.inject({ method: 'GET', url: '/readyz' })
    expect(ready.statusCode).toBe(503)
    expect(ready.json()).toMatchObject({ status: 'unavailable', checks: { database: { status: 'down' } } })

    await proxy.start()
    const up = await t.gql('{ campaigns(first: 1) { edges { node { id } } } }', {}, admin)
    expect(up.errors).toBeUndefined()
    // Readiness reuses its verdict (the outage's here) for up to READINESS_CACHE_MS.
    await expect.poll(async () => (await t.app.inject({ method: 'GET', url: '/readyz' })).statusCode, { timeout: 5_000, interval: 100 }).toBe(200)
  })

  it('sends a scheduled email that fell due during the outage once the database is back, exactly once', async () => {
    const res = await t.gql<{ scheduleEventReminder: { email?: { id: string } } }>(
      REMIND,
      { input: { user: { id: 'u1', email: 'due@example.com', name: 'Due' }, event: { id: 'e1', title: 'Standup', date: '2030-01-01T09:00:00Z', location: 'Room 1' }, sendAt: new Date(Date.now() + 1_000).toISOString() } },
      t.token('service', 'backend'),
    )
    const id = res.data.scheduleEventReminder.email!.id
    await proxy.stop()
    await new Promise((resolve) => setTimeout(resolve, 1_100))
    await expect(t.app.emailDispatcher.runOnce()).rejects.toThrow()
    expect(fake.sent).toHaveLength(0)

    await proxy.start()
    expect(await t.app.emailDispatcher.runOnce()).toBe(1)
    expect(await t.app.emailDispatcher.runOnce()).toBe(0)
    expect(fake.sent.filter((m) => m.idempotencyKey === `email/${id}`)).toHaveLength(1)
  })
})
