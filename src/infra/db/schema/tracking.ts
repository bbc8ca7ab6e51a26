/**
 * Email tracking storage, sized for tens of millions of events: one narrow append-only row per
 * event (no JSON, no per-row text), aggregates kept next to it so that no read ever scans the raw
 * events, and the raw events prunable while the aggregates stay.
 */
import { sql } from 'drizzle-orm'
import { bigint, boolean, check, customType, date, index, integer, numeric, pgEnum, pgTable, primaryKey, smallint, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core'
import { campaignRecipients, campaigns } from './campaigns'

const ts = (name: string) => timestamp(name, { withTimezone: true, precision: 3 })
const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' })

/**
 * Append-only: written in batches, never updated, deleted only by retention. No primary key and no
 * index on campaign or recipient, because nothing reads it by them: figures come from the rollups.
 * `type` codes are listed in src/services/tracking/event-types.ts.
 */
export const emailEvents = pgTable(
  'email_events',
  {
    campaignId: uuid('campaign_id').notNull(),
    recipientId: bigint('recipient_id', { mode: 'number' }).notNull(),
    occurredAt: ts('occurred_at').notNull(),
    /** The webhook row an event came from, so a replayed row cannot append it twice; null for our own endpoints. */
    dedupeKey: bigint('dedupe_key', { mode: 'number' }),
    type: smallint('type').notNull(),
    /** Position of the link in the email, for clicks. */
    linkIndex: smallint('link_index'),
    machine: boolean('machine').notNull().default(false),
    /** Conversions only; null costs nothing but a bit in the row's null bitmap. */
    value: numeric('value', { precision: 14, scale: 2 }),
    currency: text('currency'),
  },
  (t) => [
    // BRIN: the table is appended in time order, so a few pages of summary serve retention's range deletes.
    index('email_events_occurred_brin').using('brin', t.occurredAt),
    uniqueIndex('email_events_dedupe_uq').on(t.dedupeKey).where(sql`${t.dedupeKey} is not null`),
    check('email_events_type_ck', sql`${t.type} between 1 and 12`),
  ],
)

/**
 * Per campaign, per minute, per event type. `uniques` counts events that were the recipient's first
 * of that kind (first open, first delivery...), so unique figures add up across minutes.
 */
export const campaignEventRollups = pgTable(
  'campaign_event_rollups',
  {
    campaignId: uuid('campaign_id')
      .notNull()
      .references(() => campaigns.id, { onDelete: 'cascade' }),
    bucket: ts('bucket').notNull(),
    type: smallint('type').notNull(),
    count: integer('count').notNull().default(0),
    /** The part of `count` marked machine (proxies, scanners, HEAD requests). */
    machine: integer('machine').notNull().default(0),
    uniques: integer('uniques').notNull().default(0),
    humanUniques: integer('human_uniques').notNull().default(0),
  },
  (t) => [primaryKey({ name: 'campaign_event_rollups_pk', columns: [t.campaignId, t.bucket, t.type] })],
)

/** All campaigns together per UTC day: what the infrastructure figures read, a few dozen rows for 30 days. */
export const emailDailyRollups = pgTable(
  'email_daily_rollups',
  {
    day: date('day', { mode: 'string' }).notNull(),
    type: smallint('type').notNull(),
    count: bigint('count', { mode: 'number' }).notNull().default(0),
  },
  (t) => [primaryKey({ name: 'email_daily_rollups_pk', columns: [t.day, t.type] })],
)

/**
 * What a recipient has done so far, as bits (see engagement-flags.ts): decides whether an open,
 * click or conversion is the recipient's first. One row per engaged recipient, not per event.
 */
export const recipientEngagement = pgTable('recipient_engagement', {
  recipientId: bigint('recipient_id', { mode: 'number' })
    .primaryKey()
    .references(() => campaignRecipients.id, { onDelete: 'cascade' }),
  campaignId: uuid('campaign_id').notNull(),
  flags: smallint('flags').notNull().default(0),
  /**
   * Bitmaps of the link indexes this recipient has clicked (bit i = link i; at most
   * MAX_TRACKED_LINKS bits, usually a byte or two), so a link's unique clicks are counted without
   * a row per recipient per link. Null until the first click.
   */
  links: bytea('links'),
  humanLinks: bytea('human_links'),
})

/** Clicks per link of a campaign; `url` is the destination of the first click seen on it. */
export const campaignLinkClicks = pgTable(
  'campaign_link_clicks',
  {
    campaignId: uuid('campaign_id')
      .notNull()
      .references(() => campaigns.id, { onDelete: 'cascade' }),
    linkIndex: smallint('link_index').notNull(),
    url: text('url').notNull(),
    clicks: integer('clicks').notNull().default(0),
    humanClicks: integer('human_clicks').notNull().default(0),
    /** Recipients who clicked this link at least once (any, and with a human click). */
    uniqueClicks: integer('unique_clicks').notNull().default(0),
    humanUniqueClicks: integer('human_unique_clicks').notNull().default(0),
  },
  (t) => [primaryKey({ name: 'campaign_link_clicks_pk', columns: [t.campaignId, t.linkIndex] })],
)

/** Conversion value per campaign and currency: values in different currencies are never added up. */
export const campaignConversionValues = pgTable(
  'campaign_conversion_values',
  {
    campaignId: uuid('campaign_id')
      .notNull()
      .references(() => campaigns.id, { onDelete: 'cascade' }),
    currency: text('currency').notNull(),
    conversions: integer('conversions').notNull().default(0),
    value: numeric('value', { precision: 18, scale: 2 }).notNull().default('0'),
  },
  (t) => [primaryKey({ name: 'campaign_conversion_values_pk', columns: [t.campaignId, t.currency] })],
)

export const webhookEventStatus = pgEnum('webhook_event_status', ['pending', 'done', 'ignored', 'dead'])

/**
 * The provider's webhook deliveries, stored before they are acknowledged and applied afterwards: the
 * durable queue between answering fast and processing. Only the fields the processing needs are
 * kept, not the payload. Rows are deleted after the retention that keeps `svix_id` de-duplication.
 */
export const webhookEvents = pgTable(
  'webhook_events',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    svixId: text('svix_id').notNull(),
    type: smallint('type').notNull(),
    providerId: text('provider_id'),
    campaignId: uuid('campaign_id'),
    recipientId: bigint('recipient_id', { mode: 'number' }),
    /** Lower-cased; kept only for events that suppress the address. */
    email: text('email'),
    occurredAt: ts('occurred_at').notNull(),
    /** Bounce or failure reason, or the clicked URL. */
    detail: text('detail'),
    machine: boolean('machine').notNull().default(false),
    status: webhookEventStatus('status').notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: ts('next_attempt_at').notNull().defaultNow(),
    lockedUntil: ts('locked_until'),
    lastError: text('last_error'),
    receivedAt: ts('received_at').notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('webhook_events_svix_id_uq').on(t.svixId),
    index('webhook_events_due_idx').on(t.nextAttemptAt).where(sql`${t.status} = 'pending'`),
    index('webhook_events_received_brin').using('brin', t.receivedAt),
  ],
)
