export type UploadStage = 'RECEIVING' | 'VALIDATING' | 'OPTIMIZING' | 'STORING' | 'COMPLETED' | 'FAILED'

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
}

/**
 * Topics are scoped by owner: a subscriber only ever sees their own uploads, even if they guess
 * another user's uploadId. mqemitter treats '/', '+' and '#' specially, so both parts are encoded.
 */
export function uploadProgressTopic(ownerId: string, uploadId: string): string {
  return `upload/${encodeURIComponent(ownerId)}/${encodeURIComponent(uploadId)}`
}

export type Publish = (topic: string, payload: unknown) => Promise<void>

const RECEIVING_EVERY_MS = 100
const RECEIVING_EVERY_BYTES = 1024 * 1024

/** Emits the stages of one upload in order, throttling byte progress, and always ends with a terminal event. */
export class UploadProgressReporter {
  private step = 0
  private stage: UploadStage = 'RECEIVING'
  private bytesReceived = 0
  private lastEmitAt = 0
  private lastEmitBytes = 0
  private finished = false

  constructor(
    private readonly publish: Publish,
    private readonly topic: string,
    private readonly uploadId: string,
    private readonly steps: number,
    private readonly bytesTotal: number | null,
    public fileId: string | null,
  ) {}

  enter(stage: Exclude<UploadStage, 'FAILED'>): void {
    this.step++
    this.stage = stage
    this.emit(null)
  }

  bytes(total: number): void {
    this.bytesReceived = total
    const now = Date.now()
    if (now - this.lastEmitAt < RECEIVING_EVERY_MS && total - this.lastEmitBytes < RECEIVING_EVERY_BYTES) return
    this.emit(null)
  }

  completed(): void {
    this.step = this.steps
    this.stage = 'COMPLETED'
    this.emit(null)
    this.finished = true
  }

  failed(message: string): void {
    if (this.finished) return
    this.stage = 'FAILED'
    this.emit(message)
    this.finished = true
  }

  private emit(error: string | null): void {
    this.lastEmitAt = Date.now()
    this.lastEmitBytes = this.bytesReceived
    const withinStep = this.stage === 'RECEIVING' && this.bytesTotal ? Math.min(1, this.bytesReceived / this.bytesTotal) : 0
    const done = this.stage === 'COMPLETED' ? 1 : (Math.max(0, this.step - 1) + withinStep) / this.steps
    const event: UploadProgressEvent = {
      uploadId: this.uploadId,
      fileId: this.fileId,
      stage: this.stage,
      step: Math.max(1, this.step),
      steps: this.steps,
      bytesReceived: this.bytesReceived,
      bytesTotal: this.bytesTotal,
      percent: Math.round(done * 1000) / 10,
      error,
    }
    void this.publish(this.topic, event)
  }
}
