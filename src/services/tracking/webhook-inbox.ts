/**
 * The webhook_events table as a queue: rows are stored before the provider gets its 2xx, claimed
 * with a lease (any instance, SKIP LOCKED), and finished in the same transaction as their effect,
 * fenced by the attempt count so a row whose lease was taken over is applied once.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import type { EventTypeCode } from './event-types'
import type { InboxEvent } from './webhook-payload'

export interface InboxRow {
  id: number
  type: EventTypeCode
  providerId: string | null
  campaignId: string | null
  recipientId: number | null
  email: string | null
  occurredAt: Date
  detail: string | null
  machine: boolean
  attempts: number
}

/** The row was taken over by another worker after its lease ran out: its effect must roll back. */
export class FencedError extends Error {
  constructor() {
    super('The webhook row was claimed again by another worker')
  }
}

export async function storeWebhookEvent(db: Database, svixId: string, event: InboxEvent): Promise<{ id: number } | null> {
  const result = await db.execute<{ id: string }>(sql`
    insert into webhook_events (svix_id, type, provider_id, campaign_id, recipient_id, email, occurred_at, detail, machine)
    values (${svixId}, ${event.type}, ${event.providerId}, ${event.campaignId}, ${event.recipientId}, ${event.email},
            ${event.occurredAt.toISOString()}, ${event.detail}, ${event.machine})
    on conflict (svix_id) do nothing
    returning id`)
  const row = result.rows[0]
  return row ? { id: Number(row.id) } : null
}

export async function claimWebhookEvents(db: Database, limit: number, leaseMs: number): Promise<InboxRow[]> {
  const result = await db.execute<Record<string, unknown>>(sql`
    update webhook_events w set locked_until = now() + make_interval(secs => ${leaseMs / 1000}::double precision), attempts = w.attempts + 1
    from (
      select id from webhook_events
      -- The column keeps milliseconds, rounded: a row stored a moment ago may read up to half a millisecond ahead.
      where status = 'pending' and next_attempt_at < now() + interval '1 millisecond' and (locked_until is null or locked_until < now())
      order by next_attempt_at, id
      limit ${limit}
      for update skip locked
    ) due
    where w.id = due.id
    returning w.id, w.type, w.provider_id, w.campaign_id, w.recipient_id, w.email, w.occurred_at, w.detail, w.machine, w.attempts`)
  return result.rows
    .map((r) => ({
      id: Number(r.id),
      type: Number(r.type) as EventTypeCode,
      providerId: (r.provider_id as string | null) ?? null,
      campaignId: (r.campaign_id as string | null) ?? null,
      recipientId: r.recipient_id == null ? null : Number(r.recipient_id),
      email: (r.email as string | null) ?? null,
      occurredAt: new Date(r.occurred_at as string | Date),
      detail: (r.detail as string | null) ?? null,
      machine: Boolean(r.machine),
      attempts: Number(r.attempts),
    }))
    .sort((a, b) => a.id - b.id)
}

/** Marks the row done inside the transaction that applied it; throws FencedError when it is no longer ours. */
export function finishWebhookEvent(tx: Database, row: InboxRow, status: 'done' | 'ignored' = 'done', note: string | null = null): Promise<void> {
  return finishWebhookEvents(tx, [row], status, note)
}

/** finishWebhookEvent for several rows; throws FencedError when any of them is no longer ours. */
export async function finishWebhookEvents(tx: Database, rows: readonly InboxRow[], status: 'done' | 'ignored' = 'done', note: string | null = null): Promise<void> {
  if (rows.length === 0) return
  const result = await tx.execute(sql`
    update webhook_events w set status = ${status}, locked_until = null, last_error = ${note}
    from unnest(${sql.param(rows.map((r) => r.id))}::bigint[], ${sql.param(rows.map((r) => r.attempts))}::int[]) as v(id, attempts)
    where w.id = v.id and w.attempts = v.attempts and w.status = 'pending'
    returning w.id`)
  if (result.rows.length !== rows.length) throw new FencedError()
}

/** Tries again after `delayMs`, or gives the row up as `dead` once out of attempts. */
export async function retryWebhookEvent(db: Database, row: InboxRow, delayMs: number, error: string, giveUp: boolean, giveUpAs: 'dead' | 'ignored' = 'dead'): Promise<void> {
  await db.execute(sql`
    update webhook_events set
      locked_until = null, last_error = ${error.slice(0, 1000)},
      next_attempt_at = now() + make_interval(secs => ${delayMs / 1000}::double precision),
      status = ${giveUp ? giveUpAs : 'pending'}
    where id = ${row.id} and attempts = ${row.attempts} and status = 'pending'`)
}

export interface InboxBacklog {
  pending: number
  oldestPendingSeconds: number | null
}

export async function webhookBacklog(db: Database): Promise<InboxBacklog> {
  const result = await db.execute<{ pending: string; oldest: string | null }>(sql`
    select count(*) as pending, extract(epoch from now() - min(received_at)) as oldest from webhook_events where status = 'pending'`)
  const row = result.rows[0]
  return { pending: Number(row?.pending ?? 0), oldestPendingSeconds: row?.oldest == null ? null : Number(row.oldest) }
}
