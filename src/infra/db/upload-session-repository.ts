import { and, asc, eq, inArray, lt, sql } from 'drizzle-orm'
import type { Database } from './client'
import { uploadSessionParts, uploadSessions } from './schema/upload-sessions'

export type UploadSessionRow = typeof uploadSessions.$inferSelect
export type NewUploadSession = typeof uploadSessions.$inferInsert
export type UploadSessionStatus = UploadSessionRow['status']
export type UploadPartRow = typeof uploadSessionParts.$inferSelect
/** A transaction handle, so a session changes state in the same transaction that creates its version. */
export type Tx = Parameters<Parameters<Database['transaction']>[0]>[0]

export class UploadSessionRepository {
  constructor(private readonly db: Database) {}

  async create(session: NewUploadSession, tx: Database | Tx = this.db): Promise<UploadSessionRow> {
    const [row] = await tx.insert(uploadSessions).values(session).returning()
    return row!
  }

  /** The version exists now: the session's reservation is replaced by it, in the same transaction. */
  async markCompleted(tx: Tx, id: string): Promise<void> {
    await tx.update(uploadSessions).set({ status: 'completed', completedAt: new Date(), updatedAt: new Date() }).where(eq(uploadSessions.id, id))
  }

  async findById(id: string): Promise<UploadSessionRow | undefined> {
    const [row] = await this.db.select().from(uploadSessions).where(eq(uploadSessions.id, id)).limit(1)
    return row
  }

  async findByVersionId(versionId: string): Promise<UploadSessionRow | undefined> {
    const [row] = await this.db.select().from(uploadSessions).where(eq(uploadSessions.versionId, versionId)).limit(1)
    return row
  }

  listParts(sessionId: string): Promise<UploadPartRow[]> {
    return this.db.select().from(uploadSessionParts).where(eq(uploadSessionParts.sessionId, sessionId)).orderBy(asc(uploadSessionParts.partNumber))
  }

  async bytesReceived(sessionId: string): Promise<number> {
    const [row] = await this.db
      .select({ bytes: sql<string>`coalesce(sum(${uploadSessionParts.size}), 0)` })
      .from(uploadSessionParts)
      .where(eq(uploadSessionParts.sessionId, sessionId))
    return Number(row?.bytes ?? 0)
  }

  /**
   * Records a stored part, replacing an earlier upload of the same number, and slides the expiry.
   * Only while the session is still receiving: false when it was completed or aborted meanwhile.
   */
  async recordPart(sessionId: string, part: { partNumber: number; etag: string; size: number }, expiresAt: Date): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const [open] = await tx
        .update(uploadSessions)
        .set({ expiresAt, updatedAt: new Date() })
        .where(and(eq(uploadSessions.id, sessionId), eq(uploadSessions.status, 'uploading')))
        .returning({ id: uploadSessions.id })
      if (!open) return false
      await tx
        .insert(uploadSessionParts)
        .values({ sessionId, ...part })
        .onConflictDoUpdate({
          target: [uploadSessionParts.sessionId, uploadSessionParts.partNumber],
          set: { etag: part.etag, size: part.size, receivedAt: new Date() },
        })
      return true
    })
  }

  /** Moves a session from one of `from` to `to`; undefined when it was in another state (someone else moved it). */
  async transition(id: string, from: UploadSessionStatus[], to: UploadSessionStatus, extra: Partial<Pick<UploadSessionRow, 'error' | 'completedAt'>> = {}): Promise<UploadSessionRow | undefined> {
    const [row] = await this.db
      .update(uploadSessions)
      .set({ status: to, updatedAt: new Date(), ...extra })
      .where(and(eq(uploadSessions.id, id), inArray(uploadSessions.status, from)))
      .returning()
    return row
  }

  async deleteParts(sessionId: string): Promise<void> {
    await this.db.delete(uploadSessionParts).where(eq(uploadSessionParts.sessionId, sessionId))
  }

  /**
   * Claims sessions past their expiry for the sweeper, marking them expired so no part or complete
   * is accepted any more. `completing` ones are only taken once stuck (their instance died mid-complete).
   */
  async claimExpired(limit: number, stuckCompletingMs: number): Promise<UploadSessionRow[]> {
    const due = this.db
      .select({ id: uploadSessions.id })
      .from(uploadSessions)
      .where(
        and(
          lt(uploadSessions.expiresAt, sql`now()`),
          sql`(${uploadSessions.status} = 'uploading' or (${uploadSessions.status} = 'completing' and ${uploadSessions.updatedAt} < now() - make_interval(secs => ${stuckCompletingMs / 1000})))`,
        ),
      )
      .limit(limit)
      .for('update', { skipLocked: true })
    return this.db
      .update(uploadSessions)
      .set({ status: 'expired', updatedAt: new Date(), error: 'The upload session expired' })
      .where(inArray(uploadSessions.id, due))
      .returning()
  }
}
