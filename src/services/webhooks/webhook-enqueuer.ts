/**
 * Turns applied events into delivery rows, one per subscribed endpoint, in the transaction that
 * applied them: an event is queued exactly when its effect commits, and a crash in between loses
 * or doubles nothing. The payload is built in the same statement from the recipient's row, so the
 * callers only say what happened to whom.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import type { SubscriptionCache } from './subscription-cache'
import type { OutgoingEvent, WebhookEnqueuer } from './webhook-event-types'

export function createWebhookEnqueuer(subscriptions: SubscriptionCache): WebhookEnqueuer {
  return {
    async enqueue(tx: Database, events: readonly OutgoingEvent[]): Promise<void> {
      if (events.length === 0) return
      const wanted = await subscriptions.wanted(tx, [...new Set(events.map((e) => e.type))])
      const queued = events.filter((e) => wanted.has(e.type))
      if (queued.length === 0) return
      // The reason of a bounce, complaint or failure is the recipient's, set by the same transaction.
      await tx.execute(sql`
        insert into webhook_deliveries (endpoint_id, event_type, payload)
        select e.id, v.type, jsonb_build_object(
          'type', v.type,
          'created_at', v.created_at,
          'data', jsonb_strip_nulls(jsonb_build_object(
            'campaign_id', r.campaign_id, 'recipient_id', r.id::text, 'email', r.email, 'email_id', r.provider_id, 'contact_id', r.contact_id,
            'reason', case when v.type in ('email.bounced', 'email.complained', 'email.failed') then r.reason end
          ) || v.data::jsonb))
        from unnest(${sql.param(queued.map((e) => e.type))}::text[], ${sql.param(queued.map((e) => e.recipientId))}::bigint[],
          ${sql.param(queued.map((e) => new Date(e.at).toISOString()))}::text[], ${sql.param(queued.map((e) => JSON.stringify(e.data ?? {})))}::text[])
          as v(type, recipient_id, created_at, data)
        join campaign_recipients r on r.id = v.recipient_id
        join webhook_endpoints e on e.enabled and (cardinality(e.event_types) = 0 or v.type = any(e.event_types))
        order by v.created_at, e.id`)
    },
  }
}
