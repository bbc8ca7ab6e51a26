import { Readable } from 'node:stream'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { countedTransport } from '../src/infra/mail/counted-transport'
import { createResendTransport } from '../src/infra/mail/resend'
import type { MailResponseClass, MailMessage } from '../src/infra/mail/types'
import type { DatabaseHandle } from '../src/infra/db/client'
import { createRateLimiter } from '../src/services/campaigns/rate-limiter'
import { QueueDepths } from '../src/services/system/queue-depths'
import { uploadThroughGraphql } from './helpers/app'
import { parseMetrics, Scrape } from './helpers/metrics'
import { startFakeResend, type FakeResend } from './helpers/fake-resend'
import { createTestDatabase, type TestDatabase } from './helpers/services'
import { pathOf, pixelPath, postWebhook, resendEvent, sendTrackedCampaign, startTrackingApp, trackedLinks, type TrackingContext } from './tracking-fixtures'

const HUMAN_UA = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36'
const WELCOME = `mutation($input: WelcomeEmailInput!) { sendWelcomeEmail(input: $input) { __typename ... on SendEmailSuccess { email { id status } } } }`
const UPLOAD = `mutation($file: Upload!) { uploadFile(file: $file) { __typename ... on UploadFileSuccess { file { id status } } } }`
const pdf = (size: number) => Buffer.concat([Buffer.from('%PDF-1.7\n'), Buffer.alloc(size - 9, 7)])

describe('GET /metrics: domain metrics', () => {
  let ctx: TrackingContext
  let last: Scrape

  beforeAll(async () => {
    // Campaign batches of one at 5/s: the second and third batch wait for the rate limiter.
    ctx = await startTrackingApp({ CAMPAIGN_RATE_LIMIT_PER_SECOND: '5', CAMPAIGN_BATCH_SIZE: '1' })
    last = await scrape()
  })
  afterAll(async () => {
    await ctx.t.close()
    await ctx.fake.close()
  })

  async function scrape(): Promise<Scrape> {
    const res = await ctx.t.app.inject({ method: 'GET', url: '/metrics' })
    expect(res.statusCode).toBe(200)
    return new Scrape(parseMetrics(res.body))
  }

  /** How much each series moved since the previous call. */
  async function changes() {
    const before = last
    last = await scrape()
    const now = last
    return (name: string, labels: Record<string, string> = {}) => now.value(name, labels) - before.value(name, labels)
  }

  it('exposes every domain series at 0 before anything happened', () => {
    expect(last.value('groundwork_emails_failed_total', { kind: 'campaign', class: '429' })).toBe(0)
    expect(last.value('groundwork_file_pipeline_steps_total', { step: 'variants', outcome: 'retry' })).toBe(0)
    expect(last.value('groundwork_tracking_events_total', { type: 'click', origin: 'machine' })).toBe(0)
    expect(last.value('groundwork_upload_duration_seconds_count', { kind: 'part', outcome: 'error' })).toBe(0)
    expect(last.value('groundwork_cache_hits_total', { level: 'l2' })).toBe(0)
    for (const queue of ['campaign_recipients', 'scheduled_emails_due', 'webhook_events', 'file_steps', 'webhook_deliveries']) {
      expect(last.value('groundwork_queue_depth', { queue })).toBe(0)
    }
  })

  it('counts cache hits and misses per level, loader runs and L1 size, read from the cache counters', async () => {
    const { cache } = ctx.t.app.services
    expect(await cache.getOrSet('metrics:key', async () => 'value')).toBe('value')
    expect(await cache.getOrSet('metrics:key', async () => 'other')).toBe('value')
    expect(await cache.get('metrics:absent')).toBeUndefined()
    await expect(cache.getOrSet('metrics:broken', async () => Promise.reject(new Error('loader down')))).rejects.toThrow('loader down')

    const moved = await changes()
    expect(moved('groundwork_cache_hits_total', { level: 'l1' })).toBe(1)
    expect(moved('groundwork_cache_misses_total', { level: 'l1' })).toBe(3)
    expect(moved('groundwork_cache_misses_total', { level: 'l2' })).toBe(3)
    expect(moved('groundwork_cache_hits_total', { level: 'l2' })).toBe(0)
    expect(moved('groundwork_cache_loads_total')).toBe(2)
    expect(moved('groundwork_cache_load_failures_total', { reason: 'error' })).toBe(1)
    expect(last.value('groundwork_cache_l1_items')).toBeGreaterThanOrEqual(1)
    expect(last.value('groundwork_cache_l1_bytes')).toBeGreaterThan(0)
  })

  it('counts upload bytes, durations and pipeline step outcomes, refused uploads included', async () => {
    const content = pdf(3000)
    const ok = await uploadThroughGraphql(ctx.t, ctx.admin, UPLOAD, { file: null }, { filename: 'a.pdf', contentType: 'application/pdf', content })
    expect(ok.body.data).toMatchObject({ uploadFile: { __typename: 'UploadFileSuccess', file: { status: 'READY' } } })
    const refused = await uploadThroughGraphql(ctx.t, ctx.admin, UPLOAD, { file: null }, { filename: 'notes.txt', contentType: 'text/plain', content: Buffer.from('no magic number here') })
    expect(refused.body.data).toMatchObject({ uploadFile: { __typename: 'UnsupportedFileTypeError' } })

    const moved = await changes()
    expect(moved('groundwork_upload_duration_seconds_count', { kind: 'file', outcome: 'ok' })).toBe(1)
    expect(moved('groundwork_upload_duration_seconds_count', { kind: 'file', outcome: 'error' })).toBe(1)
    expect(moved('groundwork_upload_duration_seconds_sum', { kind: 'file', outcome: 'ok' })).toBeGreaterThan(0)
    // The refused upload's bytes were received too, up to the point it was refused.
    expect(moved('groundwork_upload_bytes_total', { kind: 'file' })).toBeGreaterThanOrEqual(content.length)
    for (const step of ['validate', 'checksum', 'finalize']) expect(moved('groundwork_file_pipeline_steps_total', { step, outcome: 'success' })).toBe(1)
    // A PDF skips the image steps: skipped is not run, so not counted.
    expect(moved('groundwork_file_pipeline_steps_total', { step: 'optimize', outcome: 'success' })).toBe(0)
    expect(moved('groundwork_file_pipeline_steps_total', { step: 'validate', outcome: 'failed' })).toBe(0)
  })

  it('counts the parts of a chunked upload by their own kind', async () => {
    const viewer = { id: 'chunk-owner', roles: ['user' as const] }
    const { sessions } = ctx.t.app.services.files
    const session = await sessions.start(viewer, { filename: 'big.pdf', size: 4000, mimeType: 'application/pdf' })
    await sessions.uploadChunk(viewer, session.id, 1, Readable.from([pdf(4000)]))
    await expect(sessions.uploadChunk(viewer, session.id, 1, Readable.from([pdf(3000)]))).rejects.toThrow(/exactly 4000 bytes/)

    const moved = await changes()
    expect(moved('groundwork_upload_duration_seconds_count', { kind: 'part', outcome: 'ok' })).toBe(1)
    expect(moved('groundwork_upload_duration_seconds_count', { kind: 'part', outcome: 'error' })).toBe(1)
    expect(moved('groundwork_upload_bytes_total', { kind: 'part' })).toBe(7000)
  })

  it('counts transactional sends and failures by provider response class', async () => {
    const service = ctx.t.token('service', 'backend')
    const user = { id: 'u-metrics', email: 'grace@example.com', name: 'Grace' }
    ctx.fake.failNext(429, 1, { 'retry-after': '0' })
    const limited = await ctx.t.gql<{ sendWelcomeEmail: { email: { id: string; status: string } } }>(WELCOME, { input: { user } }, service)
    expect(limited.data.sendWelcomeEmail.email.status).toBe('QUEUED')
    await ctx.t.app.db.db.execute(sql`update emails set send_at = now() - interval '1 second' where id = ${limited.data.sendWelcomeEmail.email.id}`)
    expect(await ctx.t.app.emailDispatcher.runOnce()).toBe(1)
    ctx.fake.failNext(500)
    const failing = await ctx.t.gql<{ sendWelcomeEmail: { email: { status: string } } }>(WELCOME, { input: { user: { ...user, id: 'u-metrics-2' } } }, service)
    expect(failing.data.sendWelcomeEmail.email.status).toBe('QUEUED')

    const moved = await changes()
    expect(moved('groundwork_emails_sent_total', { kind: 'transactional' })).toBe(1)
    expect(moved('groundwork_emails_failed_total', { kind: 'transactional', class: '429' })).toBe(1)
    expect(moved('groundwork_emails_failed_total', { kind: 'transactional', class: '5xx' })).toBe(1)
    expect(moved('groundwork_emails_failed_total', { kind: 'transactional', class: '4xx' })).toBe(0)
    expect(moved('groundwork_emails_sent_total', { kind: 'campaign' })).toBe(0)
    // The failed email waits for its retry, not due yet.
    expect(last.value('groundwork_queue_depth', { queue: 'scheduled_emails_due' })).toBe(0)
  })

  it('counts campaign sends, rate limiter waits, tracked opens and clicks, conversions and webhooks', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['reader@example.com', 'second@example.com', 'third@example.com'])
    const reader = recipients[0]!
    const html = reader.message.html!
    const app = ctx.t.app
    expect((await app.inject({ method: 'GET', url: pixelPath(html), headers: { 'user-agent': HUMAN_UA } })).statusCode).toBe(200)
    // A HEAD request is a machine's (a prefetch or a scanner), recorded but marked.
    await app.inject({ method: 'HEAD', url: pixelPath(html), headers: { 'user-agent': HUMAN_UA } })
    const click = await app.inject({ method: 'GET', url: pathOf(trackedLinks(html)[0]!), headers: { 'user-agent': HUMAN_UA } })
    expect(click.statusCode).toBe(302)
    // A forged pixel records nothing.
    await app.inject({ method: 'GET', url: '/t/o/1.2.forged.gif', headers: { 'user-agent': HUMAN_UA } })
    const conversion = new URL(click.headers.location as string).searchParams.get('gw_click')!
    const recorded = await ctx.t.gql<{ recordConversion: { __typename: string } }>('mutation($t: String!) { recordConversion(token: $t) { __typename } }', { t: conversion })
    expect(recorded.data.recordConversion.__typename).toBe('RecordConversionSuccess')
    await app.services.tracking.flush()

    const delivered = resendEvent('email.delivered', reader, campaignId)
    const accepted = await postWebhook(ctx.t, delivered)
    expect(accepted.statusCode).toBe(200)
    await postWebhook(ctx.t, delivered, { svixId: accepted.svixId })
    expect((await postWebhook(ctx.t, delivered, { secret: `whsec_${Buffer.from('not-the-right-key-at-all').toString('base64')}` })).statusCode).toBeGreaterThanOrEqual(400)
    // (The intake kicks the processor right after answering, so the stored event may already be applied here:
    // the webhook_events queue depth is checked in the QueueDepths tests below instead.)
    await app.services.tracking.webhooks.processor.drain()

    const moved = await changes()
    expect(moved('groundwork_emails_sent_total', { kind: 'campaign' })).toBe(3)
    expect(moved('groundwork_email_rate_limit_waits_total')).toBeGreaterThanOrEqual(1)
    expect(moved('groundwork_email_rate_limit_wait_seconds_total')).toBeGreaterThan(0)
    expect(moved('groundwork_tracking_events_total', { type: 'open', origin: 'human' })).toBe(1)
    expect(moved('groundwork_tracking_events_total', { type: 'open', origin: 'machine' })).toBe(1)
    expect(moved('groundwork_tracking_events_total', { type: 'click', origin: 'human' })).toBe(1)
    expect(moved('groundwork_tracking_conversions_total')).toBe(1)
    expect(moved('groundwork_resend_webhooks_received_total', { outcome: 'accepted' })).toBe(1)
    expect(moved('groundwork_resend_webhooks_received_total', { outcome: 'duplicate' })).toBe(1)
    expect(moved('groundwork_resend_webhooks_received_total', { outcome: 'rejected' })).toBe(1)
    expect(moved('groundwork_resend_webhooks_processed_total', { outcome: 'applied' })).toBe(1)
    expect(last.value('groundwork_tracking_buffer_events')).toBe(0)
    expect(last.value('groundwork_tracking_buffer_dropped_total')).toBe(0)
  })

  it('keeps scraping when a collector fails, and counts the failure', async () => {
    ctx.t.app.metrics.addCollector(() => {
      throw new Error('collector broke')
    })
    const moved = await changes()
    expect(moved('groundwork_scrape_collector_failures_total')).toBe(1)
    expect(last.value('groundwork_queue_depth', { queue: 'file_steps' })).toBe(0)
  })

  it('labels a document of several operations by the one the request names, posted or in the query string', async () => {
    const authorization = `Bearer ${ctx.t.token('service')}`
    const query = 'query LabelFirst { viewer { id } } query LabelSecond { viewer { email } }'
    const post = await ctx.t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization }, payload: { query, operationName: 'LabelSecond' } })
    expect(post.json()).toEqual({ data: { viewer: { email: expect.anything() } } })
    const get = await ctx.t.app.inject({ method: 'GET', url: `/graphql?${new URLSearchParams({ query, operationName: 'LabelSecond' })}`, headers: { authorization } })
    expect(get.json()).toEqual({ data: { viewer: { email: expect.anything() } } })
    // Naming none of them is graphql-js's error, labelled as no operation.
    const unnamed = await ctx.t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization }, payload: { query } })
    expect(unnamed.json().errors[0].message).toMatch(/operation name/i)
    await changes()
    expect(last.value('graphql_operation_duration_seconds_count', { operation: 'LabelSecond', type: 'query', outcome: 'ok' })).toBe(2)
    expect(last.labelValues('graphql_operation_duration_seconds_count', 'operation').has('LabelFirst')).toBe(false)
  })

  it('keeps label cardinality bounded whatever clients send', async () => {
    const token = ctx.t.token('service')
    for (let i = 0; i < 300; i++) await ctx.t.gql(`query Op${i}_${Math.random().toString(36).slice(2, 8)} { viewer { id } }`, {}, token)
    for (let i = 0; i < 50; i++) await ctx.t.app.inject({ method: 'GET', url: `/no/such/route/${i}` })
    for (let i = 0; i < 50; i++) await ctx.t.app.inject({ method: 'GET', url: `/t/o/${i}.1.forged.gif` })
    const now = await scrape()
    const operations = now.labelValues('graphql_operation_duration_seconds_count', 'operation')
    expect(operations.size).toBeLessThanOrEqual(202)
    expect(operations.has('other')).toBe(true)
    const routes = now.labelValues('http_request_duration_seconds_count', 'route')
    expect([...routes].some((r) => r.includes('/no/such'))).toBe(false)
    // Requests that match no route are still timed, under one label.
    expect(routes.has('unmatched')).toBe(true)
    expect(now.samples.filter((s) => s.name.startsWith('groundwork_')).length).toBe(last.samples.filter((s) => s.name.startsWith('groundwork_')).length)
  })
})

describe('countedTransport: provider response classes', () => {
  let fake: FakeResend
  beforeAll(async () => {
    fake = await startFakeResend()
  })
  afterAll(() => fake.close())

  const message = (to: string): MailMessage => ({ from: 'Acme <hello@acme.dev>', to: [to], subject: 'Hi', html: '<p>Hi</p>', text: 'Hi' })

  function observed(baseUrl: string, timeoutMs = 2000) {
    const seen: [MailResponseClass, number][] = []
    // The SDK reads RESEND_BASE_URL when the client is constructed.
    process.env.RESEND_BASE_URL = baseUrl
    try {
      const transport = countedTransport(createResendTransport({ apiKey: 're_test_key', timeoutMs }), (c, n) => seen.push([c, n]))
      return { transport, seen }
    } finally {
      delete process.env.RESEND_BASE_URL
    }
  }

  it('classes answers as 2xx, 4xx, 429 and 5xx, per message', async () => {
    const { transport, seen } = observed(fake.url)
    await transport.send(message('a@example.com'))
    fake.failNext(422)
    await expect(transport.send(message('a@example.com'))).rejects.toThrow()
    fake.failNext(429)
    await expect(transport.sendBatch([message('a@example.com'), message('b@example.com')])).rejects.toThrow()
    fake.failNext(503)
    await expect(transport.send(message('a@example.com'))).rejects.toThrow()
    // A permissive batch accepts the good items and refuses the bad one alone.
    const results = await transport.sendBatch([message('a@example.com'), message('not-an-address'), message('c@example.com')], { permissive: true })
    expect(results.filter((r) => r.error !== undefined)).toHaveLength(1)
    expect(seen).toEqual([['2xx', 1], ['4xx', 1], ['429', 2], ['5xx', 1], ['2xx', 2], ['4xx', 1]])
  })

  it('tells a timeout from a network failure', async () => {
    const slow = observed(fake.url, 200)
    fake.stallNext()
    await expect(slow.transport.send(message('a@example.com'))).rejects.toThrow(/did not answer/)
    const closed = await startFakeResend()
    const url = closed.url
    await closed.close()
    const down = observed(url)
    await expect(down.transport.send(message('a@example.com'))).rejects.toThrow()
    expect(slow.seen).toEqual([['timeout', 1]])
    expect(down.seen).toEqual([['network', 1]])
  })
})

describe('rate limiter waits', () => {
  it('reports a wait with its duration, and nothing when a token was free', async () => {
    const waits: number[] = []
    const limiter = createRateLimiter({ ratePerSecond: 0, onWait: (s) => waits.push(s) })
    await limiter.acquire()
    expect(waits).toEqual([])
    await limiter.backOff(150)
    await limiter.acquire()
    expect(waits).toHaveLength(1)
    expect(waits[0]).toBeGreaterThanOrEqual(0.1)
  })

  it('reports an aborted wait too', async () => {
    const waits: number[] = []
    const limiter = createRateLimiter({ ratePerSecond: 0, onWait: (s) => waits.push(s) })
    await limiter.backOff(10_000)
    const abort = new AbortController()
    const pending = limiter.acquire(abort.signal)
    setTimeout(() => abort.abort(), 30)
    await expect(pending).rejects.toThrow()
    expect(waits).toHaveLength(1)
  })
})

describe('QueueDepths', () => {
  let database: TestDatabase & { handle: DatabaseHandle }
  beforeAll(async () => {
    database = await createTestDatabase()
  })
  afterAll(() => database.drop())

  const queueEmail = (sendAt: string) => database.handle.db.execute(sql`insert into emails (template, "to", data, send_at) values ('welcome', 'a@example.com', '{}', ${sendAt}::timestamptz)`)

  it('counts only due emails, and answers from memory within its TTL', async () => {
    const depths = new QueueDepths(database.handle.db, 60_000)
    expect(await depths.read()).toEqual({ campaignRecipients: 0, scheduledEmailsDue: 0, webhookEvents: 0, fileSteps: 0, webhookDeliveries: 0 })
    await queueEmail(new Date(Date.now() - 1000).toISOString())
    await queueEmail(new Date(Date.now() + 3_600_000).toISOString())
    // Within the TTL: the earlier figure, no query.
    expect((await depths.read()).scheduledEmailsDue).toBe(0)
    const fresh = new QueueDepths(database.handle.db, 0)
    const [a, b] = await Promise.all([fresh.read(), fresh.read()])
    expect(a.scheduledEmailsDue).toBe(1)
    expect(b).toBe(a)
  })

  it('counts pending provider webhook events and pending outgoing deliveries, not finished ones', async () => {
    const db = database.handle.db
    await db.execute(sql`insert into webhook_events (svix_id, type, occurred_at) values ('msg_pending', 2, now()), ('msg_done', 2, now())`)
    await db.execute(sql`update webhook_events set status = 'done' where svix_id = 'msg_done'`)
    const [endpoint] = (await db.execute<{ id: string }>(sql`insert into webhook_endpoints (url, secret) values ('https://hooks.example.com/gw', 'whsec_x') returning id`)).rows
    await db.execute(sql`insert into webhook_deliveries (endpoint_id, event_type, payload, status) values
      (${endpoint!.id}, 'email.opened', '{}', 'pending'), (${endpoint!.id}, 'email.opened', '{}', 'pending'), (${endpoint!.id}, 'email.opened', '{}', 'delivered')`)
    const depths = await new QueueDepths(db, 0).read()
    expect({ webhookEvents: depths.webhookEvents, webhookDeliveries: depths.webhookDeliveries }).toEqual({ webhookEvents: 1, webhookDeliveries: 2 })
  })

  it('rejects while the database is away, then answers again', async () => {
    const depths = new QueueDepths(database.handle.db, 0)
    await database.handle.db.execute(sql`alter table emails rename to emails_away`)
    try {
      await expect(depths.read()).rejects.toThrow()
    } finally {
      await database.handle.db.execute(sql`alter table emails_away rename to emails`)
    }
    expect((await depths.read()).scheduledEmailsDue).toBe(1)
  })
})
