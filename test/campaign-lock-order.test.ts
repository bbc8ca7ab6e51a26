/**
 * Lock order between the transactions that move campaign counters (lockCampaignStats): each test
 * holds a row with a third connection, lines two writers up behind it, and lets go. Taking rows in
 * another order, each writer would then hold what the other waits for, and PostgreSQL would abort
 * one of them as a deadlock (40P01) after deadlock_timeout.
 */
import { sql } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/node-postgres'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Database } from '../src/infra/db/client'
import type { CampaignStatsPublisher } from '../src/services/campaigns/campaign-stats'
import { prepareBatchRecipients, type ClaimedBatch } from '../src/services/campaigns/campaign-batches'
import { CampaignService } from '../src/services/campaigns/campaign-service'
import { RecipientFeedbackService } from '../src/services/campaigns/recipient-feedback'
import type { UnsubscribeLinks } from '../src/services/campaigns/unsubscribe-links'
import { EngagementWriter } from '../src/services/tracking/engagement-writer'
import { EventType } from '../src/services/tracking/event-types'
import { RollupTally } from '../src/services/tracking/rollup-tally'
import { createTestDatabase } from './helpers/services'

let database: Awaited<ReturnType<typeof createTestDatabase>>
let db: Database
let feedback: RecipientFeedbackService
/** Holds the row the writers line up behind. */
let gate: pg.Client
/** Watches them wait (outside the gate's transaction, whose view of pg_stat_activity stays as it was when it began). */
let watcher: pg.Client

const stats = { changedMany: async () => {}, changed: async () => {}, stateChanged: async () => {} } as unknown as CampaignStatsPublisher
const links: UnsubscribeLinks = {
  token: () => 'unused',
  url: () => 'unused',
  // Unsubscribe tokens are the recipient id in these tests.
  verify: (token) => ({ ok: true, recipientId: Number(token) }) as ReturnType<UnsubscribeLinks['verify']>,
}

beforeAll(async () => {
  database = await createTestDatabase()
  db = database.handle.db
  feedback = new RecipientFeedbackService({ db, links, stats, thresholds: { bounceRate: 1, complaintRate: 1, minSent: 1_000_000 } })
  gate = new pg.Client({ connectionString: database.url })
  await gate.connect()
  watcher = new pg.Client({ connectionString: database.url })
  await watcher.connect()
})
afterAll(async () => {
  await gate?.end()
  await watcher?.end()
  await database?.drop()
})

let seq = 0

interface Row {
  email: string
  status: 'queued' | 'accepted' | 'failed'
}

/** A campaign in `status` with these recipients (accepted and failed ones with provider id `p-<id>`) and counters that match them. */
async function seedCampaign(status: 'sending' | 'sent', rows: Row[]): Promise<{ id: string; recipients: number[] }> {
  const label = `lock-order-${++seq}`
  const template = await db.execute<{ id: string }>(sql`
    insert into email_templates (name, kind, subject, html) values (${label}, 'marketing', 'News', '<p>News</p>') returning id`)
  const version = await db.execute<{ id: string }>(sql`
    insert into email_template_versions (template_id, version, kind, subject, html, text, variables)
    values (${template.rows[0]!.id}, 1, 'marketing', 'News', '<p>News</p>', 'News', '[]') returning id`)
  const campaign = await db.execute<{ id: string }>(sql`
    insert into campaigns (name, template_id, template_version_id, audience_ids, "from", status, started_at)
    values (${label}, ${template.rows[0]!.id}, ${version.rows[0]!.id}, '{}', 'News <news@example.com>', ${status}, now() - interval '1 hour')
    returning id`)
  const id = campaign.rows[0]!.id
  const recipients: number[] = []
  for (const row of rows) {
    const inserted = await db.execute<{ id: string }>(sql`
      insert into campaign_recipients (campaign_id, email, attributes, status) values (${id}, ${row.email}, '{}', ${row.status}) returning id`)
    const recipientId = Number(inserted.rows[0]!.id)
    if (row.status !== 'queued') await db.execute(sql`update campaign_recipients set provider_id = ${`p-${recipientId}`}, sent_at = now() where id = ${recipientId}`)
    recipients.push(recipientId)
  }
  const count = (s: Row['status']) => rows.filter((r) => r.status === s).length
  await db.execute(sql`
    insert into campaign_stats (campaign_id, total, queued, sent, failed)
    values (${id}, ${rows.length}, ${count('queued')}, ${count('accepted')}, ${count('failed')})`)
  return { id, recipients }
}

/** Until `n` sessions of this database wait on a lock; fails at once when one of `running` does. */
async function waiters(n: number, running: Promise<unknown>[]): Promise<void> {
  const deadline = Date.now() + 10_000
  let failed: unknown
  for (const p of running) p.catch((err: unknown) => (failed = err))
  for (;;) {
    if (failed !== undefined) throw failed
    const result = await watcher.query<{ n: number }>(
      `select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
    )
    if (result.rows[0]!.n >= n) return
    if (Date.now() > deadline) throw new Error(`${result.rows[0]!.n} of ${n} sessions waiting on a lock`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

async function statusOf(recipientId: number): Promise<string> {
  return (await db.execute<{ status: string }>(sql`select status::text from campaign_recipients where id = ${recipientId}`)).rows[0]!.status
}

async function countersOf(campaignId: string) {
  const result = await db.execute<Record<string, number>>(sql`select queued, sent, delivered, bounced, failed, suppressed, unsubscribed, unique_opens from campaign_stats where campaign_id = ${campaignId}`)
  return result.rows[0]
}

/** Runs `first` and `second` behind a lock the gate holds on `lockedRow`, queued in that order, then lets go. */
async function queuedBehind(lockedRow: string, first: () => Promise<unknown>, second: () => Promise<unknown>) {
  const running: Promise<unknown>[] = []
  await gate.query('begin')
  try {
    await gate.query(lockedRow)
    running.push(first())
    await waiters(1, running)
    running.push(second())
    await waiters(2, running)
  } finally {
    // (After a failed statement, this ends the aborted transaction.)
    await gate.query('commit')
  }
  const [a, b] = await Promise.allSettled(running)
  return [a!, b!] as const
}

const statsRow = (campaignId: string) => `select 1 from campaign_stats where campaign_id = '${campaignId}' for update`
const bounce = (recipientId: number) => () => feedback.applyDeliveryEvent({ providerId: `p-${recipientId}` }, 'bounced')
const deliver = (recipientIds: number[]) => () =>
  feedback.applyDeliveryEvents(recipientIds.map((id) => ({ providerId: `p-${id}`, event: 'delivered' as const })), async () => {})
/** First human opens, oldest first in this order, stored by a writer of their own. */
const open = (recipientIds: number[]) => () =>
  new EngagementWriter(db, { scannerWindowMs: 0 }).write(recipientIds.map((recipientId, i) => ({ type: EventType.open, recipientId, at: Date.now() - 1_000 + i, machine: false })))

describe('lock order of campaign counters', () => {
  // Two sending campaigns, `low` first in campaign id order; the suppressed address is still queued in `low`.
  // Each suppression takes `low`'s and `high`'s counters; the other writer takes both too, listed high first.

  it('a bounce that drops queued rows elsewhere, and a batch of delivery events over both campaigns', async () => {
    const c = await seedOrdered()
    // The batch waits for `low`'s counters, holding its recipients. Taking counters as its statements reached them,
    // the bounce would lock `high`'s (its own) and then wait for `low`'s; let go, the batch would wait for `high`'s.
    const [batch, bounced] = await queuedBehind(statsRow(c.low.id), deliver(c.delivered), bounce(c.suppressed))
    expectCommitted(batch, bounced)
    expect(await statusOf(c.suppressed)).toBe('bounced')
    await expectDropped(c)
    expect(await countersOf(c.high.id)).toMatchObject({ sent: 2, bounced: 1, delivered: 1 })
    expect(await countersOf(c.low.id)).toMatchObject({ sent: 1, delivered: 1 })
  })

  it('an unsubscribe that drops queued rows elsewhere, and a batch of delivery events over both campaigns', async () => {
    const c = await seedOrdered()
    const [batch, unsubscribed] = await queuedBehind(statsRow(c.low.id), deliver(c.delivered), () => feedback.unsubscribe(String(c.suppressed)))
    expectCommitted(batch, unsubscribed)
    await expectDropped(c)
    expect(await countersOf(c.high.id)).toMatchObject({ sent: 2, delivered: 1, unsubscribed: 1 })
  })

  it('a batch of delivery events listing the later campaign first, and a bounce', async () => {
    const c = await seedOrdered()
    // Locking counters in the order of its items, the batch would wait for `high`'s first, holding none; the bounce
    // then takes `low`'s and waits for `high`'s too. Let go, the batch would get `high`'s and wait for `low`'s.
    const [batch, bounced] = await queuedBehind(statsRow(c.high.id), deliver([...c.delivered].reverse()), bounce(c.suppressed))
    expectCommitted(batch, bounced)
    await expectDropped(c)
    expect(await countersOf(c.high.id)).toMatchObject({ sent: 2, bounced: 1, delivered: 1 })
  })

  it('stored opens of both campaigns, the later campaign first, and a bounce', async () => {
    const c = await seedOrdered()
    // The same with the engagement writer, whose counters are listed in the order of its hits.
    const [opened, bounced] = await queuedBehind(statsRow(c.high.id), open([...c.delivered].reverse()), bounce(c.suppressed))
    expectCommitted(opened, bounced)
    await expectDropped(c)
    const uniques = await db.execute<{ unique_opens: number }>(sql`select unique_opens from campaign_stats where campaign_id in (${c.low.id}, ${c.high.id})`)
    expect(uniques.rows.map((r) => r.unique_opens)).toEqual([1, 1])
  })

  it('two unsubscribes of one address, one from a row queued again, each dropping the other rows', async () => {
    // The address is queued in two campaigns, the later row after a retry re-queued it, and was sent in a third.
    const address = `twice-${seq}@example.com`
    const first = await seedCampaign('sending', [{ email: address, status: 'queued' }])
    const second = await seedCampaign('sending', [{ email: address, status: 'queued' }])
    const sent = await seedCampaign('sending', [{ email: address, status: 'accepted' }])
    // Locking its own row first, each unsubscribe would hold a row the other one waits for.
    const [a, b] = await queuedBehind(
      `select 1 from campaign_recipients where id = ${first.recipients[0]} for update`,
      () => feedback.unsubscribe(String(sent.recipients[0])),
      () => feedback.unsubscribe(String(second.recipients[0])),
    )
    expectCommitted(a, b)
    expect([await statusOf(first.recipients[0]!), await statusOf(second.recipients[0]!)]).toEqual(['suppressed', 'suppressed'])
  })

  it('retrying failed recipients, and a batch of late delivery events over the same rows that writes rollups', async () => {
    const campaign = await seedCampaign('sent', [1, 2, 3, 4, 5, 6].map((i) => ({ email: `failed-${seq}-${i}@example.com`, status: 'failed' as const })))
    const ids = campaign.recipients
    // The retry's update on connections without index scans, as a large campaign with many failed rows would be planned:
    // it visits the rows through hash joins, here the highest id first (PostgreSQL 15; another plan could visit them in
    // id order, and this test would pass without the retry's explicit lock).
    const scanning = new pg.Pool({ connectionString: database.url, max: 2, options: '-c enable_indexscan=off -c enable_bitmapscan=off' })
    const retrying = new CampaignService({ db: drizzle(scanning), defaultFrom: 'News <news@example.com>', stats })
    const [batch, retry] = await queuedBehind(
      `select 1 from campaign_recipients where id = ${ids[0]} for update`,
      // A late `failed` event for every row changes nothing but locks them; its rollup row references the campaign, as the
      // webhook processor's does (a new one takes a key share lock on the campaign row).
      () =>
        feedback.applyDeliveryEvents(ids.map((id) => ({ providerId: `p-${id}`, event: 'failed' as const })), async (tx) => {
          const tally = new RollupTally()
          tally.add(campaign.id, Date.now(), EventType.failed, { count: 1 })
          await tally.writeRollups(tx)
        }),
      () => retrying.retryFailedRecipients(campaign.id),
    ).finally(() => scanning.end())
    expectCommitted(batch, retry)
    expect(batch).toEqual({ status: 'fulfilled', value: ids.map(() => expect.objectContaining({ status: 'unchanged' })) })
    expect(retry).toMatchObject({ status: 'fulfilled', value: { status: 'sending' } })
    expect(await Promise.all(ids.map(statusOf))).toEqual(ids.map(() => 'queued'))
    expect(await countersOf(campaign.id)).toMatchObject({ queued: 6, failed: 0 })
  })

  it("retrying failed recipients, and a stored open that adds the campaign's first rollup row", async () => {
    const campaign = await seedCampaign('sent', [{ email: `opener-${seq}@example.com`, status: 'accepted' }, ...[1, 2, 3].map((i) => ({ email: `failed-${seq}-${i}@example.com`, status: 'failed' as const }))])
    // The writer waits for the counters; the retry locks the campaign row and waits for them too. Let go, the writer's
    // rollup row would wait for the campaign row if the retry held it `for update`.
    const [opened, retry] = await queuedBehind(statsRow(campaign.id), open([campaign.recipients[0]!]), () =>
      new CampaignService({ db, defaultFrom: 'News <news@example.com>', stats }).retryFailedRecipients(campaign.id),
    )
    expectCommitted(opened, retry)
    expect(await countersOf(campaign.id)).toMatchObject({ queued: 3, failed: 0 })
  })

  it('dropping recipients suppressed while their batch waited, and a bounce that drops a queued row of the same campaign', async () => {
    // `low` has a batch put back after a 429 whose recipient's address was suppressed since, and the address about to bounce still queued.
    const c = await seedOrdered()
    const gone = `gone-${seq}@example.com`
    const batched = (await db.execute<{ id: string }>(sql`
      insert into campaign_recipients (campaign_id, email, attributes, status) values (${c.low.id}, ${gone}, '{}', 'sending') returning id`)).rows[0]!.id
    const batchRow = (await db.execute<{ id: string }>(sql`
      insert into campaign_batches (campaign_id, idempotency_key, first_recipient_id, size, status, attempts, locked_until)
      values (${c.low.id}, ${`campaign/${c.low.id}/batch/${batched}`}, ${batched}, 1, 'sending', 2, now() + interval '1 minute') returning id`)).rows[0]!.id
    await db.execute(sql`update campaign_recipients set batch_id = ${batchRow} where id = ${batched}`)
    await db.execute(sql`update campaign_stats set total = total + 1, queued = queued + 1 where campaign_id = ${c.low.id}`)
    await db.execute(sql`insert into suppressions (email, reason, source) values (${gone}, 'unsubscribed', 'test')`)
    const batch: ClaimedBatch = {
      id: Number(batchRow),
      campaignId: c.low.id,
      idempotencyKey: `campaign/${c.low.id}/batch/${batched}`,
      firstRecipientId: Number(batched),
      size: 1,
      status: 'sending',
      attempts: 2,
      failures: 0,
      mayHaveReached: false,
    }
    // The drop holds the batch and its row and waits for `low`'s counters; the bounce holds its rows and waits for them too.
    const [dropped, bounced] = await queuedBehind(statsRow(c.low.id), () => prepareBatchRecipients(db, batch), bounce(c.suppressed))
    expectCommitted(dropped, bounced)
    expect(dropped).toMatchObject({ status: 'fulfilled', value: { fenced: false, dropped: [Number(batched)], recipients: [] } })
    expect(await statusOf(Number(batched))).toBe('suppressed')
    await expectDropped(c, 2)
  })
})

/** Neither writer was aborted (a deadlock is PostgreSQL's 40P01, one of the two rejected). */
function expectCommitted(...outcomes: PromiseSettledResult<unknown>[]): void {
  for (const outcome of outcomes) {
    if (outcome.status === 'rejected') throw new Error(`a writer failed: ${String((outcome.reason as { cause?: unknown }).cause ?? outcome.reason)}`)
  }
}

async function expectDropped(c: SuppressionCase, suppressed = 1): Promise<void> {
  expect(await statusOf(c.queuedIn)).toBe('suppressed')
  expect(await countersOf(c.low.id)).toMatchObject({ queued: 0, suppressed })
}

interface SuppressionCase {
  low: { id: string }
  high: { id: string }
  /** The suppressed address's queued row in `low`. */
  queuedIn: number
  /** The recipient whose bounce or unsubscribe suppresses the address, in `high`. */
  suppressed: number
  /** One accepted recipient in each campaign, delivered by the batch. */
  delivered: [number, number]
}

/** Two sending campaigns, `low` first in campaign id order (seeded again until the random ids fall that way). */
async function seedOrdered(): Promise<SuppressionCase> {
  for (;;) {
    const address = `leaving-${seq}@example.com`
    const one = await seedCampaign('sending', [{ email: address, status: 'queued' }, { email: `p-${seq}@example.com`, status: 'accepted' }])
    const two = await seedCampaign('sending', [{ email: address, status: 'accepted' }, { email: `q-${seq}@example.com`, status: 'accepted' }])
    if (one.id < two.id) return { low: one, high: two, queuedIn: one.recipients[0]!, suppressed: two.recipients[0]!, delivered: [one.recipients[1]!, two.recipients[1]!] }
    await db.execute(sql`update campaigns set status = 'cancelled' where id in (${one.id}, ${two.id})`)
  }
}

