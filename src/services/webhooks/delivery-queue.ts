/**
 * webhook_deliveries as a queue: due rows are claimed with a lease (any instance, SKIP LOCKED),
 * and every later change is fenced by the attempt count the claim set, so a worker that lost its
 * lease (it stalled past it and another took the row) cannot overwrite the newer attempt's outcome.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'

export interface ClaimedDelivery {
  id: number
  messageId: string
  endpointId: string
  eventType: string
  payload: Record<string, unknown>
  /** This attempt's number, 1 for the first. */
  attempts: number
  url: string
  /** The current secret first, then the one being rotated out while it has not expired. */
  secrets: string[]
  endpointEnabled: boolean
}

/**
 * Claims up to `limit` rows due by `dueBy` (and by now), at most `perEndpoint` in flight for any one
 * endpoint, counting the rows it already has under a live lease (on any instance). Oldest first
 * otherwise; without the cap an endpoint that hangs until every timeout would hold every slot and
 * starve the others.
 *
 * Endpoint by endpoint (there are at most MAX_ENDPOINTS): its rows in flight are counted and its
 * oldest due rows read up to what the cap leaves, from partial indexes, so a claim reads a bounded
 * number of index entries whatever the backlog (a receiver down for a day leaves millions of rows).
 */
export async function claimDeliveries(db: Database, limit: number, leaseMs: number, dueBy: Date, perEndpoint: number): Promise<ClaimedDelivery[]> {
  // The column keeps milliseconds, rounded: a row stored a moment ago may read up to half a millisecond ahead.
  const dueAt = sql`least(now(), ${dueBy.toISOString()}::timestamptz) + interval '1 millisecond'`
  const due = sql`next_attempt_at < ${dueAt}`
  const result = await db.execute<Record<string, unknown>>(sql`
    update webhook_deliveries d set locked_until = now() + make_interval(secs => ${leaseMs / 1000}::double precision), attempts = d.attempts + 1
    from (
      select d.id from (
        select eligible.id from webhook_endpoints ep
        cross join lateral (
          select count(*)::int as n from webhook_deliveries
          where endpoint_id = ep.id and status = 'pending' and locked_until is not null and locked_until >= now()
        ) sending
        cross join lateral (
          select id, row_number() over (order by endpoint_id, next_attempt_at, id) as place from webhook_deliveries
          where endpoint_id = ep.id and status = 'pending' and ${due} and (locked_until is null or locked_until < now())
          -- In the endpoint's own index order, so the planner reads webhook_deliveries_endpoint_due_idx
          -- rather than walking the global due index past another endpoint's backlog.
          order by endpoint_id, next_attempt_at, id
          limit ${perEndpoint}
        ) eligible
        where eligible.place <= ${perEndpoint} - sending.n
      ) picked
      join webhook_deliveries d on d.id = picked.id
      -- Checked again on the locked row (only these conditions are re-evaluated when a row changed
      -- since the snapshot): a retry scheduled meanwhile is not due, whatever the subquery read.
      where d.status = 'pending' and (d.locked_until is null or d.locked_until < now()) and d.next_attempt_at < ${dueAt}
      order by d.next_attempt_at
      limit ${limit}
      for update of d skip locked
    ) due, webhook_endpoints e
    where d.id = due.id and e.id = d.endpoint_id
    returning d.id, d.message_id, d.endpoint_id, d.event_type, d.payload, d.attempts, e.url, e.secret, e.enabled,
      case when e.previous_secret_expires_at > now() then e.previous_secret end as previous_secret`)
  return result.rows.map((r) => ({
    id: Number(r.id),
    messageId: String(r.message_id),
    endpointId: String(r.endpoint_id),
    eventType: String(r.event_type),
    payload: (typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload) as Record<string, unknown>,
    attempts: Number(r.attempts),
    url: String(r.url),
    secrets: r.previous_secret == null ? [String(r.secret)] : [String(r.secret), String(r.previous_secret)],
    endpointEnabled: Boolean(r.enabled),
  }))
}

export interface AttemptOutcome {
  statusCode: number | null
  error: string | null
}

const fence = (d: ClaimedDelivery) => sql`id = ${d.id} and attempts = ${d.attempts} and status = 'pending'`

export async function markDelivered(db: Database, d: ClaimedDelivery, outcome: AttemptOutcome): Promise<void> {
  await db.execute(sql`
    update webhook_deliveries set status = 'delivered', delivered_at = now(), locked_until = null, last_status_code = ${outcome.statusCode}, last_error = null
    where ${fence(d)}`)
}

/** Tries again after `delayMs`, or, without one, gives the delivery up as `failed`. */
export async function markAttemptFailed(db: Database, d: ClaimedDelivery, outcome: AttemptOutcome, delayMs: number | null): Promise<void> {
  await db.execute(sql`
    update webhook_deliveries set
      locked_until = null, last_status_code = ${outcome.statusCode}, last_error = ${outcome.error?.slice(0, 1000) ?? null},
      status = ${delayMs === null ? 'failed' : 'pending'},
      next_attempt_at = case when ${delayMs === null} then next_attempt_at else now() + make_interval(secs => ${(delayMs ?? 0) / 1000}::double precision) end
    where ${fence(d)}`)
}

/** Gives the row back untouched, its attempt not counted (the worker is shutting down mid-request). */
export async function releaseDelivery(db: Database, d: ClaimedDelivery): Promise<void> {
  await db.execute(sql`update webhook_deliveries set locked_until = null, attempts = attempts - 1 where ${fence(d)}`)
}

export interface EndpointHealth {
  /** The endpoint was enabled before and is disabled now. */
  disabled: boolean
}

/** A success resets the endpoint's failure streak; written only when there is one, so a busy endpoint's row is not rewritten per delivery. */
export async function recordEndpointSuccess(db: Database, endpointId: string): Promise<void> {
  await db.execute(sql`update webhook_endpoints set consecutive_failures = 0 where id = ${endpointId} and consecutive_failures <> 0`)
}

/**
 * Counts a delivery that failed for good (its attempts ran out); disables the endpoint at `disableAfter`
 * in a row, or at once with `disableNow`. Attempts that are retried do not count: an outage of minutes
 * fails hundreds of them, and the schedule is there to ride it out.
 */
export async function recordEndpointFailure(db: Database, endpointId: string, disableAfter: number, disableNow: string | null): Promise<EndpointHealth> {
  const reason = disableNow ?? `Disabled after ${disableAfter} failed deliveries in a row`
  const result = await db.execute<{ trip: boolean }>(sql`
    with b as (
      select id, enabled and (${disableNow !== null} or consecutive_failures + 1 >= ${disableAfter}) as trip
      from webhook_endpoints where id = ${endpointId} for update
    )
    update webhook_endpoints e set
      consecutive_failures = e.consecutive_failures + 1,
      enabled = e.enabled and not b.trip,
      disabled_reason = case when b.trip then ${reason} else e.disabled_reason end,
      updated_at = case when b.trip then now() else e.updated_at end
    from b where e.id = b.id
    returning b.trip`)
  return { disabled: result.rows.some((r) => r.trip) }
}

/** Deletes delivered and failed rows created before `cutoff`, in batches; returns how many. */
export async function pruneDeliveries(db: Database, cutoff: Date, batch = 5_000): Promise<number> {
  let total = 0
  for (;;) {
    const deleted = await db.execute(sql`
      delete from webhook_deliveries where id in (
        select id from webhook_deliveries where created_at < ${cutoff.toISOString()} and status <> 'pending' limit ${batch})
      returning 1`)
    total += deleted.rows.length
    if (deleted.rows.length < batch) return total
  }
}
