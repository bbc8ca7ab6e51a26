/**
 * Periodic housekeeping, safe on any number of instances: expired upload sessions are claimed with
 * SKIP LOCKED and their multipart uploads aborted; versions past retention are deleted one by one
 * under their file's row lock; old progress snapshots are dropped; the file figures are compacted.
 */
import type { FileRepository } from '../../infra/db/file-repository'
import type { UploadProgressRepository } from '../../infra/db/upload-progress-repository'
import type { UploadSessionService } from './upload-sessions'

export interface RetentionPolicy {
  /** Keep the newest N versions (0 = no count rule). */
  keep: number
  /** Keep versions younger than D days (0 = no age rule). */
  maxAgeDays: number
}

export interface SweepResult {
  expiredSessions: number
  prunedVersions: number
  droppedSnapshots: number
}

export interface FileSweeperDeps {
  sessions: UploadSessionService
  files: FileRepository
  snapshots: UploadProgressRepository
  retention: RetentionPolicy
  intervalMs: number
  deleteKeys(keys: string[]): Promise<void>
  invalidateFile(id: string): Promise<void>
  /** Folds the file figures' pending deltas into their totals, so they never pile up between reads. */
  compactStats?(): Promise<unknown>
  logger: { error(obj: object, msg?: string): void }
}

const BATCH = 100
/** Progress of an upload is worth asking for this long after its last event. */
const SNAPSHOT_TTL_MS = 7 * 24 * 3600_000

export class FileSweeper {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<SweepResult> | undefined

  constructor(private readonly deps: FileSweeperDeps) {}

  start(): void {
    if (this.timer) return
    this.timer = setInterval(() => {
      this.runOnce().catch((err: unknown) => this.deps.logger.error({ err }, 'file sweep failed'))
    }, this.deps.intervalMs)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    this.timer = undefined
    await this.running?.catch(() => {})
  }

  /** One sweep; concurrent calls share it. */
  runOnce(): Promise<SweepResult> {
    this.running ??= this.sweep().finally(() => {
      this.running = undefined
    })
    return this.running
  }

  /** Applies retention to one file: run after each new version, so the count rule holds at once. */
  async pruneFile(fileId: string): Promise<number> {
    return this.prune(await this.deps.files.versionsPastRetention(this.deps.retention, BATCH, fileId))
  }

  private async sweep(): Promise<SweepResult> {
    let expiredSessions = 0
    for (let n = BATCH; n === BATCH; expiredSessions += n) n = await this.deps.sessions.sweepExpired(BATCH)
    let prunedVersions = 0
    for (;;) {
      const due = await this.deps.files.versionsPastRetention(this.deps.retention, BATCH)
      const pruned = await this.prune(due)
      prunedVersions += pruned
      if (due.length < BATCH || pruned === 0) break
    }
    const droppedSnapshots = await this.deps.snapshots.deleteOlderThan(SNAPSHOT_TTL_MS)
    await this.deps.compactStats?.().catch((err: unknown) => this.deps.logger.error({ err }, 'file stats compaction failed'))
    return { expiredSessions, prunedVersions, droppedSnapshots }
  }

  private async prune(due: { fileId: string; number: number }[]): Promise<number> {
    let pruned = 0
    for (const { fileId, number } of due) {
      // Re-checked under the file's lock: it may have become current (a restore) since the query.
      const removed = await this.deps.files.deleteVersion(fileId, number)
      if (removed.outcome !== 'deleted') continue
      pruned++
      await this.deps.deleteKeys(removed.keys)
      await this.deps.invalidateFile(fileId)
    }
    return pruned
  }
}
