import { and, asc, eq, inArray, lt, ne, or, sql, type SQL } from 'drizzle-orm'
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

  /**
   * The version exists now: the session's reservation is replaced by it, in the same transaction.
   * Only by the holder of the `completing` lease (`lease` is the updated_at its claim wrote): when the
   * lease was taken over meanwhile it throws CompletingLeaseLostError, which rolls the version back.
   */
  async markCompleted(tx: Tx, id: string, lease: Date): Promise<void> {
    const [row] = await tx
      .update(uploadSessions)
      .set({ status: 'completed', completedAt: new Date(), updatedAt: sql`now()` })
      .where(and(eq(uploadSessions.id, id), eq(uploadSessions.status, 'completing'), eq(uploadSessions.updatedAt, lease)))
      .returning({ id: uploadSessions.id })
    if (!row) throw new CompletingLeaseLostError(id)
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

  /** Bytes stored for the session's parts, leaving out part `except` (the one being replaced). */
  async bytesReceived(sessionId: string, except?: number): Promise<number> {
    const [row] = await this.db
      .select({ bytes: sql<string>`coalesce(sum(${uploadSessionParts.size}), 0)` })
      .from(uploadSessionParts)
      .where(and(eq(uploadSessionParts.sessionId, sessionId), except === undefined ? undefined : ne(uploadSessionParts.partNumber, except)))
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

  /**
   * Moves a session from one of `from` to `to`; undefined when it was in another state (someone else moved it).
   * `staleCompletingMs` also takes a `completing` session whose lease (updated_at) is older than that: its
   * instance died mid-complete. `lease` restricts the move to the holder of the lease: the session must
   * still have the updated_at its claim wrote. updated_at is the database's now(), like the lease checks.
   */
  async transition(
    id: string,
    from: UploadSessionStatus[],
    to: UploadSessionStatus,
    extra: Partial<Pick<UploadSessionRow, 'error' | 'completedAt'>> = {},
    opts: { staleCompletingMs?: number; lease?: Date } = {},
  ): Promise<UploadSessionRow | undefined> {
    const states: SQL[] = [inArray(uploadSessions.status, from)]
    if (opts.staleCompletingMs !== undefined) states.push(staleCompleting(opts.staleCompletingMs))
    const [row] = await this.db
      .update(uploadSessions)
      .set({ status: to, updatedAt: sql`now()`, ...extra })
      .where(and(eq(uploadSessions.id, id), or(...states), opts.lease ? eq(uploadSessions.updatedAt, opts.lease) : undefined))
      .returning()
    return row
  }

  async deleteParts(sessionId: string): Promise<void> {
    await this.db.delete(uploadSessionParts).where(eq(uploadSessionParts.sessionId, sessionId))
  }

  /**
   * Gives `completing` sessions whose lease ran out (their instance died mid-complete) back to
   * `uploading`, so the client's next completeUpload (or abortUpload) goes through; their expiry is
   * pushed to at least `expiresAt` so the client has time for that. The parts are kept.
   */
  async releaseStaleCompleting(limit: number, staleCompletingMs: number, expiresAt: Date): Promise<UploadSessionRow[]> {
    const due = this.db
      .select({ id: uploadSessions.id })
      .from(uploadSessions)
      .where(staleCompleting(staleCompletingMs))
      .limit(limit)
      .for('update', { skipLocked: true })
    return this.db
      .update(uploadSessions)
      .set({ status: 'uploading', updatedAt: sql`now()`, expiresAt: sql`greatest(${uploadSessions.expiresAt}, ${expiresAt.toISOString()}::timestamptz)` })
      .where(and(inArray(uploadSessions.id, due), staleCompleting(staleCompletingMs)))
      .returning()
  }

  /**
   * Claims `uploading` sessions past their expiry for the sweeper, marking them expired so no part or
   * complete is accepted any more. `completing` ones are never expired: see releaseStaleCompleting.
   */
  /** Whether any part row of the session is left: the last thing its storage cleanup removes. */
  async hasParts(sessionId: string): Promise<boolean> {
    const [row] = await this.db.select({ n: sql`1` }).from(uploadSessionParts).where(eq(uploadSessionParts.sessionId, sessionId)).limit(1)
    return row !== undefined
  }

  /**
   * Aborted sessions whose storage cleanup did not finish (their part rows, removed last, are still
   * there) and has not been tried for `idleMs`; each is marked tried (updated_at) as it is taken.
   */
  async claimUncleanAborted(limit: number, idleMs: number): Promise<UploadSessionRow[]> {
    const due = this.db
      .select({ id: uploadSessions.id })
      .from(uploadSessions)
      .where(
        and(
          eq(uploadSessions.status, 'aborted'),
          sql`${uploadSessions.updatedAt} < now() - make_interval(secs => ${idleMs / 1000})`,
          sql`exists (select 1 from ${uploadSessionParts} p where p.session_id = ${uploadSessions.id})`,
        ),
      )
      .limit(limit)
      .for('update', { skipLocked: true })
    return this.db.update(uploadSessions).set({ updatedAt: sql`now()` }).where(inArray(uploadSessions.id, due)).returning()
  }

  async claimExpired(limit: number): Promise<UploadSessionRow[]> {
    const due = this.db
      .select({ id: uploadSessions.id })
      .from(uploadSessions)
      .where(and(lt(uploadSessions.expiresAt, sql`now()`), eq(uploadSessions.status, 'uploading')))
      .limit(limit)
      .for('update', { skipLocked: true })
    return this.db
      .update(uploadSessions)
      .set({ status: 'expired', updatedAt: new Date(), error: 'The upload session expired' })
      .where(inArray(uploadSessions.id, due))
      .returning()
  }
}

/** A `completing` session whose lease is older than `ms`. */
function staleCompleting(ms: number): SQL {
  return sql`(${uploadSessions.status} = 'completing' and ${uploadSessions.updatedAt} < now() - make_interval(secs => ${ms / 1000}))`
}

/** The `completing` lease of a session was taken over (or the session moved on) while its holder worked. */
export class CompletingLeaseLostError extends Error {
  constructor(readonly sessionId: string) {
    super(`The completing lease of upload session ${sessionId} was lost`)
  }
}
