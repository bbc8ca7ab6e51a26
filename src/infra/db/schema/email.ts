import { index, integer, jsonb, pgEnum, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core'

export const emailStatus = pgEnum('email_status', ['queued', 'sending', 'sent', 'failed', 'cancelled'])

/**
 * Every transactional email is a row: sent now or at `send_at`. Workers claim due rows with a lease
 * (`locked_until`), so a crash mid-send is retried, and the provider idempotency key `email/<id>`
 * makes the retry safe.
 */
export const emails = pgTable(
  'emails',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    template: text('template').notNull(),
    to: text('to').notNull(),
    data: jsonb('data').$type<Record<string, unknown>>().notNull(),
    status: emailStatus('status').notNull().default('queued'),
    sendAt: timestamp('send_at', { withTimezone: true }).notNull().defaultNow(),
    attempts: integer('attempts').notNull().default(0),
    lockedUntil: timestamp('locked_until', { withTimezone: true }),
    /** Caller-supplied key so a retried mutation does not queue a second email. */
    dedupeKey: text('dedupe_key'),
    providerId: text('provider_id'),
    lastError: text('last_error'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    sentAt: timestamp('sent_at', { withTimezone: true }),
  },
  (t) => [index('emails_due_idx').on(t.status, t.sendAt), uniqueIndex('emails_dedupe_uq').on(t.dedupeKey)],
)

/** What the outbox transport wrote to disk, so embedded mode can list and inspect sent mail. */
export const outboxMessages = pgTable('outbox_messages', {
  id: uuid('id').primaryKey().defaultRandom(),
  messageId: text('message_id').notNull().unique(),
  idempotencyKey: text('idempotency_key').unique(),
  from: text('from').notNull(),
  to: text('to').array().notNull(),
  subject: text('subject').notNull(),
  path: text('path').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
})
