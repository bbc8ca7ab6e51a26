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
 *
 * A link's unique clicks work the same way, with the bitmaps of the links each recipient has
 * clicked (any, and human) beside the flags, read, locked and written by the same statements.
 */
import { sql } from 'drizzle-orm'
import { arrayLiteral } from '../../infra/db/array-literal'
import type { Database } from '../../infra/db/client'
import { BoundedMap } from '../../lib/bounded-map'
import { lockCampaignStats } from '../campaigns/campaign-stats'
import { Flag, markFirst, type FirstTimes } from './engagement-flags'
import { EventType, type EventTypeCode } from './event-types'
import { hasBit, withBit } from './link-bitmap'
import { MAX_TRACKED_LINKS } from './link-rewriter'
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
  /** Runs in the batch's transaction once it is stored, so what it writes (outgoing webhooks) commits with the batch or not at all. */
  onWritten?: (tx: Database, written: WrittenHits) => Promise<void>
}

/** What a batch stored, for `onWritten`. */
export interface WrittenHits {
  /** The hits of known recipients, oldest first. */
  hits: readonly Hit[]
  /** Whether each hit counted as a machine's (the scanner window applied). */
  machine: ReadonlyMap<Hit, boolean>
  /** The engagement bits of the batch's engaged recipients before it. */
  flagsBefore: ReadonlyMap<number, number>
}

const ENGAGEMENT: ReadonlySet<number> = new Set([EventType.open, EventType.click, EventType.unsubscribe])

interface Recipient {
  campaignId: string
  sentAt: number | null
}

/** The links a recipient has clicked (link-bitmap.ts bitmaps); null until the first such click. Replaced, never mutated. */
export interface ClickedLinks {
  any: Buffer | null
  human: Buffer | null
}

const NO_LINKS: ClickedLinks = { any: null, human: null }

/** Links past MAX_TRACKED_LINKS are never rendered; their clicks are counted, their uniques are not (the bitmaps stay bounded). */
function hasUniqueClicks(index: number | null | undefined): index is number {
  return index != null && Number.isInteger(index) && index >= 0 && index < MAX_TRACKED_LINKS
}

export class EngagementWriter {
  private readonly recipients: BoundedMap<number, Recipient>
  private readonly knownFlags: BoundedMap<number, number>
  private readonly knownLinks: BoundedMap<number, ClickedLinks>

  constructor(
    private readonly db: Database,
    private readonly options: WriteOptions & { cacheSize?: number },
  ) {
    this.recipients = new BoundedMap(options.cacheSize ?? 200_000)
    this.knownFlags = new BoundedMap(options.cacheSize ?? 200_000)
    this.knownLinks = new BoundedMap(options.cacheSize ?? 200_000)
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
    for (const [id, links] of result.links) if (links.any) this.knownLinks.set(id, links)
    return result.campaigns
  }

  /** The same inside the caller's transaction (a webhook row's); the bits it sets are not remembered. */
  async writeIn(tx: Database, hits: Hit[]): Promise<WriteResult> {
    return writeHitsIn(tx, hits, this.options, {
      recipients: this.recipients,
      knownFlags: this.knownFlags,
      knownLinks: this.knownLinks,
      rememberSentBefore: Date.now() - this.options.scannerWindowMs,
    })
  }
}

export interface WriteResult {
  campaigns: string[]
  /** Engagement bits and clicked links of the batch's recipients as committed (with the transaction). */
  flags: Map<number, number>
  links: Map<number, ClickedLinks>
}

interface Memory {
  recipients: Map<number, Recipient>
  knownFlags: ReadonlyMap<number, number>
  knownLinks: ReadonlyMap<number, ClickedLinks>
  /** Recipients sent before this are remembered: past the scanner window, their send time no longer decides anything. */
  rememberSentBefore: number
}

async function writeHitsIn(tx: Database, hits: Hit[], options: WriteOptions, memory: Memory): Promise<WriteResult> {
  const recipients = await loadRecipients(tx, hits, memory.recipients, memory.rememberSentBefore)
  const known = hits.filter((h) => recipients.has(h.recipientId)).sort((a, b) => a.at - b.at)
  if (known.length === 0) return { campaigns: [], flags: new Map(), links: new Map() }
  const machineOf = new Map<Hit, boolean>()
  for (const hit of known) {
    const sentAt = recipients.get(hit.recipientId)!.sentAt
    machineOf.set(hit, hit.machine || (hit.type === EventType.click && sentAt !== null && hit.at - sentAt < options.scannerWindowMs))
  }
  const { flags, clicked } = await lockEngagement(tx, known, recipients, machineOf, memory)
  const startFlags = new Map(flags)
  const startClicked = new Map(clicked)

  const events = { campaign: [] as string[], recipient: [] as number[], at: [] as number[], dedupe: [] as (number | null)[], type: [] as number[], link: [] as (number | null)[], machine: [] as boolean[] }
  const tally = new RollupTally()
  const stats = new Map<string, { opens: number; clicks: number }>()
  const links = new Map<string, { campaignId: string; index: number; url: string; clicks: number; human: number; unique: number; humanUnique: number }>()
  const statsOf = (campaignId: string) => stats.get(campaignId) ?? stats.set(campaignId, { opens: 0, clicks: 0 }).get(campaignId)!

  for (const hit of known) {
    const r = recipients.get(hit.recipientId)!
    const machine = machineOf.get(hit)!
    events.campaign.push(r.campaignId)
    events.recipient.push(hit.recipientId)
    events.at.push(hit.at)
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
        const link =
          links.get(key) ?? links.set(key, { campaignId: r.campaignId, index: hit.linkIndex, url: hit.url ?? '', clicks: 0, human: 0, unique: 0, humanUnique: 0 }).get(key)!
        link.clicks++
        link.human += machine ? 0 : 1
        const first = markLink(clicked, hit.recipientId, hit.linkIndex, machine)
        link.unique += +first.unique
        link.humanUnique += +first.humanUnique
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
  // Array literals (array-literal.ts) and epoch milliseconds: a batch is thousands of values, which the driver would quote one by one.
  await tx.execute(sql`
    insert into email_events (campaign_id, recipient_id, occurred_at, dedupe_key, type, link_index, machine)
    select v.campaign_id, v.recipient_id, to_timestamp(v.at_ms / 1000.0), v.dedupe_key, v.type, v.link_index, v.machine
    from unnest(${arrayLiteral(events.campaign)}::uuid[], ${arrayLiteral(events.recipient)}::bigint[], ${arrayLiteral(events.at)}::float8[],
      ${arrayLiteral(events.dedupe)}::bigint[], ${arrayLiteral(events.type)}::smallint[], ${arrayLiteral(events.link)}::smallint[], ${arrayLiteral(events.machine)}::boolean[])
      as v(campaign_id, recipient_id, at_ms, dedupe_key, type, link_index, machine)
    ${deduped ? sql`on conflict (dedupe_key) where dedupe_key is not null do nothing` : sql``}`)

  // Every changed row was locked by lockEngagement, so writing whole values back loses nobody's bits.
  const changed = [...flags.keys()].filter((id) => flags.get(id) !== startFlags.get(id) || clicked.get(id) !== startClicked.get(id)).sort((a, b) => a - b)
  if (changed.length > 0) {
    // Bitmaps go as hex text, a plain text[] to both drivers. A null keeps the stored bitmap (bits are only ever added).
    const hex = (bitmap: Buffer | null | undefined) => bitmap?.toString('hex') ?? null
    await tx.execute(sql`
      update recipient_engagement e
      set flags = v.flags, links = coalesce(decode(v.links, 'hex'), e.links), human_links = coalesce(decode(v.human_links, 'hex'), e.human_links)
      from unnest(${sql.param(changed)}::bigint[], ${sql.param(changed.map((id) => flags.get(id)!))}::smallint[],
        ${sql.param(changed.map((id) => hex(clicked.get(id)?.any)))}::text[], ${sql.param(changed.map((id) => hex(clicked.get(id)?.human)))}::text[]) as v(id, flags, links, human_links)
      where e.recipient_id = v.id`)
  }
  const statRows = [...stats.entries()].filter(([, s]) => s.opens > 0 || s.clicks > 0)
  if (statRows.length > 0) {
    await lockCampaignStats(tx, statRows.map(([id]) => id))
    await tx.execute(sql`
      update campaign_stats s set unique_opens = unique_opens + v.opens, unique_clicks = unique_clicks + v.clicks, updated_at = now()
      from unnest(${sql.param(statRows.map(([id]) => id))}::uuid[], ${sql.param(statRows.map(([, s]) => s.opens))}::int[], ${sql.param(statRows.map(([, s]) => s.clicks))}::int[]) as v(campaign_id, opens, clicks)
      where s.campaign_id = v.campaign_id`)
  }
  await tally.writeRollups(tx)
  const linkRows = [...links.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, l]) => l)
  if (linkRows.length > 0) {
    await tx.execute(sql`
      insert into campaign_link_clicks (campaign_id, link_index, url, clicks, human_clicks, unique_clicks, human_unique_clicks)
      select * from unnest(${sql.param(linkRows.map((l) => l.campaignId))}::uuid[], ${sql.param(linkRows.map((l) => l.index))}::smallint[],
        ${sql.param(linkRows.map((l) => l.url))}::text[], ${sql.param(linkRows.map((l) => l.clicks))}::int[], ${sql.param(linkRows.map((l) => l.human))}::int[],
        ${sql.param(linkRows.map((l) => l.unique))}::int[], ${sql.param(linkRows.map((l) => l.humanUnique))}::int[])
      on conflict (campaign_id, link_index) do update set
        clicks = campaign_link_clicks.clicks + excluded.clicks, human_clicks = campaign_link_clicks.human_clicks + excluded.human_clicks,
        unique_clicks = campaign_link_clicks.unique_clicks + excluded.unique_clicks,
        human_unique_clicks = campaign_link_clicks.human_unique_clicks + excluded.human_unique_clicks`)
  }
  await tally.writeDaily(tx)
  await options.onWritten?.(tx, { hits: known, machine: machineOf, flagsBefore: startFlags })
  return { campaigns: [...new Set(events.campaign)], flags, links: clicked }
}

/** Sets the link's bits for the recipient; says whether this was the recipient's first click on it (any, human). */
function markLink(clicked: Map<number, ClickedLinks>, recipientId: number, index: number, machine: boolean): FirstTimes {
  if (!hasUniqueClicks(index)) return { unique: false, humanUnique: false }
  // lockEngagement leaves an entry for every recipient with a link to mark (read under lock, or remembered and covering it).
  const before = clicked.get(recipientId) ?? NO_LINKS
  const unique = !hasBit(before.any, index)
  const humanUnique = !machine && !hasBit(before.human, index)
  if (unique || humanUnique) {
    clicked.set(recipientId, { any: unique ? withBit(before.any, index) : before.any, human: humanUnique ? withBit(before.human, index) : before.human })
  }
  return { unique, humanUnique }
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
 * The current engagement bits and clicked links of every recipient in the batch. Bits are only
 * ever added, so a recipient who already has every bit the batch could set needs no lock (repeat
 * opens and clicks, the common case); the others get their row created if missing and locked, in
 * recipient order.
 */
async function lockEngagement(
  tx: Database,
  hits: Hit[],
  recipients: Map<number, Recipient>,
  machineOf: Map<Hit, boolean>,
  memory: Pick<Memory, 'knownFlags' | 'knownLinks'>,
): Promise<{ flags: Map<number, number>; clicked: Map<number, ClickedLinks> }> {
  const wanted = new Map<number, number>()
  const wantedLinks = new Map<number, { index: number; human: boolean }[]>()
  for (const hit of hits) {
    if (!ENGAGEMENT.has(hit.type)) continue
    wanted.set(hit.recipientId, (wanted.get(hit.recipientId) ?? 0) | bitsOf(hit, machineOf.get(hit)!))
    if (hit.type === EventType.click && hasUniqueClicks(hit.linkIndex)) {
      const list = wantedLinks.get(hit.recipientId) ?? wantedLinks.set(hit.recipientId, []).get(hit.recipientId)!
      list.push({ index: hit.linkIndex, human: !machineOf.get(hit)! })
    }
  }
  const flags = new Map<number, number>()
  const clicked = new Map<number, ClickedLinks>()
  if (wanted.size === 0) return { flags, clicked }
  const covered = (id: number) => {
    const has = flags.get(id)
    const links = clicked.get(id) ?? NO_LINKS
    return (
      has !== undefined &&
      (has | wanted.get(id)!) === has &&
      (wantedLinks.get(id) ?? []).every((l) => hasBit(links.any, l.index) && (!l.human || hasBit(links.human, l.index)))
    )
  }
  const read = (rows: EngagementRow[]) => {
    for (const row of rows) {
      const id = Number(row.recipient_id)
      flags.set(id, Number(row.flags))
      clicked.set(id, { any: row.links === null ? null : Buffer.from(row.links, 'hex'), human: row.human_links === null ? null : Buffer.from(row.human_links, 'hex') })
    }
  }
  const ids = [...wanted.keys()].sort((a, b) => a - b)
  const unsure: number[] = []
  for (const id of ids) {
    const remembered = memory.knownFlags.get(id)
    const links = memory.knownLinks.get(id)
    if (remembered !== undefined) flags.set(id, remembered)
    if (links) clicked.set(id, links)
    if (!covered(id)) {
      flags.delete(id)
      clicked.delete(id)
      unsure.push(id)
    }
  }
  if (unsure.length === 0) return { flags, clicked }
  read((await tx.execute<EngagementRow>(sql`${ENGAGEMENT_COLUMNS} where recipient_id = any(${sql.param(unsure)}::bigint[])`)).rows)
  const missing = ids.filter((id) => !flags.has(id))
  const toLock = ids.filter((id) => !covered(id))
  if (missing.length > 0) {
    await tx.execute(sql`
      insert into recipient_engagement (recipient_id, campaign_id)
      select * from unnest(${sql.param(missing)}::bigint[], ${sql.param(missing.map((id) => recipients.get(id)!.campaignId))}::uuid[])
      on conflict (recipient_id) do nothing`)
  }
  if (toLock.length > 0) {
    read((await tx.execute<EngagementRow>(sql`${ENGAGEMENT_COLUMNS} where recipient_id = any(${sql.param(toLock)}::bigint[]) order by recipient_id for update`)).rows)
  }
  return { flags, clicked }
}

type EngagementRow = {
  recipient_id: string | number
  flags: number
  links: string | null
  human_links: string | null
}

// Hex: node-postgres returns bytea as a Buffer, PGlite as a Uint8Array.
const ENGAGEMENT_COLUMNS = sql`select recipient_id, flags, encode(links, 'hex') as links, encode(human_links, 'hex') as human_links from recipient_engagement`
