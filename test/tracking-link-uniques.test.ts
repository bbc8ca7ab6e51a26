/**
 * Per-link unique clicks: each recipient counted once per link (any, and human), through the real
 * click redirect and Campaign.links, across batches, and with two instances flushing at once.
 */
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Database } from '../src/infra/db/client'
import { EngagementWriter, type Hit } from '../src/services/tracking/engagement-writer'
import { EventType } from '../src/services/tracking/event-types'
import { buildTestApp, type TestApp } from './helpers/app'
import { campaignStats, HUMAN_UA, pathOf, pixelPath, sendTrackedCampaign, sentLongAgo, trackedLinks, useTrackingApp, type TrackingContext } from './tracking-fixtures'

let ctx: TrackingContext
useTrackingApp((c) => (ctx = c))

const SCANNER_UA = 'Mozilla/5.0 (compatible; Barracuda Sentinel)'
const SALE = 'https://shop.example.com/sale?x=1&y=2'
const BLOG = 'https://blog.example.com/post#top'

type Link = { index: number; url: string; clicks: number; humanClicks: number; uniqueClicks: number; humanUniqueClicks: number }

async function campaignLinks(campaignId: string): Promise<Link[]> {
  const res = await ctx.t.gql<{ campaign: { links: Link[] } }>(
    'query($id: ID!) { campaign(id: $id) { links { index url clicks humanClicks uniqueClicks humanUniqueClicks } } }',
    { id: campaignId },
    ctx.admin,
  )
  expect(res.errors).toBeUndefined()
  return res.data.campaign.links
}

async function click(t: TestApp, url: string, ua = HUMAN_UA, method: 'GET' | 'HEAD' = 'GET') {
  const res = await t.app.inject({ method, url: pathOf(url), headers: { 'user-agent': ua } })
  expect(res.statusCode).toBe(302)
}

/** The link bits as PostgreSQL's get_bit reads them, so the stored numbering is the documented one. */
async function storedBits(recipientId: number, upTo: number) {
  const rows = await ctx.t.app.db.db.execute<{ links: string | null; human: string | null }>(sql`
    select (select string_agg(get_bit(links, i)::text, '' order by i) from generate_series(0, least(${upTo}, length(links) * 8) - 1) i) as links,
           (select string_agg(get_bit(human_links, i)::text, '' order by i) from generate_series(0, least(${upTo}, length(human_links) * 8) - 1) i) as human
    from recipient_engagement where recipient_id = ${recipientId}`)
  return rows.rows[0]
}

describe('Campaign.links: unique clicks per link', () => {
  it('counts each recipient once per link, and once more as human when a scanner clicked first, across batches', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['uniq-ann@example.com', 'uniq-bob@example.com'])
    await sentLongAgo(ctx.t, campaignId)
    const [annSale, annBlog] = trackedLinks(recipients[0]!.message.html!) as [string, string]
    const [bobSale, bobBlog] = trackedLinks(recipients[1]!.message.html!) as [string, string]

    // Ann clicks the sale three times and the blog once; Bob's gateway scans both links, then Bob clicks the sale.
    await click(ctx.t, annSale)
    await click(ctx.t, annSale)
    await click(ctx.t, bobSale, SCANNER_UA)
    await click(ctx.t, bobBlog, HUMAN_UA, 'HEAD')
    await ctx.t.app.services.tracking.flush()
    expect(await campaignLinks(campaignId)).toEqual([
      { index: 0, url: SALE, clicks: 3, humanClicks: 2, uniqueClicks: 2, humanUniqueClicks: 1 },
      { index: 1, url: BLOG, clicks: 1, humanClicks: 0, uniqueClicks: 1, humanUniqueClicks: 0 },
    ])

    // A later batch: Bob's own click after his scanner's is a human unique but not another unique.
    await click(ctx.t, bobSale)
    await click(ctx.t, annSale)
    await click(ctx.t, annBlog)
    await ctx.t.app.services.tracking.flush()
    // Repeats only, in a batch of their own: the writer remembers these bits and changes no unique.
    await click(ctx.t, annSale)
    await click(ctx.t, annBlog)
    await click(ctx.t, bobSale)
    await ctx.t.app.services.tracking.flush()

    expect(await campaignLinks(campaignId)).toEqual([
      { index: 0, url: SALE, clicks: 7, humanClicks: 6, uniqueClicks: 2, humanUniqueClicks: 2 },
      { index: 1, url: BLOG, clicks: 3, humanClicks: 2, uniqueClicks: 2, humanUniqueClicks: 1 },
    ])
    const stats = await campaignStats(ctx, campaignId)
    expect(stats.clicks).toEqual({ total: 10, human: 8, machine: 2, unique: 2, uniqueHuman: 2 })
    expect(await storedBits(recipients[0]!.id, 8)).toEqual({ links: '11000000', human: '11000000' })
    expect(await storedBits(recipients[1]!.id, 8)).toEqual({ links: '11000000', human: '10000000' })
  })

  it('lists the links nobody clicked with zero uniques', async () => {
    const { campaignId } = await sendTrackedCampaign(ctx, ['uniq-nobody@example.com'])
    expect(await campaignLinks(campaignId)).toEqual([
      { index: 0, url: SALE, clicks: 0, humanClicks: 0, uniqueClicks: 0, humanUniqueClicks: 0 },
      { index: 1, url: BLOG, clicks: 0, humanClicks: 0, uniqueClicks: 0, humanUniqueClicks: 0 },
    ])
  })

  it('counts the clicks of a link index past the tracked maximum, but no uniques and no bitmap for it', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['uniq-far@example.com'])
    await sentLongAgo(ctx.t, campaignId)
    const { id } = recipients[0]!
    // Signed with the app's key, as no renderer would: link 600 of an email that tracks at most 500.
    const far = `http://groundwork.test/t/c/${ctx.t.app.services.tracking.tokens.clickToken(id, 600, 'https://far.example.com/', Math.floor(Date.now() / 1000) + 3600)}`
    await click(ctx.t, far)
    await click(ctx.t, far)
    await ctx.t.app.services.tracking.flush()
    const links = await campaignLinks(campaignId)
    expect(links.find((l) => l.index === 600)).toEqual({ index: 600, url: 'https://far.example.com/', clicks: 2, humanClicks: 2, uniqueClicks: 0, humanUniqueClicks: 0 })
    expect(await storedBits(id, 8)).toEqual({ links: null, human: null })
    // The recipient's click itself still counts.
    expect((await campaignStats(ctx, campaignId)).clicks).toMatchObject({ total: 2, unique: 1, uniqueHuman: 1 })
  })
})

describe('unique clicks across instances', () => {
  let other: TestApp
  beforeAll(async () => {
    other = await buildTestApp({ database: ctx.t.database, redisPrefix: ctx.t.redisPrefix, env: { TRACKING_FLUSH_MS: '600000' } })
  })
  afterAll(async () => {
    await other.close()
  })

  it('counts each recipient once when two instances flush clicks on the same links at the same time', async () => {
    const emails = Array.from({ length: 12 }, (_, i) => `uniq-race-${i}@example.com`)
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, emails)
    await sentLongAgo(ctx.t, campaignId)
    // They all opened first: their engagement rows exist, so the row locks, not the inserts of new rows, must keep the writers apart.
    for (const r of recipients) await ctx.t.app.inject({ method: 'GET', url: pixelPath(r.message.html!), headers: { 'user-agent': HUMAN_UA } })
    await ctx.t.app.services.tracking.flush()
    for (const r of recipients) {
      const [sale, blog] = trackedLinks(r.message.html!) as [string, string]
      // Each instance buffers a click on each link of every recipient: a scanner's on one, the person's on the other.
      await click(ctx.t, sale)
      await click(ctx.t, blog, SCANNER_UA)
      await click(other, sale)
      await click(other, blog)
    }
    await Promise.all([ctx.t.app.services.tracking.flush(), other.app.services.tracking.flush()])

    expect(await campaignLinks(campaignId)).toEqual([
      { index: 0, url: SALE, clicks: 24, humanClicks: 24, uniqueClicks: 12, humanUniqueClicks: 12 },
      { index: 1, url: BLOG, clicks: 24, humanClicks: 12, uniqueClicks: 12, humanUniqueClicks: 12 },
    ])
    expect((await campaignStats(ctx, campaignId)).clicks).toMatchObject({ total: 48, unique: 12, uniqueHuman: 12 })
  })

  it('does not trust what an instance remembers about a recipient whose new link bits another instance stored', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['uniq-two-places@example.com'])
    await sentLongAgo(ctx.t, campaignId)
    const [sale, blog] = trackedLinks(recipients[0]!.message.html!) as [string, string]
    // This instance remembers the recipient's click bits and the sale link; the other stores the blog link.
    await click(ctx.t, sale)
    await ctx.t.app.services.tracking.flush()
    await click(other, blog)
    await other.app.services.tracking.flush()
    // Back here, the blog is not a first click any more, though nothing remembered here says so.
    await click(ctx.t, blog)
    await click(ctx.t, sale)
    await ctx.t.app.services.tracking.flush()
    expect((await campaignLinks(campaignId)).map((l) => [l.clicks, l.uniqueClicks, l.humanUniqueClicks])).toEqual([
      [2, 1, 1],
      [2, 1, 1],
    ])
    expect(await storedBits(recipients[0]!.id, 8)).toEqual({ links: '11000000', human: '11000000' })
  })
})

describe('unique clicks under concurrency', () => {
  it.each([
    ['rows that exist (the recipients opened first)', true],
    ['rows the first writer creates', false],
  ])('makes a writer that waited for another one’s lock on %s see its bits instead of counting the same first clicks again', async (_case, opened) => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, [`uniq-held-1-${opened}@example.com`, `uniq-held-2-${opened}@example.com`])
    await sentLongAgo(ctx.t, campaignId)
    const db = ctx.t.app.db.db
    if (opened) await ctx.t.app.services.tracking.writer.write(recipients.map((r) => ({ type: EventType.open, recipientId: r.id, at: Date.now(), machine: false })))
    // Two fresh writers: two instances, neither with anything remembered.
    const first = new EngagementWriter(db, { scannerWindowMs: 0 })
    const second = new EngagementWriter(db, { scannerWindowMs: 0 })
    const at = Date.now()
    const hits = (machine: boolean): Hit[] =>
      recipients.flatMap((r) => [0, 1].map((linkIndex) => ({ type: EventType.click, recipientId: r.id, at, machine, linkIndex, url: linkIndex === 0 ? SALE : BLOG })))

    // The first writer's transaction stays open, its rows locked, until the second is seen waiting for them.
    let release!: () => void
    const held = new Promise<void>((resolve) => (release = resolve))
    let written!: () => void
    const wrote = new Promise<void>((resolve) => (written = resolve))
    const firstDone = db.transaction(async (tx) => {
      await first.writeIn(tx as unknown as Database, hits(true))
      written()
      await held
    })
    await wrote
    const secondDone = second.write([...hits(true), ...hits(false)])
    await waitForLockWaiter(db)
    release()
    await Promise.all([firstDone, secondDone])

    const links = await campaignLinks(campaignId)
    expect(links.map((l) => [l.clicks, l.humanClicks, l.uniqueClicks, l.humanUniqueClicks])).toEqual([
      [6, 2, 2, 2],
      [6, 2, 2, 2],
    ])
  })
})

/** Until some session of this database waits on a lock (the second writer behind the first one's rows). */
async function waitForLockWaiter(db: Database) {
  for (;;) {
    const rows = await db.execute<{ n: string }>(sql`
      select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`)
    if (Number(rows.rows[0]!.n) > 0) return
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}
