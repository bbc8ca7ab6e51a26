/**
 * What comes back after sending: one-click unsubscribes, and delivery events (delivered, bounced,
 * complained, failed, suppressed) that the provider's webhooks feed in (src/services/tracking),
 * found by provider id or by the recipient's tags. Each is a monotonic state
 * change with its counters in the same statement, the address joins the global suppression list
 * where it should, and the campaign pauses itself when its bounce or complaint rate gets too high.
 * Every campaign whose counters a statement moved is told to the stats publisher after the commit,
 * so no cached stats snapshot outlives the change.
 */
import { sql, type SQL } from 'drizzle-orm'
import type { UnsubscribeScope } from '../../config'
import type { Database } from '../../infra/db/client'
import { lockCampaignStats, type CampaignStatsPublisher } from './campaign-stats'
import type { UnsubscribeLinks } from './unsubscribe-links'

export interface AutoPauseThresholds {
  bounceRate: number
  complaintRate: number
  /** Accepted emails before rates are judged. */
  minSent: number
}

export type DeliveryEvent = 'delivered' | 'bounced' | 'complained' | 'failed' | 'suppressed'

/**
 * The states a provider event can move an accepted recipient to, lowest first. A recipient only
 * ever moves up, so the same events in any order, repeated or not, end in the same state: a late
 * `delivered` never overrides a bounce.
 */
const DELIVERY_ORDER = ['accepted', 'delivered', 'failed', 'suppressed', 'bounced', 'complained'] as const

/** The campaign_stats counters each state is counted in (a complaint implies delivery). */
const COUNTED_IN: Record<'sent' | 'delivered' | 'bounced' | 'complained' | 'failed' | 'suppressed', readonly string[]> = {
  sent: ['accepted', 'delivered', 'bounced', 'complained'],
  delivered: ['delivered', 'complained'],
  bounced: ['bounced'],
  complained: ['complained'],
  failed: ['failed'],
  suppressed: ['suppressed'],
}

type CountedIn = keyof typeof COUNTED_IN
const COUNTERS = Object.keys(COUNTED_IN) as CountedIn[]
const zeroCounters = () => Object.fromEntries(COUNTERS.map((c) => [c, 0])) as Record<CountedIn, number>

/** Whether a recipient in `status` moves to `event`'s state: only up DELIVERY_ORDER, from a state in it. */
function canMove(status: string, event: DeliveryEvent): boolean {
  const from = (DELIVERY_ORDER as readonly string[]).indexOf(status)
  return from >= 0 && from < DELIVERY_ORDER.indexOf(event)
}

/** The events applyDeliveryEvents takes: none of them suppresses an address or can pause a campaign. */
export const BATCHED_EVENTS: ReadonlySet<DeliveryEvent> = new Set(['delivered', 'failed'])

/** Whether the event puts the address on the suppression list (and takes its queued rows elsewhere out). */
const suppresses = (event: DeliveryEvent): event is 'bounced' | 'complained' | 'suppressed' => event === 'bounced' || event === 'complained' || event === 'suppressed'

export interface BatchDeliveryItem {
  providerId: string
  event: DeliveryEvent
  /** Kept as the recipient's reason (a failure's message). */
  reason?: string | null
}

/** How an event finds its recipient: the provider id recorded at send time, or the tags the email carried. */
export interface DeliveryTarget {
  providerId?: string | null
  recipientId?: number | null
  campaignId?: string | null
}

/**
 * `pending`: the recipient exists but its send is not recorded yet (the event overtook the
 * provider's answer); `unknown`: no recipient matches.
 */
export interface DeliveryOutcome {
  status: 'changed' | 'unchanged' | 'pending' | 'unknown'
  recipientId?: number
  campaignId?: string
  previous?: string
}

export interface DeliveryOptions {
  /** Kept as the recipient's reason (a bounce message, say). */
  reason?: string | null
  /** The suppression reason for a `suppressed` event; default `bounced`. */
  suppressAs?: 'bounced' | 'complained'
  /** Runs in the same transaction once the recipient is found and settled, so the caller's bookkeeping commits with it or not at all. */
  within?: (tx: Database, outcome: DeliveryOutcome) => Promise<void>
}

export interface UnsubscribeOutcome {
  ok: boolean
  reason?: 'invalid' | 'expired' | 'unknown'
  email?: string
  /** What the unsubscribe applies to, so the page can say so. */
  scope?: UnsubscribeScope
}

export interface RecipientFeedbackDeps {
  db: Database
  links: UnsubscribeLinks
  stats: CampaignStatsPublisher
  thresholds: AutoPauseThresholds
  /** TRACKING_UNSUBSCRIBE_SCOPE; default `global`. */
  unsubscribeScope?: UnsubscribeScope
  /** Told once per recipient, after the first unsubscribe committed (tracking counts it in its timeline). */
  onUnsubscribed?: (recipientId: number) => void
}

export class RecipientFeedbackService {
  constructor(private readonly deps: RecipientFeedbackDeps) {}

  /** For the confirmation page: whose link this is, without changing anything (mail scanners follow GET links). */
  async describeUnsubscribe(token: string): Promise<UnsubscribeOutcome> {
    const verified = this.deps.links.verify(token)
    if (!verified.ok) return { ok: false, reason: verified.reason }
    const result = await this.deps.db.execute<{ email: string }>(sql`select email from campaign_recipients where id = ${verified.recipientId}`)
    const email = result.rows[0]?.email
    return email ? { ok: true, email } : { ok: false, reason: 'unknown' }
  }

  /**
   * Unsubscribes the recipient's address per the configured scope. `global`: the global suppression
   * list, every contact with that address, and its queued rows in every campaign still sending.
   * `audience`: the address's contacts in the audiences this campaign was sent to, and its queued
   * rows in campaigns that no longer have a subscribed contact with that address. Repeating it
   * changes nothing.
   */
  async unsubscribe(token: string): Promise<UnsubscribeOutcome> {
    const verified = this.deps.links.verify(token)
    if (!verified.ok) return { ok: false, reason: verified.reason }
    const { db } = this.deps
    const scope = this.deps.unsubscribeScope ?? 'global'
    const outcome = await db.transaction(async (txn) => {
      const tx = txn as unknown as Database
      const locked = await lockTargetForSuppression(tx, sql`id = ${verified.recipientId}`, () => true)
      const found = await tx.execute<{ id: string; email: string; campaign_id: string; first: boolean }>(sql`
        with target as (select id, email, campaign_id, unsubscribed_at from campaign_recipients where id = ${verified.recipientId}),
        marked as (
          update campaign_recipients r set unsubscribed_at = now(), updated_at = now()
          from target where r.id = target.id and target.unsubscribed_at is null
          returning r.campaign_id
        ), counted as (
          update campaign_stats s set unsubscribed = unsubscribed + 1, updated_at = now()
          from marked where s.campaign_id = marked.campaign_id
          returning 1
        )
        select id, email, campaign_id, exists (select 1 from marked) as first from target`)
      const row = found.rows[0]
      if (!row) return null
      const touched =
        scope === 'global'
          ? await suppressAddress(tx, row.email, 'unsubscribed', `campaign:${row.campaign_id}`, { locked })
          : await unsubscribeFromAudiences(tx, row.email, row.campaign_id, { locked })
      return { ...row, touched }
    })
    if (!outcome) return { ok: false, reason: 'unknown' }
    if (outcome.first) this.deps.onUnsubscribed?.(Number(outcome.id))
    await this.deps.stats.changedMany(outcome.first ? [outcome.campaign_id, ...outcome.touched] : outcome.touched)
    return { ok: true, email: outcome.email, scope }
  }

  /**
   * Applies a provider event to the recipient it was sent to. Monotonic: a late `delivered` after a
   * bounce, or any duplicate, changes nothing. Returns false when nothing changed.
   */
  async recordDeliveryEvent(target: string | DeliveryTarget, event: DeliveryEvent, options: DeliveryOptions = {}): Promise<boolean> {
    return (await this.applyDeliveryEvent(typeof target === 'string' ? { providerId: target } : target, event, options)).status === 'changed'
  }

  /** recordDeliveryEvent, saying what happened; for the webhook processing. */
  async applyDeliveryEvent(target: DeliveryTarget, event: DeliveryEvent, options: DeliveryOptions = {}): Promise<DeliveryOutcome> {
    const { db } = this.deps
    const from = DELIVERY_ORDER.filter((status) => canMove(status, event))
    const providerId = target.providerId ?? null
    const delta = (counter: keyof typeof COUNTED_IN) =>
      sql`${COUNTED_IN[counter].includes(event) ? 1 : 0} - case when t.status::text = any(${sql.param(COUNTED_IN[counter])}::text[]) then 1 else 0 end`
    // By tags only while no provider id is recorded, or for the same one: a re-sent recipient has a new id, and events of the old email are not its own.
    const targetRow = sql`provider_id = ${providerId}
      or (id = ${target.recipientId ?? null} and campaign_id = ${target.campaignId ?? null} and (provider_id is null or provider_id = ${providerId}))`
    // Other campaigns whose queued rows a suppression dropped.
    let touched: string[] = []
    const outcome = await db.transaction(async (tx) => {
      // Only when the event can move the recipient: a duplicate, or an event ahead of our record of the send, locks nothing more.
      const locked = suppresses(event) && (await lockTargetForSuppression(tx as unknown as Database, targetRow, (status) => canMove(status, event)))
      const result = await tx.execute<{ id: string; campaign_id: string; email: string; previous: string; changed: number }>(sql`
        with target as (
          select id, campaign_id, email, status from campaign_recipients
          where ${targetRow}
          order by id
          limit 1
          for update
        ), updated as (
          update campaign_recipients r set status = ${event}::campaign_recipient_status, updated_at = now(), reason = coalesce(${options.reason ?? null}, r.reason)
          from target where r.id = target.id and target.status::text = any(${sql.param([...from])}::text[])
          returning r.id
        ), counted as (
          update campaign_stats s set
            ${sql.join(COUNTERS.map((c) => sql`${sql.identifier(c)} = s.${sql.identifier(c)} + ${delta(c)}`), sql`, `)}, updated_at = now()
          from target t where s.campaign_id = t.campaign_id and exists (select 1 from updated)
          returning 1
        )
        select t.id, t.campaign_id, t.email, t.status::text as previous, (select count(*) from updated)::int as changed, (select count(*) from counted) as c
        from target t`)
      const row = result.rows[0]
      if (!row) return { status: 'unknown' } as DeliveryOutcome
      const found = { recipientId: Number(row.id), campaignId: row.campaign_id, previous: row.previous }
      if (row.previous === 'queued' || row.previous === 'sending') return { status: 'pending', ...found } as DeliveryOutcome
      const settled: DeliveryOutcome = { status: Number(row.changed) > 0 ? 'changed' : 'unchanged', ...found }
      if (settled.status === 'changed' && suppresses(event)) {
        touched = await suppressAddress(tx as unknown as Database, row.email, event === 'suppressed' ? (options.suppressAs ?? 'bounced') : event, `campaign:${row.campaign_id}`, { locked })
      }
      await options.within?.(tx as unknown as Database, settled)
      return settled
    })
    if (outcome.status !== 'changed') return outcome
    await this.deps.stats.changedMany([outcome.campaignId!, ...touched])
    if (event === 'bounced' || event === 'complained') await this.checkAutoPause(outcome.campaignId!)
    return outcome
  }

  /**
   * Many `delivered` and `failed` events at once, found by provider id, with the same monotonic rule
   * and counters as applyDeliveryEvent, in one transaction: the recipients are locked in id order,
   * then each campaign's counters are moved once. Each item's outcome is `unknown` when no recipient
   * has its provider id (the caller tries the tags, one by one) and `pending` while the send is not
   * recorded. Events that suppress an address (bounced, complained, suppressed) go one by one.
   * `within` runs in the transaction with the outcomes, in item order.
   */
  async applyDeliveryEvents(items: readonly BatchDeliveryItem[], within: (tx: Database, outcomes: DeliveryOutcome[]) => Promise<void>): Promise<DeliveryOutcome[]> {
    if (items.some((i) => !BATCHED_EVENTS.has(i.event))) throw new Error('Only delivered and failed events are applied in batches')
    const outcomes = await this.deps.db.transaction(async (txn) => {
      const tx = txn as unknown as Database
      const providerIds = [...new Set(items.map((i) => i.providerId))]
      const found = await tx.execute<{ id: string; campaign_id: string; provider_id: string; status: string }>(sql`
        select id, campaign_id, provider_id, status::text as status from campaign_recipients
        where provider_id = any(${sql.param(providerIds)}::text[])
        order by id
        for update`)
      const byProvider = new Map<string, { id: number; campaignId: string; previous: string; status: string; reason: string | null; changed: boolean }>()
      for (const row of found.rows) {
        // Like applyDeliveryEvent's `limit 1`: a provider id belongs to one email.
        if (!byProvider.has(row.provider_id)) byProvider.set(row.provider_id, { id: Number(row.id), campaignId: row.campaign_id, previous: row.status, status: row.status, reason: null, changed: false })
      }
      const deltas = new Map<string, Record<CountedIn, number>>()
      const result = items.map((item): DeliveryOutcome => {
        const r = byProvider.get(item.providerId)
        if (!r) return { status: 'unknown' }
        const found = { recipientId: r.id, campaignId: r.campaignId, previous: r.status }
        if (r.previous === 'queued' || r.previous === 'sending') return { status: 'pending', ...found }
        if (!canMove(r.status, item.event)) return { status: 'unchanged', ...found }
        const delta = deltas.get(r.campaignId) ?? deltas.set(r.campaignId, zeroCounters()).get(r.campaignId)!
        for (const counter of COUNTERS) delta[counter] += +COUNTED_IN[counter].includes(item.event) - +COUNTED_IN[counter].includes(r.status)
        r.status = item.event
        r.reason = item.reason ?? r.reason
        r.changed = true
        return { status: 'changed', ...found }
      })
      const changed = [...byProvider.values()].filter((r) => r.changed)
      if (changed.length > 0) {
        await tx.execute(sql`
          update campaign_recipients r set status = v.status::campaign_recipient_status, updated_at = now(), reason = coalesce(v.reason, r.reason)
          from unnest(${sql.param(changed.map((c) => c.id))}::bigint[], ${sql.param(changed.map((c) => c.status))}::text[], ${sql.param(changed.map((c) => c.reason))}::text[]) as v(id, status, reason)
          where r.id = v.id`)
        const campaigns = [...deltas.keys()]
        await lockCampaignStats(tx, campaigns)
        const column = (counter: CountedIn) => sql.param(campaigns.map((id) => deltas.get(id)![counter]))
        await tx.execute(sql`
          update campaign_stats s set
            ${sql.join(COUNTERS.map((c) => sql`${sql.identifier(c)} = s.${sql.identifier(c)} + v.${sql.identifier(c)}`), sql`, `)}, updated_at = now()
          from unnest(${sql.param(campaigns)}::uuid[], ${sql.join(COUNTERS.map((c) => sql`${column(c)}::int[]`), sql`, `)})
            as v(campaign_id, ${sql.join(COUNTERS.map((c) => sql.identifier(c)), sql`, `)})
          where s.campaign_id = v.campaign_id`)
      }
      await within(tx, result)
      return result
    })
    const moved = new Set(outcomes.filter((o) => o.status === 'changed').map((o) => o.campaignId!))
    if (moved.size > 0) await this.deps.stats.changedMany(moved)
    return outcomes
  }

  /** Pauses a sending campaign whose bounce or complaint rate is over its threshold; the reason is kept on the campaign. */
  async checkAutoPause(campaignId: string): Promise<boolean> {
    const { bounceRate, complaintRate, minSent } = this.deps.thresholds
    const result = await this.deps.db.execute<{ sent: number; bounced: number; complained: number }>(sql`
      select sent, bounced, complained from campaign_stats where campaign_id = ${campaignId}`)
    const stats = result.rows[0]
    if (!stats) return false
    const sent = Number(stats.sent)
    if (sent === 0 || sent < minSent) return false
    const bounces = Number(stats.bounced) / sent
    const complaints = Number(stats.complained) / sent
    let reason: string | null = null
    if (bounces > bounceRate) reason = `Bounce rate ${percent(bounces)} is above the ${percent(bounceRate)} limit (${stats.bounced} of ${sent})`
    else if (complaints > complaintRate) reason = `Complaint rate ${percent(complaints)} is above the ${percent(complaintRate)} limit (${stats.complained} of ${sent})`
    if (!reason) return false
    const paused = await this.deps.db.execute(sql`
      update campaigns set status = 'paused', pause_reason = ${`Auto-paused: ${reason}`}, updated_at = now()
      where id = ${campaignId} and status = 'sending'
      returning id`)
    if (paused.rows.length === 0) return false
    await this.deps.stats.stateChanged(campaignId)
    return true
  }
}

/**
 * Suppresses an address globally and takes it out of everything still waiting to go: contacts are
 * marked, and queued recipients not yet in a batch become `suppressed` (a formed batch is left
 * alone here: the dispatcher drops such rows itself when it (re)sends the batch, if the payload may
 * still change, see prepareBatchRecipients; failed rows are judged when they are retried). Returns the campaigns whose
 * counters moved: the caller tells the stats publisher (changedMany) once its transaction commits.
 * Runs inside the caller's transaction (its locks must last until the commit: see lockForSuppression);
 * `locked`: the caller took those locks already, before its own writes.
 */
export async function suppressAddress(
  db: Database,
  email: string,
  reason: 'unsubscribed' | 'bounced' | 'complained' | 'manual',
  source: string,
  options: { locked?: boolean } = {},
): Promise<string[]> {
  const lower = email.toLowerCase()
  if (!options.locked) await lockForSuppression(db, lower)
  await db.execute(sql`insert into suppressions (email, reason, source) values (${lower}, ${reason}, ${source}) on conflict (email) do nothing`)
  if (reason !== 'manual') {
    await db.execute(sql`update contacts set status = ${reason}::contact_status, updated_at = now() where lower(email) = ${lower} and status = 'subscribed'`)
  }
  return dropQueued(db, lower, reason, sql``)
}

/**
 * The `audience` unsubscribe scope: the address's contacts in the audiences the campaign was sent
 * to, and no suppression row. A queued recipient elsewhere is dropped only when its campaign no longer has a subscribed
 * contact with the address in any of its audiences, the same answer sending it now would give.
 * Returns the campaigns whose counters moved, as suppressAddress does.
 */
export async function unsubscribeFromAudiences(db: Database, email: string, campaignId: string, options: { locked?: boolean } = {}): Promise<string[]> {
  const lower = email.toLowerCase()
  if (!options.locked) await lockForSuppression(db, lower)
  await db.execute(sql`
    update contacts k set status = 'unsubscribed', updated_at = now()
    from campaigns c
    where c.id = ${campaignId} and k.audience_id = any(c.audience_ids) and lower(k.email) = ${lower} and k.status = 'subscribed'`)
  return dropQueued(
    db,
    lower,
    'unsubscribed',
    sql`and not exists (select 1 from contacts k where k.audience_id = any(c.audience_ids) and lower(k.email) = ${lower} and k.status = 'subscribed')`,
  )
}

/**
 * Why recipient `r` of campaign `c` (`campaign_recipients r` joined with `campaigns c`) must not be
 * sent any more, or null: its address is on the suppression list (the suppression's reason), or
 * the campaign's audiences no longer hold a subscribed contact with the address but do hold one
 * that unsubscribed, bounced or complained (that contact's status). The second is what the
 * `audience` unsubscribe scope leaves behind (unsubscribeFromAudiences drops queued rows by the
 * same test), the first what every `global` suppression does, so it answers for either scope, as
 * starting the campaign now would. A contact deleted since, or a campaign with no audiences, is no
 * reason. Reads only: the caller locks the recipient rows it moves. Used where a suppression does
 * not reach: failed rows about to be retried, and the rows of a batch about to be (re)sent.
 */
export function noLongerSendableReason(): SQL<string | null> {
  return sql<string | null>`coalesce(
    (select s.reason::text from suppressions s where s.email = lower(r.email)),
    (select k.status::text from contacts k
     where k.audience_id = any(c.audience_ids) and lower(k.email) = lower(r.email) and k.status <> 'subscribed'
       and not exists (select 1 from contacts k2 where k2.audience_id = any(c.audience_ids) and lower(k2.email) = lower(r.email) and k2.status = 'subscribed')
     order by k.id
     limit 1))`
}

/** The address's queued rows not yet in a batch, in campaigns still sending (`r` joined with `campaigns c`): what a suppression takes out. */
const droppable = (lower: string) => sql`c.status in ('sending', 'paused') and lower(r.email) = ${lower} and r.status = 'queued' and r.batch_id is null`

/**
 * Locks what a suppression of the address will write, in the lock order of lockCampaignStats: the
 * recipient rows (`target`, the unsubscribing or bouncing one, and the address's rows that
 * dropQueued may take: a superset, the audience scope takes fewer) together in id order, then the
 * counters of their campaigns, then the address's contacts in id order. Taken piecemeal instead, as
 * the statements reach them, a batch of delivery events holding one of those counters could wait
 * on this transaction while it waits on the batch. Only useful inside a transaction.
 */
async function lockForSuppression(db: Database, lower: string, target?: number): Promise<void> {
  const rows = await db.execute<{ campaign_id: string }>(sql`
    select r.campaign_id from campaign_recipients r join campaigns c on c.id = r.campaign_id
    where ${target === undefined ? droppable(lower) : sql`r.id = ${target} or (${droppable(lower)})`}
    order by r.id
    for no key update of r`)
  await lockCampaignStats(db, rows.rows.map((r) => r.campaign_id))
  await db.execute(sql`select 1 from contacts where lower(email) = ${lower} order by id for no key update`)
}

/**
 * lockForSuppression for the recipient `where` finds (an unsubscribe, a bounce), when `moves` says its
 * current status would change; returns whether it locked. The row is read first without a lock, so
 * that it is locked with the others, in id order.
 */
async function lockTargetForSuppression(db: Database, where: SQL, moves: (status: string) => boolean): Promise<boolean> {
  const target = await db.execute<{ id: string; email: string; status: string }>(sql`
    select id, email, status::text as status from campaign_recipients where ${where} order by id limit 1`)
  const row = target.rows[0]
  if (!row || !moves(row.status)) return false
  await lockForSuppression(db, row.email.toLowerCase(), Number(row.id))
  return true
}

/** Queued, unbatched rows of the address in campaigns still sending become `suppressed`, with their counters; returns those campaigns. */
async function dropQueued(db: Database, lower: string, reason: string, onlyIf: SQL): Promise<string[]> {
  const result = await db.execute<{ campaign_id: string }>(sql`
    with dropped as (
      update campaign_recipients r set status = 'suppressed', reason = ${reason}, updated_at = now()
      from campaigns c
      where c.id = r.campaign_id and ${droppable(lower)}
        ${onlyIf}
      returning r.campaign_id
    )
    update campaign_stats s set queued = queued - d.n, suppressed = suppressed + d.n, updated_at = now()
    from (select campaign_id, count(*)::int as n from dropped group by campaign_id) d
    where s.campaign_id = d.campaign_id
    returning s.campaign_id`)
  return result.rows.map((r) => r.campaign_id)
}

function percent(fraction: number): string {
  return `${Math.round(fraction * 10_000) / 100}%`
}
