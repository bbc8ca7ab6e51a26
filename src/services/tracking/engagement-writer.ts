/**
 * Stores a batch of hits (opens, clicks, unsubscribes, send outcomes) in one transaction: the raw
 * events, the per-minute and per-day rollups, the per-link counters, the recipients' engagement
 * bits and the campaign's unique counters. Rows are locked in one order everywhere (engagement,
 * campaign_stats, rollups, links, daily), so concurrent writers on several instances cannot deadlock.
 *
 * Most hits are repeats (the same people opening again), so the writer remembers, in bounded
 * memory, each recipient's campaign and send time (fixed once sent) and the engagement bits it last
 * saw. Bits are only ever added, so remembered bits are never wrong, only possibly incomplete: a
 * recipient whose remembered bits already cover a hit needs no read and no lock.
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

/** A Map that forgets its oldest entries past `max`. */
class BoundedMap<K, V> extends Map<K, V> {
  constructor(private readonly max: number) {
    super()
  }
  override set(key: K, value: V): this {
    if (!this.has(key) && this.size >= this.max) this.delete(this.keys().next().value as K)
    return super.set(key, value)
  }
}

export class EngagementWriter {
  private readonly recipients: BoundedMap<number, Recipient>
  private readonly knownFlags: BoundedMap<number, number>

  constructor(
    private readonly db: Database,
    private readonly options: WriteOptions & { cacheSize?: number },
  ) {
    this.recipients = new BoundedMap(options.cacheSize ?? 200_000)
    this.knownFlags = new BoundedMap(options.cacheSize ?? 200_000)
  }

  /** Stores the hits in a transaction of their own; returns the campaigns whose figures changed. Hits of unknown recipients are skipped. */
  async write(hits: Hit[]): Promise<string[]> {
    if (hits.length === 0) return []
    const result = await this.db.transaction(async (txn) => {
      const tx = txn as unknown as Database
      // These hits were only ever in memory: waiting for the WAL flush would add latency and no durability.
      await tx.execute(sql`set local synchronous_commit = off`)
      return this.writeIn(tx, hits)
    })
    // Only once committed: a rolled-back batch must not be remembered as done.
    for (const [id, flags] of result.flags) this.knownFlags.set(id, flags)
    return result.campaigns
  }

  /** The same inside the caller's transaction (a webhook row's); the bits it sets are not remembered. */
  async writeIn(tx: Database, hits: Hit[]): Promise<{ campaigns: string[]; flags: Map<number, number> }> {
    return writeHitsIn(tx, hits, this.options, { recipients: this.recipients, knownFlags: this.knownFlags, rememberSentBefore: Date.now() - this.options.scannerWindowMs })
  }
}

interface Memory {
  recipients: Map<number, Recipient>
  knownFlags: ReadonlyMap<number, number>
  /** Recipients sent before this are remembered: past the scanner window, their send time no longer decides anything. */
  rememberSentBefore: number
}

async function writeHitsIn(tx: Database, hits: Hit[], options: WriteOptions, memory: Memory): Promise<{ campaigns: string[]; flags: Map<number, number> }> {
  const recipients = await loadRecipients(tx, hits, memory.recipients, memory.rememberSentBefore)
  const known = hits.filter((h) => recipients.has(h.recipientId)).sort((a, b) => a.at - b.at)
  if (known.length === 0) return { campaigns: [], flags: new Map() }
  const machineOf = new Map<Hit, boolean>()
  for (const hit of known) {
    const sentAt = recipients.get(hit.recipientId)!.sentAt
    machineOf.set(hit, hit.machine || (hit.type === EventType.click && sentAt !== null && hit.at - sentAt < options.scannerWindowMs))
  }
  const flags = await lockEngagement(tx, known, recipients, machineOf, memory.knownFlags)
  const startFlags = new Map(flags)

  const events = { campaign: [] as string[], recipient: [] as number[], at: [] as string[], dedupe: [] as (number | null)[], type: [] as number[], link: [] as (number | null)[], machine: [] as boolean[] }
  const tally = new RollupTally()
  const stats = new Map<string, { opens: number; clicks: number }>()
  const links = new Map<string, { campaignId: string; index: number; url: string; clicks: number; human: number }>()
  const statsOf = (campaignId: string) => stats.get(campaignId) ?? stats.set(campaignId, { opens: 0, clicks: 0 }).get(campaignId)!

  for (const hit of known) {
    const r = recipients.get(hit.recipientId)!
    const machine = machineOf.get(hit)!
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

  // ON CONFLICT only when a row can conflict: it makes every insert speculative, which costs WAL.
  const deduped = events.dedupe.some((d) => d !== null)
  await tx.execute(sql`
    insert into email_events (campaign_id, recipient_id, occurred_at, dedupe_key, type, link_index, machine)
    select * from unnest(${sql.param(events.campaign)}::uuid[], ${sql.param(events.recipient)}::bigint[], ${sql.param(events.at)}::timestamptz[],
      ${sql.param(events.dedupe)}::bigint[], ${sql.param(events.type)}::smallint[], ${sql.param(events.link)}::smallint[], ${sql.param(events.machine)}::boolean[])
    ${deduped ? sql`on conflict (dedupe_key) where dedupe_key is not null do nothing` : sql``}`)

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
  return { campaigns: [...new Set(events.campaign)], flags }
}

/** Campaign and send time of each recipient; those sent a while ago are remembered (neither changes after the send). */
async function loadRecipients(tx: Database, hits: Hit[], remembered: Map<number, Recipient>, rememberSentBefore: number): Promise<Map<number, Recipient>> {
  const found = new Map<number, Recipient>()
  const missing: number[] = []
  for (const id of new Set(hits.map((h) => h.recipientId))) {
    const r = remembered.get(id)
    if (r) found.set(id, r)
    else missing.push(id)
  }
  if (missing.length === 0) return found
  const result = await tx.execute<{ id: string | number; campaign_id: string; sent_at: string | Date | null }>(sql`
    select id, campaign_id, sent_at from campaign_recipients where id = any(${sql.param(missing)}::bigint[])`)
  for (const row of result.rows) {
    const r = { campaignId: row.campaign_id, sentAt: row.sent_at === null ? null : new Date(row.sent_at).getTime() }
    found.set(Number(row.id), r)
    if (r.sentAt !== null && r.sentAt < rememberSentBefore) remembered.set(Number(row.id), r)
  }
  return found
}

/** The bits a hit can set: a human click also marks a human open. */
function bitsOf(hit: Hit, machine: boolean): number {
  if (hit.type === EventType.open) return Flag.anyOpen | (machine ? 0 : Flag.humanOpen)
  if (hit.type === EventType.click) return Flag.anyClick | (machine ? 0 : Flag.humanClick | Flag.anyOpen | Flag.humanOpen)
  if (hit.type === EventType.unsubscribe) return Flag.unsubscribed
  return 0
}

/**
 * The current engagement bits of every recipient in the batch. Bits are only ever added, so a
 * recipient who already has every bit the batch could set needs no lock (repeat opens, the common
 * case); the others get their row created if missing and locked, in recipient order.
 */
async function lockEngagement(
  tx: Database,
  hits: Hit[],
  recipients: Map<number, Recipient>,
  machineOf: Map<Hit, boolean>,
  knownFlags: ReadonlyMap<number, number>,
): Promise<Map<number, number>> {
  const wanted = new Map<number, number>()
  for (const hit of hits) {
    if (!ENGAGEMENT.has(hit.type)) continue
    wanted.set(hit.recipientId, (wanted.get(hit.recipientId) ?? 0) | bitsOf(hit, machineOf.get(hit)!))
  }
  const flags = new Map<number, number>()
  if (wanted.size === 0) return flags
  const ids = [...wanted.keys()].sort((a, b) => a - b)
  const unsure: number[] = []
  for (const id of ids) {
    const remembered = knownFlags.get(id)
    if (remembered !== undefined && (remembered | wanted.get(id)!) === remembered) flags.set(id, remembered)
    else unsure.push(id)
  }
  if (unsure.length === 0) return flags
  const current = await tx.execute<{ recipient_id: string | number; flags: number }>(sql`
    select recipient_id, flags from recipient_engagement where recipient_id = any(${sql.param(unsure)}::bigint[])`)
  for (const row of current.rows) flags.set(Number(row.recipient_id), Number(row.flags))
  const missing = ids.filter((id) => !flags.has(id))
  const toLock = ids.filter((id) => !flags.has(id) || (flags.get(id)! | wanted.get(id)!) !== flags.get(id))
  if (missing.length > 0) {
    await tx.execute(sql`
      insert into recipient_engagement (recipient_id, campaign_id)
      select * from unnest(${sql.param(missing)}::bigint[], ${sql.param(missing.map((id) => recipients.get(id)!.campaignId))}::uuid[])
      on conflict (recipient_id) do nothing`)
  }
  if (toLock.length > 0) {
    const locked = await tx.execute<{ recipient_id: string | number; flags: number }>(sql`
      select recipient_id, flags from recipient_engagement where recipient_id = any(${sql.param(toLock)}::bigint[]) order by recipient_id for update`)
    for (const row of locked.rows) flags.set(Number(row.recipient_id), Number(row.flags))
  }
  return flags
}
