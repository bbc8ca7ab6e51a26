/**
 * Runs the processing steps of uploaded versions. The steps are rows (see the table's comment);
 * this class only claims and runs them, so any number of instances share the work:
 *
 *   - `kick(versionId)` drives one version right away in this process (the instance that received
 *     the upload), step after step, without waiting for a poll;
 *   - the worker loop (`start`) claims whatever is due anywhere: retries whose backoff passed, and
 *     steps whose lease expired because their instance died. That is how a crash resumes at the
 *     first step not done.
 */
import type { FileRepository, FileRow, FileVersionRow } from '../../infra/db/file-repository'
import type { FileStepRepository, FileStepRow } from '../../infra/db/file-step-repository'
import { createLimiter } from '../../lib/concurrency'
import { AppError } from '../../lib/errors'
import type { Instrumentation } from '../instrumentation'
import { STAGE_OF_STEP, type StepContext, type StepName, type StepOutcome } from './processing-steps'
import { isPermanent } from './storage-call'
import { UploadProgressReporter, type ProgressSink } from './upload-progress'

export interface PipelineOptions {
  maxAttempts: number
  leaseMs: number
  /** First retry delay; doubles per attempt, capped at MAX_BACKOFF_MS. */
  backoffMs: number
  /** Versions this instance processes at once. */
  concurrency: number
  pollMs: number
}

export type PipelineOutcome = { status: 'ready'; version: FileVersionRow } | { status: 'failed'; version: FileVersionRow; error: Error }

export interface PipelineLogger {
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

export interface PipelineDeps {
  steps: FileStepRepository
  files: FileRepository
  handlers: Record<StepName, (ctx: StepContext) => Promise<StepOutcome>>
  progress: ProgressSink
  logger: PipelineLogger
  /** Cleans up after a failure: removes the objects the failed processing wrote. */
  deleteKeys(keys: string[]): Promise<void>
  /** After a version became ready or failed: cache invalidation, retention. */
  onSettled?(version: Pick<FileVersionRow, 'fileId' | 'number'>): Promise<void>
  options: PipelineOptions
  instrumentation?: Pick<Instrumentation, 'pipelineStep'>
}

type Waiter = (outcome: PipelineOutcome | undefined) => void
type Loaded = { version: FileVersionRow; file: FileRow; steps: FileStepRow[] }

const MAX_BACKOFF_MS = 5 * 60_000
/** How often a waiter checks the database when another instance drives the version. */
const WAIT_POLL_MS = 500

export class FilePipeline {
  private readonly drives
  private readonly driving = new Set<string>()
  private readonly inFlight = new Set<Promise<void>>()
  private readonly retryTimers = new Set<NodeJS.Timeout>()
  private readonly heartbeats = new Set<NodeJS.Timeout>()
  private readonly waiters = new Map<string, Set<Waiter>>()
  private polling = false
  /** Shutting down: no new polls or retries, but drives in flight (a request waiting on one) go on. */
  private draining = false
  /** Shut down: nothing runs any more here; what is left is another instance's to claim. */
  private stopped = false
  private pollTimer: NodeJS.Timeout | undefined

  constructor(private readonly deps: PipelineDeps) {
    this.drives = createLimiter(deps.options.concurrency)
  }

  /** Starts processing a version in this process; a no-op if it is already being driven here. */
  kick(versionId: string, claimed?: FileStepRow): void {
    if (this.stopped || (!claimed && this.driving.has(versionId))) return
    this.driving.add(versionId)
    const run = this.drives
      .run(() => this.drive(versionId, claimed))
      .catch((err: unknown) => this.deps.logger.error({ err, versionId }, 'file processing failed unexpectedly'))
      .finally(() => {
        this.driving.delete(versionId)
        this.inFlight.delete(run)
      })
    this.inFlight.add(run)
  }

  /**
   * The outcome once the version is ready or failed, or undefined if that takes longer than timeoutMs.
   * `justKicked` skips the first look at the database: a version kicked a moment ago is not done yet.
   */
  async waitFor(versionId: string, timeoutMs: number, justKicked = false): Promise<PipelineOutcome | undefined> {
    const settled = justKicked && this.driving.has(versionId) ? undefined : await this.settledOutcome(versionId)
    if (settled || timeoutMs <= 0 || this.stopped) return settled
    return new Promise((resolve) => {
      let poll: NodeJS.Timeout | undefined
      const listeners = this.waiters.get(versionId) ?? new Set()
      this.waiters.set(versionId, listeners)
      const done: Waiter = (outcome) => {
        clearTimeout(timer)
        clearTimeout(poll)
        listeners.delete(done)
        if (listeners.size === 0) this.waiters.delete(versionId)
        resolve(outcome)
      }
      const timer = setTimeout(() => done(undefined), timeoutMs)
      // Another instance may be driving it (a worker that claimed a retry): then only the database knows.
      const check = () => {
        poll = setTimeout(async () => {
          if (!this.driving.has(versionId)) {
            const outcome = await this.settledOutcome(versionId).catch(() => undefined)
            if (outcome) return done(outcome)
          }
          if (listeners.has(done)) check()
        }, WAIT_POLL_MS)
      }
      listeners.add(done)
      check()
    })
  }

  /** Claims due steps anywhere (retries, expired leases) up to the free capacity; returns how many. */
  async runOnce(): Promise<number> {
    const free = this.deps.options.concurrency - this.drives.active - this.drives.pending
    if (free <= 0 || this.draining) return 0
    const claimed = await this.deps.steps.claim(free, this.deps.options.leaseMs)
    for (const step of claimed) this.kick(step.versionId, step)
    return claimed.length
  }

  start(): void {
    if (this.polling) return
    this.polling = true
    this.draining = false
    this.stopped = false
    this.schedulePoll(0)
  }

  /**
   * Stops claiming and lets the drives in flight finish for at most `graceMs` (an upload request may
   * be waiting on one). Whatever is left then is picked up by another instance once its lease runs out.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.polling = false
    this.draining = true
    clearTimeout(this.pollTimer)
    for (const t of this.retryTimers) clearTimeout(t)
    this.retryTimers.clear()
    let timer: NodeJS.Timeout | undefined
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, graceMs)
      timer.unref()
    })
    await Promise.race([Promise.allSettled([...this.inFlight]), grace])
    clearTimeout(timer)
    this.stopped = true
    // A step still running after the grace is abandoned: its lease lapses and another instance resumes it.
    for (const h of this.heartbeats) clearInterval(h)
    this.heartbeats.clear()
    // Requests still waiting answer with the file as it is (PROCESSING) instead of waiting out their timeout.
    for (const listeners of this.waiters.values()) for (const listener of [...listeners]) listener(undefined)
  }

  private schedulePoll(delayMs: number): void {
    if (!this.polling) return
    this.pollTimer = setTimeout(() => void this.poll(), delayMs)
    // A pending poll must not keep a process alive that is otherwise done (scripts, tests).
    this.pollTimer.unref()
  }

  private async poll(): Promise<void> {
    let claimed = 0
    try {
      claimed = await this.runOnce()
    } catch (err) {
      this.deps.logger.error({ err }, 'file pipeline poll failed')
    }
    this.schedulePoll(claimed > 0 ? 0 : this.deps.options.pollMs)
  }

  private async drive(versionId: string, claimed?: FileStepRow): Promise<void> {
    let step = claimed
    let loaded: Loaded | undefined
    for (;;) {
      if (this.stopped) return
      step ??= (await this.deps.steps.claim(1, this.deps.options.leaseMs, versionId))[0]
      if (!step) {
        const state = await this.deps.steps.state(versionId)
        // A retry that is not due yet: come back then, without holding a drive slot meanwhile.
        if (state.kind === 'waiting') this.retryAt(versionId, state.runAt)
        return
      }
      // Read once per drive and kept current below: a claimed step means nobody else is driving this version.
      loaded ??= await this.load(versionId)
      if (!loaded) return
      const next = await this.execute(step, loaded)
      if (!next) return
      step = undefined
    }
  }

  private async load(versionId: string): Promise<Loaded | undefined> {
    const version = await this.deps.files.findVersionById(versionId)
    const file = version && (await this.deps.files.findById(version.fileId))
    if (!version || !file || version.status !== 'processing') return undefined
    return { version, file, steps: await this.deps.steps.list(versionId) }
  }

  private retryAt(versionId: string, runAt: Date): void {
    if (this.draining) return
    const timer = setTimeout(() => {
      this.retryTimers.delete(timer)
      this.kick(versionId)
    }, Math.max(0, runAt.getTime() - Date.now()))
    timer.unref()
    this.retryTimers.add(timer)
  }

  /** Runs one claimed step; true when the version has more to do. */
  private async execute(step: FileStepRow, loaded: Loaded): Promise<boolean> {
    const { steps, handlers, options, logger } = this.deps
    const { version, file, steps: all } = loaded
    const active = all.filter((s) => s.status !== 'skipped')
    const reporter = new UploadProgressReporter(this.deps.progress, {
      ownerId: file.ownerId,
      uploadId: version.uploadId ?? version.id,
      runId: version.id,
      fileId: file.id,
      // RECEIVING is step 1; every step that applies follows.
      steps: 1 + active.length,
      bytesTotal: version.originalSize,
    })
    const name = step.name as StepName

    if (step.attempts > options.maxAttempts) {
      // Each earlier attempt died with its worker (a lease expired every time): give up rather than loop.
      await this.fail(step, file, version, reporter, new Error(`gave up after ${options.maxAttempts} attempts`), true)
      return false
    }
    await reporter.enter(STAGE_OF_STEP[name], 2 + active.findIndex((s) => s.id === step.id), version.originalSize)
    const results = Object.fromEntries(all.filter((s) => s.status === 'done' && s.result).map((s) => [s.name, s.result!]))
    const heartbeat = setInterval(() => {
      steps.heartbeat(step, options.leaseMs).catch((err: unknown) => logger.warn({ err, stepId: step.id }, 'lease heartbeat failed'))
    }, Math.max(50, Math.floor(options.leaseMs / 3)))
    heartbeat.unref()
    this.heartbeats.add(heartbeat)
    const stopHeartbeat = () => {
      clearInterval(heartbeat)
      this.heartbeats.delete(heartbeat)
    }
    let outcome: StepOutcome
    try {
      outcome = await handlers[name]({ file, version, results, progress: (f) => reporter.fraction(f) })
    } catch (err) {
      stopHeartbeat()
      const permanent = isPermanent(err)
      if (permanent || step.attempts >= options.maxAttempts) {
        await this.fail(step, file, version, reporter, err as Error, !permanent)
        return false
      }
      const delay = Math.min(MAX_BACKOFF_MS, options.backoffMs * 2 ** (step.attempts - 1)) * (0.8 + Math.random() * 0.4)
      logger.warn({ err, versionId: version.id, step: name, attempt: step.attempts }, 'file processing step failed; retrying')
      await steps.retryLater(step, Math.round(delay), describe(err))
      this.deps.instrumentation?.pipelineStep(name, 'retry')
      return true
    }
    stopHeartbeat()
    if (this.stopped) return false
    const toSkip = (outcome.skip ?? []).filter((n) => all.some((s) => s.name === n && s.status === 'pending'))
    if (toSkip.length > 0) await steps.skip(version.id, toSkip)
    // Fenced: if our lease ran out and another worker took the step over, its result stands, not ours.
    if (!(await steps.finish(step, outcome.result))) {
      await this.discardOrphaned(version, name, outcome)
      return false
    }
    this.deps.instrumentation?.pipelineStep(name, 'success')
    for (const s of all) {
      if (s.id === step.id) Object.assign(s, { status: 'done', result: outcome.result })
      else if (s.status === 'pending' && outcome.skip?.includes(s.name as StepName)) s.status = 'skipped'
    }
    if (name !== 'finalize') return true
    await reporter.completed()
    await this.settle(version)
    return false
  }

  /**
   * A step whose result could not be recorded: if the version is gone (its file was deleted while the
   * step ran) or failed meanwhile, no row will ever name the keys the step wrote, so they are deleted
   * here. A version still processing or ready belongs to the worker that took the step over: keys are
   * fixed by the version id, so they are its keys too and stay.
   */
  private async discardOrphaned(version: FileVersionRow, name: StepName, outcome: StepOutcome): Promise<void> {
    const keys = (outcome.result.keys as string[] | undefined) ?? []
    if (keys.length === 0) return
    try {
      const current = await this.deps.files.findVersionById(version.id)
      if (current && current.status !== 'failed') return
      this.deps.logger.warn({ versionId: version.id, step: name, keys }, 'version gone while a step ran; deleting what the step wrote')
      await this.deps.deleteKeys(keys)
    } catch (err) {
      this.deps.logger.warn({ err, versionId: version.id, step: name, keys }, 'could not delete what a step of a deleted version wrote')
    }
  }

  private async fail(step: FileStepRow, file: FileRow, version: FileVersionRow, reporter: UploadProgressReporter, err: Error, exhausted: boolean): Promise<void> {
    const { steps, files, options } = this.deps
    // A client's error (bad bytes) says what is wrong; an outage that outlasted the retries only that
    // processing gave up. The technical detail stays in the step row and the log.
    const clientError = !exhausted && err instanceof AppError
    const message = clientError ? err.message : `Processing failed after ${options.maxAttempts} attempts, please upload again`
    const code = clientError ? err.code : 'PROCESSING_FAILED'
    if (exhausted) this.deps.logger.error({ err, versionId: version.id, step: step.name }, 'file processing gave up')
    if (!(await steps.fail(step, describe(err)))) return
    this.deps.instrumentation?.pipelineStep(step.name as StepName, 'failed')
    const failed = await files.failVersion(version.id, { message, code }, await steps.writtenKeys(version.id))
    if (failed) await this.deps.deleteKeys(failed.keys)
    await reporter.failed(message)
    await this.settle(version, err)
  }

  private async settle(processed: FileVersionRow, err?: Error): Promise<void> {
    await this.deps.onSettled?.(processed).catch((e: unknown) => this.deps.logger.warn({ err: e, fileId: processed.fileId }, 'after-processing work failed'))
    const listeners = this.waiters.get(processed.id)
    if (!listeners) return
    const version = await this.deps.files.findVersionById(processed.id)
    if (!version) return
    const outcome: PipelineOutcome = version.status === 'ready' ? { status: 'ready', version } : { status: 'failed', version, error: err ?? new Error(version.error ?? 'failed') }
    for (const listener of [...listeners]) listener(outcome)
  }

  private async settledOutcome(versionId: string): Promise<PipelineOutcome | undefined> {
    const version = await this.deps.files.findVersionById(versionId)
    if (!version || version.status === 'processing') return undefined
    return version.status === 'ready' ? { status: 'ready', version } : { status: 'failed', version, error: new Error(version.error ?? 'Processing failed') }
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}`.slice(0, 2000) : String(err).slice(0, 2000)
}
