/**
 * Outgoing webhooks end to end: endpoints managed through GraphQL, real events (a Resend webhook, a
 * click, an open, an unsubscribe, a conversion) queued with the change that produced them, and
 * signed POSTs to a local receiver, verified with the Svix verifier the app uses for Resend's own
 * webhooks. Then the faults: 5xx retried on the schedule, always failing, 410, a receiver that
 * hangs, a worker stopped mid-request, and every kind of bad input.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql, type SQL } from 'drizzle-orm'
import { Webhook } from 'standardwebhooks'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { ConfigError, loadConfig } from '../src/config'
import { createWebhookVerifier } from '../src/services/tracking/webhook-verifier'
import { isPublicAddress } from '../src/services/webhooks/address-policy'
import { DeliveryWorker } from '../src/services/webhooks/delivery-worker'
import { nextRetryDelay } from '../src/services/webhooks/retry-schedule'
import { postWebhook as postToEndpoint } from '../src/services/webhooks/webhook-request'
import { addContacts, campaignAction, createAudience, createCampaign, createPublishedTemplate } from './campaign-fixtures'
import { buildTestApp, type TestApp } from './helpers/app'
import { scrapeMetrics } from './helpers/metrics'
import { pathOf, pixelPath, postWebhook, resendEvent, sendTrackedCampaign, startTrackingApp, TRACKED_HTML, trackedLinks, type TrackingContext } from './tracking-fixtures'

const HUMAN_UA = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0'
const ENV = {
  WEBHOOKS_ALLOW_PRIVATE_URLS: 'true',
  WEBHOOKS_RETRY_SCHEDULE: '60ms,120ms',
  WEBHOOKS_MAX_ATTEMPTS: '3',
  WEBHOOKS_TIMEOUT_MS: '1000',
  WEBHOOKS_DISABLE_AFTER_FAILURES: '4',
  // Clicks right after the send are people here, not scanners.
  TRACKING_SCANNER_WINDOW_SECONDS: '0',
}

interface Received {
  path: string
  headers: http.IncomingHttpHeaders
  body: string
}

type Answer = number | 'hang'

/** An app's webhook receiver: records every request; each path answers as told (default 204). */
async function startReceiver() {
  const received: Received[] = []
  const answers = new Map<string, (nth: number) => Answer>()
  const hanging = new Set<http.ServerResponse>()
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const path = req.url ?? '/'
      received.push({ path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })
      const answer = answers.get(path)?.(received.filter((r) => r.path === path).length) ?? 204
      if (answer === 'hang') {
        hanging.add(res)
        return
      }
      res.writeHead(answer, { 'content-type': 'text/plain' }).end(answer >= 300 ? `refused with ${answer}` : '')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: (path: string) => `http://127.0.0.1:${port}${path}`,
    at: (path: string) => received.filter((r) => r.path === path),
    answer: (path: string, fn: (nth: number) => Answer) => answers.set(path, fn),
    close: async () => {
      for (const res of hanging) res.destroy()
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

let ctx: TrackingContext
let receiver: Awaited<ReturnType<typeof startReceiver>>

beforeAll(async () => {
  receiver = await startReceiver()
  ctx = await startTrackingApp(ENV)
})
afterAll(async () => {
  await ctx?.t.close()
  await ctx?.fake.close()
  await receiver?.close()
})
// Every endpoint receives every later test's events: each test starts with none.
afterEach(async () => {
  await ctx.t.app.db.db.execute(sql`delete from webhook_endpoints`)
})

const db = () => ctx.t.app.db.db
const deliver = () => ctx.t.app.services.webhooks.worker.drain()
const applyProviderEvents = () => ctx.t.app.services.tracking.webhooks.processor.drain()

const ENDPOINT_RESULT = `
  __typename
  ... on Error { message }
  ... on ValidationError { fieldErrors { path message } }
  ... on InvalidWebhookUrlError { problem }
`
const ENDPOINT_FIELDS = 'id url description eventTypes enabled disabledReason consecutiveFailures'

type EndpointResult = {
  __typename: string
  message?: string
  problem?: string
  fieldErrors?: { path: string[]; message: string }[]
  secret?: string
  endpoint?: { id: string; url: string; description: string | null; eventTypes: string[]; enabled: boolean; disabledReason: string | null; consecutiveFailures: number }
}

async function create(input: Record<string, unknown>, t: TestApp = ctx.t, token = ctx.admin): Promise<EndpointResult> {
  const res = await t.gql<{ createWebhookEndpoint: EndpointResult }>(
    `mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
      ${ENDPOINT_RESULT} ... on CreateWebhookEndpointSuccess { secret endpoint { ${ENDPOINT_FIELDS} } } } }`,
    { input },
    token,
  )
  if (res.errors) throw new Error(JSON.stringify(res.errors))
  return res.data.createWebhookEndpoint
}

/** Creates an endpoint for `path` on the receiver; returns its id and secret. */
async function endpointAt(path: string, eventTypes?: string[]): Promise<{ id: string; secret: string }> {
  const result = await create({ url: receiver.url(path), eventTypes })
  expect(result.__typename).toBe('CreateWebhookEndpointSuccess')
  return { id: result.endpoint!.id, secret: result.secret! }
}

async function update(id: string, input: Record<string, unknown>): Promise<EndpointResult> {
  const res = await ctx.t.gql<{ updateWebhookEndpoint: EndpointResult }>(
    `mutation($id: ID!, $input: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(id: $id, input: $input) {
      ${ENDPOINT_RESULT} ... on UpdateWebhookEndpointSuccess { endpoint { ${ENDPOINT_FIELDS} } } } }`,
    { id, input },
    ctx.admin,
  )
  if (res.errors) throw new Error(JSON.stringify(res.errors))
  return res.data.updateWebhookEndpoint
}

type DeliveryNode = { id: string; messageId: string; eventType: string; payload: { type: string; created_at: string; data: Record<string, unknown> }; status: string; attempts: number; lastStatusCode: number | null; lastError: string | null }

async function deliveriesOf(endpointId: string, status?: string): Promise<DeliveryNode[]> {
  const res = await ctx.t.gql<{ webhookEndpoint: { deliveries: { edges: { node: DeliveryNode }[] } } }>(
    `query($id: ID!, $status: WebhookDeliveryStatus) { webhookEndpoint(id: $id) { deliveries(first: 20, status: $status) {
      edges { node { id messageId eventType payload status attempts lastStatusCode lastError } } } } }`,
    { id: endpointId, status },
    ctx.admin,
  )
  if (res.errors) throw new Error(JSON.stringify(res.errors))
  return res.data.webhookEndpoint.deliveries.edges.map((e) => e.node)
}

async function redeliver(id: string) {
  const res = await ctx.t.gql<{ redeliverWebhookDelivery: { __typename: string; message?: string; delivery?: { status: string; attempts: number } } }>(
    `mutation($id: ID!) { redeliverWebhookDelivery(id: $id) { __typename ... on Error { message } ... on RedeliverWebhookDeliverySuccess { delivery { status attempts } } } }`,
    { id },
    ctx.admin,
  )
  if (res.errors) throw new Error(JSON.stringify(res.errors))
  return res.data.redeliverWebhookDelivery
}

/** Checks the receiver's request with the app's own Svix verifier (the one POST /webhooks/resend uses): proves any Standard Webhooks client accepts it. */
function verify(secret: string, request: Received) {
  return createWebhookVerifier(secret)(request.body, {
    id: String(request.headers['webhook-id']),
    timestamp: String(request.headers['webhook-timestamp']),
    signature: String(request.headers['webhook-signature']),
  })
}

/** Drains until the endpoint has no pending delivery left, waiting out the retry delays. */
async function settle(endpointId: string): Promise<void> {
  for (let round = 0; round < 10; round++) {
    await deliver()
    if ((await deliveriesOf(endpointId, 'PENDING')).length === 0) return
    await untilDue(sql`endpoint_id = ${endpointId}`)
  }
  throw new Error('deliveries still pending')
}

/** Sleeps until every pending delivery `where` picks is due. */
async function untilDue(where: SQL): Promise<void> {
  const rows = await db().execute<{ wait: string | null }>(
    sql`select greatest(0, extract(epoch from max(next_attempt_at) - now()) * 1000) as wait from webhook_deliveries where status = 'pending' and ${where}`,
  )
  await sleep(Number(rows.rows[0]!.wait ?? 0) + 5)
}

/** Queues `count` deliveries for the endpoint directly (as the enqueuer would), due `agoMs` ago. */
async function queue(endpointId: string, count: number, agoMs = 0): Promise<void> {
  await db().execute(sql`
    insert into webhook_deliveries (endpoint_id, event_type, payload, next_attempt_at)
    select ${endpointId}::uuid, 'email.delivered', jsonb_build_object('n', n), now() - make_interval(secs => ${agoMs / 1000}::double precision)
    from generate_series(1, ${count}) n`)
}

/** The endpoint as the API shows it. */
async function endpointState(id: string) {
  return (await update(id, {})).endpoint!
}

async function deliveredEvent(email: string) {
  const { campaignId, recipients } = await sendTrackedCampaign(ctx, [email])
  const recipient = recipients[0]!
  expect((await postWebhook(ctx.t, resendEvent('email.delivered', recipient, campaignId))).statusCode).toBe(200)
  await applyProviderEvents()
  return { campaignId, recipient }
}

describe('outgoing webhooks: events', () => {
  it('sends a signed email.delivered when a Resend webhook is applied, verifiable with a Svix verifier', async () => {
    const { id, secret } = await endpointAt('/delivered')
    const { campaignId, recipient } = await deliveredEvent('ow-delivered@example.com')
    expect(await deliver()).toEqual({ delivered: 1, failed: 0 })

    const [request] = receiver.at('/delivered')
    expect(request).toBeDefined()
    expect(verify(secret, request!)).toMatchObject({ ok: true })
    // The same request under another secret, or with one byte changed, does not verify.
    const other = `whsec_${Buffer.from('another-endpoint-secret-32-bytes').toString('base64')}`
    expect(verify(other, request!)).toMatchObject({ ok: false, reason: 'signature' })
    expect(verify(secret, { ...request!, body: request!.body.replace('delivered', 'bounced') })).toMatchObject({ ok: false })

    expect(request!.headers['content-type']).toBe('application/json')
    expect(request!.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+={0,2}$/)
    const body = JSON.parse(request!.body) as { type: string; created_at: string; data: Record<string, unknown> }
    expect(body).toMatchObject({
      type: 'email.delivered',
      data: { campaign_id: campaignId, recipient_id: String(recipient.id), email: 'ow-delivered@example.com', email_id: recipient.providerId },
    })
    expect(Number.isNaN(Date.parse(body.created_at))).toBe(false)

    const [delivery] = await deliveriesOf(id)
    expect(delivery).toMatchObject({ eventType: 'email.delivered', status: 'DELIVERED', attempts: 1, lastStatusCode: 204, lastError: null, messageId: request!.headers['webhook-id'] })
  })

  it('sends email.clicked on every click with its link, email.opened on the first open only, and email.unsubscribed once', async () => {
    const { id, secret } = await endpointAt('/engagement')
    const { recipients } = await sendTrackedCampaign(ctx, ['ow-engaged@example.com'])
    const html = recipients[0]!.message.html!
    const headers = { 'user-agent': HUMAN_UA }
    for (let i = 0; i < 2; i++) expect((await ctx.t.app.inject({ method: 'GET', url: pixelPath(html), headers })).statusCode).toBe(200)
    const link = trackedLinks(html)[0]!
    for (let i = 0; i < 2; i++) expect((await ctx.t.app.inject({ method: 'GET', url: pathOf(link), headers })).statusCode).toBe(302)
    const unsubscribe = /<(http:\/\/groundwork\.test\/t\/u\/[^>]+)>/.exec(recipients[0]!.message.headers!['List-Unsubscribe']!)![1]!
    for (let i = 0; i < 2; i++) {
      const res = await ctx.t.app.inject({ method: 'POST', url: new URL(unsubscribe).pathname, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'List-Unsubscribe=One-Click' })
      expect(res.statusCode).toBe(200)
    }
    await ctx.t.app.services.tracking.flush()
    await deliver()

    const requests = receiver.at('/engagement')
    for (const r of requests) expect(verify(secret, r)).toMatchObject({ ok: true })
    const events = requests.map((r) => JSON.parse(r.body) as { type: string; data: Record<string, unknown> })
    expect(events.map((e) => e.type).sort()).toEqual(['email.clicked', 'email.clicked', 'email.opened', 'email.unsubscribed'])
    const click = events.find((e) => e.type === 'email.clicked')!
    expect(click.data).toMatchObject({ link_url: 'https://shop.example.com/sale?x=1&y=2', link_index: 0, machine: false, email: 'ow-engaged@example.com' })
    expect(events.find((e) => e.type === 'email.opened')!.data).toMatchObject({ machine: false, recipient_id: String(recipients[0]!.id) })
    expect(new Set(requests.map((r) => r.headers['webhook-id'])).size).toBe(4)
    expect((await deliveriesOf(id, 'DELIVERED')).length).toBe(4)
  })

  it('sends email.converted with the value and currency of a recorded conversion', async () => {
    const { secret } = await endpointAt('/converted', ['email.converted'])
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['ow-buyer@example.com'])
    const redirect = await ctx.t.app.inject({ method: 'GET', url: pathOf(trackedLinks(recipients[0]!.message.html!)[1]!), headers: { 'user-agent': HUMAN_UA } })
    const token = new URL(redirect.headers.location as string).searchParams.get('gw_click')!
    const recorded = await ctx.t.gql<{ recordConversion: { __typename: string } }>(
      'mutation($token: String!) { recordConversion(token: $token, value: 49.9, currency: "eur") { __typename } }',
      { token },
    )
    expect(recorded.data.recordConversion.__typename).toBe('RecordConversionSuccess')
    await ctx.t.app.services.tracking.flush()
    await deliver()

    // Only the subscribed type: the click that led here is not sent to this endpoint.
    const requests = receiver.at('/converted')
    expect(requests).toHaveLength(1)
    expect(verify(secret, requests[0]!)).toMatchObject({ ok: true })
    expect(JSON.parse(requests[0]!.body)).toMatchObject({
      type: 'email.converted',
      data: { campaign_id: campaignId, recipient_id: String(recipients[0]!.id), value: 49.9, currency: 'EUR', link_index: 1, first: true },
    })
  })

  it('sends one email.bounced with its reason, nothing for a late delivered after it, and nothing twice for a replayed svix-id', async () => {
    const { id } = await endpointAt('/bounces', ['email.bounced', 'email.delivered'])
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['ow-bounce@example.com'])
    const bounce = resendEvent('email.bounced', recipients[0]!, campaignId, { bounce: { type: 'Permanent', subType: 'General', message: 'mailbox does not exist' } })
    await postWebhook(ctx.t, bounce, { svixId: 'msg_ow_bounce' })
    await postWebhook(ctx.t, bounce, { svixId: 'msg_ow_bounce' })
    await postWebhook(ctx.t, resendEvent('email.delivered', recipients[0]!, campaignId))
    await applyProviderEvents()
    await deliver()
    const events = receiver.at('/bounces').map((r) => JSON.parse(r.body) as { type: string; data: { reason?: string } })
    expect(events.map((e) => e.type)).toEqual(['email.bounced'])
    expect(events[0]!.data.reason).toContain('mailbox does not exist')
    expect(await deliveriesOf(id)).toHaveLength(1)
  })

  it('queues nothing when no enabled endpoint wants the event', async () => {
    const count = async () => Number((await db().execute<{ n: string }>(sql`select count(*) as n from webhook_deliveries`)).rows[0]!.n)
    const before = await count()
    await deliveredEvent('ow-nobody@example.com')
    expect(await count()).toBe(before)

    const { id } = await endpointAt('/disabled')
    expect((await update(id, { enabled: false })).endpoint).toMatchObject({ enabled: false })
    await endpointAt('/other-type', ['email.complained'])
    await deliveredEvent('ow-nobody2@example.com')
    expect(await count()).toBe(before)
  })

  const rotate = (id: string, overlapHours?: number) =>
    ctx.t.gql<{ rotateWebhookEndpointSecret: { __typename: string; secret?: string; message?: string; endpoint?: { id: string; previousSecretExpiresAt: string | null } } }>(
      `mutation($id: ID!${overlapHours === undefined ? '' : ', $overlap: Int'}) { rotateWebhookEndpointSecret(id: $id${overlapHours === undefined ? '' : ', overlapHours: $overlap'}) {
        __typename ... on RotateWebhookEndpointSecretSuccess { secret endpoint { id previousSecretExpiresAt } } ... on Error { message } } }`,
      { id, overlap: overlapHours },
      ctx.admin,
    )

  it('signs with the new secret only after a rotation with no overlap (the default)', async () => {
    const { id, secret: old } = await endpointAt('/rotated')
    const rotated = (await rotate(id)).data.rotateWebhookEndpointSecret
    expect(rotated).toMatchObject({ __typename: 'RotateWebhookEndpointSecretSuccess', endpoint: { id, previousSecretExpiresAt: null } })
    expect(rotated.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/)
    expect(rotated.secret).not.toBe(old)
    await deliveredEvent('ow-rotated@example.com')
    await deliver()
    const [request] = receiver.at('/rotated')
    expect(String(request!.headers['webhook-signature']).split(' ')).toHaveLength(1)
    expect(verify(rotated.secret!, request!)).toMatchObject({ ok: true })
    expect(verify(old, request!)).toMatchObject({ ok: false })
  })

  it('signs with both secrets during the overlap, then with the new one only, and forgets the old one', async () => {
    const { id, secret: first } = await endpointAt('/overlap')
    const rotated = (await rotate(id, 24)).data.rotateWebhookEndpointSecret
    const expires = Date.parse(rotated.endpoint!.previousSecretExpiresAt!)
    expect(expires - Date.now()).toBeGreaterThan(23.9 * 3600_000)
    expect(expires - Date.now()).toBeLessThanOrEqual(24 * 3600_000)
    await deliveredEvent('ow-overlap@example.com')
    await deliver()
    const [during] = receiver.at('/overlap')
    expect(String(during!.headers['webhook-signature']).split(' ')).toHaveLength(2)
    // A receiver holding either secret accepts it: Resend's (svix) verifier and the standardwebhooks package.
    for (const secret of [first, rotated.secret!]) {
      expect(verify(secret, during!)).toMatchObject({ ok: true })
      expect(() => new Webhook(secret).verify(during!.body, during!.headers as Record<string, string>)).not.toThrow()
    }

    // A second rotation keeps only the secret it replaces: at most two sign.
    const again = (await rotate(id, 1)).data.rotateWebhookEndpointSecret
    await deliveredEvent('ow-overlap2@example.com')
    await deliver()
    const second = receiver.at('/overlap')[1]!
    expect(verify(again.secret!, second)).toMatchObject({ ok: true })
    expect(verify(rotated.secret!, second)).toMatchObject({ ok: true })
    expect(verify(first, second)).toMatchObject({ ok: false })

    // Once the overlap is over, the old secret no longer signs.
    await db().execute(sql`update webhook_endpoints set previous_secret_expires_at = now() - interval '1 second' where id = ${id}`)
    const endpoint = await ctx.t.gql<{ webhookEndpoint: { previousSecretExpiresAt: string | null } }>('query($id: ID!) { webhookEndpoint(id: $id) { previousSecretExpiresAt } }', { id }, ctx.admin)
    expect(endpoint.data.webhookEndpoint.previousSecretExpiresAt).toBeNull()
    await deliveredEvent('ow-overlap3@example.com')
    await deliver()
    const after = receiver.at('/overlap')[2]!
    expect(String(after.headers['webhook-signature']).split(' ')).toHaveLength(1)
    expect(verify(again.secret!, after)).toMatchObject({ ok: true })
    expect(verify(rotated.secret!, after)).toMatchObject({ ok: false })
    // The prune pass clears the expired secret from the row.
    await ctx.t.app.services.webhooks.worker.prune()
    const row = await db().execute<{ previous_secret: string | null }>(sql`select previous_secret from webhook_endpoints where id = ${id}`)
    expect(row.rows[0]!.previous_secret).toBeNull()
  })

  it('refuses an overlap outside 0-168 hours and an unknown endpoint', async () => {
    const { id } = await endpointAt('/overlap-bad')
    for (const hours of [-1, 169, 2_000_000_000]) {
      const res = (await rotate(id, hours)).data.rotateWebhookEndpointSecret
      expect(res).toMatchObject({ __typename: 'ValidationError', message: expect.stringContaining('between 0 and 168 hours') })
    }
    const missing = (await rotate('00000000-0000-4000-8000-000000000000', 0)).data.rotateWebhookEndpointSecret
    expect(missing.__typename).toBe('NotFoundError')
  })

  it('clears the subscription cache of another instance when an endpoint is created', async () => {
    const other = await startTrackingApp(ENV, { database: ctx.t.database, redisPrefix: ctx.t.redisPrefix })
    try {
      const { recipient } = await deliveredEvent('ow-instances@example.com')
      const enqueueOnOther = async () => {
        await other.t.app.db.db.transaction(async (tx) => {
          await other.t.app.services.webhooks.enqueuer.enqueue(tx as never, [{ type: 'email.delivered', recipientId: recipient.id, at: Date.now() }])
        })
        const rows = await db().execute<{ n: string }>(sql`select count(*) as n from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id where e.url like '%/instances'`)
        return Number(rows.rows[0]!.n)
      }
      // The other instance now remembers that nobody subscribes.
      expect(await enqueueOnOther()).toBe(0)
      await endpointAt('/instances')
      await vi.waitFor(async () => expect(await enqueueOnOther()).toBeGreaterThan(0), { timeout: 5_000, interval: 50 })
    } finally {
      await other.t.close()
      await other.fake.close()
    }
  })
})

describe('outgoing webhooks: retries and faults', () => {
  it('retries a 500 on the schedule and delivers on the next attempt, with the same webhook-id', async () => {
    receiver.answer('/flaky', (nth) => (nth === 1 ? 500 : 200))
    const before = await scrapeMetrics(ctx.t.app)
    const { id, secret } = await endpointAt('/flaky')
    await deliveredEvent('ow-flaky@example.com')
    expect(await deliver()).toEqual({ delivered: 0, failed: 0 })
    const [pending] = await deliveriesOf(id)
    expect(pending).toMatchObject({ status: 'PENDING', attempts: 1, lastStatusCode: 500 })
    expect(pending!.lastError).toContain('HTTP 500: refused with 500')
    const backoff = await db().execute<{ ms: string }>(sql`select extract(epoch from next_attempt_at - created_at) * 1000 as ms from webhook_deliveries where id = ${Number(pending!.id)}`)
    // The first retry waits the first delay of the schedule, less at most 10% of jitter.
    expect(Number(backoff.rows[0]!.ms)).toBeGreaterThanOrEqual(54)

    // Not due yet: a drain now sends nothing.
    await deliver()
    expect(receiver.at('/flaky')).toHaveLength(1)
    await untilDue(sql`id = ${Number(pending!.id)}`)
    expect(await deliver()).toEqual({ delivered: 1, failed: 0 })
    const requests = receiver.at('/flaky')
    expect(requests).toHaveLength(2)
    expect(requests[1]!.headers['webhook-id']).toBe(requests[0]!.headers['webhook-id'])
    for (const r of requests) expect(verify(secret, r)).toMatchObject({ ok: true })
    expect(await deliveriesOf(id)).toMatchObject([{ status: 'DELIVERED', attempts: 2, lastStatusCode: 200, lastError: null }])
    const endpoint = await db().execute<{ consecutive_failures: number }>(sql`select consecutive_failures from webhook_endpoints where id = ${id}`)
    expect(endpoint.rows[0]!.consecutive_failures).toBe(0)
    // One attempt scheduled again, one delivered, each timed.
    const after = await scrapeMetrics(ctx.t.app)
    const moved = (outcome: string) => after.value('groundwork_webhook_deliveries_total', { outcome }) - before.value('groundwork_webhook_deliveries_total', { outcome })
    expect({ retry: moved('retry'), delivered: moved('delivered'), failed: moved('failed') }).toEqual({ retry: 1, delivered: 1, failed: 0 })
    expect(after.value('groundwork_webhook_delivery_duration_seconds_count') - before.value('groundwork_webhook_delivery_duration_seconds_count')).toBe(2)
  })

  it('fails a delivery after the last attempt, disables the endpoint after N failed deliveries in a row, and redelivers once it is enabled', async () => {
    let healthy = false
    receiver.answer('/down', () => (healthy ? 200 : 503))
    const { id } = await endpointAt('/down')
    // A real event fails its three attempts, and counts once.
    await deliveredEvent('ow-down1@example.com')
    await settle(id)
    expect(receiver.at('/down')).toHaveLength(3)
    expect(await endpointState(id)).toMatchObject({ enabled: true, consecutiveFailures: 1 })
    // Three more fail together: the fourth failed delivery in a row disables the endpoint.
    await queue(id, 3)
    await settle(id)
    expect(receiver.at('/down')).toHaveLength(12)
    expect(await endpointState(id)).toMatchObject({ enabled: false, disabledReason: 'Disabled after 4 failed deliveries in a row', consecutiveFailures: 4 })
    // Queued before it was disabled and due now: failed without a request.
    await queue(id, 1)
    expect(await deliver()).toEqual({ delivered: 0, failed: 1 })
    expect(receiver.at('/down')).toHaveLength(12)
    const failed = await deliveriesOf(id, 'FAILED')
    expect(failed).toHaveLength(5)
    expect(failed.map((d) => d.lastError).sort()).toEqual([...Array<string>(4).fill('HTTP 503: refused with 503'), 'The endpoint is disabled'])
    expect(failed.map((d) => d.attempts).sort()).toEqual([1, 3, 3, 3, 3])

    // Disabled: a redelivery is refused; re-enabled: it is sent.
    expect(await redeliver(failed[0]!.id)).toMatchObject({ __typename: 'ConflictError', message: 'The endpoint is disabled; enable it first' })
    expect((await update(id, { enabled: true })).endpoint).toMatchObject({ enabled: true, disabledReason: null, consecutiveFailures: 0 })
    healthy = true
    for (const d of failed) expect(await redeliver(d.id)).toMatchObject({ __typename: 'RedeliverWebhookDeliverySuccess', delivery: { status: 'PENDING', attempts: 0 } })
    expect(await deliver()).toEqual({ delivered: 5, failed: 0 })
    expect(await deliveriesOf(id, 'DELIVERED')).toHaveLength(5)
    // Delivered now: redelivering it again is a conflict.
    expect(await redeliver(failed[0]!.id)).toMatchObject({ __typename: 'ConflictError' })
  })

  it('rides out a burst of failed attempts across many deliveries: the endpoint stays enabled and everything is delivered', async () => {
    let down = true
    receiver.answer('/burst', () => (down ? 503 : 200))
    const { id } = await endpointAt('/burst')
    await queue(id, 15)
    // Two failed attempts each: 30 in a row, far past WEBHOOKS_DISABLE_AFTER_FAILURES (4), but each will be retried.
    expect(await deliver()).toEqual({ delivered: 0, failed: 0 })
    await untilDue(sql`endpoint_id = ${id}`)
    expect(await deliver()).toEqual({ delivered: 0, failed: 0 })
    expect(receiver.at('/burst')).toHaveLength(30)
    expect(await endpointState(id)).toMatchObject({ enabled: true, consecutiveFailures: 0 })

    down = false
    await untilDue(sql`endpoint_id = ${id}`)
    expect(await deliver()).toEqual({ delivered: 15, failed: 0 })
    const deliveries = await deliveriesOf(id)
    expect(deliveries).toHaveLength(15)
    for (const d of deliveries) expect(d).toMatchObject({ status: 'DELIVERED', attempts: 3, lastStatusCode: 200 })
    expect(await endpointState(id)).toMatchObject({ enabled: true, consecutiveFailures: 0, disabledReason: null })
  })

  it('keeps an endpoint that hangs to its share of the slots, so the other endpoints are delivered meanwhile', async () => {
    receiver.answer('/stuck', () => 'hang')
    const stuck = await endpointAt('/stuck')
    const fine = await endpointAt('/fine')
    // The hanging endpoint's deliveries are the oldest: by due time alone they would take every slot.
    await queue(stuck.id, 4, 60_000)
    await queue(fine.id, 4)
    const worker = new DeliveryWorker({
      db: db(), retry: { schedule: [1_000], maxAttempts: 3 }, timeoutMs: 60_000, concurrency: 2, disableAfterFailures: 10, allowPrivate: true, retentionDays: 0,
    })
    const draining = worker.drain()
    try {
      await vi.waitFor(async () => expect(await deliveriesOf(fine.id, 'DELIVERED')).toHaveLength(4), { timeout: 10_000, interval: 50 })
      // Half the two slots for the hanging endpoint: one request, still in flight.
      expect(receiver.at('/stuck')).toHaveLength(1)
      const leased = await db().execute<{ n: string }>(sql`select count(*) as n from webhook_deliveries where endpoint_id = ${stuck.id} and locked_until > now()`)
      expect(Number(leased.rows[0]!.n)).toBe(1)
    } finally {
      await worker.stop()
    }
    expect(await draining).toEqual({ delivered: 4, failed: 0 })
    expect(await deliveriesOf(stuck.id, 'PENDING')).toHaveLength(4)
  })

  it('disables the endpoint at once on 410 Gone and fails the delivery without retries', async () => {
    receiver.answer('/gone', () => 410)
    const { id } = await endpointAt('/gone')
    await deliveredEvent('ow-gone@example.com')
    expect(await deliver()).toEqual({ delivered: 0, failed: 1 })
    expect(await deliveriesOf(id)).toMatchObject([{ status: 'FAILED', attempts: 1, lastStatusCode: 410 }])
    expect((await update(id, {})).endpoint).toMatchObject({ enabled: false, disabledReason: 'The endpoint answered 410 Gone' })
  })

  it('gives up on a receiver that never answers after the timeout, and the drain ends', async () => {
    receiver.answer('/hang', () => 'hang')
    const { id } = await endpointAt('/hang')
    await deliveredEvent('ow-hang@example.com')
    expect(await deliver()).toEqual({ delivered: 0, failed: 0 })
    expect(receiver.at('/hang')).toHaveLength(1)
    expect(await deliveriesOf(id)).toMatchObject([{ status: 'PENDING', attempts: 1, lastStatusCode: null, lastError: 'No complete answer within 1000 ms' }])
  })

  it('sends what fell due after a running drain started when drain() is called again during it', async () => {
    receiver.answer('/join-slow', () => 'hang')
    const slow = await endpointAt('/join-slow')
    const quick = await endpointAt('/join-quick')
    await queue(slow.id, 1)
    // A drain is under way (a poll's, say), its request hanging until the timeout.
    const running = deliver()
    await vi.waitFor(() => expect(receiver.at('/join-slow')).toHaveLength(1), { timeout: 2_000, interval: 10 })
    // A row due only now: the running pass started before it.
    await queue(quick.id, 1)
    const joined = deliver()
    expect(joined).toBe(running)
    expect(await joined).toEqual({ delivered: 1, failed: 0 })
    expect(receiver.at('/join-quick')).toHaveLength(1)
  })

  it('stops mid-request on shutdown and gives the row back uncounted', async () => {
    receiver.answer('/slow', () => 'hang')
    const { id } = await endpointAt('/slow')
    await deliveredEvent('ow-slow@example.com')
    const worker = new DeliveryWorker({
      db: db(), retry: { schedule: [1_000], maxAttempts: 3 }, timeoutMs: 60_000, concurrency: 2, disableAfterFailures: 10, allowPrivate: true, retentionDays: 0,
    })
    const draining = worker.drain()
    await vi.waitFor(() => expect(receiver.at('/slow')).toHaveLength(1), { timeout: 5_000, interval: 20 })
    await worker.stop()
    expect(await draining).toEqual({ delivered: 0, failed: 0 })
    const row = await db().execute<{ status: string; attempts: number; locked_until: Date | null }>(sql`select status, attempts, locked_until from webhook_deliveries where endpoint_id = ${id}`)
    expect(row.rows).toEqual([{ status: 'pending', attempts: 0, locked_until: null }])
  })

  it('refuses to connect to a private address at delivery time unless allowed', async () => {
    const body = '{}'
    const refused = await postToEndpoint(receiver.url('/private').replace('127.0.0.1', 'localhost'), body, {}, { timeoutMs: 2_000, allowPrivate: false })
    expect(refused).toMatchObject({ ok: false, statusCode: null })
    expect(refused.error).toMatch(/private, loopback or link-local/)
    const literal = await postToEndpoint(receiver.url('/private'), body, {}, { timeoutMs: 2_000, allowPrivate: false })
    expect(literal).toMatchObject({ ok: false, statusCode: null, error: '127.0.0.1 is a private, loopback or link-local address' })
    expect(receiver.at('/private')).toHaveLength(0)
    expect(await postToEndpoint(receiver.url('/private'), body, {}, { timeoutMs: 2_000, allowPrivate: true })).toMatchObject({ ok: true, statusCode: 204 })
  })

  it('prunes delivered and failed rows past retention and keeps pending ones', async () => {
    const { id } = await endpointAt('/prune')
    await deliveredEvent('ow-prune1@example.com')
    await deliver()
    await db().execute(sql`update webhook_endpoints set enabled = false where id = ${id}`)
    await db().execute(sql`insert into webhook_deliveries (endpoint_id, event_type, payload, created_at) values (${id}, 'email.delivered', '{}', now() - interval '40 days')`)
    await db().execute(sql`update webhook_deliveries set created_at = now() - interval '40 days' where endpoint_id = ${id} and status = 'delivered'`)
    expect(await ctx.t.app.services.webhooks.worker.prune()).toBe(1)
    const left = await db().execute<{ status: string }>(sql`select status from webhook_deliveries where endpoint_id = ${id}`)
    expect(left.rows).toEqual([{ status: 'pending' }])
  })
})

describe('outgoing webhooks: bad input', () => {
  it('refuses malformed URLs, credentials, unknown event types and a long description with typed errors', async () => {
    expect(await create({ url: 'not a url' })).toMatchObject({ __typename: 'InvalidWebhookUrlError', problem: 'INVALID' })
    expect(await create({ url: 'ftp://example.com/hook' })).toMatchObject({ __typename: 'InvalidWebhookUrlError', problem: 'INVALID' })
    expect(await create({ url: `https://example.com/${'a'.repeat(2100)}` })).toMatchObject({ __typename: 'InvalidWebhookUrlError', problem: 'INVALID' })
    expect(await create({ url: 'https://user:pass@example.com/hook' })).toMatchObject({ __typename: 'InvalidWebhookUrlError', problem: 'CREDENTIALS' })
    const unknown = await create({ url: receiver.url('/x'), eventTypes: ['email.delivered', 'email.sent', 'contact.created'] })
    expect(unknown.__typename).toBe('ValidationError')
    expect(unknown.fieldErrors!.map((e) => e.path)).toEqual([
      ['input', 'eventTypes', '1'],
      ['input', 'eventTypes', '2'],
    ])
    expect(unknown.fieldErrors![0]!.message).toContain('Unknown event type "email.sent"')
    expect(await create({ url: receiver.url('/x'), description: 'x'.repeat(501) })).toMatchObject({ __typename: 'ValidationError', fieldErrors: [{ path: ['input', 'description'] }] })
    const count = await db().execute<{ n: string }>(sql`select count(*) as n from webhook_endpoints`)
    expect(Number(count.rows[0]!.n)).toBe(0)

    const { id } = await endpointAt('/valid')
    expect(await update(id, { url: 'javascript:alert(1)' })).toMatchObject({ __typename: 'InvalidWebhookUrlError', problem: 'INVALID' })
    expect(await update(id, { eventTypes: ['email.opend'] })).toMatchObject({ __typename: 'ValidationError' })
    expect(await update('00000000-0000-0000-0000-000000000000', { enabled: true })).toMatchObject({ __typename: 'NotFoundError' })
    expect(await update('not-a-uuid', { enabled: true })).toMatchObject({ __typename: 'NotFoundError' })
    expect((await update(id, { eventTypes: [], description: 'Orders service' })).endpoint).toMatchObject({ eventTypes: [], description: 'Orders service', url: receiver.url('/valid') })
  })

  it('refuses to redeliver an unknown or still pending delivery', async () => {
    expect(await redeliver('999999999')).toMatchObject({ __typename: 'NotFoundError' })
    expect(await redeliver('abc')).toMatchObject({ __typename: 'NotFoundError' })
    receiver.answer('/pending', () => 500)
    const { id } = await endpointAt('/pending')
    await deliveredEvent('ow-pending@example.com')
    const [pending] = await deliveriesOf(id)
    expect(await redeliver(pending!.id)).toMatchObject({ __typename: 'ConflictError', message: 'Only a failed delivery can be redelivered; this one is pending' })
  })

  it('lists endpoints page by page, deletes them, and is for admins only', async () => {
    const ids = [(await endpointAt('/list-1')).id, (await endpointAt('/list-2')).id, (await endpointAt('/list-3')).id]
    const page = async (after?: string) =>
      (await ctx.t.gql<{ webhookEndpoints: { edges: { node: { id: string } }[]; pageInfo: { hasNextPage: boolean; endCursor: string } } }>(
        'query($after: String) { webhookEndpoints(first: 2, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }',
        { after },
        ctx.admin,
      )).data.webhookEndpoints
    const first = await page()
    const second = await page(first.pageInfo.endCursor)
    expect(first.pageInfo.hasNextPage).toBe(true)
    expect(second.pageInfo.hasNextPage).toBe(false)
    expect([...first.edges, ...second.edges].map((e) => e.node.id)).toEqual([...ids].reverse())

    const del = (id: string) =>
      ctx.t.gql<{ deleteWebhookEndpoint: { __typename: string; deletedEndpointId?: string } }>(
        'mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { __typename ... on DeleteWebhookEndpointSuccess { deletedEndpointId } } }',
        { id },
        ctx.admin,
      )
    expect((await del(ids[0]!)).data.deleteWebhookEndpoint).toEqual({ __typename: 'DeleteWebhookEndpointSuccess', deletedEndpointId: ids[0] })
    expect((await del(ids[0]!)).data.deleteWebhookEndpoint.__typename).toBe('NotFoundError')

    const service = ctx.t.token('service')
    const forbidden = await ctx.t.gql('query { webhookEndpoints { edges { node { id } } } }', {}, service)
    expect(forbidden.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
    const anonymous = await ctx.t.gql('mutation { createWebhookEndpoint(input: { url: "https://example.com" }) { __typename } }')
    expect(anonymous.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
    const types = await ctx.t.gql<{ webhookEventTypes: string[] }>('query { webhookEventTypes }', {}, ctx.admin)
    expect(types.data.webhookEventTypes).toContain('email.converted')
  })

  it('in production refuses http URLs and URLs that are or resolve to private addresses', async () => {
    const prod = await buildTestApp({ env: { NODE_ENV: 'production' } })
    try {
      const admin = prod.token('admin')
      const problem = async (url: string) => {
        const result = await create({ url }, prod, admin)
        return result.__typename === 'InvalidWebhookUrlError' ? result.problem : result.__typename
      }
      expect(await problem('http://example.com/hook')).toBe('INSECURE')
      for (const url of ['https://127.0.0.1/hook', 'https://localhost:8443/hook', 'https://[::1]/hook', 'https://169.254.169.254/latest/meta-data', 'https://10.1.2.3/', 'https://0x7f.1/', 'https://[::ffff:127.0.0.1]/', 'https://[fd00::1]/', 'https://[::127.0.0.1]/', 'https://[2002:a9fe:a9fe::]/']) {
        expect(await problem(url), url).toBe('PRIVATE_ADDRESS')
      }
      expect(await problem('https://no-such-host.invalid/hook')).toBe('UNRESOLVABLE')
    } finally {
      await prod.close()
    }
  })
})

describe('outgoing webhooks: embedded mode', () => {
  it('queues, signs, delivers and disables on PGlite without Redis, the same code paths', async () => {
    const t = await buildTestApp({ postgres: false, redis: false, env: { ...ENV, CAMPAIGN_RATE_LIMIT_PER_SECOND: '0' } })
    try {
      const admin = t.token('admin')
      const created = await create({ url: receiver.url('/embedded'), eventTypes: ['email.opened'] }, t, admin)
      const gone = await create({ url: receiver.url('/embedded-gone'), eventTypes: ['email.opened'] }, t, admin)
      receiver.answer('/embedded-gone', () => 410)
      const templateId = await createPublishedTemplate(t, admin, { html: TRACKED_HTML, variables: [] })
      const audienceId = await createAudience(t, admin)
      await addContacts(t, admin, audienceId, [{ email: 'ow-embedded@example.com', name: 'E' }])
      const campaignId = await createCampaign(t, admin, { templateId, audienceIds: [audienceId] })
      await campaignAction(t, admin, 'sendCampaign', campaignId)
      await t.app.campaignDispatcher.drain()
      const row = await t.app.db.db.execute<{ id: string }>(sql`select id from campaign_recipients where campaign_id = ${campaignId}`)
      const pixel = `/t/o/${t.app.services.tracking.tokens.openToken(Number(row.rows[0]!.id), Math.floor(Date.now() / 1000) + 3600)}.gif`
      expect((await t.app.inject({ method: 'GET', url: pixel, headers: { 'user-agent': HUMAN_UA } })).statusCode).toBe(200)
      await t.app.services.tracking.flush()
      expect(await t.app.services.webhooks.worker.drain()).toEqual({ delivered: 1, failed: 1 })

      const [request] = receiver.at('/embedded')
      expect(verify(created.secret!, request!)).toMatchObject({ ok: true })
      expect(JSON.parse(request!.body)).toMatchObject({ type: 'email.opened', data: { campaign_id: campaignId, email: 'ow-embedded@example.com', machine: false } })
      const endpoints = await t.app.db.db.execute<{ id: string; enabled: boolean }>(sql`select id, enabled from webhook_endpoints order by created_at`)
      expect(endpoints.rows).toEqual([
        { id: created.endpoint!.id, enabled: true },
        { id: gone.endpoint!.id, enabled: false },
      ])
    } finally {
      await t.close()
    }
  }, 120_000)
})

describe('outgoing webhooks: units', () => {
  it('tells public addresses from private, loopback, link-local and reserved ones', () => {
    for (const a of ['8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '64:ff9b::808:808', '::ffff:8.8.8.8', '::808:808', '::ffff:0:8.8.8.8', '2002:0808:0808::', '2002:808:808:1::1', '2001:4860:4860::8888']) expect(isPublicAddress(a), a).toBe(true)
    for (const a of ['127.0.0.1', '10.0.0.1', '172.16.5.4', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '::1', '::', 'fe80::1', 'fd12::1', '::ffff:10.0.0.1', '::ffff:7f00:1', '0:0:0:0:0:ffff:a00:1', '64:ff9b::7f00:1', '64:ff9b::10.0.0.1', 'example.com',
      // IPv4-compatible, IPv4-translated and 6to4 forms of private addresses; site-local; Teredo.
      '::7f00:1', '::a9fe:a9fe', '::127.0.0.1', '::10.0.0.1', '::ffff:0:7f00:1', '::ffff:0:169.254.169.254', '2002:7f00:1::', '2002:a9fe:a9fe::1', '2002:c0a8:101::', 'fec0::1', 'feff::1', '2001:0:4136:e378::1', '2001::1']) {
      expect(isPublicAddress(a), a).toBe(false)
    }
  })

  it('follows the retry schedule with ±10% jitter, repeating its last delay, up to the attempt limit', () => {
    const policy = { schedule: [5_000, 300_000], maxAttempts: 4 }
    expect(nextRetryDelay(policy, 1, () => 0)).toBe(4_500)
    expect(nextRetryDelay(policy, 1, () => 1)).toBe(5_500)
    expect(nextRetryDelay(policy, 2, () => 0.5)).toBe(300_000)
    expect(nextRetryDelay(policy, 3, () => 0.5)).toBe(300_000)
    expect(nextRetryDelay(policy, 4, () => 0.5)).toBeNull()
  })

  it('validates the webhook configuration', () => {
    expect(loadConfig({}).webhooks).toMatchObject({ retrySchedule: [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000], maxAttempts: 8, requireHttps: false })
    expect(loadConfig({ WEBHOOKS_RETRY_SCHEDULE: '250ms, 2s,1m' }).webhooks.retrySchedule).toEqual([250, 2_000, 60_000])
    for (const bad of ['5', '5x', '8d', 'ms', '1s,,2s']) {
      expect(() => loadConfig({ WEBHOOKS_RETRY_SCHEDULE: bad }), bad).toThrow(ConfigError)
    }
    expect(() => loadConfig({ WEBHOOKS_TIMEOUT_MS: '10' })).toThrow(/WEBHOOKS_TIMEOUT_MS/)
    expect(() => loadConfig({ WEBHOOKS_ALLOW_PRIVATE_URLS: 'maybe' })).toThrow(/WEBHOOKS_ALLOW_PRIVATE_URLS/)
  })
})
