import type net from 'node:net'
import { sql } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { EventType } from '../src/services/tracking/event-types'
import { collect, wsClient } from './helpers/ws'
import { campaignStats, pixelPath, postWebhook, resendEvent, sendTrackedCampaign, useTrackingApp, type TrackingContext } from './tracking-fixtures'

let ctx: TrackingContext
useTrackingApp((c) => (ctx = c))

const write = (hits: Parameters<TrackingContext['t']['app']['services']['tracking']['writer']['write']>[0]) => ctx.t.app.services.tracking.writer.write(hits)

type Point = { at: string; sent: number; delivered: number; opens: number; humanOpens: number; clicks: number; humanClicks: number; unsubscribes: number }

async function timeline(campaignId: string, from: Date, to: Date, bucket?: string) {
  return ctx.t.gql<{ campaign: { timeline: Point[] } }>(
    `query($id: ID!, $from: DateTime!, $to: DateTime!, $bucket: TimelineBucket) {
      campaign(id: $id) { timeline(from: $from, to: $to, bucket: $bucket) { at sent delivered opens humanOpens clicks humanClicks unsubscribes } } }`,
    { id: campaignId, from: from.toISOString(), to: to.toISOString(), bucket },
    ctx.admin,
  )
}

describe('unique and total figures', () => {
  it('counts a machine open before the human one as one unique open and one unique human open', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['mpp-then-human@example.com', 'clicks-only@example.com'])
    const [a, b] = recipients.map((r) => r.id) as [number, number]
    // Long after the send, so the click is not taken for a scanner's.
    const now = Date.now() + 3600_000
    await write([
      { type: EventType.open, recipientId: a, at: now - 3000, machine: true },
      { type: EventType.open, recipientId: a, at: now - 2000, machine: false },
      { type: EventType.open, recipientId: a, at: now - 1000, machine: false },
      // Images blocked: the click is the only sign of the open.
      { type: EventType.click, recipientId: b, at: now, machine: false, linkIndex: 0, url: 'https://shop.example.com/' },
    ])
    const stats = await campaignStats(ctx, campaignId)
    expect(stats.opens).toEqual({ total: 3, human: 2, machine: 1, unique: 2, uniqueHuman: 2 })
    expect(stats.clicks).toEqual({ total: 1, human: 1, machine: 0, unique: 1, uniqueHuman: 1 })
    expect(stats).toMatchObject({ uniqueOpens: 2, uniqueClicks: 1, openRate: 1, clickRate: 0.5, clickToOpenRate: 0.5 })
  })
})

describe('Campaign.timeline', () => {
  it('returns per-minute counts from the rollups with empty minutes filled, and sums them into larger buckets', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['tl1@example.com', 'tl2@example.com'])
    const [a, b] = recipients.map((r) => r.id) as [number, number]
    const start = Date.UTC(2030, 0, 1, 10, 0, 0)
    await write([
      { type: EventType.open, recipientId: a, at: start + 5_000, machine: true },
      { type: EventType.open, recipientId: a, at: start + 50_000, machine: false },
      { type: EventType.open, recipientId: b, at: start + 2 * 60_000 + 1, machine: false },
      { type: EventType.click, recipientId: b, at: start + 2 * 60_000 + 30_000, machine: false, linkIndex: 0, url: 'https://shop.example.com/' },
      { type: EventType.unsubscribe, recipientId: a, at: start + 61 * 60_000, machine: false },
    ])
    const minutes = await timeline(campaignId, new Date(start), new Date(start + 4 * 60_000))
    expect(minutes.errors).toBeUndefined()
    expect(minutes.data.campaign.timeline.map((p) => [new Date(p.at).getTime() - start, p.opens, p.humanOpens, p.clicks])).toEqual([
      [0, 2, 1, 0],
      [60_000, 0, 0, 0],
      [120_000, 1, 1, 1],
      [180_000, 0, 0, 0],
    ])
    const hours = await timeline(campaignId, new Date(start), new Date(start + 2 * 3600_000), 'HOUR')
    expect(hours.data.campaign.timeline.map((p) => [p.opens, p.clicks, p.unsubscribes])).toEqual([
      [3, 1, 0],
      [0, 0, 1],
    ])
  })

  it('counts a one-click unsubscribe once in the timeline, however often it is posted', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['tl-leaver@example.com'])
    const link = /<(http:\/\/groundwork\.test\/t\/u\/[^>]+)>/.exec(recipients[0]!.message.headers!['List-Unsubscribe']!)![1]!
    const from = new Date(Date.now() - 60_000)
    for (let i = 0; i < 2; i++) {
      const res = await ctx.t.app.inject({ method: 'POST', url: new URL(link).pathname, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'List-Unsubscribe=One-Click' })
      expect(res.statusCode).toBe(200)
    }
    await ctx.t.app.services.tracking.flush()
    const series = await timeline(campaignId, from, new Date(Date.now() + 60_000), 'HOUR')
    expect(series.data.campaign.timeline.reduce((n, p) => n + p.unsubscribes, 0)).toBe(1)
    expect(await campaignStats(ctx, campaignId)).toMatchObject({ unsubscribed: 1 })
  })

  it('refuses an empty range and too many points', async () => {
    const { campaignId } = await sendTrackedCampaign(ctx, ['tl-bad@example.com'])
    const now = new Date()
    expect((await timeline(campaignId, now, now)).errors?.[0]?.message).toContain('to must be after from')
    const year = await timeline(campaignId, new Date(now.getTime() - 365 * 86_400_000), now, 'MINUTE')
    expect(year.errors?.[0]?.message).toContain('At most 2000 points')
    // A year PostgreSQL cannot store is refused by the DateTime scalar, not by the database.
    for (const from of ['0000-01-01T00:00:00Z', '9999-12-31T23:00:00-23:00']) {
      const res = await ctx.t.gql(`query($id: ID!) { campaign(id: $id) { timeline(from: "${from}", to: "2030-01-01T00:00:00Z", bucket: DAY) { at } } }`, { id: campaignId }, ctx.admin)
      expect(res.errors?.[0], from).toMatchObject({ message: expect.stringContaining('between the years 0001 and 9999') })
    }
  })

  it('builds at most 10,000 timeline points in one request, however many timelines it asks for', async () => {
    const { campaignId } = await sendTrackedCampaign(ctx, ['tl-many@example.com'])
    // 2,000 points each: five fit, the sixth is refused (the cost rule cannot count points).
    const fields = (n: number) => Array.from({ length: n }, (_, i) => `a${i}: campaign(id: $id) { timeline(from: "2024-01-01T00:00:00Z", to: "2024-01-02T09:20:00Z") { at } }`).join('\n')
    const five = await ctx.t.gql<Record<string, { timeline: unknown[] }>>(`query($id: ID!) { ${fields(5)} }`, { id: campaignId }, ctx.admin)
    expect(five.errors).toBeUndefined()
    expect(Object.values(five.data).reduce((n, c) => n + c.timeline.length, 0)).toBe(10_000)
    const six = await ctx.t.gql<Record<string, { timeline: unknown[] } | null>>(`query($id: ID!) { ${fields(6)} }`, { id: campaignId }, ctx.admin)
    expect(six.errors?.[0]).toMatchObject({ message: expect.stringContaining('At most 10000 timeline points per request'), extensions: { code: 'VALIDATION_FAILED' } })
  })
})

describe('infrastructureStats.email', () => {
  it('reports sent, delivered and failed for today, 7 and 30 days from the daily rollups, with rates and queue', async () => {
    const query = `{ infrastructureStats { email {
      sent { today last7Days last30Days } delivered { today last30Days } failed { today } bounced { today }
      deliveryRate campaignRecipients campaignRecipientsFinal campaignSuccessRate queueDepth oldestQueuedSeconds
      webhooks { pending oldestPendingSeconds } trackingBuffer { buffered dropped } } } }`
    type Email = { sent: { today: number; last7Days: number; last30Days: number }; delivered: { today: number }; deliveryRate: number; campaignRecipientsFinal: number }
    const read = async () => {
      await ctx.t.app.services.tracking.flush()
      const res = await ctx.t.gql<{ infrastructureStats: { email: Email } }>(query, {}, ctx.admin)
      expect(res.errors).toBeUndefined()
      return res.data.infrastructureStats.email
    }
    const before = await read()
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['infra1@example.com', 'infra2@example.com'])
    for (const r of recipients) await postWebhook(ctx.t, resendEvent('email.delivered', r, campaignId))
    await ctx.t.app.services.tracking.webhooks.processor.drain()
    const after = await read()
    expect(after.sent.today - before.sent.today).toBe(2)
    expect(after.sent.last7Days - before.sent.last7Days).toBe(2)
    expect(after.sent.last30Days - before.sent.last30Days).toBe(2)
    expect(after.delivered.today - before.delivered.today).toBe(2)
    expect(after.campaignRecipientsFinal - before.campaignRecipientsFinal).toBe(2)
    expect(after.deliveryRate).toBeGreaterThan(0)
    expect(after).toMatchObject({ queueDepth: 0, oldestQueuedSeconds: null, webhooks: { pending: 0 }, trackingBuffer: { buffered: 0, dropped: 0 } })

    const denied = await ctx.t.gql(query, {}, ctx.t.token('user'))
    expect(denied.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
  })
})

describe('campaignStats subscription', () => {
  it('pushes the engagement figures when an open is stored', async () => {
    await ctx.t.app.listen({ host: '127.0.0.1', port: 0 })
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['live@example.com'])
    const url = `ws://127.0.0.1:${(ctx.t.app.server.address() as net.AddressInfo).port}/graphql`
    const client = wsClient(url, ctx.admin)
    type Event = { campaignStats: { uniqueOpens: number; opens: { total: number; uniqueHuman: number } } }
    try {
      const sub = collect<Event>(
        client,
        'subscription($id: ID!) { campaignStats(campaignId: $id) { uniqueOpens opens { total uniqueHuman } } }',
        { id: campaignId },
        (events) => events.some((e) => e.campaignStats.uniqueOpens === 1),
      )
      await sub.subscribed
      await ctx.t.app.inject({ method: 'GET', url: pixelPath(recipients[0]!.message.html!), headers: { 'user-agent': 'Mozilla/5.0 (X11; Linux) Firefox/128.0' } })
      await ctx.t.app.services.tracking.flush()
      const events = await sub.events
      expect(events[0]!.campaignStats).toEqual({ uniqueOpens: 0, opens: { total: 0, uniqueHuman: 0 } })
      expect(events.at(-1)!.campaignStats).toEqual({ uniqueOpens: 1, opens: { total: 1, uniqueHuman: 1 } })
    } finally {
      await client.dispose()
    }
    const rows = await ctx.t.app.db.db.execute<{ n: string }>(sql`select count(*) as n from recipient_engagement where campaign_id = ${campaignId}`)
    expect(Number(rows.rows[0]!.n)).toBe(1)
  })
})
