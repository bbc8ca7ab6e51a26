import type { ProgressSnapshot } from '../../infra/db/upload-progress-repository'

/** RECEIVING, then one stage per processing step; COMPLETED and FAILED are terminal. */
export type UploadStage = 'RECEIVING' | 'VALIDATING' | 'CHECKSUMMING' | 'OPTIMIZING' | 'CREATING_VARIANTS' | 'STORING' | 'COMPLETED' | 'FAILED'

export interface UploadProgressEvent {
  uploadId: string
  fileId: string | null
  stage: UploadStage
  step: number
  steps: number
  bytesReceived: number
  bytesTotal: number | null
  percent: number
  error: string | null
  /** Internal (not in the schema): tells two uploads apart that reuse one uploadId. */
  runId: string
}

/**
 * Topics are scoped by owner: a subscriber only ever sees their own uploads, even if they guess
 * another user's uploadId. mqemitter treats '/', '+' and '#' specially, so both parts are encoded.
 */
export function uploadProgressTopic(ownerId: string, uploadId: string): string {
  return `upload/${encodeURIComponent(ownerId)}/${encodeURIComponent(uploadId)}`
}

export type Publish = (topic: string, payload: unknown) => Promise<void>

export interface ProgressSink {
  publish: Publish
  snapshots: {
    save(ownerId: string, uploadId: string, snapshot: ProgressSnapshot): Promise<void>
  }
  logger: { warn(obj: object, msg?: string): void }
}

export interface ProgressTarget {
  ownerId: string
  uploadId: string
  runId: string
  fileId: string | null
  steps: number
  bytesTotal: number | null
}

/** Byte and within-step progress goes out at most this often; stage changes and the end at once. */
export const PROGRESS_INTERVAL_MS = 250

export function isTerminal(event: Pick<UploadProgressEvent, 'stage'>): boolean {
  return event.stage === 'COMPLETED' || event.stage === 'FAILED'
}

/**
 * Emits the stages of one upload in order, throttled. Each event is saved as the upload's latest
 * state before it is published: a subscriber reads that state after subscribing, so whatever it
 * misses live it finds there, and a terminal event can never be lost.
 */
export class UploadProgressReporter {
  private step = 1
  private stage: UploadStage = 'RECEIVING'
  private within = 0
  private bytesReceived = 0
  private lastEmitAt = 0
  private finished = false
  private chain: Promise<void> = Promise.resolve()

  constructor(
    private readonly sink: ProgressSink,
    private readonly target: ProgressTarget,
  ) {}

  get fileId(): string | null {
    return this.target.fileId
  }

  setSteps(steps: number): void {
    this.target.steps = steps
  }

  /** Starts a stage at a 1-based step index. */
  enter(stage: Exclude<UploadStage, 'COMPLETED' | 'FAILED'>, step: number, bytesReceived?: number): Promise<void> {
    this.stage = stage
    this.step = step
    this.within = 0
    if (bytesReceived !== undefined) this.bytesReceived = bytesReceived
    return this.emit(null)
  }

  /** Bytes received so far (RECEIVING). */
  bytes(total: number): void {
    this.bytesReceived = total
    this.maybeEmit()
  }

  /** How far the current step is, 0-1 (long steps such as a checksum over a large file). */
  fraction(done: number): void {
    this.within = Math.max(0, Math.min(1, done))
    this.maybeEmit()
  }

  /** Sends the current state now, throttle or not, and resolves once it is out. */
  flush(): Promise<void> {
    return this.emit(null)
  }

  completed(): Promise<void> {
    if (this.finished) return this.chain
    this.stage = 'COMPLETED'
    this.step = this.target.steps
    const done = this.emit(null)
    this.finished = true
    return done
  }

  failed(message: string): Promise<void> {
    if (this.finished) return this.chain
    this.stage = 'FAILED'
    const done = this.emit(message)
    this.finished = true
    return done
  }

  private maybeEmit(): void {
    if (Date.now() - this.lastEmitAt < PROGRESS_INTERVAL_MS) return
    void this.emit(null)
  }

  private emit(error: string | null): Promise<void> {
    if (this.finished) return this.chain
    this.lastEmitAt = Date.now()
    const { steps, bytesTotal } = this.target
    const within = this.stage === 'RECEIVING' ? (bytesTotal ? Math.min(1, this.bytesReceived / bytesTotal) : 0) : this.within
    const done = this.stage === 'COMPLETED' ? 1 : (Math.max(0, this.step - 1) + within) / steps
    const event: UploadProgressEvent = {
      uploadId: this.target.uploadId,
      fileId: this.target.fileId,
      stage: this.stage,
      step: Math.min(Math.max(1, this.step), steps),
      steps,
      bytesReceived: this.bytesReceived,
      bytesTotal,
      // Floored, so only COMPLETED ever says 100.
      percent: this.stage === 'COMPLETED' ? 100 : Math.floor(done * 1000) / 10,
      error,
      runId: this.target.runId,
    }
    const { ownerId, uploadId } = this.target
    const snapshot = { runId: event.runId, event: { ...event }, percent: event.percent, terminal: isTerminal(event) }
    this.chain = this.chain
      .then(() => this.sink.snapshots.save(ownerId, uploadId, snapshot))
      .catch((err: unknown) => this.sink.logger.warn({ err, uploadId }, 'could not save upload progress'))
      .then(() => {
        // Published in order but not awaited: a bus that is down (Redis) must not hold up the upload.
        void this.sink.publish(uploadProgressTopic(ownerId, uploadId), event).catch(() => {})
      })
    return this.chain
  }
}
