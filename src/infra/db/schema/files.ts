import { sql } from 'drizzle-orm'
import { bigint, index, integer, jsonb, pgEnum, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core'

export const fileStatus = pgEnum('file_status', ['processing', 'ready', 'failed', 'deleted'])

export const files = pgTable(
  'files',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    ownerId: text('owner_id').notNull(),
    /** The client's original name: metadata only, never part of a storage key. */
    filename: text('filename').notNull(),
    status: fileStatus('status').notNull().default('processing'),
    currentVersion: integer('current_version').notNull().default(1),
    error: text('error'),
    createdAt: timestamp('created_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  },
  (t) => [index('files_owner_created_idx').on(t.ownerId, t.createdAt.desc(), t.id.desc())],
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
    mimeType: text('mime_type').notNull(),
    size: bigint('size', { mode: 'number' }).notNull(),
    /** sha256 of the stored bytes (after optimisation). */
    sha256: text('sha256').notNull(),
    originalSize: bigint('original_size', { mode: 'number' }).notNull(),
    originalSha256: text('original_sha256').notNull(),
    storageKey: text('storage_key').notNull(),
    width: integer('width'),
    height: integer('height'),
    variants: jsonb('variants').$type<{ name: string; storageKey: string; mimeType: string; size: number; width?: number; height?: number }[]>().notNull().default(sql`'[]'::jsonb`),
    createdBy: text('created_by'),
    createdAt: timestamp('created_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('file_versions_file_number_uq').on(t.fileId, t.number), uniqueIndex('file_versions_storage_key_uq').on(t.storageKey)],
)
