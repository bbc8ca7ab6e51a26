import { createHash } from 'node:crypto'
import { Transform, type TransformCallback } from 'node:stream'
import { fileTypeFromBuffer } from 'file-type'
import { FileTooLargeError } from '../../lib/errors'

/** file-type needs at most this many bytes to recognise any format it knows. */
const SNIFF_BYTES = 4100

export interface DetectedType {
  mime: string
  ext: string
}

export interface InspectorOptions {
  /** Byte cap before the type is known, and once it is (images usually get a smaller cap). */
  maxBytes: (detected: DetectedType | null) => number
  /** Throws to reject the upload once the type is known (before any byte goes downstream). */
  accept: (detected: DetectedType | null) => void
  onBytes?: (total: number) => void
  /** Second opinion on file-type's answer, for types it cannot tell apart (SVG is XML text). */
  refineType?: (head: Buffer, detected: DetectedType | null) => DetectedType | null
  /** The error for passing the cap; FileTooLargeError unless the cap was something else (a quota). */
  limitError?: (limit: number) => Error
}

/**
 * Sits between the client's stream and storage. It holds back the first bytes until the magic
 * number is sniffed and accepted, so a rejected type never reaches storage; then it counts and
 * hashes every byte, failing as soon as the cap is passed instead of after the fact.
 */
export class UploadInspector extends Transform {
  bytes = 0
  detected: DetectedType | null = null
  /** Settles once the type is known and accepted (or rejected). */
  readonly typeReady: Promise<DetectedType | null>
  private readonly hash = createHash('sha256')
  private head: Buffer[] = []
  private headLength = 0
  private sniffed = false
  private limit: number
  private settleType!: { resolve: (t: DetectedType | null) => void; reject: (e: Error) => void }

  constructor(private readonly options: InspectorOptions) {
    super()
    this.limit = options.maxBytes(null)
    this.typeReady = new Promise((resolve, reject) => {
      this.settleType = { resolve, reject }
    })
    // The promise is also surfaced through the stream error; don't let it count as unhandled.
    this.typeReady.catch(() => {})
  }

  get sha256(): string {
    return this.hash.copy().digest('hex')
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length
    if (this.bytes > this.limit) return callback(this.limitError())
    this.hash.update(chunk)
    this.options.onBytes?.(this.bytes)
    if (this.sniffed) return callback(null, chunk)
    this.head.push(chunk)
    this.headLength += chunk.length
    if (this.headLength < SNIFF_BYTES) return callback()
    this.sniff().then(() => callback(), callback)
  }

  override _flush(callback: TransformCallback): void {
    if (this.sniffed) return callback()
    this.sniff().then(() => callback(), callback)
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.sniffed) this.settleType.reject(err ?? new Error('Upload aborted'))
    callback(err)
  }

  private limitError(): Error {
    return this.options.limitError?.(this.limit) ?? new FileTooLargeError(this.limit)
  }

  private async sniff(): Promise<void> {
    this.sniffed = true
    const head = Buffer.concat(this.head)
    this.head = []
    try {
      const type = await fileTypeFromBuffer(head)
      const detected = type ? { mime: type.mime as string, ext: type.ext as string } : null
      this.detected = this.options.refineType ? this.options.refineType(head, detected) : detected
      this.options.accept(this.detected)
      this.limit = this.options.maxBytes(this.detected)
      if (this.bytes > this.limit) throw this.limitError()
    } catch (err) {
      this.settleType.reject(err as Error)
      throw err
    }
    this.settleType.resolve(this.detected)
    if (head.length > 0) this.push(head)
  }
}
