import { and, eq, lt, sql } from 'drizzle-orm'
import type { Database } from './client'
import { uploadProgressSnapshots } from './schema/file-pipeline'

export interface ProgressSnapshot {
  runId: string
  event: Record<string, unknown>
  percent: number
  terminal: boolean
}

const t = uploadProgressSnapshots

/** The latest progress event per upload; see the table's comment. */
export class UploadProgressRepository {
  constructor(private readonly db: Database) {}

  /**
   * Keeps the newest state: a new run (a reused uploadId) replaces everything; within a run, a
   * terminal state is final and percent never goes back (parallel parts report out of order).
   */
  async save(ownerId: string, uploadId: string, snapshot: ProgressSnapshot): Promise<void> {
    await this.db
      .insert(t)
      .values({ ownerId, uploadId, ...snapshot })
      .onConflictDoUpdate({
        target: [t.ownerId, t.uploadId],
        set: { runId: snapshot.runId, event: snapshot.event, percent: snapshot.percent, terminal: snapshot.terminal, updatedAt: new Date() },
        setWhere: sql`${t.runId} <> excluded.run_id or (not ${t.terminal} and (excluded.terminal or excluded.percent >= ${t.percent}))`,
      })
  }

  async find(ownerId: string, uploadId: string): Promise<ProgressSnapshot | undefined> {
    const [row] = await this.db.select().from(t).where(and(eq(t.ownerId, ownerId), eq(t.uploadId, uploadId))).limit(1)
    return row ? { runId: row.runId, event: row.event, percent: row.percent, terminal: row.terminal } : undefined
  }

  /** Snapshots nobody will ask for any more. */
  async deleteOlderThan(ms: number): Promise<number> {
    const rows = await this.db
      .delete(t)
      .where(lt(t.updatedAt, sql`now() - make_interval(secs => ${ms / 1000})`))
      .returning({ id: t.uploadId })
    return rows.length
  }
}
