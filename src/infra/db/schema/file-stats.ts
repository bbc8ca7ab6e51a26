import { bigint, index, integer, pgTable, primaryKey, text, timestamp } from 'drizzle-orm/pg-core'

const ts = (name: string) => timestamp(name, { withTimezone: true, precision: 3 })

/**
 * Changes to the file figures, appended by triggers on `files` and `file_versions` (migration
 * 0006) in the transaction that makes them: every path (uploads, finalise, failure, restore,
 * retention, cascading deletes) is counted, and an upload never waits on a lock of a shared counter
 * row. Compaction folds them into the totals below; readers compact first, then read a few rows.
 *
 * A row is one of: a version change (`mime_type` set; `owner_id` null when the file row is already
 * gone), a file status change (`files` ±1), or an owner-only change (a whole file deleted).
 */
export const fileStatDeltas = pgTable('file_stat_deltas', {
  mimeType: text('mime_type'),
  /** Version status for a version change, file status for a file change. */
  status: text('status'),
  ownerId: text('owner_id'),
  files: integer('files').notNull().default(0),
  versions: integer('versions').notNull().default(0),
  bytes: bigint('bytes', { mode: 'number' }).notNull().default(0),
  /** Set when the change ended a processing run: 'ready' or 'failed'. */
  outcome: text('outcome'),
  /** The error code and the step a failed run stopped at. */
  code: text('code'),
  step: text('step'),
  at: ts('at').notNull().defaultNow(),
})

/** Versions and their bytes per MIME type (bounded by the upload allowlist) and version status. */
export const fileStatTotals = pgTable(
  'file_stat_totals',
  {
    mimeType: text('mime_type').notNull(),
    status: text('status').notNull(),
    versions: bigint('versions', { mode: 'number' }).notNull().default(0),
    bytes: bigint('bytes', { mode: 'number' }).notNull().default(0),
  },
  (t) => [primaryKey({ name: 'file_stat_totals_pk', columns: [t.mimeType, t.status] })],
)

/** Files per status. */
export const fileStatusTotals = pgTable('file_status_totals', {
  status: text('status').primaryKey(),
  files: bigint('files', { mode: 'number' }).notNull().default(0),
})

/** What each owner stores, counted as the quota counts it: every version that did not fail. */
export const fileOwnerUsage = pgTable(
  'file_owner_usage',
  {
    ownerId: text('owner_id').primaryKey(),
    versions: bigint('versions', { mode: 'number' }).notNull().default(0),
    bytes: bigint('bytes', { mode: 'number' }).notNull().default(0),
  },
  // The top users by usage are read from this index, never by sorting every owner.
  (t) => [index('file_owner_usage_bytes_idx').on(t.bytes.desc(), t.ownerId)],
)

/** Finished processing runs per hour, outcome, and (for failures) error code and step; '' when not applicable. */
export const filePipelineHourly = pgTable(
  'file_pipeline_hourly',
  {
    hour: ts('hour').notNull(),
    outcome: text('outcome').notNull(),
    code: text('code').notNull(),
    step: text('step').notNull(),
    runs: bigint('runs', { mode: 'number' }).notNull().default(0),
  },
  (t) => [primaryKey({ name: 'file_pipeline_hourly_pk', columns: [t.hour, t.outcome, t.code, t.step] })],
)
