import { createHash } from 'node:crypto'
import type { Readable } from 'node:stream'
import { fileTypeFromBuffer } from 'file-type'
import type { ImageVariantSpec } from '../../config'
import type { FileRepository, FileRow, FileVersionRow, StepSpec } from '../../infra/db/file-repository'
import type { StoredVariant } from '../../infra/db/schema/files'
import type { UploadSessionRepository } from '../../infra/db/upload-session-repository'
import type { ObjectStorage } from '../../infra/storage/types'
import { FileTooLargeError, ValidationError } from '../../lib/errors'
import { checkType, isImageType, refineSvg, SVG_TYPE, versionKeys } from './file-types'
import { inspectImage, optimizeImage, renderVariant, type ImageLimits } from './image-optimizer'
import { countPdfPages } from './pdf-pages'
import { storageCall } from './storage-call'
import type { UploadStage } from './upload-progress'

export const STEP_NAMES = ['validate', 'checksum', 'optimize', 'variants', 'finalize'] as const
export type StepName = (typeof STEP_NAMES)[number]
const IMAGE_STEPS: StepName[] = ['optimize', 'variants']

export const STAGE_OF_STEP: Record<StepName, Exclude<UploadStage, 'RECEIVING' | 'COMPLETED' | 'FAILED'>> = {
  validate: 'VALIDATING',
  checksum: 'CHECKSUMMING',
  optimize: 'OPTIMIZING',
  variants: 'CREATING_VARIANTS',
  finalize: 'STORING',
}

/** file-type needs at most this many bytes to recognise any format it knows. */
const SNIFF_BYTES = 4100
/**
 * PDFs up to this size are read whole to count their pages. Of larger ones only both ends are read:
 * writers put the page tree near the start (linearized files) or near the end (object streams,
 * incremental updates), and reading 100 MB back for a count would double the cost of the upload.
 */
const PDF_WHOLE_BYTES = 8 * 1024 * 1024
const PDF_END_BYTES = 2 * 1024 * 1024

export interface PipelineLimits extends ImageLimits {
  allowedTypes: string[]
  maxImageBytes: number
  variants: ImageVariantSpec[]
  allowSvg: boolean
}

export interface StepContext {
  file: FileRow
  version: FileVersionRow
  /** Results of the steps already done, by name. */
  results: Partial<Record<StepName, Record<string, unknown>>>
  /** Within-step progress, 0-1. */
  progress(fraction: number): void
}

export interface StepOutcome {
  result: Record<string, unknown>
  /** Later steps that do not apply after all. */
  skip?: StepName[]
}

export interface StepDeps {
  files: FileRepository
  sessions: UploadSessionRepository
  storage: ObjectStorage
  limits: PipelineLimits
  /** Bounds how many images are decoded at once. */
  imagePool: { run<T>(task: () => Promise<T>): Promise<T> }
  /** Best-effort removal of objects nothing references any more. */
  deleteKeys(keys: string[]): Promise<void>
}

interface Validated {
  mime: string
  ext: string
  size: number
  width?: number
  height?: number
  frames?: number
  pageCount?: number
}

interface Optimized {
  key: string
  mimeType: string
  size: number
  sha256: string
  width: number
  height: number
}

/** The steps a new version gets; image steps are skipped up front when the type is known not to be an image. */
export function planSteps(knownType: string | null, limits: { variants: readonly unknown[] }): StepSpec[] {
  const image = knownType === null || isImageType(knownType)
  return STEP_NAMES.map((name) => ({ name, skipped: (IMAGE_STEPS.includes(name) && !image) || (name === 'variants' && limits.variants.length === 0) }))
}

/**
 * Each step is idempotent: it reads what earlier steps stored, writes to keys fixed by the version
 * id, and returns what later steps need. Run twice (a crash after the write, before the row was
 * updated), it overwrites its own output.
 */
export function createStepHandlers(deps: StepDeps): Record<StepName, (ctx: StepContext) => Promise<StepOutcome>> {
  const { storage, limits } = deps

  return {
    async validate({ version }) {
      const head = await storageCall(() => storage.head(version.storageKey))
      if (!head) throw new ValidationError('The uploaded bytes are missing; upload the file again')
      const sniff = head.size > 0 ? await readRange(storage, version.storageKey, 0, Math.min(head.size, SNIFF_BYTES) - 1) : Buffer.alloc(0)
      const type = await fileTypeFromBuffer(sniff)
      const detected = refineSvg(sniff, type ? { mime: type.mime as string, ext: type.ext as string } : null, limits.allowSvg, limits.allowedTypes)
      const allowed = limits.allowSvg ? [...limits.allowedTypes, SVG_TYPE] : limits.allowedTypes
      checkType(detected, version.declaredType ?? '', allowed)
      const result: Validated = { mime: detected!.mime, ext: detected!.ext, size: head.size }
      if (isImageType(result.mime)) {
        if (head.size > limits.maxImageBytes) throw new FileTooLargeError(limits.maxImageBytes)
        const info = await deps.imagePool.run(async () => inspectImage(await readAll(storage, version.storageKey), result.mime, limits))
        Object.assign(result, info)
        return { result: { ...result }, skip: limits.variants.length === 0 ? ['variants'] : [] }
      }
      if (result.mime === 'application/pdf') {
        const key = version.storageKey
        const pdf =
          head.size <= PDF_WHOLE_BYTES
            ? [await readAll(storage, key)]
            : [await readRange(storage, key, 0, PDF_END_BYTES - 1), await readRange(storage, key, head.size - PDF_END_BYTES, head.size - 1)]
        const pages = pdf.map((part) => countPdfPages(part)).find((n) => n !== undefined)
        if (pages !== undefined) result.pageCount = pages
      }
      return { result: { ...result }, skip: IMAGE_STEPS }
    },

    async checksum({ file, version, results, progress }) {
      const validated = results.validate as unknown as Validated
      // An upload received whole was hashed on the way in (sha256 set); only a chunked one needs its session.
      const session = version.sha256 === '' ? await deps.sessions.findByVersionId(version.id) : undefined
      let sha256 = version.originalSha256
      // A chunked upload arrived in parts, in any order: its hash can only be taken over the assembled object.
      if (session) {
        sha256 = await hashObject(storage, version.storageKey, validated.size, progress)
        if (session.sha256 && session.sha256 !== sha256) {
          throw ValidationError.field(['sha256'], `The file's sha256 is ${sha256}, not the ${session.sha256} given to startUpload`)
        }
        await deps.files.setOriginalSha256(version.id, sha256)
      }
      const existing = await deps.files.attachObject(version.id, file.ownerId, sha256)
      return { result: { sha256, objectId: existing?.id ?? null }, skip: existing ? IMAGE_STEPS : [] }
    },

    async optimize({ file, version, results }) {
      const validated = results.validate as unknown as Validated
      const out = await deps.imagePool.run(async () => optimizeImage(await readAll(storage, version.storageKey), validated.mime, limits))
      const key = versionKeys.optimized(file.id, version.id, out.ext)
      await storageCall(() => storage.put(key, out.data, { contentType: out.mimeType, contentLength: out.data.length }))
      const result: Optimized = { key, mimeType: out.mimeType, size: out.data.length, sha256: sha256Of(out.data), width: out.width, height: out.height }
      return { result: { ...result, keys: [key] } }
    },

    async variants({ file, version, results }) {
      const optimized = results.optimize as unknown as Optimized
      const variants = await deps.imagePool.run(async () => {
        const input = await readAll(storage, optimized.key)
        const made: StoredVariant[] = []
        for (const spec of limits.variants) {
          const out = await renderVariant(input, optimized.mimeType, spec, limits.maxPixels)
          const key = versionKeys.variant(file.id, version.id, spec.name, out.ext)
          await storageCall(() => storage.put(key, out.data, { contentType: out.mimeType, contentLength: out.data.length }))
          made.push({ name: spec.name, storageKey: key, mimeType: out.mimeType, size: out.data.length, width: out.width, height: out.height })
        }
        return made
      })
      return { result: { variants, keys: variants.map((v) => v.storageKey) } }
    },

    async finalize({ file, version, results }) {
      const validated = results.validate as unknown as Validated
      const { sha256 } = results.checksum as { sha256: string }
      const optimized = results.optimize as Optimized | undefined
      const variants = ((results.variants?.variants as StoredVariant[] | undefined) ?? [])
      const stored = optimized
        ? { storageKey: optimized.key, mimeType: optimized.mimeType, size: optimized.size, sha256: optimized.sha256, width: optimized.width, height: optimized.height }
        : { storageKey: version.storageKey, mimeType: validated.mime, size: validated.size, sha256, width: validated.width ?? null, height: validated.height ?? null }
      const done = await deps.files.finalizeVersion(
        version.id,
        { ...stored, originalSize: validated.size, originalSha256: sha256, pageCount: validated.pageCount ?? null, variants },
        file.ownerId,
      )
      const written = [version.storageKey, optimized?.key, ...variants.map((v) => v.storageKey)].filter((k): k is string => Boolean(k))
      if (!done) {
        // The version was deleted while it was processed: nothing references what it wrote.
        await deps.deleteKeys(written)
        return { result: { deleted: true } }
      }
      const kept = new Set([done.version.storageKey, ...done.version.variants.map((v) => v.storageKey)])
      // The received bytes of an optimised or deduplicated upload are no longer needed (and may hold EXIF GPS data).
      await deps.deleteKeys([...new Set([...written, ...done.redundantKeys])].filter((k) => !kept.has(k)))
      return { result: { number: done.version.number } }
    },
  }
}

async function readRange(storage: ObjectStorage, key: string, start: number, end: number): Promise<Buffer> {
  const { body } = await storageCall(() => storage.get(key, { start, end }))
  return collect(body)
}

async function readAll(storage: ObjectStorage, key: string): Promise<Buffer> {
  const { body } = await storageCall(() => storage.get(key))
  return collect(body)
}

async function collect(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of body) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** Streams the object once: memory stays flat whatever the size. */
async function hashObject(storage: ObjectStorage, key: string, size: number, progress: (fraction: number) => void): Promise<string> {
  const { body } = await storageCall(() => storage.get(key))
  const hash = createHash('sha256')
  let seen = 0
  try {
    for await (const chunk of body) {
      hash.update(chunk as Buffer)
      seen += (chunk as Buffer).length
      if (size > 0) progress(seen / size)
    }
  } catch (err) {
    throw await storageCall(() => Promise.reject(err)).catch((e: unknown) => e)
  }
  return hash.digest('hex')
}

function sha256Of(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}
