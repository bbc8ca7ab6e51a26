import { sql } from 'drizzle-orm'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { EventType } from '../src/services/tracking/event-types'
import { buildTestApp, type TestApp } from './helpers/app'
import { createEmptyDatabase, PG_ADMIN_URL, type TestDatabase } from './helpers/services'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy'
import { countEvents, pixelPath, postWebhook, recipientStatus, resendEvent, sendTrackedCampaign, startTrackingApp, type TrackingContext } from './tracking-fixtures'

const HUMAN_UA = 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0'

describe('a flood of pixel hits', () => {
  let ctx: TrackingContext
  beforeAll(async () => {
    ctx = await startTrackingApp({ TRACKING_BUFFER_MAX: '500', TRACKING_FLUSH_BATCH: '100' })
  })
  afterAll(async () => {
    await ctx.t.close()
    await ctx.fake.close()
  })

  it('holds at most TRACKING_BUFFER_MAX hits, drops and counts the rest, and stores the others in batches', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['flood1@example.com', 'flood2@example.com'])
    const paths = recipients.map((r) => pixelPath(r.message.html!))
    const { buffer } = ctx.t.app.services.tracking
    // The send outcomes go through the same buffer: stored first, so only pixel hits are counted below.
    await ctx.t.app.services.tracking.flush()
    const before = buffer.stats()
    const hits = 3_000
    // Bursts far faster than the database takes single rows: every answer is still the GIF.
    for (let burst = 0; burst < hits / 500; burst++) {
      const answers = await Promise.all(
        Array.from({ length: 500 }, (_, i) => ctx.t.app.inject({ method: 'GET', url: paths[i % 2]!, headers: { 'user-agent': HUMAN_UA } })),
      )
      expect(answers.every((a) => a.statusCode === 200 && a.headers['content-type'] === 'image/gif')).toBe(true)
    }
    await ctx.t.app.services.tracking.flush()

    const after = buffer.stats()
    const written = after.written - before.written
    const dropped = after.dropped - before.dropped
    expect(after.highWater).toBeLessThanOrEqual(500)
    expect(after.buffered).toBe(0)
    expect(written + dropped).toBe(hits)
    expect(written).toBeGreaterThan(0)
    // Batched: a write per hundred hits at most, not one per hit.
    expect(after.batches - before.batches).toBeLessThanOrEqual(Math.ceil(written / 100) + 1)
    expect(await countEvents(ctx.t, campaignId, EventType.open)).toBe(written)
  })
})

describe('the database briefly unavailable', () => {
  let database: TestDatabase
  let proxy: TcpProxy
  let ctx: TrackingContext

  beforeAll(async () => {
    database = await createEmptyDatabase()
    proxy = await startTcpProxy(Number(new URL(PG_ADMIN_URL).port || 5432))
    const proxied = new URL(database.url)
    proxied.port = String(proxy.port)
    ctx = await startTrackingApp({ TRACKING_BUFFER_MAX: '100', TRACKING_FLUSH_BATCH: '10' }, { database: { ...database, url: proxied.toString() } })
  })
  afterAll(async () => {
    await ctx.t.close()
    await ctx.fake.close()
    await proxy.stop()
    await database.drop()
  })
  afterEach(async () => {
    await proxy.start()
  })

  it('keeps pixel hits in memory while the database is down, up to the bound, and stores them once it is back', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['outage-open@example.com'])
    const path = pixelPath(recipients[0]!.message.html!)
    const { buffer } = ctx.t.app.services.tracking
    await ctx.t.app.services.tracking.flush()
    const before = buffer.stats()
    await proxy.stop()
    for (let i = 0; i < 150; i++) {
      const res = await ctx.t.app.inject({ method: 'GET', url: path, headers: { 'user-agent': HUMAN_UA } })
      expect(res.statusCode).toBe(200)
    }
    await ctx.t.app.services.tracking.flush()
    const down = buffer.stats()
    expect(down.failures).toBeGreaterThan(before.failures)
    // Bounded: the buffer holds TRACKING_BUFFER_MAX hits, the rest are dropped and counted.
    expect(down.buffered).toBe(100)
    expect(down.dropped - before.dropped).toBe(50)
    expect(down.highWater).toBeLessThanOrEqual(100)

    await proxy.start()
    await ctx.t.app.services.tracking.flush()
    expect(buffer.stats().buffered).toBe(0)
    expect(await countEvents(ctx.t, campaignId, EventType.open)).toBe(100)
  })

  it('answers a webhook 503 while the database is down, so the provider retries, and applies the retry once', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['outage-hook@example.com'])
    const event = resendEvent('email.delivered', recipients[0]!, campaignId)
    await proxy.stop()
    const refused = await postWebhook(ctx.t, event, { svixId: 'msg_outage_1' })
    expect(refused.statusCode).toBe(503)
    expect(refused.body.error?.code).toBe('SERVICE_UNAVAILABLE')

    await proxy.start()
    const retried = await postWebhook(ctx.t, event, { svixId: 'msg_outage_1' })
    expect(retried).toMatchObject({ statusCode: 200, body: { status: 'accepted' } })
    await postWebhook(ctx.t, event, { svixId: 'msg_outage_1' })
    await ctx.t.app.services.tracking.webhooks.processor.drain()
    expect(await recipientStatus(ctx.t, recipients[0]!.id)).toBe('delivered')
    expect(await countEvents(ctx.t, campaignId, EventType.delivered)).toBe(1)
  })
})

describe('durable processing', () => {
  let ctx: TrackingContext
  let second: TestApp | undefined
  beforeAll(async () => {
    ctx = await startTrackingApp()
  })
  afterAll(async () => {
    await second?.close()
    // Closes nothing more, but drops the database and data directory the first instance owned.
    await ctx.t.close()
    await ctx.fake.close()
  })

  it('applies a stored webhook row on another instance after a restart', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['restart@example.com'])
    const r = recipients[0]!
    // The event overtakes our record of the send: stored, not applicable yet, retried later.
    await ctx.t.app.db.db.execute(sql`update campaign_recipients set status = 'sending', provider_id = null where id = ${r.id}`)
    const res = await postWebhook(ctx.t, resendEvent('email.bounced', r, campaignId, { bounce: { type: 'Permanent', subType: 'General', message: 'gone' } }))
    expect(res.body.status).toBe('accepted')
    await ctx.t.app.services.tracking.webhooks.processor.drain()
    const database = ctx.t.database!
    // The first instance goes away with the row still pending (close() would drop the database: keep it).
    await ctx.t.app.close()

    second = await buildTestApp({ database, env: { RESEND_API_KEY: 're_test_key', RESEND_WEBHOOK_SECRET: 'whsec_' + Buffer.from('unused-on-this-instance-0123').toString('base64') } })
    const db = second.app.db.db
    await db.execute(sql`update campaign_recipients set status = 'accepted', provider_id = ${r.providerId} where id = ${r.id}`)
    await db.execute(sql`update webhook_events set next_attempt_at = now() where svix_id = ${res.svixId}`)
    expect(await second.app.services.tracking.webhooks.processor.drain()).toBe(1)
    expect(await recipientStatus(second, r.id)).toBe('bounced')
    const suppressed = await db.execute<{ reason: string }>(sql`select reason from suppressions where email = 'restart@example.com'`)
    expect(suppressed.rows).toEqual([{ reason: 'bounced' }])
    const row = await db.execute<{ status: string; attempts: number }>(sql`select status, attempts from webhook_events where svix_id = ${res.svixId}`)
    expect(row.rows[0]).toEqual({ status: 'done', attempts: 2 })
  })
})

describe('retention', () => {
  let ctx: TrackingContext
  beforeAll(async () => {
    ctx = await startTrackingApp({ TRACKING_EVENT_RETENTION_DAYS: '30', TRACKING_WEBHOOK_RETENTION_DAYS: '7' })
  })
  afterAll(async () => {
    await ctx.t.close()
    await ctx.fake.close()
  })

  it('prunes raw events past retention and keeps the rollups, and prunes only finished webhook rows', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['old@example.com'])
    await ctx.t.app.inject({ method: 'GET', url: pixelPath(recipients[0]!.message.html!), headers: { 'user-agent': HUMAN_UA } })
    await ctx.t.app.services.tracking.flush()
    const db = ctx.t.app.db.db
    await db.execute(sql`update email_events set occurred_at = now() - interval '40 days' where campaign_id = ${campaignId}`)
    await db.execute(sql`
      insert into webhook_events (svix_id, type, provider_id, occurred_at, status, received_at) values
        ('old-done', 2, 'p1', now(), 'done', now() - interval '8 days'),
        ('old-pending', 2, 'p2', now(), 'pending', now() - interval '8 days'),
        ('new-done', 2, 'p3', now(), 'done', now())`)

    const pruned = await ctx.t.app.services.tracking.pruner.pruneOnce()
    expect(pruned.events).toBeGreaterThanOrEqual(2)
    expect(pruned.webhooks).toBe(1)
    expect(await countEvents(ctx.t, campaignId, EventType.open)).toBe(0)
    const rollups = await db.execute<{ n: string }>(sql`select sum(count) as n from campaign_event_rollups where campaign_id = ${campaignId} and type = ${EventType.open}`)
    expect(Number(rollups.rows[0]!.n)).toBe(1)
    const left = await db.execute<{ svix_id: string }>(sql`select svix_id from webhook_events order by svix_id`)
    expect(left.rows.map((r) => r.svix_id)).toEqual(['new-done', 'old-pending'])
  })
})
