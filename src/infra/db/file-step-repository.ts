import { and, asc, eq, gt, inArray, lt, lte, notExists, notInArray, or, sql } from 'drizzle-orm'
import { alias } from 'drizzle-orm/pg-core'
import type { Database } from './client'
import { fileProcessingSteps } from './schema/file-pipeline'
import { fileVersions } from './schema/files'

export type FileStepRow = typeof fileProcessingSteps.$inferSelect

const steps = fileProcessingSteps
const prior = alias(fileProcessingSteps, 'prior')

/** What a version's steps look like when none can be claimed now. */
export type StepsState = { kind: 'finished' } | { kind: 'waiting'; runAt: Date } | { kind: 'leased'; lockedUntil: Date } | { kind: 'gone' }

export class FileStepRepository {
  constructor(private readonly db: Database) {}

  /**
   * Claims up to `limit` runnable steps: due pending ones, and running ones whose lease expired
   * (their worker crashed). A step only runs once every earlier step of its version is done or
   * skipped. Claiming bumps `attempts`, which fences off a late write from the previous holder.
   */
  async claim(limit: number, leaseMs: number, versionId?: string): Promise<FileStepRow[]> {
    const due = this.db
      .select({ id: steps.id })
      .from(steps)
      .innerJoin(fileVersions, eq(fileVersions.id, steps.versionId))
      .where(
        and(
          eq(fileVersions.status, 'processing'),
          versionId ? eq(steps.versionId, versionId) : undefined,
          or(and(eq(steps.status, 'pending'), lte(steps.runAt, sql`now()`)), and(eq(steps.status, 'running'), lt(steps.lockedUntil, sql`now()`))),
          notExists(
            this.db
              .select({ one: sql`1` })
              .from(prior)
              .where(and(eq(prior.versionId, steps.versionId), lt(prior.position, steps.position), notInArray(prior.status, ['done', 'skipped']))),
          ),
        ),
      )
      .orderBy(asc(steps.runAt))
      .limit(limit)
      .for('update', { of: steps, skipLocked: true })
    return this.db
      .update(steps)
      .set({
        status: 'running',
        attempts: sql`${steps.attempts} + 1`,
        lockedUntil: sql`now() + make_interval(secs => ${leaseMs / 1000})`,
        startedAt: sql`coalesce(${steps.startedAt}, now())`,
      })
      .where(inArray(steps.id, due))
      .returning()
  }

  /** Why nothing of this version could be claimed: all done, a retry not yet due, or another worker's lease. */
  async state(versionId: string): Promise<StepsState> {
    const rows = await this.db.select().from(steps).where(eq(steps.versionId, versionId)).orderBy(asc(steps.position))
    if (rows.length === 0) return { kind: 'gone' }
    const next = rows.find((r) => r.status !== 'done' && r.status !== 'skipped')
    if (!next || next.status === 'failed') return { kind: 'finished' }
    if (next.status === 'running' && next.lockedUntil) return { kind: 'leased', lockedUntil: next.lockedUntil }
    return { kind: 'waiting', runAt: next.runAt }
  }

  list(versionId: string): Promise<FileStepRow[]> {
    return this.db.select().from(steps).where(eq(steps.versionId, versionId)).orderBy(asc(steps.position))
  }

  /** Extends the lease of a step still held by this claim; false when the lease was lost. */
  async heartbeat(step: Pick<FileStepRow, 'id' | 'attempts'>, leaseMs: number): Promise<boolean> {
    const rows = await this.db
      .update(steps)
      .set({ lockedUntil: sql`now() + make_interval(secs => ${leaseMs / 1000})` })
      .where(and(eq(steps.id, step.id), eq(steps.attempts, step.attempts), eq(steps.status, 'running')))
      .returning({ id: steps.id })
    return rows.length > 0
  }

  /** Records a finished step; false when this claim was fenced off (another worker took it over). */
  async finish(step: Pick<FileStepRow, 'id' | 'attempts'>, result: Record<string, unknown>): Promise<boolean> {
    const rows = await this.db
      .update(steps)
      .set({ status: 'done', result, lockedUntil: null, lastError: null, finishedAt: new Date() })
      .where(and(eq(steps.id, step.id), eq(steps.attempts, step.attempts), eq(steps.status, 'running')))
      .returning({ id: steps.id })
    return rows.length > 0
  }

  /** Later steps that do not apply (image steps of a PDF, or of a deduplicated image). */
  async skip(versionId: string, names: string[]): Promise<void> {
    if (names.length === 0) return
    await this.db
      .update(steps)
      .set({ status: 'skipped', finishedAt: new Date() })
      .where(and(eq(steps.versionId, versionId), inArray(steps.name, names), eq(steps.status, 'pending')))
  }

  async retryLater(step: Pick<FileStepRow, 'id' | 'attempts'>, delayMs: number, error: string): Promise<boolean> {
    const rows = await this.db
      .update(steps)
      .set({ status: 'pending', lockedUntil: null, lastError: error, runAt: sql`now() + make_interval(secs => ${delayMs / 1000})` })
      .where(and(eq(steps.id, step.id), eq(steps.attempts, step.attempts), eq(steps.status, 'running')))
      .returning({ id: steps.id })
    return rows.length > 0
  }

  async fail(step: Pick<FileStepRow, 'id' | 'attempts'>, error: string): Promise<boolean> {
    const rows = await this.db
      .update(steps)
      .set({ status: 'failed', lockedUntil: null, lastError: error, finishedAt: new Date() })
      .where(and(eq(steps.id, step.id), eq(steps.attempts, step.attempts), eq(steps.status, 'running')))
      .returning({ id: steps.id })
    return rows.length > 0
  }

  /** Every key a step of this version wrote, for clean-up when it fails. */
  async writtenKeys(versionId: string): Promise<string[]> {
    const rows = await this.db.select({ result: steps.result }).from(steps).where(and(eq(steps.versionId, versionId), gt(steps.attempts, 0)))
    return rows.flatMap((r) => ((r.result?.keys as string[] | undefined) ?? []))
  }
}
