import { bigint, index, integer, pgEnum, pgTable, primaryKey, text, timestamp, uuid } from 'drizzle-orm/pg-core'

export const uploadSessionStatus = pgEnum('upload_session_status', ['uploading', 'completing', 'completed', 'aborted', 'expired', 'failed'])

/**
 * A chunked, resumable upload. All of its state is here (and in the storage's multipart upload),
 * never in memory, so any instance can take the next part, and a restart loses nothing.
 */
export const uploadSessions = pgTable(
  'upload_sessions',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    ownerId: text('owner_id').notNull(),
    filename: text('filename').notNull(),
    declaredType: text('declared_type').notNull(),
    size: bigint('size', { mode: 'number' }).notNull(),
    /** Expected sha256 of the whole file, if the client gave one. */
    sha256: text('sha256'),
    /** Set when the upload is a new version of an existing file. */
    targetFileId: uuid('target_file_id'),
    /** The file (new or existing) and version the upload becomes, chosen up front so storage keys are fixed. */
    fileId: uuid('file_id').notNull(),
    versionId: uuid('version_id').notNull(),
    partSize: bigint('part_size', { mode: 'number' }).notNull(),
    partCount: integer('part_count').notNull(),
    storageKey: text('storage_key').notNull(),
    multipartUploadId: text('multipart_upload_id').notNull(),
    status: uploadSessionStatus('status').notNull().default('uploading'),
    error: text('error'),
    expiresAt: timestamp('expires_at', { withTimezone: true, precision: 3 }).notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    completedAt: timestamp('completed_at', { withTimezone: true, precision: 3 }),
  },
  (t) => [index('upload_sessions_status_expires_idx').on(t.status, t.expiresAt), index('upload_sessions_owner_status_idx').on(t.ownerId, t.status)],
)

/** One row per received part: parallel parts insert their own rows instead of contending for the session's. */
export const uploadSessionParts = pgTable(
  'upload_session_parts',
  {
    sessionId: uuid('session_id')
      .notNull()
      .references(() => uploadSessions.id, { onDelete: 'cascade' }),
    partNumber: integer('part_number').notNull(),
    etag: text('etag').notNull(),
    size: bigint('size', { mode: 'number' }).notNull(),
    receivedAt: timestamp('received_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.sessionId, t.partNumber] })],
)
