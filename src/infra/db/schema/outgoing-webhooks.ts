/**
 * Outgoing webhooks: an app subscribes an HTTPS endpoint to email events and receives them as
 * signed POSTs (the Standard Webhooks / Svix scheme, the same one Resend uses towards us), retried
 * with backoff. Deliveries are rows, claimed with SKIP LOCKED leases like every other queue here,
 * so a restart or a dead instance loses nothing.
 */
import { sql } from 'drizzle-orm'
import { bigint, boolean, index, integer, jsonb, pgEnum, pgTable, smallint, text, timestamp, uuid } from 'drizzle-orm/pg-core'

const ts = (name: string) => timestamp(name, { withTimezone: true, precision: 3 })

export const webhookEndpoints = pgTable('webhook_endpoints', {
  id: uuid('id').primaryKey().defaultRandom(),
  url: text('url').notNull(),
  description: text('description'),
  /** Event type names (`email.delivered`...); empty means every type. */
  eventTypes: text('event_types').array().notNull().default(sql`'{}'::text[]`),
  /** `whsec_` + base64 of 32 random bytes; shown once on creation and rotation. */
  secret: text('secret').notNull(),
  /** The secret before the last rotation, still signed with (beside the new one) until it expires, so receivers can switch over. */
  previousSecret: text('previous_secret'),
  previousSecretExpiresAt: ts('previous_secret_expires_at'),
  enabled: boolean('enabled').notNull().default(true),
  /** Why it was disabled automatically (too many consecutive failures), if it was. */
  disabledReason: text('disabled_reason'),
  consecutiveFailures: integer('consecutive_failures').notNull().default(0),
  createdBy: text('created_by'),
  createdAt: ts('created_at').notNull().defaultNow(),
  updatedAt: ts('updated_at').notNull().defaultNow(),
})

export const webhookDeliveryStatus = pgEnum('webhook_delivery_status', ['pending', 'delivered', 'failed'])

export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    /** The `webhook-id` header: stable across retries so the receiver can de-duplicate. */
    messageId: uuid('message_id').notNull().defaultRandom(),
    endpointId: uuid('endpoint_id')
      .notNull()
      .references(() => webhookEndpoints.id, { onDelete: 'cascade' }),
    eventType: text('event_type').notNull(),
    payload: jsonb('payload').$type<Record<string, unknown>>().notNull(),
    status: webhookDeliveryStatus('status').notNull().default('pending'),
    attempts: smallint('attempts').notNull().default(0),
    nextAttemptAt: ts('next_attempt_at').notNull().defaultNow(),
    lockedUntil: ts('locked_until'),
    lastStatusCode: smallint('last_status_code'),
    lastError: text('last_error'),
    createdAt: ts('created_at').notNull().defaultNow(),
    deliveredAt: ts('delivered_at'),
  },
  (t) => [
    index('webhook_deliveries_due_idx').on(t.nextAttemptAt).where(sql`${t.status} = 'pending'`),
    index('webhook_deliveries_endpoint_idx').on(t.endpointId, t.id),
    // The claim reads, per endpoint, its oldest due rows and its rows in flight: a few index entries
    // each, however long a backlog a failing endpoint has piled up.
    index('webhook_deliveries_endpoint_due_idx').on(t.endpointId, t.nextAttemptAt, t.id).where(sql`${t.status} = 'pending'`),
    index('webhook_deliveries_in_flight_idx').on(t.endpointId).where(sql`${t.status} = 'pending' and ${t.lockedUntil} is not null`),
    index('webhook_deliveries_created_brin').using('brin', t.createdAt),
  ],
)
