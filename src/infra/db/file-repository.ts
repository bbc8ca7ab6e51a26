import { and, desc, eq, lt, or, sql } from 'drizzle-orm'
import type { Database } from './client'
import { files, fileVersions } from './schema/files'

export type FileRow = typeof files.$inferSelect
export type FileVersionRow = typeof fileVersions.$inferSelect
export type NewFileVersion = Omit<typeof fileVersions.$inferInsert, 'fileId' | 'number'>

/** Keyset position for listing newest first. */
export interface FileCursor {
  createdAt: Date
  id: string
}

export class FileRepository {
  constructor(private readonly db: Database) {}

  async findById(id: string): Promise<FileRow | undefined> {
    const [row] = await this.db.select().from(files).where(eq(files.id, id)).limit(1)
    return row
  }

  async findVersion(fileId: string, number: number): Promise<FileVersionRow | undefined> {
    const [row] = await this.db
      .select()
      .from(fileVersions)
      .where(and(eq(fileVersions.fileId, fileId), eq(fileVersions.number, number)))
      .limit(1)
    return row
  }

  listVersions(fileId: string): Promise<FileVersionRow[]> {
    return this.db.select().from(fileVersions).where(eq(fileVersions.fileId, fileId)).orderBy(desc(fileVersions.number))
  }

  /** Newest first, `limit` rows after the cursor; ownerId undefined lists everyone's (admin). */
  list(options: { ownerId?: string; after?: FileCursor; limit: number }): Promise<FileRow[]> {
    const conditions = [sql`${files.status} <> 'deleted'`]
    if (options.ownerId !== undefined) conditions.push(eq(files.ownerId, options.ownerId))
    if (options.after) {
      const { createdAt, id } = options.after
      conditions.push(or(lt(files.createdAt, createdAt), and(eq(files.createdAt, createdAt), lt(files.id, id)))!)
    }
    return this.db
      .select()
      .from(files)
      .where(and(...conditions))
      .orderBy(desc(files.createdAt), desc(files.id))
      .limit(options.limit)
  }

  /** The file and its first version in one transaction: either both exist or neither. */
  async createWithVersion(file: { id: string; ownerId: string; filename: string }, version: NewFileVersion): Promise<{ file: FileRow; version: FileVersionRow }> {
    return this.db.transaction(async (tx) => {
      const [fileRow] = await tx
        .insert(files)
        .values({ ...file, status: 'ready', currentVersion: 1 })
        .returning()
      const [versionRow] = await tx
        .insert(fileVersions)
        .values({ ...version, fileId: file.id, number: 1 })
        .returning()
      return { file: fileRow!, version: versionRow! }
    })
  }

  /**
   * Appends a version and points the file at it. The row lock on the file serialises concurrent
   * version uploads so numbers never collide.
   */
  async appendVersion(fileId: string, version: NewFileVersion, filename: string): Promise<{ file: FileRow; version: FileVersionRow } | undefined> {
    return this.db.transaction(async (tx) => {
      const [locked] = await tx.select().from(files).where(eq(files.id, fileId)).for('update')
      if (!locked || locked.status === 'deleted') return undefined
      const [{ next } = { next: 1 }] = await tx
        .select({ next: sql<number>`coalesce(max(${fileVersions.number}), 0)::int + 1` })
        .from(fileVersions)
        .where(eq(fileVersions.fileId, fileId))
      const [versionRow] = await tx
        .insert(fileVersions)
        .values({ ...version, fileId, number: next })
        .returning()
      const [fileRow] = await tx
        .update(files)
        .set({ currentVersion: next, filename, status: 'ready', updatedAt: new Date() })
        .where(eq(files.id, fileId))
        .returning()
      return { file: fileRow!, version: versionRow! }
    })
  }

  /** Deletes the file and its versions; returns the storage keys to remove. */
  async delete(fileId: string): Promise<string[]> {
    return this.db.transaction(async (tx) => {
      const versions = await tx.select({ key: fileVersions.storageKey, variants: fileVersions.variants }).from(fileVersions).where(eq(fileVersions.fileId, fileId))
      await tx.delete(files).where(eq(files.id, fileId))
      return versions.flatMap((v) => [v.key, ...v.variants.map((x) => x.storageKey)])
    })
  }
}
