import { boolean, doublePrecision, index, integer, jsonb, pgEnum, pgTable, primaryKey, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core'
import { fileVersions } from './files'

export const fileStepStatus = pgEnum('file_step_status', ['pending', 'running', 'done', 'skipped', 'failed'])

/**
 * The processing of one version, one row per step, run in `position` order. Workers claim a due
 * step with `FOR UPDATE SKIP LOCKED` and a `locked_until` lease; `result` carries what later steps
 * need, so a crash resumes at the first step that is not done.
 */
export const fileProcessingSteps = pgTable(
  'file_processing_steps',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    versionId: uuid('version_id')
      .notNull()
      .references(() => fileVersions.id, { onDelete: 'cascade' }),
    position: integer('position').notNull(),
    name: text('name').notNull(),
    status: fileStepStatus('status').notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    runAt: timestamp('run_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    lockedUntil: timestamp('locked_until', { withTimezone: true, precision: 3 }),
    lastError: text('last_error'),
    result: jsonb('result').$type<Record<string, unknown>>(),
    startedAt: timestamp('started_at', { withTimezone: true, precision: 3 }),
    finishedAt: timestamp('finished_at', { withTimezone: true, precision: 3 }),
  },
  (t) => [uniqueIndex('file_processing_steps_version_position_uq').on(t.versionId, t.position), index('file_processing_steps_due_idx').on(t.status, t.runAt)],
)

/**
 * The latest uploadProgress event of each upload, so a subscriber who arrives late (or reconnects)
 * gets the current state first, terminal events included. `run_id` tells a reused uploadId apart.
 */
export const uploadProgressSnapshots = pgTable(
  'upload_progress',
  {
    ownerId: text('owner_id').notNull(),
    uploadId: text('upload_id').notNull(),
    runId: text('run_id').notNull(),
    event: jsonb('event').$type<Record<string, unknown>>().notNull(),
    percent: doublePrecision('percent').notNull().default(0),
    terminal: boolean('terminal').notNull().default(false),
    updatedAt: timestamp('updated_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.ownerId, t.uploadId] }), index('upload_progress_updated_idx').on(t.updatedAt)],
)
