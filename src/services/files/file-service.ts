import { randomUUID } from 'node:crypto'
import path from 'node:path'
import type { Readable } from 'node:stream'
import type { FilesConfig } from '../../config'
import type { Database } from '../../infra/db/client'
import { FileStatsRepository } from '../../infra/db/file-stats-repository'
import { FileRepository, type FileCursor, type FileRow, type FileVersionRow, type NewFileVersion } from '../../infra/db/file-repository'
import { FileStepRepository, type FileStepRow } from '../../infra/db/file-step-repository'
import type { StoredVariant } from '../../infra/db/schema/files'
import { UploadProgressRepository } from '../../infra/db/upload-progress-repository'
import { UploadSessionRepository } from '../../infra/db/upload-session-repository'
import type { ObjectStorage } from '../../infra/storage/types'
import { createLimiter } from '../../lib/concurrency'
import { AppError, ConflictError, FileTooLargeError, NotFoundError, QuotaExceededError, ServiceUnavailableError, ValidationError } from '../../lib/errors'
import { hasRole, type Viewer } from '../auth/jwt'
import type { CacheService, CacheWarmer } from '../cache/cache-service'
import type { Instrumentation } from '../instrumentation'
import { FileCache } from './file-cache'
import { FileStats } from './file-stats'
import { FileSweeper } from './file-sweeper'
import { canonicalType, checkType, cleanFilename, isImageType, refineSvg, SVG_TYPE, versionKeys } from './file-types'
import { FilePipeline } from './processing-pipeline'
import { createStepHandlers, planSteps } from './processing-steps'
import { storageCall } from './storage-call'
import { UploadInspector, type DetectedType } from './upload-inspector'
import { type ProgressSink, type Publish, type UploadProgressEvent, UploadProgressReporter } from './upload-progress'
import { UploadSessionService } from './upload-sessions'
import { versionError } from './version-errors'
import { isUuid } from '../../lib/uuid'

export interface UploadLimits {
  maxFileBytes: number
  maxImageBytes: number
  allowedTypes: string[]
  imageMaxEdge: number
  imageMaxPixels: number
}

export interface UploadInput {
  stream: Readable
  filename: string
  /** The client's claim (multipart Content-Type or input.mimeType); checked against the bytes. */
  declaredType?: string
  uploadId?: string
  /** Expected size, when the client knows it: progress percentages and an early quota check. */
  size?: number
  /** Answer once processing ended (default), or at once with a PROCESSING file. */
  waitForProcessing?: boolean
}

export interface Logger {
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

export interface FileServiceDeps {
  db: Database
  storage: ObjectStorage
  publish: Publish
  limits: UploadLimits
  config: FilesConfig
  /** Poll interval of the pipeline worker. */
  pollMs: number
  logger: Logger
  /** File rows and settled version rows, read on every File resolver; invalidated by tag on each write. */
  cache?: CacheService
  /** Upload bytes and durations, pipeline step outcomes. */
  instrumentation?: Pick<Instrumentation, 'uploadReceived' | 'pipelineStep'>
}

const UPLOAD_ID = /^[A-Za-z0-9_-]{1,128}$/
export const MIN_URL_TTL = 60
export const MAX_URL_TTL = 7 * 24 * 3600

/**
 * Files, their versions, uploads (small ones here, chunked ones in `sessions`) and the processing
 * pipeline behind both. A small upload is streamed to storage while its type is sniffed, its size
 * capped and its sha256 taken; the version row and its processing steps are then written in one
 * transaction and the pipeline takes over.
 */
export class FileService {
  readonly pipeline: FilePipeline
  readonly sessions: UploadSessionService
  readonly sweeper: FileSweeper
  /** Counts, bytes, uploads in progress, processing outcomes and usage per user (infrastructureStats). */
  readonly stats: FileStats
  private readonly repo: FileRepository
  private readonly steps: FileStepRepository
  private readonly snapshots: UploadProgressRepository
  private readonly cache: FileCache
  private readonly progress: ProgressSink
  /** Single-request uploads receiving bytes in this process. */
  private receiving = 0

  constructor(private readonly deps: FileServiceDeps) {
    const { db, storage, config, limits, logger } = deps
    this.repo = new FileRepository(db)
    this.steps = new FileStepRepository(db)
    this.snapshots = new UploadProgressRepository(db)
    const sessionRepo = new UploadSessionRepository(db)
    this.cache = new FileCache(this.repo, deps.cache, logger)
    this.progress = { publish: deps.publish, snapshots: this.snapshots, logger }
    const deleteKeys = (keys: string[]) => this.deleteKeys(keys)
    const invalidateFile = (id: string) => this.cache.invalidate(id)
    const pipelineLimits = {
      allowedTypes: limits.allowedTypes,
      maxImageBytes: limits.maxImageBytes,
      maxEdge: limits.imageMaxEdge,
      maxPixels: limits.imageMaxPixels,
      maxFrames: config.imageMaxFrames,
      variants: config.imageVariants,
      allowSvg: config.allowSvg,
    }
    this.pipeline = new FilePipeline({
      steps: this.steps,
      files: this.repo,
      // sharp holds whole images in memory: a pool sized to the CPUs makes 1000 concurrent uploads queue instead of exhausting RAM.
      handlers: createStepHandlers({ files: this.repo, sessions: sessionRepo, storage, limits: pipelineLimits, imagePool: createLimiter(config.imageConcurrency), deleteKeys }),
      progress: this.progress,
      logger,
      deleteKeys,
      instrumentation: deps.instrumentation,
      onSettled: async ({ fileId, number }) => {
        // Version 1 of a new file: nothing of the file was cacheable while it processed, nothing to prune.
        if (number === 1) return
        await invalidateFile(fileId)
        if (config.versionsKeep > 0 && number > config.versionsKeep) await this.sweeper.pruneFile(fileId)
      },
      options: {
        maxAttempts: config.pipelineMaxAttempts,
        leaseMs: config.pipelineLeaseMs,
        backoffMs: config.pipelineBackoffMs,
        concurrency: config.pipelineConcurrency,
        pollMs: deps.pollMs,
      },
    })
    this.sessions = new UploadSessionService({
      sessions: sessionRepo,
      files: this.repo,
      storage,
      pipeline: this.pipeline,
      progress: this.progress,
      limits: { ...pipelineLimits, sessionMaxBytes: config.sessionMaxBytes, partBytes: config.partBytes, sessionTtlHours: config.sessionTtlHours, quotaBytes: config.quotaBytes },
      getFile: (viewer, id) => this.getFile(viewer, id),
      invalidateFile,
      logger,
      instrumentation: deps.instrumentation,
    })
    this.stats = new FileStats({ repo: new FileStatsRepository(db), receiving: () => this.receiving, quotaBytes: config.quotaBytes })
    this.sweeper = new FileSweeper({
      sessions: this.sessions,
      files: this.repo,
      snapshots: this.snapshots,
      retention: { keep: config.versionsKeep, maxAgeDays: config.versionsMaxAgeDays },
      intervalMs: config.sweepIntervalMs,
      deleteKeys,
      invalidateFile,
      compactStats: () => this.stats.compact(),
      logger,
    })
  }

  /** The largest upload any type may have: the multipart parser's cap. */
  get maxUploadBytes(): number {
    return Math.max(this.deps.limits.maxFileBytes, this.deps.limits.maxImageBytes)
  }

  /** Preloads the newest files' metadata into the cache given in deps; undefined without one. */
  cacheWarmer(limit?: number): CacheWarmer | undefined {
    return this.deps.cache ? this.cache.warmer(limit) : undefined
  }

  /** Background work of this instance: the pipeline worker and the sweeper. */
  startWorkers(): void {
    this.pipeline.start()
    this.sweeper.start()
  }

  async stopWorkers(): Promise<void> {
    await this.sweeper.stop()
    await this.pipeline.stop(Math.min(this.deps.config.pipelineLeaseMs, 10_000))
  }

  async uploadFile(viewer: Viewer, input: UploadInput): Promise<{ file: FileRow; version: FileVersionRow }> {
    return this.receive(viewer, input, null)
  }

  async uploadFileVersion(viewer: Viewer, fileId: string, input: UploadInput): Promise<{ file: FileRow; version: FileVersionRow }> {
    let file: FileRow
    try {
      file = await this.getFile(viewer, fileId)
    } catch (err) {
      input.stream.resume()
      throw err
    }
    return this.receive(viewer, input, file)
  }

  async getFile(viewer: Viewer, id: string): Promise<FileRow> {
    const file = isUuid(id) ? await this.cache.findFile(id) : undefined
    // Someone else's file is "not found", not "forbidden": ids must not be probeable.
    if (!file || file.status === 'deleted' || !canAccess(viewer, file)) throw new NotFoundError('File', id)
    return file
  }

  async listFiles(viewer: Viewer, options: { first: number; after?: FileCursor }): Promise<FileRow[]> {
    return this.repo.list({ ownerId: hasRole(viewer, 'admin') ? undefined : viewer.id, after: options.after, limit: options.first })
  }

  async currentVersion(file: FileRow): Promise<FileVersionRow> {
    const version = await this.cache.findVersion(file.id, file.currentVersion)
    if (!version) throw new NotFoundError('FileVersion', `${file.id}@${file.currentVersion}`)
    return version
  }

  listVersions(file: FileRow): Promise<FileVersionRow[]> {
    return this.repo.listVersions(file.id)
  }

  processingSteps(version: FileVersionRow): Promise<FileStepRow[]> {
    return this.steps.list(version.id)
  }

  /** Bytes the viewer stores (every version) or has reserved in open sessions, against the quota. */
  async usage(viewer: Viewer): Promise<{ usedBytes: number; limitBytes: number | null }> {
    const limit = this.deps.config.quotaBytes
    return { usedBytes: await this.repo.usage(viewer.id), limitBytes: limit > 0 ? limit : null }
  }

  /**
   * Copies an old version forward as a new current version: history is never rewritten. The bytes
   * are not copied: the new version takes another reference to the same stored object.
   */
  async restoreFileVersion(viewer: Viewer, fileId: string, number: number): Promise<{ file: FileRow; version: FileVersionRow }> {
    const file = await this.getFile(viewer, fileId)
    const old = await this.repo.findVersion(file.id, number)
    if (!old) throw new NotFoundError('FileVersion', `${fileId}@${number}`)
    if (old.status !== 'ready') throw new ConflictError(`Version ${number} ${old.status === 'failed' ? 'failed processing' : 'is still processing'} and cannot be restored`)
    const versionId = randomUUID()
    const { id: _id, fileId: _f, number: _n, createdAt: _c, uploadId: _u, ...rest } = old
    const quota = { ownerId: file.ownerId, limitBytes: this.deps.config.quotaBytes, addingBytes: old.size }
    let copiedKey: string | undefined
    let version: NewFileVersion = { ...rest, id: versionId, createdBy: viewer.id }
    if (!old.objectId) {
      // Written before deduplication: the bytes have no shared object, so they are copied once.
      copiedKey = versionKeys.source(file.id, versionId)
      const key = copiedKey
      await storageCall(() => this.deps.storage.copy(old.storageKey, key))
      version = { ...version, storageKey: copiedKey, variants: [] }
    }
    const objectId = old.objectId
    let result
    try {
      result = await this.repo.appendVersion(file.id, version, {
        makeCurrent: true,
        filename: old.filename,
        quota,
        afterInsert: objectId
          ? async (tx) => {
              if (!(await this.repo.addObjectRef(tx, objectId))) throw new NotFoundError('FileVersion', `${fileId}@${number}`)
            }
          : undefined,
      })
    } catch (err) {
      if (copiedKey) await this.deleteKeys([copiedKey])
      throw err
    }
    await this.cache.invalidate(file.id)
    if (!result) {
      if (copiedKey) await this.deleteKeys([copiedKey])
      throw new NotFoundError('File', fileId)
    }
    void this.sweeper.pruneFile(file.id).catch((err: unknown) => this.deps.logger.warn({ err, fileId }, 'retention after a restore failed'))
    return result
  }

  /**
   * Deletes one version that is not the current one, whatever the current one's status (a failed
   * only version included); bytes another version still uses stay.
   */
  async deleteFileVersion(viewer: Viewer, fileId: string, number: number): Promise<FileRow> {
    const file = await this.getFile(viewer, fileId)
    const removed = await this.repo.deleteVersion(file.id, number)
    switch (removed.outcome) {
      case 'missing':
        throw new NotFoundError('FileVersion', `${fileId}@${number}`)
      case 'current':
        throw new ConflictError(`Version ${number} is the file's current version: the current version cannot be deleted. Restore or upload another version first, or delete the whole file`)
      case 'processing':
        throw new ConflictError('A version cannot be deleted while it is processing')
    }
    await this.cache.invalidate(file.id)
    await this.deleteKeys(removed.keys)
    return (await this.repo.findById(file.id))!
  }

  async deleteFile(viewer: Viewer, id: string): Promise<string> {
    const file = await this.getFile(viewer, id)
    // Rows go first: a storage failure leaves an unreferenced object (logged), never a row pointing at nothing.
    const keys = await this.repo.delete(file.id)
    await this.cache.invalidate(file.id)
    await this.deleteKeys(keys)
    return file.id
  }

  downloadUrl(version: FileVersionRow, expiresInSeconds = 3600): Promise<string> {
    this.assertDownloadable(version, expiresInSeconds)
    return this.deps.storage.signedDownloadUrl(version.storageKey, { expiresInSeconds, filename: version.filename, contentType: version.mimeType })
  }

  variantUrl(version: FileVersionRow, variant: StoredVariant, expiresInSeconds = 3600): Promise<string> {
    this.assertDownloadable(version, expiresInSeconds)
    const stem = path.parse(version.filename).name || 'file'
    const ext = path.extname(variant.storageKey)
    return this.deps.storage.signedDownloadUrl(variant.storageKey, { expiresInSeconds, filename: `${stem}-${variant.name}${ext}`, contentType: variant.mimeType })
  }

  /** The latest progress of one of the viewer's uploads, for a subscriber that arrives late. */
  async progressSnapshot(viewer: Viewer, uploadId: string): Promise<UploadProgressEvent | undefined> {
    if (!UPLOAD_ID.test(uploadId)) return undefined
    const snapshot = await this.snapshots.find(viewer.id, uploadId)
    return snapshot?.event as UploadProgressEvent | undefined
  }

  private assertDownloadable(version: FileVersionRow, expiresInSeconds: number): void {
    if (!Number.isInteger(expiresInSeconds) || expiresInSeconds < MIN_URL_TTL || expiresInSeconds > MAX_URL_TTL) {
      throw ValidationError.field(['expiresIn'], `expiresIn must be between ${MIN_URL_TTL} and ${MAX_URL_TTL} seconds`)
    }
    if (version.status !== 'ready') throw new ConflictError(version.status === 'failed' ? 'This version failed processing' : 'This version is still processing')
  }

  private async receive(viewer: Viewer, input: UploadInput, existing: FileRow | null): Promise<{ file: FileRow; version: FileVersionRow }> {
    const { limits, storage, config } = this.deps
    const uploadId = input.uploadId ?? randomUUID()
    if (!UPLOAD_ID.test(uploadId)) {
      input.stream.resume()
      throw ValidationError.field(['input', 'uploadId'], 'uploadId must be 1-128 letters, digits, "_" or "-"')
    }
    const filename = cleanFilename(input.filename)
    const declared = canonicalType(input.declaredType)
    const fileId = existing?.id ?? randomUUID()
    // A version counts against its file's owner, whoever uploads it (an admin, say): usage() sums by owner.
    const quotaOwner = existing?.ownerId ?? viewer.id
    const versionId = randomUUID()
    const imageClaim = isImageType(declared)
    const progress = new UploadProgressReporter(this.progress, {
      ownerId: viewer.id,
      uploadId,
      runId: versionId,
      fileId,
      steps: 1 + planSteps(imageClaim ? declared : 'application/octet-stream', { variants: config.imageVariants }).filter((s) => !s.skipped).length,
      bytesTotal: input.size ?? null,
    })
    const allowed = config.allowSvg ? [...limits.allowedTypes, SVG_TYPE] : limits.allowedTypes
    const storageKey = versionKeys.source(fileId, versionId)
    let stored = false
    const inspectorBox: { current?: UploadInspector } = {}
    const started = performance.now()
    const received = (ok: boolean) => this.deps.instrumentation?.uploadReceived('file', inspectorBox.current?.bytes ?? 0, (performance.now() - started) / 1000, ok)
    this.receiving++
    try {
      void progress.enter('RECEIVING', 1, 0)
      const remaining = await this.remainingQuota(quotaOwner, input.size ?? 0)
      const typeLimit = (t: DetectedType | null) => (t ? (isImageType(t.mime) ? limits.maxImageBytes : limits.maxFileBytes) : this.maxUploadBytes)
      const inspector = new UploadInspector({
        maxBytes: (t) => Math.min(typeLimit(t), remaining),
        limitError: (limit) => (limit === remaining && remaining < this.maxUploadBytes ? new QuotaExceededError('This upload would exceed your quota', config.quotaBytes, config.quotaBytes - remaining) : new FileTooLargeError(limit)),
        accept: (t) => checkType(t, declared, allowed),
        refineType: (head, t) => refineSvg(head, t, config.allowSvg, limits.allowedTypes),
        onBytes: (n) => progress.bytes(n),
      })
      inspectorBox.current = inspector
      // The failure reaches us through typeReady or put; without a listener, pipe() would rethrow it
      // as an uncaught exception when one large chunk passes the cap before storage is attached.
      inspector.on('error', () => {})
      input.stream.on('error', (err) => inspector.destroy(err))
      input.stream.pipe(inspector)
      const detected = (await inspector.typeReady) as DetectedType
      // Every type streams to storage untouched: memory stays flat whatever the size, and processing reads it back.
      await storageCall(() => storage.put(storageKey, inspector, { contentType: detected.mime })).catch((err: unknown) => {
        throw (inspector.errored instanceof AppError ? inspector.errored : undefined) ?? err
      })
      stored = true
      assertNotTruncated(input.stream, inspector, limits)
      progress.bytes(inspector.bytes)
      const version: NewFileVersion = {
        id: versionId,
        filename,
        status: 'processing',
        mimeType: detected.mime,
        declaredType: declared || null,
        size: inspector.bytes,
        sha256: inspector.sha256,
        originalSize: inspector.bytes,
        originalSha256: inspector.sha256,
        storageKey,
        uploadId,
        createdBy: viewer.id,
      }
      const steps = planSteps(detected.mime, { variants: config.imageVariants })
      progress.setSteps(1 + steps.filter((s) => !s.skipped).length)
      const quota = { ownerId: quotaOwner, limitBytes: config.quotaBytes, addingBytes: inspector.bytes }
      const result = existing
        ? await this.repo.appendVersion(existing.id, version, { makeCurrent: false, steps, quota })
        : await this.repo.createWithVersion({ id: fileId, ownerId: viewer.id, filename }, version, { steps, quota })
      if (!result) throw new NotFoundError('File', fileId)
      if (existing) await this.cache.invalidate(existing.id)
      // The last receiving event must be out before the first processing one.
      await progress.flush()
    } catch (err) {
      received(false)
      input.stream.unpipe(inspectorBox.current)
      input.stream.resume()
      inspectorBox.current?.destroy()
      if (stored) await this.deleteKeys([storageKey])
      const safe = err instanceof AppError ? err : new ServiceUnavailableError('The upload could not be stored, please retry', { cause: err })
      if (!(err instanceof AppError)) this.deps.logger.error({ err, uploadId }, 'upload failed')
      await progress.failed(safe.message)
      throw safe
    } finally {
      this.receiving--
    }
    received(true)

    this.pipeline.kick(versionId)
    const outcome = input.waitForProcessing === false ? undefined : await this.pipeline.waitFor(versionId, config.processingWaitMs, true)
    if (outcome?.status === 'failed') throw versionError(outcome.version, outcome.error, limits)
    const version = outcome?.version ?? (await this.repo.findVersionById(versionId))
    const file = await this.repo.findById(fileId)
    if (!file || !version) throw new NotFoundError('File', fileId)
    return { file, version }
  }

  /** What the viewer may still store; refuses at once if even the announced size does not fit. */
  private async remainingQuota(ownerId: string, announced: number): Promise<number> {
    const limit = this.deps.config.quotaBytes
    if (limit <= 0) return Number.MAX_SAFE_INTEGER
    const used = await this.repo.usage(ownerId)
    if (used + announced > limit || used >= limit) {
      throw new QuotaExceededError(`Storing ${announced || 'more'} bytes would exceed your quota of ${limit} bytes`, limit, used)
    }
    return limit - used
  }

  private async deleteKeys(keys: string[]): Promise<void> {
    const results = await Promise.allSettled(keys.map((k) => this.deps.storage.delete(k)))
    const failed = results.filter((r) => r.status === 'rejected').length
    if (failed > 0) this.deps.logger.warn({ failed, keys }, 'storage objects left behind')
  }
}

export function canAccess(viewer: Viewer, file: Pick<FileRow, 'ownerId'>): boolean {
  return file.ownerId === viewer.id || hasRole(viewer, 'admin')
}

/** busboy stops at its own limit and marks the stream truncated; never store a silently cut file. */
function assertNotTruncated(stream: Readable, inspector: UploadInspector, limits: UploadLimits): void {
  if ((stream as Readable & { truncated?: boolean }).truncated) {
    const limit = inspector.detected && isImageType(inspector.detected.mime) ? limits.maxImageBytes : limits.maxFileBytes
    throw new FileTooLargeError(limit)
  }
}
