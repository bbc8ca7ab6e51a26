/**
 * Batches of a campaign: formed from queued recipients with `FOR UPDATE SKIP LOCKED`, leased with
 * `locked_until`, and recorded in one transaction fenced by the batch's attempt count. The
 * recipients of a batch and its idempotency key are fixed when it is formed, so whoever sends it,
 * and however often, sends the same request.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import type { campaignBatches, campaignRecipients } from '../../infra/db/schema/campaigns'

export type BatchRow = typeof campaignBatches.$inferSelect
export type RecipientRow = typeof campaignRecipients.$inferSelect

export function batchKeyPrefix(campaignId: string): string {
  return `campaign/${campaignId}/batch/`
}

/** Round 0 is the first send; a retryFailedRecipients round gets keys of its own, since the provider remembers the old ones. */
function keySuffix(retryRound: number): string {
  return retryRound > 0 ? `/retry-${retryRound}` : ''
}

function leaseSql(leaseMs: number) {
  return sql`now() + make_interval(secs => ${leaseMs / 1000}::double precision)`
}

type RawBatch = {
  id: string | number
  campaign_id: string
  idempotency_key: string
  first_recipient_id: string | number
  size: number
  status: BatchRow['status']
  attempts: number
  failures: number
}

function toBatch(raw: RawBatch): Pick<BatchRow, 'id' | 'campaignId' | 'idempotencyKey' | 'firstRecipientId' | 'size' | 'status' | 'attempts' | 'failures'> {
  return {
    id: Number(raw.id),
    campaignId: raw.campaign_id,
    idempotencyKey: raw.idempotency_key,
    firstRecipientId: Number(raw.first_recipient_id),
    size: Number(raw.size),
    status: raw.status,
    attempts: Number(raw.attempts),
    failures: Number(raw.failures),
  }
}

export type ClaimedBatch = ReturnType<typeof toBatch>

/**
 * Forms a new batch of up to `size` queued recipients of one campaign. Concurrent callers skip each
 * other's locked rows, so two dispatchers never put a recipient in two batches.
 */
export async function formBatch(db: Database, campaign: { id: string; retryRound: number }, size: number, leaseMs: number): Promise<ClaimedBatch | null> {
  const result = await db.execute<RawBatch>(sql`
    with picked as materialized (
      select id from campaign_recipients
      where campaign_id = ${campaign.id} and status = 'queued' and batch_id is null
      order by id
      limit ${size}
      for update skip locked
    ), batch as (
      insert into campaign_batches (campaign_id, idempotency_key, first_recipient_id, size, status, attempts, locked_until)
      select ${campaign.id}::uuid, ${batchKeyPrefix(campaign.id)} || min(id)::text || ${keySuffix(campaign.retryRound)}, min(id), count(*), 'sending', 1, ${leaseSql(leaseMs)}
      from picked
      having count(*) > 0
      returning *
    ), assigned as (
      -- Runs although nothing reads it: PostgreSQL always completes data-modifying CTEs.
      update campaign_recipients r set status = 'sending', batch_id = batch.id, updated_at = now()
      from picked, batch
      where r.id = picked.id
    )
    select * from batch`)
  const raw = result.rows[0]
  return raw ? toBatch(raw) : null
}

/**
 * Takes over a batch whose lease expired (its worker died mid-send) or whose retry time has come,
 * for a campaign that is still sending. Bumping `attempts` fences off the previous holder.
 */
export async function reclaimBatch(db: Database, leaseMs: number): Promise<ClaimedBatch | null> {
  const result = await db.execute<RawBatch>(sql`
    with due as (
      select b.id from campaign_batches b
      join campaigns c on c.id = b.campaign_id
      where c.status = 'sending'
        and ((b.status = 'sending' and b.locked_until < now()) or (b.status = 'retry' and b.next_attempt_at <= now()))
      order by b.id
      limit 1
      for update of b skip locked
    ), claimed as (
      update campaign_batches b set status = 'sending', attempts = b.attempts + 1, locked_until = ${leaseSql(leaseMs)}
      from due where b.id = due.id
      returning b.*
    ), reopened as (
      update campaign_recipients r set status = 'sending', updated_at = now()
      from claimed where r.batch_id = claimed.id and r.status = 'queued'
    )
    select * from claimed`)
  const raw = result.rows[0]
  return raw ? toBatch(raw) : null
}

export async function loadBatchRecipients(db: Database, batchId: number): Promise<RecipientRow[]> {
  const result = await db.execute<Record<string, unknown>>(sql`
    select id, campaign_id, email, name, attributes from campaign_recipients
    where batch_id = ${batchId} and status = 'sending'
    order by id`)
  return result.rows.map((r) => ({
    id: Number(r.id),
    campaignId: r.campaign_id as string,
    email: r.email as string,
    name: (r.name as string | null) ?? null,
    attributes: (r.attributes as Record<string, unknown>) ?? {},
  })) as RecipientRow[]
}

export interface BatchOutcome {
  accepted: { id: number; providerId: string }[]
  failed: { id: number; reason: string }[]
}

/**
 * Records what the provider answered, with the counters, in one transaction. Fenced: a worker whose
 * batch was re-claimed meanwhile records nothing (the re-claimer got the same ids for the same key).
 * Returns false when fenced off.
 */
export async function recordBatch(db: Database, batch: ClaimedBatch, outcome: BatchOutcome): Promise<boolean> {
  return db.transaction(async (tx) => {
    const done = await tx.execute(sql`
      update campaign_batches set status = 'done', locked_until = null, last_error = null, completed_at = now()
      where id = ${batch.id} and status = 'sending' and attempts = ${batch.attempts}
      returning id`)
    if (done.rows.length === 0) return false
    let accepted = 0
    let failed = 0
    if (outcome.accepted.length > 0) {
      const r = await tx.execute(sql`
        update campaign_recipients r set status = 'accepted', provider_id = v.provider_id, sent_at = now(), updated_at = now(),
               attempts = ${batch.attempts}, reason = null
        from unnest(${sql.param(outcome.accepted.map((a) => a.id))}::bigint[], ${sql.param(outcome.accepted.map((a) => a.providerId))}::text[]) as v(id, provider_id)
        where r.id = v.id and r.status = 'sending'
        returning r.id`)
      accepted = r.rows.length
    }
    if (outcome.failed.length > 0) {
      const r = await tx.execute(sql`
        update campaign_recipients r set status = 'failed', reason = v.reason, updated_at = now(), attempts = ${batch.attempts}
        from unnest(${sql.param(outcome.failed.map((f) => f.id))}::bigint[], ${sql.param(outcome.failed.map((f) => f.reason.slice(0, 1000)))}::text[]) as v(id, reason)
        where r.id = v.id and r.status = 'sending'
        returning r.id`)
      failed = r.rows.length
    }
    await tx.execute(sql`
      update campaign_stats set queued = queued - ${accepted + failed}, sent = sent + ${accepted}, failed = failed + ${failed}, updated_at = now()
      where campaign_id = ${batch.campaignId}`)
    return true
  })
}

/**
 * Puts a batch back for a later attempt with the same recipients and key: after a 429, 5xx or
 * timeout the provider may or may not have processed it, and only the same key can find out.
 * `failure` counts toward the consecutive-failure limit (a 429 does not).
 */
export async function deferBatch(db: Database, batch: ClaimedBatch, delayMs: number, error: string, failure: boolean): Promise<boolean> {
  return db.transaction(async (tx) => {
    const updated = await tx.execute(sql`
      update campaign_batches set status = 'retry', locked_until = null, last_error = ${error.slice(0, 2000)},
             next_attempt_at = now() + make_interval(secs => ${delayMs / 1000}::double precision),
             failures = failures + ${failure ? 1 : 0}
      where id = ${batch.id} and status = 'sending' and attempts = ${batch.attempts}
      returning id`)
    if (updated.rows.length === 0) return false
    await tx.execute(sql`update campaign_recipients set status = 'queued', updated_at = now() where batch_id = ${batch.id} and status = 'sending'`)
    return true
  })
}

/**
 * The provider refused the whole request as invalid (4xx), so it stored nothing under the key. Two
 * halves are formed; the first keeps the key, which is free. Repeated refusals narrow it down to the
 * one recipient at fault in log2(100) steps instead of failing a hundred good addresses.
 */
export async function splitBatch(db: Database, batch: ClaimedBatch, recipientIds: number[], retryRound: number): Promise<boolean> {
  return db.transaction(async (tx) => {
    const split = await tx.execute(sql`
      update campaign_batches set status = 'split', locked_until = null, completed_at = now()
      where id = ${batch.id} and status = 'sending' and attempts = ${batch.attempts}
      returning id`)
    if (split.rows.length === 0) return false
    const ids = [...recipientIds].sort((a, b) => a - b)
    const half = Math.ceil(ids.length / 2)
    for (const part of [ids.slice(0, half), ids.slice(half)]) {
      if (part.length === 0) continue
      await tx.execute(sql`
        with batch as (
          insert into campaign_batches (campaign_id, idempotency_key, first_recipient_id, size, status, attempts, next_attempt_at)
          values (${batch.campaignId}::uuid, ${batchKeyPrefix(batch.campaignId) + String(part[0]) + keySuffix(retryRound)}, ${part[0]}, ${part.length}, 'retry', 0, now())
          returning id
        )
        update campaign_recipients r set batch_id = batch.id, status = 'queued', updated_at = now()
        from batch where r.id = any(${sql.param(part)}::bigint[])`)
    }
    return true
  })
}

/** Hands a claimed batch back at once (shutdown, or the campaign was paused after the claim). */
export function releaseBatch(db: Database, batch: ClaimedBatch, reason: string): Promise<boolean> {
  return deferBatch(db, batch, 0, reason, false)
}
