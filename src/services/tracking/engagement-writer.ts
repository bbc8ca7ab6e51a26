/**
 * Stores a batch of hits (opens, clicks, unsubscribes, send outcomes) in one transaction: the raw
 * events, the per-minute and per-day rollups, the per-link counters, the recipients' engagement
 * bits and the campaign's unique counters. Rows are locked in one order everywhere (engagement,
 * campaign_stats, rollups, links, daily), so concurrent writers on several instances cannot deadlock.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { Flag, markFirst } from './engagement-flags'
import { EventType, type EventTypeCode } from './event-types'
import { RollupTally } from './rollup-tally'

export interface Hit {
  type: EventTypeCode
  recipientId: number
  /** Epoch milliseconds. */
  at: number
  machine: boolean
  linkIndex?: number | null
  url?: string | null
  /** Set for events that come from a stored webhook row. */
  dedupeKey?: number | null
}

export interface WriteOptions {
  /** Clicks sooner than this after the send are a scanner's. */
  scannerWindowMs: number
}

const ENGAGEMENT: ReadonlySet<number> = new Set([EventType.open, EventType.click, EventType.unsubscribe])

interface Recipient {
  campaignId: string
  sentAt: number | null
}

/** Stores the hits; returns the campaigns whose figures changed. Hits of unknown recipients are skipped. */
export async function writeHits(db: Database, hits: Hit[], options: WriteOptions): Promise<string[]> {
  if (hits.length === 0) return []
  return db.transaction((tx) => writeHitsIn(tx as unknown as Database, hits, options))
}

export async function writeHitsIn(tx: Database, hits: Hit[], options: WriteOptions): Promise<string[]> {
  const recipients = await loadRecipients(tx, hits)
  const known = hits.filter((h) => recipients.has(h.recipientId)).sort((a, b) => a.at - b.at)
  if (known.length === 0) return []
  const flags = await lockEngagement(tx, known, recipients)
  const startFlags = new Map(flags)

  const events = { campaign: [] as string[], recipient: [] as number[], at: [] as string[], dedupe: [] as (number | null)[], type: [] as number[], link: [] as (number | null)[], machine: [] as boolean[] }
  const tally = new RollupTally()
  const stats = new Map<string, { opens: number; clicks: number }>()
  const links = new Map<string, { campaignId: string; index: number; url: string; clicks: number; human: number }>()
  const statsOf = (campaignId: string) => stats.get(campaignId) ?? stats.set(campaignId, { opens: 0, clicks: 0 }).get(campaignId)!

  for (const hit of known) {
    const r = recipients.get(hit.recipientId)!
    const machine = hit.machine || (hit.type === EventType.click && r.sentAt !== null && hit.at - r.sentAt < options.scannerWindowMs)
    events.campaign.push(r.campaignId)
    events.recipient.push(hit.recipientId)
    events.at.push(new Date(hit.at).toISOString())
    events.dedupe.push(hit.dedupeKey ?? null)
    events.type.push(hit.type)
    events.link.push(hit.linkIndex ?? null)
    events.machine.push(machine)
    const base = { count: 1, machine: machine ? 1 : 0 }

    if (hit.type === EventType.open) {
      const marked = markFirst(flags.get(hit.recipientId)!, Flag.anyOpen, Flag.humanOpen, machine)
      flags.set(hit.recipientId, marked.flags)
      tally.add(r.campaignId, hit.at, EventType.open, { ...base, uniques: +marked.first.unique, humanUniques: +marked.first.humanUnique })
      statsOf(r.campaignId).opens += +marked.first.humanUnique
    } else if (hit.type === EventType.click) {
      const before = flags.get(hit.recipientId)!
      const marked = markFirst(before, Flag.anyClick, Flag.humanClick, machine)
      let after = marked.flags
      tally.add(r.campaignId, hit.at, EventType.click, { ...base, uniques: +marked.first.unique, humanUniques: +marked.first.humanUnique })
      statsOf(r.campaignId).clicks += +marked.first.humanUnique
      // A person who clicked has opened, even with images blocked: counted as an open, without an open event.
      if (!machine && (before & Flag.humanOpen) === 0) {
        after |= Flag.anyOpen | Flag.humanOpen
        tally.add(r.campaignId, hit.at, EventType.open, { uniques: (before & Flag.anyOpen) === 0 ? 1 : 0, humanUniques: 1 })
        statsOf(r.campaignId).opens += 1
      }
      flags.set(hit.recipientId, after)
      if (hit.linkIndex != null) {
        const key = `${r.campaignId}|${String(hit.linkIndex).padStart(5, '0')}`
        const link = links.get(key) ?? links.set(key, { campaignId: r.campaignId, index: hit.linkIndex, url: hit.url ?? '', clicks: 0, human: 0 }).get(key)!
        link.clicks++
        link.human += machine ? 0 : 1
      }
    } else if (hit.type === EventType.unsubscribe) {
      const marked = markFirst(flags.get(hit.recipientId)!, Flag.unsubscribed, Flag.unsubscribed, false)
      flags.set(hit.recipientId, marked.flags)
      tally.add(r.campaignId, hit.at, EventType.unsubscribe, { ...base, uniques: +marked.first.unique, humanUniques: +marked.first.unique })
    } else {
      tally.add(r.campaignId, hit.at, hit.type, { ...base, uniques: 1, humanUniques: machine ? 0 : 1 })
    }
  }

  await tx.execute(sql`
    insert into email_events (campaign_id, recipient_id, occurred_at, dedupe_key, type, link_index, machine)
    select * from unnest(${sql.param(events.campaign)}::uuid[], ${sql.param(events.recipient)}::bigint[], ${sql.param(events.at)}::timestamptz[],
      ${sql.param(events.dedupe)}::bigint[], ${sql.param(events.type)}::smallint[], ${sql.param(events.link)}::smallint[], ${sql.param(events.machine)}::boolean[])
    on conflict (dedupe_key) where dedupe_key is not null do nothing`)

  const changedFlags = [...flags.entries()].filter(([id, f]) => f !== startFlags.get(id)).sort(([a], [b]) => a - b)
  if (changedFlags.length > 0) {
    await tx.execute(sql`
      update recipient_engagement e set flags = v.flags
      from unnest(${sql.param(changedFlags.map(([id]) => id))}::bigint[], ${sql.param(changedFlags.map(([, f]) => f))}::smallint[]) as v(id, flags)
      where e.recipient_id = v.id`)
  }
  const statRows = [...stats.entries()].filter(([, s]) => s.opens > 0 || s.clicks > 0).sort(([a], [b]) => (a < b ? -1 : 1))
  if (statRows.length > 0) {
    await tx.execute(sql`
      update campaign_stats s set unique_opens = unique_opens + v.opens, unique_clicks = unique_clicks + v.clicks, updated_at = now()
      from unnest(${sql.param(statRows.map(([id]) => id))}::uuid[], ${sql.param(statRows.map(([, s]) => s.opens))}::int[], ${sql.param(statRows.map(([, s]) => s.clicks))}::int[]) as v(campaign_id, opens, clicks)
      where s.campaign_id = v.campaign_id`)
  }
  await tally.writeRollups(tx)
  const linkRows = [...links.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, l]) => l)
  if (linkRows.length > 0) {
    await tx.execute(sql`
      insert into campaign_link_clicks (campaign_id, link_index, url, clicks, human_clicks)
      select * from unnest(${sql.param(linkRows.map((l) => l.campaignId))}::uuid[], ${sql.param(linkRows.map((l) => l.index))}::smallint[],
        ${sql.param(linkRows.map((l) => l.url))}::text[], ${sql.param(linkRows.map((l) => l.clicks))}::int[], ${sql.param(linkRows.map((l) => l.human))}::int[])
      on conflict (campaign_id, link_index) do update set
        clicks = campaign_link_clicks.clicks + excluded.clicks, human_clicks = campaign_link_clicks.human_clicks + excluded.human_clicks`)
  }
  await tally.writeDaily(tx)
  return [...new Set(events.campaign)]
}

async function loadRecipients(tx: Database, hits: Hit[]): Promise<Map<number, Recipient>> {
  const ids = [...new Set(hits.map((h) => h.recipientId))]
  const result = await tx.execute<{ id: string | number; campaign_id: string; sent_at: string | Date | null }>(sql`
    select id, campaign_id, sent_at from campaign_recipients where id = any(${sql.param(ids)}::bigint[])`)
  return new Map(
    result.rows.map((r) => [Number(r.id), { campaignId: r.campaign_id, sentAt: r.sent_at === null ? null : new Date(r.sent_at).getTime() }]),
  )
}

/** Creates the engagement rows that are missing and locks them all, in recipient order. */
async function lockEngagement(tx: Database, hits: Hit[], recipients: Map<number, Recipient>): Promise<Map<number, number>> {
  const ids = [...new Set(hits.filter((h) => ENGAGEMENT.has(h.type)).map((h) => h.recipientId))].sort((a, b) => a - b)
  const flags = new Map<number, number>()
  if (ids.length === 0) return flags
  await tx.execute(sql`
    insert into recipient_engagement (recipient_id, campaign_id)
    select * from unnest(${sql.param(ids)}::bigint[], ${sql.param(ids.map((id) => recipients.get(id)!.campaignId))}::uuid[])
    on conflict (recipient_id) do nothing`)
  const locked = await tx.execute<{ recipient_id: string | number; flags: number }>(sql`
    select recipient_id, flags from recipient_engagement where recipient_id = any(${sql.param(ids)}::bigint[]) order by recipient_id for update`)
  for (const row of locked.rows) flags.set(Number(row.recipient_id), Number(row.flags))
  return flags
}
