/**
 * Chunked, resumable uploads. A session is a row plus the storage's multipart upload (S3) or part
 * files (disk); nothing lives in memory, so parts may go to any instance, in any order, in parallel,
 * and a client resumes after its own restart or the server's by asking which parts arrived.
 */
import { randomUUID } from 'node:crypto'
import { pipeline, type Readable, Transform, type TransformCallback } from 'node:stream'
import type { FileRepository, FileRow, FileVersionRow, NewFileVersion } from '../../infra/db/file-repository'
import { CompletingLeaseLostError, type UploadSessionRepository, type UploadSessionRow } from '../../infra/db/upload-session-repository'
import { ObjectNotFoundError, type ObjectStorage } from '../../infra/storage/types'
import { AppError, ConflictError, FileTooLargeError, NotFoundError, QuotaExceededError, ServiceUnavailableError, UnsupportedFileTypeError, ValidationError } from '../../lib/errors'
import type { Viewer } from '../auth/jwt'
import type { Instrumentation } from '../instrumentation'
import { canonicalType, checkType, cleanFilename, isGenericType, isImageType, refineSvg, SVG_TYPE, versionKeys } from './file-types'
import { expectedPartSize, planParts } from './part-plan'
import type { FilePipeline } from './processing-pipeline'
import { planSteps } from './processing-steps'
import { storageCall } from './storage-call'
import { UploadInspector } from './upload-inspector'
import { UploadProgressReporter, type ProgressSink } from './upload-progress'
import { isUuid } from '../../lib/uuid'

export interface StartUploadInput {
  filename: string
  size: number
  mimeType?: string | null
  sha256?: string | null
  /** Upload a new version of this file instead of a new file. */
  fileId?: string | null
}

export interface UploadSessionView extends UploadSessionRow {
  receivedParts: number[]
  bytesReceived: number
}

export interface SessionLimits {
  allowedTypes: string[]
  allowSvg: boolean
  maxImageBytes: number
  sessionMaxBytes: number
  partBytes: number
  sessionTtlHours: number
  quotaBytes: number
  variants: { name: string }[]
}

export interface UploadSessionDeps {
  sessions: UploadSessionRepository
  files: FileRepository
  storage: ObjectStorage
  pipeline: FilePipeline
  progress: ProgressSink
  limits: SessionLimits
  /** Access check of the target file of a new version: someone else's file is NotFound. */
  getFile(viewer: Viewer, id: string): Promise<FileRow>
  invalidateFile(id: string): Promise<void>
  logger: { warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void }
  instrumentation?: Pick<Instrumentation, 'uploadReceived'>
}

const SHA256 = /^[0-9a-f]{64}$/
/**
 * `completing` is a lease held by the request completing the session (updated_at is when it was
 * taken). One older than this lost its instance mid-complete: another completeUpload takes it over,
 * abortUpload accepts it, and the sweeper gives it back to `uploading`. It must outlast the longest
 * complete: S3 may take minutes to assemble 10,000 parts (it answers 200 at once and keeps the
 * connection busy until done), and on disk a 10 GiB session (the default maximum) is read, hashed
 * and written once, a minute or two. A holder that outlives its lease anyway cannot record the
 * version (markCompleted is fenced by the lease) and gets a ConflictError.
 */
export const COMPLETING_LEASE_MS = 10 * 60_000
/** How long an aborted session's failed storage cleanup waits before the sweeper runs it again. */
const ABORT_CLEANUP_RETRY_MS = 60_000
const MAX_LISTED_PARTS = 20

export class UploadSessionService {
  constructor(private readonly deps: UploadSessionDeps) {}

  async start(viewer: Viewer, input: StartUploadInput): Promise<UploadSessionView> {
    const { limits, storage, sessions, files } = this.deps
    const filename = cleanFilename(input.filename)
    const declared = canonicalType(input.mimeType ?? '')
    const allowed = limits.allowSvg ? [...limits.allowedTypes, SVG_TYPE] : limits.allowedTypes
    if (!isGenericType(declared) && !allowed.includes(declared)) {
      throw new UnsupportedFileTypeError(`Files of type ${declared} are not allowed`, declared, limits.allowedTypes)
    }
    if (!Number.isSafeInteger(input.size) || input.size <= 0) throw ValidationError.field(['input', 'size'], 'size must be a whole number of bytes greater than 0')
    const maxBytes = isImageType(declared) ? Math.min(limits.maxImageBytes, limits.sessionMaxBytes) : limits.sessionMaxBytes
    if (input.size > maxBytes) throw new FileTooLargeError(maxBytes)
    const sha256 = input.sha256 == null || input.sha256 === '' ? null : input.sha256.toLowerCase()
    if (sha256 !== null && !SHA256.test(sha256)) throw ValidationError.field(['input', 'sha256'], 'sha256 must be 64 hexadecimal characters')
    const target = input.fileId ? await this.deps.getFile(viewer, input.fileId) : undefined
    // A new version counts against the file's owner, whoever uploads it (an admin, say).
    const quota = { ownerId: target?.ownerId ?? viewer.id, limitBytes: limits.quotaBytes, addingBytes: input.size }
    // Cheap early refusal, before a multipart upload is created; the check that counts is repeated under the lock.
    if (limits.quotaBytes > 0) {
      const used = await files.usage(quota.ownerId)
      if (used + input.size > limits.quotaBytes) throw new QuotaExceededError(`Storing ${input.size} more bytes would exceed your quota of ${limits.quotaBytes} bytes`, limits.quotaBytes, used)
    }

    const { partSize, partCount } = planParts(input.size, limits.partBytes)
    const id = randomUUID()
    const fileId = target?.id ?? randomUUID()
    const versionId = randomUUID()
    const storageKey = versionKeys.source(fileId, versionId)
    const { uploadId } = await storageCall(() => storage.createMultipartUpload(storageKey, { contentType: isGenericType(declared) ? undefined : declared }))
    let row: UploadSessionRow
    try {
      row = await files.withQuota(quota, (tx) =>
        sessions.create(
          {
            id,
            ownerId: viewer.id,
            filename,
            declaredType: declared,
            size: input.size,
            sha256,
            targetFileId: target?.id ?? null,
            fileId,
            versionId,
            partSize,
            partCount,
            storageKey,
            multipartUploadId: uploadId,
            expiresAt: this.nextExpiry(),
          },
          tx,
        ),
      )
    } catch (err) {
      await storage.abortMultipartUpload(storageKey, uploadId).catch(() => {})
      throw err
    }
    await this.reporter(row).enter('RECEIVING', 1, 0)
    return { ...row, receivedParts: [], bytesReceived: 0 }
  }

  async get(viewer: Viewer, id: string): Promise<UploadSessionView> {
    return this.view(await this.owned(viewer, id))
  }

  /**
   * Streams one part straight to storage. The part must be exactly the size its number calls for;
   * re-sending a number replaces the earlier part. The first part is sniffed before any byte is
   * stored, so content that contradicts the declared type is refused at once.
   */
  async uploadChunk(viewer: Viewer, id: string, partNumber: number, stream: Readable): Promise<UploadSessionView> {
    let session: UploadSessionRow
    try {
      session = await this.owned(viewer, id)
      this.assertReceiving(session)
      if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > session.partCount) {
        throw ValidationError.field(['partNumber'], `partNumber must be between 1 and ${session.partCount}`)
      }
    } catch (err) {
      stream.resume()
      throw err
    }
    const { storage, sessions, limits } = this.deps
    const expected = expectedPartSize(session, partNumber)
    // A sum in the database: each part of a many-part upload would otherwise fetch every part row.
    const others = await sessions.bytesReceived(id, partNumber)
    const reporter = this.reporter(session)
    const meter = new PartMeter(partNumber, expected, (n) => reporter.bytes(others + n))
    const started = performance.now()
    const received = (ok: boolean) => this.deps.instrumentation?.uploadReceived('part', meter.bytes, (performance.now() - started) / 1000, ok)
    const stages: (Readable | Transform)[] = [stream, meter]
    if (partNumber === 1) {
      const allowed = limits.allowSvg ? [...limits.allowedTypes, SVG_TYPE] : limits.allowedTypes
      stages.push(
        new UploadInspector({
          maxBytes: () => expected,
          accept: (t) => checkType(t, session.declaredType, allowed),
          refineType: (head, t) => refineSvg(head, t, limits.allowSvg, limits.allowedTypes),
        }),
      )
    }
    const body = stages.at(-1) as Readable
    let streamError: unknown
    pipeline(stages as never, (err: unknown) => {
      if (err) streamError = err
    })
    let stored: { etag: string; size: number }
    try {
      stored = await storage.uploadPart(session.storageKey, session.multipartUploadId, partNumber, body, expected)
    } catch (err) {
      received(false)
      body.destroy()
      stream.resume()
      const cause = meter.error ?? (streamError instanceof AppError ? streamError : undefined) ?? err
      if (cause instanceof AppError) throw cause
      if (cause instanceof ObjectNotFoundError) throw await this.noMultipartUpload(session)
      this.deps.logger.warn({ err: cause, sessionId: id, partNumber }, 'storing an upload part failed')
      throw new ServiceUnavailableError('Storage is unavailable, please send the part again', { cause })
    }
    received(true)
    if (stored.size !== expected) throw ValidationError.field(['chunk'], `Part ${partNumber} must be exactly ${expected} bytes (stored ${stored.size})`)
    const recorded = await sessions.recordPart(id, { partNumber, etag: stored.etag, size: stored.size }, this.nextExpiry())
    if (!recorded) throw new ConflictError('The upload session no longer accepts parts')
    const view = await this.view((await sessions.findById(id))!)
    reporter.bytes(view.bytesReceived)
    return view
  }

  /**
   * Assembles the parts, checks the total size, records the version and hands it to the pipeline
   * (which verifies or computes the sha256). Completing twice returns the same file.
   */
  async complete(viewer: Viewer, id: string): Promise<{ file: FileRow; version: FileVersionRow }> {
    const { sessions, storage, files, limits } = this.deps
    const session = await this.owned(viewer, id)
    if (session.status === 'completed') return this.completedResult(session)
    if (session.status !== 'completing') this.assertReceiving(session)
    // Takes the `completing` lease, or takes over one whose holder died: re-running is safe, since a
    // multipart upload assembled before is found by the head below, and only one taker wins the UPDATE.
    const claimed = await sessions.transition(id, ['uploading'], 'completing', {}, { staleCompletingMs: COMPLETING_LEASE_MS })
    if (!claimed) return this.completedOrConflict(id)
    const lease = claimed.updatedAt
    // Each way out of `completing` is taken only while the lease is still ours; false when it was taken over.
    const giveBack = async () => Boolean(await sessions.transition(id, ['completing'], 'uploading', {}, { lease }))

    const parts = await sessions.listParts(id)
    const have = new Set(parts.map((p) => p.partNumber))
    const missing: number[] = []
    for (let n = 1; n <= session.partCount && missing.length <= MAX_LISTED_PARTS; n++) if (!have.has(n)) missing.push(n)
    if (missing.length > 0) {
      await giveBack()
      const list = missing.slice(0, MAX_LISTED_PARTS).join(', ') + (missing.length > MAX_LISTED_PARTS ? ', …' : '')
      throw ValidationError.field(['sessionId'], `Parts missing: ${list} (of ${session.partCount})`)
    }

    let size: number
    try {
      size = (await storage.completeMultipartUpload(session.storageKey, session.multipartUploadId, parts.map((p) => ({ partNumber: p.partNumber, etag: p.etag })))).size
    } catch (err) {
      // A complete that succeeded before its answer was lost leaves the object and no multipart upload.
      const head = err instanceof ObjectNotFoundError ? await storage.head(session.storageKey).catch(() => null) : null
      if (!head) {
        // Lost the lease: whoever took over may well have assembled (and removed) the parts meanwhile.
        if (!(await giveBack())) return this.completedOrConflict(id)
        if (err instanceof AppError) throw err
        this.deps.logger.warn({ err, sessionId: id }, 'completing a multipart upload failed')
        throw new ServiceUnavailableError('Storage is unavailable, please retry completing the upload', { cause: err })
      }
      size = head.size
    }
    if (size !== session.size) {
      if (!(await this.failSession(session, lease, `The assembled file has ${size} bytes, not the ${session.size} declared`))) return this.completedOrConflict(id)
      throw ValidationError.field(['sessionId'], `The assembled file has ${size} bytes, not the ${session.size} declared`)
    }

    const version: NewFileVersion = {
      id: session.versionId,
      filename: session.filename,
      status: 'processing',
      mimeType: isGenericType(session.declaredType) ? 'application/octet-stream' : session.declaredType,
      declaredType: session.declaredType,
      size: session.size,
      sha256: '',
      originalSize: session.size,
      originalSha256: session.sha256 ?? '',
      storageKey: session.storageKey,
      uploadId: session.id,
      createdBy: viewer.id,
    }
    const steps = planSteps(isGenericType(session.declaredType) ? null : session.declaredType, limits)
    // The session's reservation turns into the version in one transaction, so nothing is counted twice.
    // A new version counts against its file's owner, whoever uploads it (usage() counts the session there too).
    const target = session.targetFileId ? await files.findById(session.targetFileId) : undefined
    const quota = { ownerId: target?.ownerId ?? session.ownerId, limitBytes: limits.quotaBytes, addingBytes: session.size, excludeSessionId: session.id }
    const afterInsert = (tx: Parameters<typeof sessions.markCompleted>[0]) => sessions.markCompleted(tx, session.id, lease)
    let result: { file: FileRow; version: FileVersionRow } | undefined
    try {
      result = session.targetFileId
        ? await files.appendVersion(session.targetFileId, version, { makeCurrent: false, steps, quota, afterInsert })
        : await files.createWithVersion({ id: session.fileId, ownerId: session.ownerId, filename: session.filename }, version, { steps, quota, afterInsert })
    } catch (err) {
      // Outlived its lease (markCompleted refused, or the taker's version was there first): the taker answers.
      const mine = err instanceof CompletingLeaseLostError ? false : err instanceof QuotaExceededError ? await this.failSession(session, lease, err.message) : await giveBack()
      if (!mine) return this.completedOrConflict(id)
      throw err
    }
    if (!result) {
      if (!(await this.failSession(session, lease, 'The file was deleted during the upload'))) return this.completedOrConflict(id)
      throw new NotFoundError('File', session.targetFileId ?? undefined)
    }
    if (session.targetFileId) await this.deps.invalidateFile(session.targetFileId)
    this.deps.pipeline.kick(session.versionId)
    return result
  }

  /**
   * Aborts the session and removes its parts, and the assembled object a failed or interrupted complete
   * left; aborting again is a no-op. A `completing` session is refused until its lease ran out.
   */
  async abort(viewer: Viewer, id: string): Promise<UploadSessionView> {
    const { sessions } = this.deps
    const session = await this.owned(viewer, id)
    if (session.status === 'expired') return this.view(session)
    // Aborting again finishes a cleanup that storage failed half-way (the sweeper would, later).
    if (session.status === 'aborted') {
      if (await sessions.hasParts(id)) await this.releaseStorage(session)
      return this.view(session)
    }
    const aborted = await sessions.transition(id, ['uploading', 'failed'], 'aborted', {}, { staleCompletingMs: COMPLETING_LEASE_MS })
    if (!aborted) {
      const current = await sessions.findById(id)
      if (current?.status === 'aborted' || current?.status === 'expired') return this.view(current)
      throw new ConflictError(`The upload session is ${current?.status === 'completing' ? 'being completed' : (current?.status ?? 'gone')}`)
    }
    await this.releaseStorage(session)
    await this.reporter(session).failed('The upload was aborted')
    return this.view(aborted)
  }

  /**
   * Removes what an aborted or expired session left in storage: the multipart upload, and the object
   * a complete may have assembled before failing (or dying) unless a version took it over. The part
   * rows go last, so a cleanup that failed half-way is found (`hasParts`) and run again; each step is
   * idempotent. Storage failures throw ServiceUnavailableError.
   */
  private async releaseStorage(session: UploadSessionRow): Promise<void> {
    const { sessions, storage, files } = this.deps
    await storageCall(() => storage.abortMultipartUpload(session.storageKey, session.multipartUploadId))
    if (!(await files.findVersionById(session.versionId))) await storageCall(() => storage.delete(session.storageKey))
    await sessions.deleteParts(session.id)
  }

  /**
   * Gives sessions whose instance died mid-complete back to `uploading` (with time left to complete
   * them), then aborts expired sessions' multipart uploads so no orphan parts are left; returns how
   * many expired.
   */
  async sweepExpired(limit = 100): Promise<number> {
    const { sessions, logger } = this.deps
    for (const session of await sessions.releaseStaleCompleting(limit, COMPLETING_LEASE_MS, this.nextExpiry())) {
      logger.warn({ sessionId: session.id }, 'an upload session was left completing by a request that died; it can be completed again')
    }
    const expired = await sessions.claimExpired(limit)
    for (const session of expired) {
      try {
        await this.releaseStorage(session)
        await this.reporter(session).failed('The upload session expired')
      } catch (err) {
        logger.warn({ err, sessionId: session.id }, 'could not clean up an expired upload session; retrying at the next sweep')
        await sessions.transition(session.id, ['expired'], 'uploading').catch(() => {})
      }
    }
    // Aborts whose storage cleanup failed (and was not retried by aborting again), a minute on.
    for (const session of await sessions.claimUncleanAborted(limit, ABORT_CLEANUP_RETRY_MS)) {
      await this.releaseStorage(session).catch((err: unknown) => logger.warn({ err, sessionId: session.id }, 'could not clean up an aborted upload session; retrying at the next sweep'))
    }
    return expired.length
  }

  private async owned(viewer: Viewer, id: string): Promise<UploadSessionRow> {
    const session = isUuid(id) ? await this.deps.sessions.findById(id) : undefined
    // Someone else's session is "not found": ids must not be probeable.
    if (!session || session.ownerId !== viewer.id) throw new NotFoundError('UploadSession', id)
    return session
  }

  /**
   * The multipart upload is gone under a part. Normally the session was completed or aborted meanwhile;
   * but a complete that assembled the parts and then failed (or died) leaves the session `uploading`
   * with every part received and no multipart upload: the parts can no longer be replaced, and
   * completing again finishes it from the assembled object.
   */
  private async noMultipartUpload(session: UploadSessionRow): Promise<ConflictError> {
    const current = await this.deps.sessions.findById(session.id)
    if (current?.status === 'uploading' && (await this.deps.storage.head(session.storageKey).catch(() => null))) {
      return new ConflictError('The parts were already assembled and can no longer be replaced: complete the upload again, or abort it')
    }
    return new ConflictError('The upload session no longer accepts parts')
  }

  private assertReceiving(session: UploadSessionRow): void {
    if (session.status === 'uploading' && session.expiresAt.getTime() <= Date.now()) throw new ConflictError('The upload session has expired')
    if (session.status !== 'uploading') {
      const state = session.status === 'completing' ? 'being completed' : session.status
      throw new ConflictError(`The upload session is ${state}`)
    }
  }

  /** The answer to a complete that did not (or no longer) hold the lease: the result if it completed meanwhile. */
  private async completedOrConflict(id: string): Promise<{ file: FileRow; version: FileVersionRow }> {
    const current = await this.deps.sessions.findById(id)
    if (current?.status === 'completed') return this.completedResult(current)
    if (current?.status === 'completing') {
      throw new ConflictError(`The upload session is being completed; if that request failed, completing again takes it over after ${COMPLETING_LEASE_MS / 60_000} minutes`)
    }
    throw new ConflictError(`The upload session is ${current?.status ?? 'gone'}`)
  }

  private async completedResult(session: UploadSessionRow): Promise<{ file: FileRow; version: FileVersionRow }> {
    const version = await this.deps.files.findVersionById(session.versionId)
    const file = version && (await this.deps.files.findById(version.fileId))
    if (!version || !file) throw new NotFoundError('File', session.fileId)
    return { file, version }
  }

  /** Fails a session being completed under `lease`; false (and nothing done) when the lease was taken over meanwhile. */
  private async failSession(session: UploadSessionRow, lease: Date, message: string): Promise<boolean> {
    const failed = await this.deps.sessions.transition(session.id, ['completing'], 'failed', { error: message }, { lease })
    if (!failed) return false
    await this.deps.storage.delete(session.storageKey).catch(() => {})
    await this.deps.storage.abortMultipartUpload(session.storageKey, session.multipartUploadId).catch(() => {})
    await this.reporter(session).failed(message)
    return true
  }

  private async view(session: UploadSessionRow): Promise<UploadSessionView> {
    const parts = await this.deps.sessions.listParts(session.id)
    return { ...session, receivedParts: parts.map((p) => p.partNumber), bytesReceived: parts.reduce((n, p) => n + p.size, 0) }
  }

  private nextExpiry(): Date {
    return new Date(Date.now() + this.deps.limits.sessionTtlHours * 3600_000)
  }

  /** Progress of a chunked upload goes out under its session id, which is its uploadId. */
  private reporter(session: UploadSessionRow): UploadProgressReporter {
    const declared = session.declaredType
    const image = isGenericType(declared) || isImageType(declared)
    const steps = 1 + planSteps(image ? null : declared, this.deps.limits).filter((s) => !s.skipped).length
    return new UploadProgressReporter(this.deps.progress, {
      ownerId: session.ownerId,
      uploadId: session.id,
      runId: session.versionId,
      fileId: session.fileId,
      steps,
      bytesTotal: session.size,
    })
  }
}

/** Counts a part's bytes and refuses it as soon as it is longer, or at its end if shorter, than expected. */
class PartMeter extends Transform {
  bytes = 0
  error: ValidationError | undefined

  constructor(
    private readonly partNumber: number,
    private readonly expected: number,
    private readonly onBytes: (n: number) => void,
  ) {
    super()
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length
    if (this.bytes > this.expected) return callback(this.sizeError('more'))
    this.onBytes(this.bytes)
    callback(null, chunk)
  }

  override _flush(callback: TransformCallback): void {
    callback(this.bytes === this.expected ? null : this.sizeError(String(this.bytes)))
  }

  private sizeError(received: string): ValidationError {
    this.error = ValidationError.field(['chunk'], `Part ${this.partNumber} must be exactly ${this.expected} bytes (received ${received})`)
    return this.error
  }
}
