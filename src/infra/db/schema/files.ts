import { sql } from 'drizzle-orm'
import { bigint, index, integer, jsonb, pgEnum, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core'

export const fileStatus = pgEnum('file_status', ['processing', 'ready', 'failed', 'deleted'])
export const fileVersionStatus = pgEnum('file_version_status', ['processing', 'ready', 'failed'])

export interface StoredVariant {
  name: string
  storageKey: string
  mimeType: string
  size: number
  width?: number
  height?: number
}

export const files = pgTable(
  'files',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    ownerId: text('owner_id').notNull(),
    /** The client's original name: metadata only, never part of a storage key. */
    filename: text('filename').notNull(),
    status: fileStatus('status').notNull().default('processing'),
    /** The version downloads serve: the newest one that finished processing. */
    currentVersion: integer('current_version').notNull().default(1),
    /** The last number handed out, so a deleted version's number is never reused. */
    latestVersion: integer('latest_version').notNull().default(1),
    error: text('error'),
    createdAt: timestamp('created_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  },
  (t) => [index('files_owner_created_idx').on(t.ownerId, t.createdAt.desc(), t.id.desc())],
)

/**
 * Stored bytes, shared by every version of one owner with the same content (deduplication).
 * `refCount` counts the versions pointing here; the bytes are deleted when it reaches zero.
 */
export const fileObjects = pgTable(
  'file_objects',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    ownerId: text('owner_id').notNull(),
    /** sha256 of the bytes the client sent: the deduplication key. */
    sha256: text('sha256').notNull(),
    storageKey: text('storage_key').notNull(),
    mimeType: text('mime_type').notNull(),
    size: bigint('size', { mode: 'number' }).notNull(),
    /** sha256 of the stored bytes (differs from sha256 once an image is optimised). */
    storedSha256: text('stored_sha256').notNull(),
    originalSize: bigint('original_size', { mode: 'number' }).notNull(),
    width: integer('width'),
    height: integer('height'),
    pageCount: integer('page_count'),
    variants: jsonb('variants').$type<StoredVariant[]>().notNull().default(sql`'[]'::jsonb`),
    refCount: integer('ref_count').notNull().default(1),
    createdAt: timestamp('created_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('file_objects_owner_sha_uq').on(t.ownerId, t.sha256), uniqueIndex('file_objects_storage_key_uq').on(t.storageKey)],
)

export const fileVersions = pgTable(
  'file_versions',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    fileId: uuid('file_id')
      .notNull()
      .references(() => files.id, { onDelete: 'cascade' }),
    number: integer('number').notNull(),
    filename: text('filename').notNull(),
    status: fileVersionStatus('status').notNull().default('ready'),
    mimeType: text('mime_type').notNull(),
    /** What the client claimed; the pipeline checks it against the bytes. */
    declaredType: text('declared_type'),
    size: bigint('size', { mode: 'number' }).notNull(),
    /** sha256 of the stored bytes (after optimisation). */
    sha256: text('sha256').notNull(),
    originalSize: bigint('original_size', { mode: 'number' }).notNull(),
    originalSha256: text('original_sha256').notNull(),
    /** While processing, the received bytes; once ready, the (possibly shared) stored object. */
    storageKey: text('storage_key').notNull(),
    objectId: uuid('object_id').references(() => fileObjects.id),
    width: integer('width'),
    height: integer('height'),
    pageCount: integer('page_count'),
    variants: jsonb('variants').$type<StoredVariant[]>().notNull().default(sql`'[]'::jsonb`),
    /** The uploadProgress id: the client's uploadId, or the session id of a chunked upload. */
    uploadId: text('upload_id'),
    error: text('error'),
    errorCode: text('error_code'),
    createdBy: text('created_by'),
    createdAt: timestamp('created_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('file_versions_file_number_uq').on(t.fileId, t.number),
    index('file_versions_storage_key_idx').on(t.storageKey),
    index('file_versions_object_idx').on(t.objectId),
  ],
)
