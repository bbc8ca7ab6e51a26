/**
 * CSV import progress on the same uploadProgress(uploadId) subscription as file uploads, with the
 * same event shape: RECEIVING while the file streams in and rows are written, STORING for the
 * last batch, then COMPLETED or FAILED.
 */
import { randomUUID } from 'node:crypto'
import { uploadProgressTopic, type Publish, type UploadProgressEvent } from '../files/upload-progress'

const EVERY_MS = 250
const STEPS = 2

export class ImportProgress {
  private readonly runId = randomUUID()
  private readonly topic: string
  private bytesReceived = 0
  private lastEmitAt = 0
  private finished = false

  constructor(
    private readonly publish: Publish,
    ownerId: string,
    private readonly uploadId: string,
  ) {
    this.topic = uploadProgressTopic(ownerId, uploadId)
  }

  receiving(): void {
    this.emit('RECEIVING', 1, null)
  }

  bytes(total: number): void {
    this.bytesReceived = total
    if (Date.now() - this.lastEmitAt >= EVERY_MS) this.emit('RECEIVING', 1, null)
  }

  storing(): void {
    this.emit('STORING', 2, null)
  }

  completed(): void {
    if (!this.finished) this.emit('COMPLETED', STEPS, null)
    this.finished = true
  }

  failed(message: string): void {
    if (!this.finished) this.emit('FAILED', STEPS, message)
    this.finished = true
  }

  private emit(stage: UploadProgressEvent['stage'], step: number, error: string | null): void {
    this.lastEmitAt = Date.now()
    const done = stage === 'COMPLETED' ? 1 : (step - 1) / STEPS
    const event: UploadProgressEvent = {
      uploadId: this.uploadId,
      fileId: null,
      stage,
      step,
      steps: STEPS,
      bytesReceived: this.bytesReceived,
      bytesTotal: null,
      percent: Math.round(done * 1000) / 10,
      error,
      runId: this.runId,
    }
    // Progress is advisory: a failed publish must not fail the import.
    void this.publish(this.topic, event).catch(() => {})
  }
}
