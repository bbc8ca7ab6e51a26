import { sql } from 'drizzle-orm'
import { bigint, boolean, index, integer, jsonb, pgEnum, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core'

export const templateKind = pgEnum('email_template_kind', ['transactional', 'marketing'])
export const contactStatus = pgEnum('contact_status', ['subscribed', 'unsubscribed', 'bounced', 'complained'])
export const suppressionReason = pgEnum('suppression_reason', ['unsubscribed', 'bounced', 'complained', 'manual'])
export const campaignStatus = pgEnum('campaign_status', ['draft', 'scheduled', 'sending', 'paused', 'sent', 'cancelled'])
export const recipientStatus = pgEnum('campaign_recipient_status', [
  'queued',
  'sending',
  'accepted',
  'delivered',
  'bounced',
  'complained',
  'failed',
  'suppressed',
])
export const campaignBatchStatus = pgEnum('campaign_batch_status', ['sending', 'retry', 'done', 'split'])

export interface TemplateVariableDecl {
  /** Dotted path, e.g. `company.name`; resolved from a contact's attributes. */
  name: string
  required: boolean
  fallback?: string | null
}

export interface CampaignTag {
  name: string
  value: string
}

const ts = (name: string) => timestamp(name, { withTimezone: true, precision: 3 })

/** The editable draft of a template; publishing copies it into an immutable email_template_versions row. */
export const emailTemplates = pgTable('email_templates', {
  id: uuid('id').primaryKey().defaultRandom(),
  name: text('name').notNull(),
  kind: templateKind('kind').notNull(),
  subject: text('subject').notNull(),
  html: text('html').notNull(),
  /** Null: generated from the HTML when published. */
  text: text('text'),
  variables: jsonb('variables').$type<TemplateVariableDecl[]>().notNull().default(sql`'[]'::jsonb`),
  sampleData: jsonb('sample_data').$type<Record<string, unknown>>().notNull().default(sql`'{}'::jsonb`),
  /** 0 until the first publish. */
  latestVersion: integer('latest_version').notNull().default(0),
  createdAt: ts('created_at').notNull().defaultNow(),
  updatedAt: ts('updated_at').notNull().defaultNow(),
})

/** Never updated: a campaign points at one of these, so what it sends cannot change under it. */
export const emailTemplateVersions = pgTable(
  'email_template_versions',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    templateId: uuid('template_id')
      .notNull()
      .references(() => emailTemplates.id, { onDelete: 'cascade' }),
    version: integer('version').notNull(),
    kind: templateKind('kind').notNull(),
    subject: text('subject').notNull(),
    html: text('html').notNull(),
    text: text('text').notNull(),
    textGenerated: boolean('text_generated').notNull().default(false),
    variables: jsonb('variables').$type<TemplateVariableDecl[]>().notNull(),
    createdAt: ts('created_at').notNull().defaultNow(),
  },
  (t) => [uniqueIndex('email_template_versions_template_version_uq').on(t.templateId, t.version)],
)

export const audiences = pgTable('audiences', {
  id: uuid('id').primaryKey().defaultRandom(),
  name: text('name').notNull(),
  description: text('description'),
  createdAt: ts('created_at').notNull().defaultNow(),
})

export const contacts = pgTable(
  'contacts',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    audienceId: uuid('audience_id')
      .notNull()
      .references(() => audiences.id, { onDelete: 'cascade' }),
    email: text('email').notNull(),
    name: text('name'),
    attributes: jsonb('attributes').$type<Record<string, unknown>>().notNull().default(sql`'{}'::jsonb`),
    status: contactStatus('status').notNull().default('subscribed'),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [
    // Case-insensitive per audience: Alice@x.com and alice@x.com are one mailbox in practice.
    uniqueIndex('contacts_audience_email_uq').on(t.audienceId, sql`lower(${t.email})`),
    index('contacts_email_idx').on(sql`lower(${t.email})`),
  ],
)

/** Global: an address here receives no campaign, whichever audience it is in. */
export const suppressions = pgTable('suppressions', {
  /** Lower-cased address. */
  email: text('email').primaryKey(),
  reason: suppressionReason('reason').notNull(),
  /** Where it came from, e.g. `campaign:<id>` or `admin`. */
  source: text('source'),
  createdAt: ts('created_at').notNull().defaultNow(),
})

export const campaigns = pgTable(
  'campaigns',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    name: text('name').notNull(),
    templateId: uuid('template_id')
      .notNull()
      .references(() => emailTemplates.id),
    templateVersionId: uuid('template_version_id')
      .notNull()
      .references(() => emailTemplateVersions.id),
    audienceIds: uuid('audience_ids').array().notNull(),
    from: text('from').notNull(),
    replyTo: text('reply_to'),
    tags: jsonb('tags').$type<CampaignTag[]>().notNull().default(sql`'[]'::jsonb`),
    sendAt: ts('send_at'),
    status: campaignStatus('status').notNull().default('draft'),
    pauseReason: text('pause_reason'),
    /** Bumped by retryFailedRecipients so re-sent batches get idempotency keys of their own. */
    retryRound: integer('retry_round').notNull().default(0),
    createdBy: text('created_by'),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
    startedAt: ts('started_at'),
    completedAt: ts('completed_at'),
  },
  (t) => [index('campaigns_status_send_at_idx').on(t.status, t.sendAt), index('campaigns_created_idx').on(t.createdAt.desc(), t.id.desc())],
)

/**
 * A provider request: up to 100 recipients under one idempotency key. The lease lives here, not on
 * the recipients, so a batch is never split between workers and a re-claimed batch sends the same
 * payload under the same key.
 */
export const campaignBatches = pgTable(
  'campaign_batches',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    campaignId: uuid('campaign_id')
      .notNull()
      .references(() => campaigns.id, { onDelete: 'cascade' }),
    idempotencyKey: text('idempotency_key').notNull(),
    firstRecipientId: bigint('first_recipient_id', { mode: 'number' }).notNull(),
    size: integer('size').notNull(),
    status: campaignBatchStatus('status').notNull().default('sending'),
    attempts: integer('attempts').notNull().default(1),
    /** Consecutive 5xx/timeouts; 429s do not count, they are flow control. */
    failures: integer('failures').notNull().default(0),
    /**
     * An earlier attempt may have reached the provider (a 5xx, a timeout, a lease that ran out mid-send),
     * which may then hold the payload under the key: from then on the batch is re-sent exactly as it is,
     * never with recipients dropped (campaign-batches.ts, prepareBatchRecipients).
     */
    mayHaveReached: boolean('may_have_reached').notNull().default(false),
    lockedUntil: ts('locked_until'),
    nextAttemptAt: ts('next_attempt_at'),
    lastError: text('last_error'),
    createdAt: ts('created_at').notNull().defaultNow(),
    completedAt: ts('completed_at'),
  },
  (t) => [
    // A batch refused as a whole (4xx) is split; the first half reuses the key, which the provider never stored.
    uniqueIndex('campaign_batches_key_uq').on(t.idempotencyKey).where(sql`${t.status} <> 'split'`),
    index('campaign_batches_due_idx').on(t.status, t.nextAttemptAt).where(sql`${t.status} in ('sending', 'retry')`),
  ],
)

export const campaignRecipients = pgTable(
  'campaign_recipients',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    campaignId: uuid('campaign_id')
      .notNull()
      .references(() => campaigns.id, { onDelete: 'cascade' }),
    contactId: uuid('contact_id'),
    /** A snapshot taken at materialisation, so a retried batch renders byte-identical messages. */
    email: text('email').notNull(),
    name: text('name'),
    attributes: jsonb('attributes').$type<Record<string, unknown>>().notNull(),
    status: recipientStatus('status').notNull().default('queued'),
    batchId: bigint('batch_id', { mode: 'number' }),
    attempts: integer('attempts').notNull().default(0),
    providerId: text('provider_id'),
    reason: text('reason'),
    sentAt: ts('sent_at'),
    unsubscribedAt: ts('unsubscribed_at'),
    updatedAt: ts('updated_at'),
  },
  (t) => [
    uniqueIndex('campaign_recipients_campaign_email_uq').on(t.campaignId, sql`lower(${t.email})`),
    index('campaign_recipients_campaign_status_idx').on(t.campaignId, t.status, t.id),
    index('campaign_recipients_batch_idx').on(t.batchId).where(sql`${t.batchId} is not null`),
    index('campaign_recipients_provider_idx').on(t.providerId).where(sql`${t.providerId} is not null`),
  ],
)

/** Counters kept incrementally by the code that changes recipient states: never a count(*) over the recipients. */
export const campaignStats = pgTable('campaign_stats', {
  campaignId: uuid('campaign_id')
    .primaryKey()
    .references(() => campaigns.id, { onDelete: 'cascade' }),
  total: integer('total').notNull().default(0),
  /** Queued or in flight: not yet accepted or failed. */
  queued: integer('queued').notNull().default(0),
  /** Accepted by the provider (and possibly delivered, bounced or complained since). */
  sent: integer('sent').notNull().default(0),
  delivered: integer('delivered').notNull().default(0),
  bounced: integer('bounced').notNull().default(0),
  complained: integer('complained').notNull().default(0),
  failed: integer('failed').notNull().default(0),
  suppressed: integer('suppressed').notNull().default(0),
  unsubscribed: integer('unsubscribed').notNull().default(0),
  uniqueOpens: integer('unique_opens').notNull().default(0),
  uniqueClicks: integer('unique_clicks').notNull().default(0),
  conversions: integer('conversions').notNull().default(0),
  updatedAt: ts('updated_at').notNull().defaultNow(),
})
