/**
 * Applies stored webhook rows after the provider has its answer. The route kicks a drain right
 * after answering; with workers enabled a poll also picks up what a crash, a restart or a retry
 * left behind. Each row's effect and its `done` mark commit together, so a row is applied once.
 *
 * The bulk of a campaign's events (`delivered`, `failed`) are applied a claimed batch at a time, in
 * one transaction: applied one by one, every row locked the campaign's counter row in turn, which
 * held ingestion to a few hundred events a second. What a batch cannot settle (no recipient by that
 * provider id, a send not recorded yet, a row another worker took over) goes the one-by-one way,
 * as do the events that suppress an address.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import type { DeliveryEvent, DeliveryOutcome, DeliveryTarget, RecipientFeedbackService } from '../campaigns/recipient-feedback'
import { BATCHED_EVENTS, suppressAddress } from '../campaigns/recipient-feedback'
import { arrayLiteral } from '../../infra/db/array-literal'
import type { Instrumentation } from '../instrumentation'
import { outgoingEvents, type WebhookEnqueuer } from '../webhooks/webhook-event-types'
import type { EngagementWriter } from './engagement-writer'
import { EventType, type EventTypeCode } from './event-types'
import { RollupTally } from './rollup-tally'
import { claimWebhookEvents, FencedError, finishWebhookEvent, finishWebhookEvents, retryWebhookEvent, type InboxRow } from './webhook-inbox'

export interface WebhookProcessorDeps {
  db: Database
  feedback: Pick<RecipientFeedbackService, 'applyDeliveryEvent' | 'applyDeliveryEvents'>
  writer: EngagementWriter
  notify: (campaignId: string) => void
  /** Outgoing webhooks for the state changes, queued in the transaction that applies them. */
  outgoing?: WebhookEnqueuer
  /** Rows applied in parallel by one instance. */
  concurrency?: number
  leaseMs?: number
  pollMs?: number
  logger?: { warn(obj: Record<string, unknown>, msg?: string): void; error(obj: Record<string, unknown>, msg?: string): void }
  instrumentation?: Pick<Instrumentation, 'webhookApplied'>
}

const STATE_EVENTS: Partial<Record<EventTypeCode, DeliveryEvent>> = {
  [EventType.delivered]: 'delivered',
  [EventType.bounced]: 'bounced',
  [EventType.complained]: 'complained',
  [EventType.failed]: 'failed',
  [EventType.suppressed]: 'suppressed',
}

/** The event overtook the provider's answer to our send: by then the send is normally recorded. */
const RETRY_DELAYS_MS = [5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000]
/** Tagged as ours but matching no recipient (yet): a few tries, then it is not ours after all. */
const UNMATCHED_ATTEMPTS = 4
const CLAIM_BATCH = 50

/** The recipient was found and the event applied to it (a change or not); pending and unknown rows are left for later. */
const isSettled = (outcome: DeliveryOutcome) => outcome.status === 'changed' || outcome.status === 'unchanged'

type Recipient = { status: 'found'; recipientId: number; campaignId: string } | { status: 'pending' | 'unknown' }

/**
 * The row was stored with a synchronous commit before the provider got its 2xx; applying it needs
 * no fsync of its own. A crash that loses this commit also loses the row's `done` mark in it, so
 * the row is simply applied again: nothing is lost or doubled, and the campaign's hot counter row
 * is locked for microseconds instead of a disk flush.
 */
async function relaxCommit(tx: Database): Promise<void> {
  await tx.execute(sql`set local synchronous_commit = off`)
}

export class WebhookProcessor {
  private readonly concurrency: number
  private readonly leaseMs: number
  private draining: Promise<number> | null = null
  private again = false
  private timer: NodeJS.Timeout | null = null
  private stopped = false

  constructor(private readonly deps: WebhookProcessorDeps) {
    this.concurrency = Math.max(1, deps.concurrency ?? 4)
    this.leaseMs = deps.leaseMs ?? 60_000
  }

  /** Drains soon, without waiting; a kick during a drain makes it look again before it ends. */
  kick(): void {
    if (this.stopped) return
    if (this.draining) {
      this.again = true
      return
    }
    void this.drain().catch((err: unknown) => this.deps.logger?.error({ err }, 'webhook processing failed'))
  }

  /** Applies every row due when called; resolves with how many rows the drain handled. */
  drain(): Promise<number> {
    if (this.draining) {
      // The running drain may be past its last claim: make it look once more.
      this.again = true
      return this.draining
    }
    this.draining = (async () => {
      let handled = 0
      do {
        this.again = false
        for (;;) {
          const rows = await claimWebhookEvents(this.deps.db, CLAIM_BATCH, this.leaseMs)
          if (rows.length === 0) break
          handled += rows.length
          await this.processAll(await this.applyBatch(rows))
        }
      } while (this.again && !this.stopped)
      return handled
    })().finally(() => {
      this.draining = null
    })
    return this.draining
  }

  /** Polls for rows left by crashes, restarts and retries (workers only). */
  start(): void {
    if (this.timer) return
    this.stopped = false
    this.timer = setInterval(() => this.kick(), this.deps.pollMs ?? 5_000)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    await this.draining?.catch(() => 0)
  }

  private async processAll(rows: InboxRow[]): Promise<void> {
    let next = 0
    const lane = async () => {
      while (next < rows.length) await this.process(rows[next++]!)
    }
    await Promise.all(Array.from({ length: Math.min(this.concurrency, rows.length) }, lane))
  }

  /**
   * Applies the claimed rows that can go in one batch (delivered and failed, with a provider id);
   * returns the rows left for one-by-one processing. A batch that fails or meets a row taken over by
   * another worker rolls back whole, and its rows go one by one, which retries or fences each.
   */
  private async applyBatch(rows: InboxRow[]): Promise<InboxRow[]> {
    const batch = rows.filter((row) => {
      const event = STATE_EVENTS[row.type]
      return row.providerId !== null && event !== undefined && BATCHED_EVENTS.has(event)
    })
    if (batch.length < 2) return rows
    let outcomes: DeliveryOutcome[]
    try {
      const items = batch.map((row) => ({ providerId: row.providerId!, event: STATE_EVENTS[row.type]!, reason: row.detail }))
      outcomes = await this.deps.feedback.applyDeliveryEvents(items, async (tx, results) => {
        await relaxCommit(tx)
        const applied = batch.map((row, i) => ({ row, outcome: results[i]! })).filter(({ outcome }) => isSettled(outcome))
        await this.appendEvents(tx, applied)
        const changed = applied.filter(({ outcome }) => outcome.status === 'changed')
        await this.deps.outgoing?.enqueue(tx, changed.flatMap(({ row, outcome }) => outgoingEvents(row.type, outcome.recipientId!, row.occurredAt.getTime())))
        await finishWebhookEvents(tx, applied.map(({ row }) => row))
      })
    } catch (err) {
      if (!(err instanceof FencedError)) this.deps.logger?.warn({ err, rows: batch.length }, 'webhook batch not applied; applying its rows one by one')
      return rows
    }
    const settled = new Set(batch.filter((_, i) => isSettled(outcomes[i]!)))
    for (let i = 0; i < settled.size; i++) this.deps.instrumentation?.webhookApplied('applied')
    return rows.filter((row) => !settled.has(row))
  }

  private async process(row: InboxRow): Promise<void> {
    try {
      const state = STATE_EVENTS[row.type]
      const outcome = state ? await this.applyState(row, state) : await this.applyCount(row)
      const unmatched = outcome === 'pending' || outcome === 'unknown'
      if (unmatched) await this.unmatched(row, outcome)
      this.deps.instrumentation?.webhookApplied(unmatched ? 'unmatched' : 'applied')
    } catch (err) {
      if (err instanceof FencedError) return
      this.deps.instrumentation?.webhookApplied('failed')
      this.deps.logger?.warn({ err, webhookEventId: row.id, attempts: row.attempts }, 'webhook event not applied; will retry')
      await retryWebhookEvent(this.deps.db, row, this.delay(row), err instanceof Error ? err.message : String(err), row.attempts >= RETRY_DELAYS_MS.length).catch(() => {})
    }
  }

  /** Delivered, bounced, complained, failed, suppressed: a monotonic state change with its bookkeeping in one transaction. */
  private async applyState(row: InboxRow, event: DeliveryEvent): Promise<DeliveryOutcome['status']> {
    const outcome = await this.deps.feedback.applyDeliveryEvent(this.target(row), event, {
      reason: row.detail,
      suppressAs: row.detail && /complain/i.test(row.detail) ? 'complained' : 'bounced',
      within: async (tx, settled) => {
        await relaxCommit(tx)
        await this.appendEvents(tx, [{ row, outcome: settled }])
        // Only a change: a late `delivered` after a bounce, or a replay, tells the app nothing new.
        if (settled.status === 'changed') await this.deps.outgoing?.enqueue(tx, outgoingEvents(row.type, settled.recipientId!, row.occurredAt.getTime()))
        await finishWebhookEvent(tx, row)
      },
    })
    return outcome.status
  }

  /** Delayed deliveries, soft bounces, provider-tracked opens and clicks: counted, no state. */
  private async applyCount(row: InboxRow): Promise<'changed' | 'pending' | 'unknown'> {
    const recipient = await this.findRecipient(row)
    if (recipient.status !== 'found') return recipient.status
    await this.deps.db.transaction(async (txn) => {
      const tx = txn as unknown as Database
      await relaxCommit(tx)
      if (row.type === EventType.open || row.type === EventType.click) {
        await this.deps.writer.writeIn(tx, [{ type: row.type, recipientId: recipient.recipientId, at: row.occurredAt.getTime(), machine: row.machine, dedupeKey: row.id }])
      } else {
        await this.appendEvents(tx, [{ row, outcome: { status: 'changed', recipientId: recipient.recipientId, campaignId: recipient.campaignId } }])
      }
      await finishWebhookEvent(tx, row)
    })
    this.deps.notify(recipient.campaignId)
    return 'changed'
  }

  /**
   * The raw events of applied rows (once each, keyed by the row) and their rollups; an event whose
   * row changed the recipient's state also counts as that state's unique.
   */
  private async appendEvents(tx: Database, applied: readonly { row: InboxRow; outcome: DeliveryOutcome }[]): Promise<void> {
    if (applied.length === 0) return
    const inserted = await tx.execute<{ dedupe_key: string | number }>(sql`
      insert into email_events (campaign_id, recipient_id, occurred_at, dedupe_key, type)
      select v.campaign_id, v.recipient_id, to_timestamp(v.at_ms / 1000.0), v.dedupe_key, v.type
      from unnest(${arrayLiteral(applied.map(({ outcome }) => outcome.campaignId!))}::uuid[], ${arrayLiteral(applied.map(({ outcome }) => outcome.recipientId!))}::bigint[],
        ${arrayLiteral(applied.map(({ row }) => row.occurredAt.getTime()))}::float8[], ${arrayLiteral(applied.map(({ row }) => row.id))}::bigint[],
        ${arrayLiteral(applied.map(({ row }) => row.type))}::smallint[]) as v(campaign_id, recipient_id, at_ms, dedupe_key, type)
      on conflict (dedupe_key) where dedupe_key is not null do nothing
      returning dedupe_key`)
    if (inserted.rows.length === 0) return
    const stored = new Set(inserted.rows.map((r) => Number(r.dedupe_key)))
    const tally = new RollupTally()
    for (const { row, outcome } of applied) {
      if (!stored.has(row.id)) continue
      const first = outcome.status === 'changed' ? 1 : 0
      tally.add(outcome.campaignId!, row.occurredAt.getTime(), row.type, { count: 1, uniques: first, humanUniques: first })
    }
    await tally.writeRollups(tx)
    await tally.writeDaily(tx)
  }

  /**
   * `pending`: our send is not recorded yet, so later. `unknown` without our tags: mail we did not
   * send as a campaign (transactional mail); a hard bounce or complaint still suppresses the address.
   */
  private async unmatched(row: InboxRow, status: 'pending' | 'unknown'): Promise<void> {
    const ours = row.campaignId !== null
    if (status === 'pending' || (ours && row.attempts < UNMATCHED_ATTEMPTS)) {
      const giveUp = row.attempts >= (status === 'pending' ? RETRY_DELAYS_MS.length : UNMATCHED_ATTEMPTS)
      await retryWebhookEvent(this.deps.db, row, this.delay(row), status === 'pending' ? 'The send is not recorded yet' : 'No recipient matches yet', giveUp)
      return
    }
    const touched = await this.deps.db.transaction(async (txn) => {
      const tx = txn as unknown as Database
      const suppress = row.email && (row.type === EventType.bounced || row.type === EventType.complained)
      const dropped = suppress ? await suppressAddress(tx, row.email!, row.type === EventType.complained ? 'complained' : 'bounced', `provider:${row.providerId ?? 'unknown'}`) : []
      await finishWebhookEvent(tx, row, suppress ? 'done' : 'ignored', 'No campaign recipient matches')
      return dropped
    })
    // Queued rows of other campaigns were dropped: their counters moved.
    for (const campaignId of touched) this.deps.notify(campaignId)
  }

  private async findRecipient(row: InboxRow): Promise<Recipient> {
    const result = await this.deps.db.execute<{ id: string; campaign_id: string; status: string }>(sql`
      select id, campaign_id, status from campaign_recipients
      where provider_id = ${row.providerId}
         or (id = ${row.recipientId} and campaign_id = ${row.campaignId} and (provider_id is null or provider_id = ${row.providerId}))
      limit 1`)
    const found = result.rows[0]
    if (!found) return { status: 'unknown' }
    if (found.status === 'queued' || found.status === 'sending') return { status: 'pending' }
    return { status: 'found', recipientId: Number(found.id), campaignId: found.campaign_id }
  }

  private target(row: InboxRow): DeliveryTarget {
    return { providerId: row.providerId, recipientId: row.recipientId, campaignId: row.campaignId }
  }

  private delay(row: InboxRow): number {
    return RETRY_DELAYS_MS[Math.min(row.attempts, RETRY_DELAYS_MS.length) - 1] ?? RETRY_DELAYS_MS[0]!
  }
}
