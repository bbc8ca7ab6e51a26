/**
 * Campaign.stats through the cache: after every path that writes a campaign_stats row (or the
 * campaign's status) the next read is fresh and comes from the database, and the read after it is
 * a cache hit. The counters are the cache's own for the `campaign-stats` namespace: a miss is a
 * database read, a hit is not. Without the invalidation these reads return the stale snapshot.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'
import { addContacts, createAudience, createCampaign, expectData, oneClickUnsubscribe, unsubscribeUrlOf, useCampaignApp, type CampaignApp } from './campaign-fixtures'
import { postWebhook, resendEvent, WEBHOOK_SECRET } from './tracking-fixtures'

const ENV = { CAMPAIGN_BATCH_SIZE: '2', CAMPAIGN_PAUSE_MIN_SENT: '1000' }
const STATS = 'query($id: ID!) { campaign(id: $id) { stats { status total queued sent delivered bounced failed suppressed unsubscribed } } }'

type Stats = Record<string, number | string>

let ctx: CampaignApp
// Tracking hits are stored only on an explicit flush, so no background write drops a snapshot mid-test.
useCampaignApp({ ...ENV, RESEND_WEBHOOK_SECRET: WEBHOOK_SECRET, TRACKING_FLUSH_MS: '600000' }, (app) => (ctx = app))

async function stats(id: string, t: TestApp = ctx.t): Promise<Stats> {
  const res = await t.gql<{ campaign: { stats: Stats } }>(STATS, { id }, ctx.admin)
  return expectData(res).campaign.stats
}

function counters(t: TestApp = ctx.t): { hits: number; misses: number } {
  const ns = t.app.services.cache.stats().namespaces.find((n) => n.namespace === 'campaign-stats')
  return { hits: ns?.hits ?? 0, misses: ns?.misses ?? 0 }
}

/** The next read is `expected`, read from the database; the one after it is the same, from the cache. */
async function expectFreshThenCached(id: string, expected: Stats, t: TestApp = ctx.t): Promise<void> {
  const before = counters(t)
  expect(await stats(id, t)).toMatchObject(expected)
  const loaded = counters(t)
  expect(loaded.misses).toBe(before.misses + 1)
  expect(await stats(id, t)).toMatchObject(expected)
  expect(counters(t)).toEqual({ hits: loaded.hits + 1, misses: loaded.misses })
}

/** A mutation whose answer does not read the stats, so it warms nothing. */
async function act(action: string, id: string): Promise<string> {
  const res = await ctx.t.gql<Record<string, { __typename: string }>>(`mutation($id: ID!) { ${action}(id: $id) { __typename ... on Error { message } } }`, { id }, ctx.admin)
  return expectData(res)[action]!.__typename
}

/** A campaign started (recipients queued, nothing sent yet) to one new audience of these addresses. */
async function sendingCampaign(emails: string[]): Promise<string> {
  const audienceId = await createAudience(ctx.t, ctx.admin)
  await addContacts(ctx.t, ctx.admin, audienceId, emails.map((email) => ({ email })))
  const id = await createCampaign(ctx.t, ctx.admin, { templateId: ctx.templateId, audienceIds: [audienceId] })
  expect(await act('sendCampaign', id)).toBe('CampaignSuccess')
  return id
}

async function sentCampaign(emails: string[]): Promise<string> {
  const id = await sendingCampaign(emails)
  await ctx.t.app.campaignDispatcher.drain()
  return id
}

async function recipient(campaignId: string, email: string): Promise<{ id: number; providerId: string; email: string }> {
  const rows = await ctx.t.app.db.db.execute<{ id: string; provider_id: string }>(sql`select id, provider_id from campaign_recipients where campaign_id = ${campaignId} and email = ${email}`)
  return { id: Number(rows.rows[0]!.id), providerId: rows.rows[0]!.provider_id, email }
}

async function waitUntil(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await sleep(10)
  }
}

describe('Campaign.stats is cached and fresh after every writer', () => {
  it('a batch recorded by the dispatcher', async () => {
    const id = await sendingCampaign(['d1@example.com', 'd2@example.com', 'd3@example.com'])
    await expectFreshThenCached(id, { status: 'SENDING', total: 3, queued: 3, sent: 0 })
    // One batch of two: still sending, so only the counters moved, not the status.
    expect(await ctx.t.app.campaignDispatcher.runOnce()).toBe(2)
    await expectFreshThenCached(id, { status: 'SENDING', queued: 1, sent: 2 })
    await ctx.t.app.campaignDispatcher.drain()
    await expectFreshThenCached(id, { status: 'SENT', queued: 0, sent: 3 })
  })

  it('a delivery event from the provider webhook', async () => {
    const id = await sentCampaign(['w1@example.com'])
    await expectFreshThenCached(id, { sent: 1, delivered: 0 })
    expect((await postWebhook(ctx.t, resendEvent('email.delivered', await recipient(id, 'w1@example.com'), id))).statusCode).toBe(200)
    await ctx.t.app.services.tracking.webhooks.processor.drain()
    await expectFreshThenCached(id, { sent: 1, delivered: 1 })
  })

  it('a hard bounce, in its campaign and in another campaign where the address was queued', async () => {
    const sent = await sentCampaign(['hb@example.com'])
    const queued = await sendingCampaign(['hb@example.com', 'hb-other@example.com'])
    await expectFreshThenCached(sent, { sent: 1, bounced: 0 })
    await expectFreshThenCached(queued, { queued: 2, suppressed: 0 })
    const bounce = resendEvent('email.bounced', await recipient(sent, 'hb@example.com'), sent, { bounce: { type: 'Permanent', subType: 'General', message: 'no such user' } })
    expect((await postWebhook(ctx.t, bounce)).statusCode).toBe(200)
    await ctx.t.app.services.tracking.webhooks.processor.drain()
    await expectFreshThenCached(sent, { sent: 1, bounced: 1 })
    await expectFreshThenCached(queued, { queued: 1, suppressed: 1 })
  })

  it('a one-click unsubscribe, in its campaign and in another campaign where the address was queued', async () => {
    const sent = await sentCampaign(['u1@example.com'])
    const queued = await sendingCampaign(['u1@example.com', 'u2@example.com'])
    await expectFreshThenCached(sent, { unsubscribed: 0 })
    await expectFreshThenCached(queued, { queued: 2, suppressed: 0 })
    expect((await oneClickUnsubscribe(ctx.t, unsubscribeUrlOf(ctx.fake, 'u1@example.com'))).statusCode).toBe(200)
    await expectFreshThenCached(sent, { unsubscribed: 1 })
    await expectFreshThenCached(queued, { queued: 1, suppressed: 1 })
  })

  it('suppressing an address queued in two campaigns (suppressEmails)', async () => {
    const first = await sendingCampaign(['sup@example.com', 'keep1@example.com'])
    const second = await sendingCampaign(['sup@example.com', 'keep2@example.com'])
    await expectFreshThenCached(first, { queued: 2, suppressed: 0 })
    await expectFreshThenCached(second, { queued: 2, suppressed: 0 })
    const res = await ctx.t.gql<{ suppressEmails: { added: number } }>(
      'mutation($emails: [String!]!) { suppressEmails(emails: $emails) { ... on SuppressEmailsSuccess { added } ... on Error { message } } }',
      { emails: ['SUP@example.com'] },
      ctx.admin,
    )
    expect(expectData(res).suppressEmails).toEqual({ added: 1 })
    await expectFreshThenCached(first, { queued: 1, suppressed: 1 })
    await expectFreshThenCached(second, { queued: 1, suppressed: 1 })
  })

  it('a hard bounce of mail that is no campaign’s, for an address queued in two campaigns', async () => {
    const first = await sendingCampaign(['tx@example.com', 'k1@example.com'])
    const second = await sendingCampaign(['tx@example.com', 'k2@example.com'])
    await expectFreshThenCached(first, { queued: 2, suppressed: 0 })
    await expectFreshThenCached(second, { queued: 2, suppressed: 0 })
    const bounce = resendEvent('email.bounced', { providerId: 'transactional-bounce', email: 'tx@example.com' }, null, { bounce: { type: 'Permanent', subType: 'General', message: 'no such user' } })
    expect((await postWebhook(ctx.t, bounce)).statusCode).toBe(200)
    await ctx.t.app.services.tracking.webhooks.processor.drain()
    await expectFreshThenCached(first, { queued: 1, suppressed: 1 })
    await expectFreshThenCached(second, { queued: 1, suppressed: 1 })
  })

  it('retryFailedRecipients', async () => {
    const id = await sendingCampaign(['ok@example.com', 'refused@example.com'])
    // An address that passed an older, laxer import: the provider refuses it.
    await ctx.t.app.db.db.execute(sql`update campaign_recipients set email = 'broken@localhost' where campaign_id = ${id} and email = 'refused@example.com'`)
    await ctx.t.app.campaignDispatcher.drain()
    await expectFreshThenCached(id, { status: 'SENT', sent: 1, failed: 1, queued: 0 })
    expect(await act('retryFailedRecipients', id)).toBe('CampaignSuccess')
    await expectFreshThenCached(id, { status: 'SENDING', sent: 1, failed: 0, queued: 1 })
  })

  it('cancelCampaign', async () => {
    const id = await sendingCampaign(['c1@example.com'])
    await expectFreshThenCached(id, { status: 'SENDING', queued: 1 })
    expect(await act('cancelCampaign', id)).toBe('CampaignSuccess')
    await expectFreshThenCached(id, { status: 'CANCELLED', queued: 1 })
  })
})

describe('across instances', () => {
  let other: TestApp
  beforeAll(async () => {
    other = await buildTestApp({ env: { RESEND_API_KEY: 're_test_key', ...ENV }, database: ctx.t.database, redisPrefix: ctx.t.redisPrefix })
  })
  afterAll(async () => {
    await other?.close()
  })

  it('drops the snapshot another instance cached when the counters move here', async () => {
    const id = await sentCampaign(['x1@example.com'])
    await expectFreshThenCached(id, { unsubscribed: 0 }, other)
    const received = other.app.services.cache.stats().busReceived
    expect((await oneClickUnsubscribe(ctx.t, unsubscribeUrlOf(ctx.fake, 'x1@example.com'))).statusCode).toBe(200)
    // The invalidation travels on the bus; once it has arrived, the other instance reads the database again.
    await waitUntil(() => other.app.services.cache.stats().busReceived > received, 'the other instance hears the invalidation')
    await expectFreshThenCached(id, { unsubscribed: 1 }, other)
  })
})
