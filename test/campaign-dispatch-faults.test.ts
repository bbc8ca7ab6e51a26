import { getEventListeners } from 'node:events'
import { sql } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { createResendTransport } from '../src/infra/mail/resend'
import type { BatchItemResult, BatchSendOptions, MailMessage, MailTransport } from '../src/infra/mail/types'
import { CampaignDispatcher } from '../src/services/campaigns/campaign-dispatcher'
import { campaignStatsCache, CampaignStatsPublisher, createPushGate } from '../src/services/campaigns/campaign-stats'
import { createRateLimiter } from '../src/services/campaigns/rate-limiter'
import { createUnsubscribeLinks } from '../src/services/campaigns/unsubscribe-links'
import { buildTestApp, type TestApp } from './helpers/app'
import { type FakeResend } from './helpers/fake-resend'
import { addContacts, campaignAction, createAudience, createCampaign, getCampaign, useCampaignApp } from './campaign-fixtures'

const API_KEY = 're_test_key'
let fake: FakeResend
let t: TestApp
let admin: string
let templateId: string
useCampaignApp({}, (app) => ({ fake, t, admin, templateId } = app))

function dispatcher(options: { transport?: MailTransport; leaseMs?: number; batchSize?: number; concurrency?: number } = {}) {
  const db = t.app.db.db
  return new CampaignDispatcher({
    db,
    transport: options.transport ?? t.app.mail,
    limiter: createRateLimiter({ ratePerSecond: 0 }),
    links: createUnsubscribeLinks(t.app.signer, 'http://groundwork.test'),
    // The app's stats cache: this dispatcher's writes must drop the snapshots the app's resolvers read.
    stats: new CampaignStatsPublisher({ db, publish: async () => {}, gate: createPushGate(null), cache: campaignStatsCache(t.app.services.cache) }),
    leaseMs: options.leaseMs,
    batchSize: options.batchSize,
    concurrency: options.concurrency,
    pollMs: 20,
  })
}

async function startCampaign(count: number, extra: { email: string }[] = []): Promise<string> {
  const audienceId = await createAudience(t, admin)
  const contacts = [...Array.from({ length: count }, (_, i) => ({ email: `r${i}@example.com` })), ...extra]
  for (let i = 0; i < contacts.length; i += 1000) await addContacts(t, admin, audienceId, contacts.slice(i, i + 1000))
  const id = await createCampaign(t, admin, { templateId, audienceIds: [audienceId] })
  const sent = await campaignAction(t, admin, 'sendCampaign', id)
  if (sent.__typename !== 'CampaignSuccess') throw new Error(JSON.stringify(sent))
  return id
}

async function batches(campaignId: string) {
  const result = await t.app.db.db.execute<{ status: string; attempts: number; failures: number; wait_ms: number; last_error: string | null; idempotency_key: string }>(sql`
    select status, attempts, failures, extract(epoch from (next_attempt_at - now())) * 1000 as wait_ms, last_error, idempotency_key
    from campaign_batches where campaign_id = ${campaignId} order by id`)
  return result.rows.map((r) => ({ ...r, wait_ms: Number(r.wait_ms) }))
}

async function makeDue(campaignId: string) {
  await t.app.db.db.execute(sql`update campaign_batches set next_attempt_at = now() where campaign_id = ${campaignId} and status = 'retry'`)
}

function batchRequests() {
  return fake.requests.filter((r) => r.path === '/emails/batch')
}

function expectNoDuplicates(expected: number) {
  const recipients = fake.sent.map((s) => (Array.isArray(s.to) ? s.to[0] : s.to))
  expect(recipients).toHaveLength(expected)
  expect(new Set(recipients).size).toBe(expected)
}

describe('provider faults', () => {
  it('defers a batch after a 429 for the retry-after time, never fails it, and resends it under the same key', async () => {
    const id = await startCampaign(3)
    fake.failNext(429, 1, { 'retry-after': '1' })
    await t.app.campaignDispatcher.runOnce()

    const [deferred] = await batches(id)
    expect(deferred).toMatchObject({ status: 'retry', failures: 0 })
    expect(deferred!.wait_ms).toBeGreaterThan(500)
    expect(deferred!.wait_ms).toBeLessThanOrEqual(1000)
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ queued: 3, failed: 0, sent: 0 })

    await new Promise((resolve) => setTimeout(resolve, 1_050))
    await t.app.campaignDispatcher.drain()
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 3, failed: 0 } })
    const keys = batchRequests().map((r) => r.headers['idempotency-key'])
    expect(keys).toHaveLength(2)
    expect(keys[0]).toBe(keys[1])
    expectNoDuplicates(3)
  })

  it('backs off after a 500 with exponential delay and retries the same batch', async () => {
    const id = await startCampaign(2)
    fake.failNext(500)
    await t.app.campaignDispatcher.runOnce()
    const [deferred] = await batches(id)
    expect(deferred).toMatchObject({ status: 'retry', failures: 1, last_error: expect.stringContaining('HTTP 500') })
    expect(deferred!.wait_ms).toBeGreaterThan(10_000)
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ queued: 2, failed: 0 })

    await makeDue(id)
    await t.app.campaignDispatcher.drain()
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 2, failed: 0 } })
    expect(new Set(batchRequests().map((r) => r.headers['idempotency-key'])).size).toBe(1)
    expectNoDuplicates(2)
  })

  it('treats a provider timeout as "maybe sent" and retries with the same key', async () => {
    const id = await startCampaign(2)
    const quick = dispatcher({ transport: createResendTransport({ apiKey: API_KEY, timeoutMs: 300 }) })
    fake.stallNext()
    await quick.runOnce()
    expect((await batches(id))[0]).toMatchObject({ status: 'retry', failures: 1, last_error: expect.stringContaining('did not answer') })

    await makeDue(id)
    await quick.drain()
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 2, failed: 0 } })
    const keys = batchRequests().map((r) => r.headers['idempotency-key'])
    expect(keys).toHaveLength(2)
    expect(keys[0]).toBe(keys[1])
    expectNoDuplicates(2)
  })

  it('fails only the recipient the provider refuses inside a batch and sends the others', async () => {
    const id = await startCampaign(5)
    // An address that passed an older, laxer import: the provider refuses it, and with it the whole batch.
    await t.app.db.db.execute(sql`update campaign_recipients set email = 'broken@localhost' where campaign_id = ${id} and email = 'r3@example.com'`)
    await t.app.campaignDispatcher.drain()

    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 4, failed: 1, queued: 0 } })
    const failed = await t.app.db.db.execute<{ email: string; reason: string }>(sql`select email, reason from campaign_recipients where campaign_id = ${id} and status = 'failed'`)
    expect(failed.rows).toEqual([{ email: 'broken@localhost', reason: expect.stringContaining('Invalid `to` field') }])
    expectNoDuplicates(4)
  })

  it('pauses the campaign with the reason when the provider refuses the request itself', async () => {
    const id = await startCampaign(2)
    fake.failNext(403, 1, {}, { name: 'invalid_api_key', message: 'API key is invalid' })
    await t.app.campaignDispatcher.runOnce()
    const paused = await getCampaign(t, admin, id)
    expect(paused).toMatchObject({ status: 'PAUSED', stats: { failed: 0, queued: 2 } })
    expect(paused.pauseReason).toContain('API key is invalid')

    await campaignAction(t, admin, 'resumeCampaign', id)
    await t.app.campaignDispatcher.drain()
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 2 } })
  })

  it('pauses the campaign once one batch has failed with 5xx too many times in a row', async () => {
    const id = await startCampaign(1)
    fake.failNext(503, 8)
    for (let i = 0; i < 8; i++) {
      await makeDue(id)
      await t.app.campaignDispatcher.runOnce()
    }
    const paused = await getCampaign(t, admin, id)
    expect(paused).toMatchObject({ status: 'PAUSED', stats: { failed: 0, queued: 1 } })
    expect(paused.pauseReason).toContain('kept failing (8 attempts)')
  })
})

describe('crashes and concurrency', () => {
  it('re-sends a batch whose worker died after the provider accepted it under the same key, without a duplicate', async () => {
    const id = await startCampaign(4)
    let release!: () => void
    const frozen = new Promise<void>((resolve) => (release = resolve))
    // The provider accepts the batch, then the worker freezes before recording: its lease runs out.
    const dying: MailTransport = {
      ...t.app.mail,
      async sendBatch(messages: MailMessage[], options?: BatchSendOptions): Promise<BatchItemResult[]> {
        const result = await t.app.mail.sendBatch(messages, options)
        await frozen
        return result
      },
    }
    const victim = dispatcher({ transport: dying, leaseMs: 200 })
    const victimRun = victim.runOnce()
    await new Promise((resolve) => setTimeout(resolve, 400))
    expect(fake.sent).toHaveLength(4)

    await dispatcher().drain()
    const keys = batchRequests().map((r) => r.headers['idempotency-key'])
    expect(keys).toHaveLength(2)
    expect(keys[0]).toBe(keys[1])
    expectNoDuplicates(4)
    const rows = await t.app.db.db.execute<{ provider_id: string }>(sql`select provider_id from campaign_recipients where campaign_id = ${id} order by id`)
    expect(rows.rows.map((r) => r.provider_id).sort()).toEqual(fake.sent.map((s) => s.id).sort())

    // The frozen worker wakes up late: it is fenced off and records nothing twice.
    release()
    await victimRun
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 4, queued: 0, failed: 0 } })
  })

  it('reclaims a batch abandoned before sending and sends it once', async () => {
    const id = await startCampaign(3)
    const hanging: MailTransport = { ...t.app.mail, sendBatch: () => new Promise<never>(() => {}) }
    void dispatcher({ transport: hanging, leaseMs: 150 }).runOnce()
    await new Promise((resolve) => setTimeout(resolve, 300))
    await dispatcher().drain()
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 3 } })
    expect((await batches(id))[0]).toMatchObject({ attempts: 2 })
    expectNoDuplicates(3)
  })

  it('lets two dispatchers share one campaign with zero duplicate emails', async () => {
    const id = await startCampaign(240)
    const a = dispatcher({ batchSize: 10, concurrency: 3 })
    const b = dispatcher({ batchSize: 10, concurrency: 3 })
    const [byA, byB] = await Promise.all([a.drain(), b.drain()])
    expect(byA + byB).toBe(240)
    expect(byA).toBeGreaterThan(0)
    expect(byB).toBeGreaterThan(0)
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 240, queued: 0 } })
    const keys = batchRequests().map((r) => r.headers['idempotency-key'])
    expect(keys).toHaveLength(24)
    expect(new Set(keys).size).toBe(24)
    expectNoDuplicates(240)
  })

  it('lets two app instances on one database dispatch one campaign with zero duplicate emails', async () => {
    const instance = () => buildTestApp({ database: t.database, redisPrefix: t.redisPrefix, env: { RESEND_API_KEY: API_KEY, CAMPAIGN_RATE_LIMIT_PER_SECOND: '0', CAMPAIGN_BATCH_SIZE: '7' } })
    const [one, two] = await Promise.all([instance(), instance()])
    try {
      const id = await startCampaign(150)
      const [byOne, byTwo] = await Promise.all([one.app.campaignDispatcher.drain(), two.app.campaignDispatcher.drain()])
      expect(byOne + byTwo).toBe(150)
      expect(Math.min(byOne, byTwo)).toBeGreaterThan(0)
      expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 150 } })
      const keys = batchRequests().map((r) => r.headers['idempotency-key'])
      expect(new Set(keys).size).toBe(keys.length)
      expectNoDuplicates(150)
    } finally {
      await Promise.all([one.close(), two.close()])
    }
  })

  it('runs the started worker loop until the campaign is sent, and stops cleanly', async () => {
    const id = await startCampaign(30)
    const worker = dispatcher({ batchSize: 10 })
    worker.start()
    for (let i = 0; i < 100 && (await getCampaign(t, admin, id)).status !== 'SENT'; i++) await new Promise((resolve) => setTimeout(resolve, 50))
    await worker.stop()
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 30 } })
    expectNoDuplicates(30)
  })
})

describe('an idle dispatcher', () => {
  it('leaves no abort listener behind per idle poll', async () => {
    const idle = await buildTestApp({ database: t.database, env: { WORKER_POLL_MS: '10', CAMPAIGN_CONCURRENCY: '2' } })
    try {
      const dispatcher = idle.app.campaignDispatcher
      dispatcher.start()
      await new Promise((resolve) => setTimeout(resolve, 300))
      // About 30 idle polls per lane by now; each used to add a listener that was never removed. At most one per lane is pausing.
      const signal = (dispatcher as unknown as { abort: AbortController }).abort.signal
      expect(getEventListeners(signal, 'abort').length).toBeLessThanOrEqual(2)
    } finally {
      await idle.close()
    }
  })
})
