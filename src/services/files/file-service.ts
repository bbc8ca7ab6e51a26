import { randomUUID } from 'node:crypto'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import path from 'node:path'
import type { Readable } from 'node:stream'
import type { FileCursor, FileRepository, FileRow, FileVersionRow, NewFileVersion } from '../../infra/db/file-repository'
import { ObjectNotFoundError, type ObjectStorage } from '../../infra/storage/types'
import { createLimiter } from '../../lib/concurrency'
import { AppError, FileTooLargeError, NotFoundError, ServiceUnavailableError, UnsupportedFileTypeError, ValidationError } from '../../lib/errors'
import { normalizeText } from '../../lib/escape'
import { hasRole, type Viewer } from '../auth/jwt'
import { IMAGE_TYPES, optimizeImage } from './image-optimizer'
import { UploadInspector, type DetectedType } from './upload-inspector'
import { type Publish, UploadProgressReporter, uploadProgressTopic } from './upload-progress'

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
  /** Expected size, when the client knows it: only used for progress percentages. */
  size?: number
}

export interface Logger {
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

/** Aliases browsers and OSes send for the canonical types file-type detects. */
const TYPE_ALIASES: Record<string, string> = { 'image/jpg': 'image/jpeg', 'image/pjpeg': 'image/jpeg', 'image/x-png': 'image/png', 'application/x-pdf': 'application/pdf' }
const GENERIC_TYPES = new Set(['', 'application/octet-stream', 'binary/octet-stream'])
const UPLOAD_ID = /^[A-Za-z0-9_-]{1,128}$/
const MAX_FILENAME = 255
export const MIN_URL_TTL = 60
export const MAX_URL_TTL = 7 * 24 * 3600

export class FileService {
  /** sharp holds whole images in memory: cap how many decode at once so 1000 concurrent uploads cannot exhaust RAM. */
  private readonly imageLimiter = createLimiter(4)

  constructor(
    private readonly deps: {
      files: FileRepository
      storage: ObjectStorage
      publish: Publish
      limits: UploadLimits
      logger: Logger
    },
  ) {}

  /** The largest upload any type may have: the multipart parser's cap. */
  get maxUploadBytes(): number {
    return Math.max(this.deps.limits.maxFileBytes, this.deps.limits.maxImageBytes)
  }

  async uploadFile(viewer: Viewer, input: UploadInput): Promise<{ file: FileRow; version: FileVersionRow }> {
    return this.receive(viewer, input, null)
  }

  async uploadFileVersion(viewer: Viewer, fileId: string, input: UploadInput): Promise<{ file: FileRow; version: FileVersionRow }> {
    const file = await this.getFile(viewer, fileId)
    return this.receive(viewer, input, file)
  }

  async getFile(viewer: Viewer, id: string): Promise<FileRow> {
    const file = isUuid(id) ? await this.deps.files.findById(id) : undefined
    // Someone else's file is "not found", not "forbidden": ids must not be probeable.
    if (!file || file.status === 'deleted' || !canAccess(viewer, file)) throw new NotFoundError('File', id)
    return file
  }

  async listFiles(viewer: Viewer, options: { first: number; after?: FileCursor }): Promise<FileRow[]> {
    return this.deps.files.list({ ownerId: hasRole(viewer, 'admin') ? undefined : viewer.id, after: options.after, limit: options.first })
  }

  async currentVersion(file: FileRow): Promise<FileVersionRow> {
    const version = await this.deps.files.findVersion(file.id, file.currentVersion)
    if (!version) throw new NotFoundError('FileVersion', `${file.id}@${file.currentVersion}`)
    return version
  }

  listVersions(file: FileRow): Promise<FileVersionRow[]> {
    return this.deps.files.listVersions(file.id)
  }

  /** Copies an old version forward as a new one: history is never rewritten. */
  async restoreFileVersion(viewer: Viewer, fileId: string, number: number): Promise<{ file: FileRow; version: FileVersionRow }> {
    const file = await this.getFile(viewer, fileId)
    const old = await this.deps.files.findVersion(file.id, number)
    if (!old) throw new NotFoundError('FileVersion', `${fileId}@${number}`)
    const versionId = randomUUID()
    const storageKey = storageKeyFor(file.id, versionId, path.extname(old.storageKey).slice(1))
    await this.storageCall(() => this.deps.storage.copy(old.storageKey, storageKey))
    const { id: _id, fileId: _f, number: _n, createdAt: _c, ...rest } = old
    const result = await this.deps.files.appendVersion(file.id, { ...rest, id: versionId, storageKey, variants: [], createdBy: viewer.id }, old.filename)
    if (!result) {
      await this.deps.storage.delete(storageKey).catch(() => {})
      throw new NotFoundError('File', fileId)
    }
    return result
  }

  async deleteFile(viewer: Viewer, id: string): Promise<string> {
    const file = await this.getFile(viewer, id)
    const keys = await this.deps.files.delete(file.id)
    // Rows go first: a storage failure leaves an unreferenced object (logged), never a row pointing at nothing.
    const results = await Promise.allSettled(keys.map((k) => this.deps.storage.delete(k)))
    const failed = results.filter((r) => r.status === 'rejected').length
    if (failed > 0) this.deps.logger.warn({ fileId: id, failed }, 'storage objects left behind after delete')
    return file.id
  }

  downloadUrl(version: FileVersionRow, expiresInSeconds = 3600): Promise<string> {
    if (!Number.isInteger(expiresInSeconds) || expiresInSeconds < MIN_URL_TTL || expiresInSeconds > MAX_URL_TTL) {
      throw ValidationError.field(['expiresIn'], `expiresIn must be between ${MIN_URL_TTL} and ${MAX_URL_TTL} seconds`)
    }
    return this.deps.storage.signedDownloadUrl(version.storageKey, { expiresInSeconds, filename: version.filename, contentType: version.mimeType })
  }

  private async receive(viewer: Viewer, input: UploadInput, existing: FileRow | null): Promise<{ file: FileRow; version: FileVersionRow }> {
    const { limits, storage, publish } = this.deps
    const uploadId = input.uploadId ?? randomUUID()
    if (!UPLOAD_ID.test(uploadId)) {
      input.stream.resume()
      throw ValidationError.field(['input', 'uploadId'], 'uploadId must be 1-128 letters, digits, "_" or "-"')
    }
    const filename = cleanFilename(input.filename)
    const declared = canonicalType(input.declaredType)
    const fileId = existing?.id ?? randomUUID()
    const versionId = randomUUID()
    const isImageClaim = IMAGE_TYPES.has(declared)
    const progress = new UploadProgressReporter(publish, uploadProgressTopic(viewer.id, uploadId), uploadId, isImageClaim ? 5 : 4, input.size ?? null, fileId)

    const inspector = new UploadInspector({
      maxBytes: (t) => (t ? (IMAGE_TYPES.has(t.mime) ? limits.maxImageBytes : limits.maxFileBytes) : Math.max(limits.maxFileBytes, limits.maxImageBytes)),
      accept: (t) => checkType(t, declared, limits.allowedTypes),
      onBytes: (n) => progress.bytes(n),
    })
    let storedKey: string | null = null
    try {
      progress.enter('RECEIVING')
      input.stream.on('error', (err) => inspector.destroy(err))
      input.stream.pipe(inspector)
      const detected = (await inspector.typeReady) as DetectedType
      const storageKey = storageKeyFor(fileId, versionId, detected.ext)
      let version: NewFileVersion
      if (IMAGE_TYPES.has(detected.mime)) {
        const original = await collect(inspector)
        assertNotTruncated(input.stream, inspector, limits)
        progress.enter('VALIDATING')
        progress.enter('OPTIMIZING')
        const image = await this.imageLimiter.run(() => optimizeImage(original, detected.mime, { maxEdge: limits.imageMaxEdge, maxPixels: limits.imageMaxPixels }))
        progress.enter('STORING')
        await this.storageCall(() => storage.put(storageKey, image.data, { contentType: image.mimeType, contentLength: image.data.length }))
        storedKey = storageKey
        version = {
          id: versionId,
          filename,
          mimeType: image.mimeType,
          size: image.data.length,
          sha256: createHash('sha256').update(image.data).digest('hex'),
          originalSize: inspector.bytes,
          originalSha256: inspector.sha256,
          storageKey,
          width: image.width,
          height: image.height,
          createdBy: viewer.id,
        }
      } else {
        // Non-images stream straight through to storage: memory stays flat whatever the size.
        const put = this.storageCall(() => storage.put(storageKey, inspector, { contentType: detected.mime }))
        const result = await put.catch((err: unknown) => {
          throw inspectorError(inspector) ?? err
        })
        storedKey = storageKey
        assertNotTruncated(input.stream, inspector, limits)
        progress.enter('VALIDATING')
        progress.enter('STORING')
        version = {
          id: versionId,
          filename,
          mimeType: detected.mime,
          size: result.size,
          sha256: inspector.sha256,
          originalSize: inspector.bytes,
          originalSha256: inspector.sha256,
          storageKey,
          createdBy: viewer.id,
        }
      }
      const result = existing
        ? await this.deps.files.appendVersion(existing.id, version, filename)
        : await this.deps.files.createWithVersion({ id: fileId, ownerId: viewer.id, filename }, version)
      if (!result) throw new NotFoundError('File', fileId)
      progress.completed()
      return result
    } catch (err) {
      input.stream.unpipe(inspector)
      input.stream.resume()
      inspector.destroy()
      if (storedKey) await storage.delete(storedKey).catch((e: unknown) => this.deps.logger.warn({ err: e, key: storedKey }, 'could not remove object of failed upload'))
      const safe = err instanceof AppError ? err : new ServiceUnavailableError('The upload could not be stored, please retry', { cause: err })
      if (!(err instanceof AppError)) this.deps.logger.error({ err, uploadId }, 'upload failed')
      progress.failed(safe.message)
      throw safe
    }
  }

  private async storageCall<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call()
    } catch (err) {
      if (err instanceof AppError) throw err
      if (err instanceof ObjectNotFoundError) throw new NotFoundError('Stored object')
      throw new ServiceUnavailableError('Storage is unavailable, please retry', { cause: err })
    }
  }
}

export function canAccess(viewer: Viewer, file: Pick<FileRow, 'ownerId'>): boolean {
  return file.ownerId === viewer.id || hasRole(viewer, 'admin')
}

function storageKeyFor(fileId: string, versionId: string, ext: string): string {
  const safeExt = /^[a-z0-9]{1,8}$/.test(ext) ? `.${ext}` : ''
  return `files/${fileId}/${versionId}${safeExt}`
}

function canonicalType(type: string | undefined): string {
  const t = (type ?? '').split(';')[0]!.trim().toLowerCase()
  return TYPE_ALIASES[t] ?? t
}

function checkType(detected: DetectedType | null, declared: string, allowed: string[]): void {
  if (!detected || !allowed.includes(detected.mime)) {
    throw new UnsupportedFileTypeError(
      detected ? `Files of type ${detected.mime} are not allowed` : 'The file type could not be recognised from its content',
      detected?.mime ?? null,
      allowed,
    )
  }
  if (!GENERIC_TYPES.has(declared) && declared !== detected.mime) {
    throw new UnsupportedFileTypeError(`The file was declared as ${declared} but its content is ${detected.mime}`, detected.mime, allowed)
  }
}

/** The client's name is metadata only: strip directories (path traversal), control characters and excess length. */
export function cleanFilename(name: string | undefined): string {
  const base = (name ?? '').split(/[\\/]/).pop() ?? ''
  const cleaned = normalizeText(base, { maxLength: MAX_FILENAME }).replace(/[\r\n\t]/g, ' ').replace(/^\.+/, '')
  return cleaned.length > 0 ? cleaned : 'file'
}

function isUuid(id: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  stream.on('data', (c: Buffer) => chunks.push(c))
  await once(stream, 'end')
  return Buffer.concat(chunks)
}

function inspectorError(inspector: UploadInspector): Error | undefined {
  const err = inspector.errored
  return err instanceof AppError ? err : undefined
}

/** busboy stops at its own limit and marks the stream truncated; never store a silently cut file. */
function assertNotTruncated(stream: Readable, inspector: UploadInspector, limits: UploadLimits): void {
  if ((stream as Readable & { truncated?: boolean }).truncated) {
    const limit = inspector.detected && IMAGE_TYPES.has(inspector.detected.mime) ? limits.maxImageBytes : limits.maxFileBytes
    throw new FileTooLargeError(limit)
  }
}
