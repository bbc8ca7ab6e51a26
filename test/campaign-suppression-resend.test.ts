/**
 * Addresses suppressed or unsubscribed after their row left the queue: a suppression only drops
 * queued rows not yet in a batch, so a failed row about to be retried, and the rows of a batch put
 * back after a 429, a 5xx, a pause or a shutdown, are judged again before anything is sent. A
 * batch whose earlier attempt may have reached the provider keeps its payload (the provider may
 * hold it under the key): see prepareBatchRecipients.
 */
import { sql } from 'drizzle-orm'
import { beforeEach, describe, expect, it } from 'vitest'
import type { MailTransport } from '../src/infra/mail/types'
import { CampaignDispatcher } from '../src/services/campaigns/campaign-dispatcher'
import { campaignStatsCache, CampaignStatsPublisher, createPushGate } from '../src/services/campaigns/campaign-stats'
import type { RateLimiter } from '../src/services/campaigns/rate-limiter'
import { createUnsubscribeLinks } from '../src/services/campaigns/unsubscribe-links'
import type { TestApp } from './helpers/app'
import type { FakeResend } from './helpers/fake-resend'
import { addContacts, campaignAction, createAudience, createCampaign, expectData, getCampaign, useCampaignApp } from './campaign-fixtures'

let fake: FakeResend
let t: TestApp
let admin: string
let templateId: string
useCampaignApp({}, (app) => ({ fake, t, admin, templateId } = app))

async function sendTo(emails: string[][]): Promise<{ id: string; audiences: string[] }> {
  const audiences: string[] = []
  for (const list of emails) {
    const audienceId = await createAudience(t, admin)
    await addContacts(t, admin, audienceId, list.map((email) => ({ email })))
    audiences.push(audienceId)
  }
  const id = await createCampaign(t, admin, { templateId, audienceIds: audiences })
  const sent = await campaignAction(t, admin, 'sendCampaign', id)
  if (sent.__typename !== 'CampaignSuccess') throw new Error(JSON.stringify(sent))
  return { id, audiences }
}

async function suppress(...emails: string[]) {
  const res = await t.gql<{ suppressEmails: { __typename: string } }>(
    'mutation($emails: [String!]!) { suppressEmails(emails: $emails, reason: UNSUBSCRIBED) { __typename } }',
    { emails },
    admin,
  )
  expect(expectData(res).suppressEmails.__typename).not.toMatch(/Error/)
}

async function rows(campaignId: string) {
  const result = await t.app.db.db.execute<{ email: string; status: string; reason: string | null }>(sql`
    select email, status::text, reason from campaign_recipients where campaign_id = ${campaignId} order by email`)
  return result.rows
}

async function batches(campaignId: string) {
  const result = await t.app.db.db.execute<{ status: string; size: number; may_have_reached: boolean; idempotency_key: string }>(sql`
    select status::text, size, may_have_reached, idempotency_key from campaign_batches where campaign_id = ${campaignId} order by id`)
  return result.rows
}

async function makeDue(campaignId: string) {
  await t.app.db.db.execute(sql`update campaign_batches set next_attempt_at = now() where campaign_id = ${campaignId} and status = 'retry'`)
}

let seq = 0
/** Addresses of this test only: suppressions are global and outlive a test. */
let run = ''
beforeEach(() => {
  run = `t${++seq}`
})
const e = (name: string) => `${name}.${run}@example.com`

const sentTo = () => fake.sent.map((s) => (Array.isArray(s.to) ? s.to[0] : s.to))
const batchRequests = () => fake.requests.filter((r) => r.path === '/emails/batch')

describe('retryFailedRecipients', () => {
  it('marks a failed recipient suppressed since as suppressed instead of sending it again, and retries the others', async () => {
    const { id } = await sendTo([[e('gone'), e('stays')]])
    // Refused as a whole, then each half alone: both rows fail.
    fake.failNext(422, 3)
    await t.app.campaignDispatcher.drain()
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ failed: 2, sent: 0 })

    await suppress(e('gone'))
    fake.reset()
    const retried = await campaignAction(t, admin, 'retryFailedRecipients', id)
    expect(retried).toMatchObject({ __typename: 'CampaignSuccess', campaign: { status: 'SENDING', stats: { failed: 0, queued: 1, suppressed: 1 } } })
    await t.app.campaignDispatcher.drain()

    expect(sentTo()).toEqual([e('stays')])
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { total: 2, sent: 1, failed: 0, queued: 0, suppressed: 1 } })
    expect(await rows(id)).toEqual([
      { email: e('gone'), status: 'suppressed', reason: 'unsubscribed' },
      { email: e('stays'), status: 'accepted', reason: null },
    ])
  })

  it('leaves a sent campaign sent when every failed recipient was suppressed since, and moves the counters', async () => {
    const { id } = await sendTo([[e('late')]])
    fake.failNext(422)
    await t.app.campaignDispatcher.drain()
    await suppress(e('late'))
    fake.reset()

    const retried = await campaignAction(t, admin, 'retryFailedRecipients', id)
    expect(retried).toMatchObject({ __typename: 'CampaignSuccess', campaign: { status: 'SENT' } })
    await t.app.campaignDispatcher.drain()
    expect(fake.sent).toHaveLength(0)
    // Read through the stats cache: the change must have dropped the cached snapshot.
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ failed: 0, queued: 0, suppressed: 1, sent: 0 })
    const round = await t.app.db.db.execute<{ retry_round: number }>(sql`select retry_round from campaigns where id = ${id}`)
    expect(Number(round.rows[0]!.retry_round)).toBe(0)
  })

  it("drops a failed recipient whose contacts in the campaign's audiences all unsubscribed (the audience scope), not one still subscribed in another", async () => {
    const { id, audiences } = await sendTo([[e('left'), e('both')], [e('both')]])
    fake.failNext(422, 3)
    await t.app.campaignDispatcher.drain()
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ failed: 2 })
    // What an `audience`-scoped unsubscribe from another campaign to the first audience leaves: contacts marked, no suppression row.
    await t.app.db.db.execute(sql`
      update contacts set status = 'unsubscribed' where audience_id = ${audiences[0]} and lower(email) in (${e('left')}, ${e('both')})`)
    fake.reset()

    await campaignAction(t, admin, 'retryFailedRecipients', id)
    await t.app.campaignDispatcher.drain()
    expect(sentTo()).toEqual([e('both')])
    expect(await rows(id)).toEqual([
      { email: e('both'), status: 'accepted', reason: null },
      { email: e('left'), status: 'suppressed', reason: 'unsubscribed' },
    ])
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ sent: 1, failed: 0, suppressed: 1, queued: 0 })
  })
})

describe('a batch sent again', () => {
  it('after a 429 and a pause, leaves out an address suppressed meanwhile and sends the rest under the same key', async () => {
    const { id } = await sendTo([[e('a'), e('b'), e('c')]])
    fake.failNext(429, 1, { 'retry-after': '0' })
    await t.app.campaignDispatcher.runOnce()
    await campaignAction(t, admin, 'pauseCampaign', id)
    await suppress(e('a'))
    await campaignAction(t, admin, 'resumeCampaign', id)
    await makeDue(id)
    await t.app.campaignDispatcher.drain()

    expect(sentTo()).toEqual([e('b'), e('c')])
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { total: 3, sent: 2, suppressed: 1, queued: 0, failed: 0 } })
    expect((await rows(id))[0]).toEqual({ email: e('a'), status: 'suppressed', reason: 'unsubscribed' })
    // The 429 stored nothing under the key, so the smaller payload goes out under it (the provider would answer 409 otherwise).
    const keys = batchRequests().map((r) => r.headers['idempotency-key'])
    expect(keys).toHaveLength(2)
    expect(keys[1]).toBe(keys[0])
    expect(await batches(id)).toEqual([expect.objectContaining({ status: 'done', size: 2, may_have_reached: false })])
  })

  it('after a 5xx, which the provider may have taken, is sent unchanged under the same key, suppressed address and all', async () => {
    const { id } = await sendTo([[e('a'), e('b')]])
    fake.failNext(500)
    await t.app.campaignDispatcher.runOnce()
    await suppress(e('a'))
    await makeDue(id)
    await t.app.campaignDispatcher.drain()

    const requests = batchRequests()
    expect(requests).toHaveLength(2)
    expect(requests[1]!.headers['idempotency-key']).toBe(requests[0]!.headers['idempotency-key'])
    expect(requests[1]!.body).toEqual(requests[0]!.body)
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 2, suppressed: 0 } })
    expect(await batches(id)).toEqual([expect.objectContaining({ status: 'done', may_have_reached: true })])
  })

  it('drops while nothing may have reached the provider, and keeps the payload once a 5xx may have', async () => {
    const { id } = await sendTo([[e('a'), e('b'), e('c')]])
    fake.failNext(429, 1, { 'retry-after': '0' })
    await t.app.campaignDispatcher.runOnce()
    await suppress(e('a'))
    await makeDue(id)
    // Sent without a@, and answered 500: the provider may now hold [b, c] under the key.
    fake.failNext(500)
    await t.app.campaignDispatcher.runOnce()
    await suppress(e('b'))
    await makeDue(id)
    await t.app.campaignDispatcher.drain()

    const requests = batchRequests()
    expect(requests).toHaveLength(3)
    expect(new Set(requests.map((r) => r.headers['idempotency-key'])).size).toBe(1)
    expect(requests[2]!.body).toEqual(requests[1]!.body)
    expect(sentTo()).toEqual([e('b'), e('c')])
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 2, suppressed: 1, queued: 0 } })
  })

  it('handed back at shutdown before it was sent, leaves out an address suppressed meanwhile', async () => {
    const { id } = await sendTo([[e('a'), e('b')]])
    // A limiter that never grants: the worker claims the batch and waits until it is stopped.
    const waiting: RateLimiter = {
      acquire: (signal) =>
        new Promise((_, reject) => {
          // stop() may come between the claim and this call.
          if (signal?.aborted) reject(new Error('stopped'))
          signal?.addEventListener('abort', () => reject(new Error('stopped')), { once: true })
        }),
      backOff: async () => {},
    }
    const db = t.app.db.db
    const worker = new CampaignDispatcher({
      db,
      transport: t.app.mail as MailTransport,
      limiter: waiting,
      links: createUnsubscribeLinks(t.app.signer, 'http://groundwork.test'),
      stats: new CampaignStatsPublisher({ db, publish: async () => {}, gate: createPushGate(null), cache: campaignStatsCache(t.app.services.cache) }),
      pollMs: 20,
      concurrency: 1,
    })
    worker.start()
    for (let i = 0; i < 200 && (await batches(id)).length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    await worker.stop()
    expect(await batches(id)).toEqual([expect.objectContaining({ status: 'retry', may_have_reached: false })])
    expect(fake.requests).toHaveLength(0)

    await suppress(e('a'))
    await t.app.campaignDispatcher.drain()
    expect(sentTo()).toEqual([e('b')])
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 1, suppressed: 1, queued: 0 } })
  })

  it('with every recipient suppressed meanwhile, sends nothing and completes the campaign', async () => {
    const { id } = await sendTo([[e('a'), e('b')]])
    fake.failNext(429, 1, { 'retry-after': '0' })
    await t.app.campaignDispatcher.runOnce()
    await suppress(e('a'), e('b'))
    await makeDue(id)
    await t.app.campaignDispatcher.drain()

    expect(batchRequests()).toHaveLength(1)
    expect(fake.sent).toHaveLength(0)
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { total: 2, sent: 0, suppressed: 2, queued: 0 } })
    expect(await batches(id)).toEqual([expect.objectContaining({ status: 'done', size: 0 })])
  })

  it('whose worker died mid-send counts as maybe taken by the provider, and keeps its payload', async () => {
    const { id } = await sendTo([[e('a'), e('b')]])
    // The batch is claimed and its lease runs out with no answer recorded.
    const claimed = await t.app.db.db.execute(sql`
      with b as (
        insert into campaign_batches (campaign_id, idempotency_key, first_recipient_id, size, status, attempts, locked_until)
        select ${id}::uuid, 'campaign/' || ${id} || '/batch/' || min(id)::text, min(id), count(*), 'sending', 1, now() - interval '1 second'
        from campaign_recipients where campaign_id = ${id}
        returning id
      )
      update campaign_recipients r set status = 'sending', batch_id = b.id from b where r.campaign_id = ${id} returning r.id`)
    expect(claimed.rows).toHaveLength(2)
    await suppress(e('a'))
    await t.app.campaignDispatcher.drain()
    expect(sentTo()).toEqual([e('a'), e('b')])
    expect(await batches(id)).toEqual([expect.objectContaining({ status: 'done', may_have_reached: true })])
  })
})
