/**
 * Batches of a campaign: formed from queued recipients with `FOR UPDATE SKIP LOCKED`, leased with
 * `locked_until`, and recorded in one transaction fenced by the batch's attempt count. The
 * recipients of a batch and its idempotency key are fixed when it is formed, so whoever sends it,
 * and however often, sends the same request, with one exception: recipients suppressed or
 * unsubscribed while the batch waited are dropped before it is (re)sent, as long as no earlier
 * attempt may have reached the provider (prepareBatchRecipients).
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import type { campaignBatches, campaignRecipients } from '../../infra/db/schema/campaigns'
import { noLongerSendableReason } from './recipient-feedback'

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
  may_have_reached: boolean
}

function toBatch(raw: RawBatch): Pick<BatchRow, 'id' | 'campaignId' | 'idempotencyKey' | 'firstRecipientId' | 'size' | 'status' | 'attempts' | 'failures' | 'mayHaveReached'> {
  return {
    id: Number(raw.id),
    campaignId: raw.campaign_id,
    idempotencyKey: raw.idempotency_key,
    firstRecipientId: Number(raw.first_recipient_id),
    size: Number(raw.size),
    status: raw.status,
    attempts: Number(raw.attempts),
    failures: Number(raw.failures),
    mayHaveReached: Boolean(raw.may_have_reached),
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
 * for a campaign that is still sending. Bumping `attempts` fences off the previous holder. A lease
 * that ran out may have run out after the provider took the request: such a batch counts as
 * `may_have_reached` from then on.
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
      update campaign_batches b set status = 'sending', attempts = b.attempts + 1, locked_until = ${leaseSql(leaseMs)},
             may_have_reached = b.may_have_reached or b.status = 'sending'
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

/** A recipient of a batch, with why it may no longer be sent (noLongerSendableReason), or null. */
export type BatchRecipient = RecipientRow & { blockedBy: string | null }

export async function loadBatchRecipients(db: Database, batchId: number): Promise<BatchRecipient[]> {
  const result = await db.execute<Record<string, unknown>>(sql`
    select r.id, r.campaign_id, r.email, r.name, r.attributes, ${noLongerSendableReason()} as blocked_by
    from campaign_recipients r join campaigns c on c.id = r.campaign_id
    where r.batch_id = ${batchId} and r.status = 'sending'
    order by r.id`)
  return result.rows.map((r) => ({
    id: Number(r.id),
    campaignId: r.campaign_id as string,
    email: r.email as string,
    name: (r.name as string | null) ?? null,
    attributes: (r.attributes as Record<string, unknown>) ?? {},
    blockedBy: (r.blocked_by as string | null) ?? null,
  })) as BatchRecipient[]
}

export type PreparedBatch =
  /** Fenced off: another worker re-claimed the batch; send nothing. */
  | { fenced: true }
  | {
      fenced: false
      /** Who the request goes to. */
      recipients: BatchRecipient[]
      /** Rows taken out as `suppressed`, their counters moved (the caller tells the stats publisher). */
      dropped: number[]
      /**
       * Rows no longer sendable but kept, because an earlier attempt may have reached the provider,
       * which then holds the whole payload under the key: a smaller one under that key would be
       * refused (409), and a new key would mail everyone else a second time.
       */
      kept: BatchRecipient[]
    }

/**
 * The recipients a claimed batch is about to be sent to. Rows whose address was suppressed, or
 * whose contact unsubscribed, since the batch was formed (a 429, a 5xx, a pause, a shutdown...)
 * are still `sending` in it, since a suppression only drops unbatched rows. They are dropped here
 * (`suppressed`, with the counters) unless an earlier attempt may have reached the provider
 * (`mayHaveReached`: a 5xx, a timeout, a lease that ran out mid-send); then the payload is kept as
 * it is. The key stays the batch's either way: when the payload changes, no earlier attempt
 * reached the provider (a 429, a release before sending, a refusal), so it stored nothing under
 * the key, and if that were ever wrong the provider would answer 409 (and the campaign pause)
 * instead of mailing anyone twice, which a new key would risk.
 */
export async function prepareBatchRecipients(db: Database, batch: ClaimedBatch): Promise<PreparedBatch> {
  const recipients = await loadBatchRecipients(db, batch.id)
  const blocked = recipients.filter((r) => r.blockedBy !== null)
  if (blocked.length === 0) return { fenced: false, recipients, dropped: [], kept: [] }
  if (batch.mayHaveReached) return { fenced: false, recipients, dropped: [], kept: blocked }
  const dropped = await dropBlockedRecipients(db, batch, blocked.map((r) => r.id))
  if (dropped === null) return { fenced: true }
  const gone = new Set(dropped)
  return { fenced: false, recipients: recipients.filter((r) => !gone.has(r.id)), dropped, kept: [] }
}

/**
 * Takes the candidates that are still no longer sendable out of the batch as `suppressed`, with the
 * counters, in one transaction fenced like recordBatch. Lock order: the batch row (as recordBatch
 * and deferBatch take it), the recipient rows in id order, then the campaign's counters (one row);
 * suppressions and contacts are only read. Returns the ids dropped, or null when fenced off.
 */
async function dropBlockedRecipients(db: Database, batch: ClaimedBatch, candidates: number[]): Promise<number[] | null> {
  return db.transaction(async (tx) => {
    const held = await tx.execute(sql`
      select id from campaign_batches
      where id = ${batch.id} and status = 'sending' and attempts = ${batch.attempts} and not may_have_reached
      for no key update`)
    if (held.rows.length === 0) return null
    await tx.execute(sql`select 1 from campaign_recipients where id = any(${sql.param(candidates)}::bigint[]) order by id for no key update`)
    // Judged again under the lock: an address unsuppressed meanwhile is sent after all.
    const dropped = await tx.execute<{ id: string }>(sql`
      with judged as (
        select r.id, ${noLongerSendableReason()} as reason
        from campaign_recipients r join campaigns c on c.id = r.campaign_id
        where r.id = any(${sql.param(candidates)}::bigint[]) and r.batch_id = ${batch.id} and r.status = 'sending'
      ), dropped as (
        update campaign_recipients r set status = 'suppressed', reason = j.reason, updated_at = now()
        from judged j
        where r.id = j.id and j.reason is not null
        returning r.id
      ), counted as (
        update campaign_stats set queued = queued - (select count(*) from dropped), suppressed = suppressed + (select count(*) from dropped), updated_at = now()
        where campaign_id = ${batch.campaignId} and exists (select 1 from dropped)
        returning 1
      ), resized as (
        update campaign_batches set size = size - (select count(*) from dropped)
        where id = ${batch.id} and exists (select 1 from dropped)
        returning 1
      )
      select id from dropped order by id`)
    return dropped.rows.map((r) => Number(r.id))
  })
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
 * Puts a batch back for a later attempt with the same key: after a 5xx or timeout the provider may
 * or may not have processed it, and only the same key can find out. `failure` (a 5xx, a timeout,
 * an unexplained error) counts toward the consecutive-failure limit and marks the batch
 * `may_have_reached`, which freezes its payload for good; a 429, a refusal or a release before
 * sending reached nothing, so recipients suppressed meanwhile can still be dropped.
 */
export async function deferBatch(db: Database, batch: ClaimedBatch, delayMs: number, error: string, failure: boolean): Promise<boolean> {
  return db.transaction(async (tx) => {
    const updated = await tx.execute(sql`
      update campaign_batches set status = 'retry', locked_until = null, last_error = ${error.slice(0, 2000)},
             next_attempt_at = now() + make_interval(secs => ${delayMs / 1000}::double precision),
             failures = failures + ${failure ? 1 : 0}, may_have_reached = may_have_reached or ${failure}
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
