/**
 * ObjectStorage on a local directory, for the embedded mode. It mirrors S3's contract closely
 * (atomic replace, part rules, ETag checks on complete) so code that works here works on S3.
 *
 * Layout under root: objects at `<key>`, and beside them three dot-directories that no key can
 * name, because a safe key starts with an alphanumeric character:
 *   .tmp/                      staging files, renamed into place so readers never see a partial object
 *   .meta/<key>.json           content type, metadata and ETag of each object
 *   .multipart/<uploadId>/     upload.json plus one file per part number
 */
import { constants, createReadStream, createWriteStream } from 'node:fs'
import { copyFile, mkdir, open, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { createHash, randomBytes } from 'node:crypto'
import path from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { ServiceUnavailableError } from '../../lib/errors'
import type { UrlSigner } from './signed-url'
import { isSafeStorageKey, ObjectNotFoundError, type ByteRange, type ObjectStorage } from './types'

export interface DiskStorageOptions {
  root: string
  /** Base URL of this app, used to build signed download links. */
  publicUrl: string
  signer: UrlSigner
}

interface Sidecar {
  contentType?: string
  metadata?: Record<string, string>
  etag: string
}

interface UploadManifest {
  key: string
  contentType?: string
}

interface Staged {
  tmp: string
  size: number
  etag: string
}

/** S3 refuses smaller non-final parts at complete; refusing them here too keeps embedded mode honest. */
export const MIN_PART_BYTES = 5 * 1024 * 1024
const MAX_PART_NUMBER = 10_000
const UPLOAD_ID = /^[0-9a-f]{32}$/

export function createDiskStorage(opts: DiskStorageOptions): ObjectStorage {
  const root = path.resolve(opts.root)
  const tmpDir = path.join(root, '.tmp')
  const metaDir = path.join(root, '.meta')
  const multipartDir = path.join(root, '.multipart')
  const publicUrl = opts.publicUrl.replace(/\/+$/, '')

  const objectPath = (key: string): string => inside(root, key)
  const metaPath = (key: string): string => inside(metaDir, `${key}.json`)

  const uploadDir = (uploadId: string): string => {
    if (!UPLOAD_ID.test(uploadId)) throw new Error('Invalid multipart upload id')
    return path.join(multipartDir, uploadId)
  }

  /** Streams into a fresh file under .tmp, hashing and counting on the way. Leaves nothing behind on failure. */
  async function stage(source: Readable | AsyncIterable<Buffer>, expectedLength?: number): Promise<Staged> {
    await mkdir(tmpDir, { recursive: true })
    const tmp = path.join(tmpDir, randomBytes(16).toString('hex'))
    const hash = createHash('md5')
    let size = 0
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk)
        size += chunk.length
        callback(null, chunk)
      },
    })
    try {
      // flush: the rename that follows is only crash-safe if the data reached the disk first.
      await pipeline(source, meter, createWriteStream(tmp, { flags: 'wx', flush: true }))
      if (expectedLength !== undefined && size !== expectedLength) {
        throw new Error(`Expected ${expectedLength} bytes but received ${size}`)
      }
    } catch (err) {
      await rm(tmp, { force: true })
      throw err
    }
    return { tmp, size, etag: hash.digest('hex') }
  }

  /** The sidecar goes first so that an object, once visible, already has its content type. */
  async function commit(key: string, staged: Staged, sidecar: Sidecar): Promise<void> {
    try {
      await writeSidecar(key, sidecar)
      const target = objectPath(key)
      await mkdir(path.dirname(target), { recursive: true })
      await rename(staged.tmp, target)
    } catch (err) {
      await rm(staged.tmp, { force: true })
      throw err
    }
  }

  async function writeSidecar(key: string, sidecar: Sidecar): Promise<void> {
    const target = metaPath(key)
    await mkdir(path.dirname(target), { recursive: true })
    await mkdir(tmpDir, { recursive: true })
    const tmp = path.join(tmpDir, `${randomBytes(16).toString('hex')}.json`)
    try {
      await writeFile(tmp, JSON.stringify(sidecar), { flag: 'wx' })
      await rename(tmp, target)
    } catch (err) {
      await rm(tmp, { force: true })
      throw err
    }
  }

  async function readSidecar(key: string): Promise<Sidecar | undefined> {
    try {
      return JSON.parse(await readFile(metaPath(key), 'utf8')) as Sidecar
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
  }

  async function loadUpload(key: string, uploadId: string): Promise<{ dir: string; manifest: UploadManifest }> {
    const dir = uploadDir(uploadId)
    let manifest: UploadManifest
    try {
      manifest = JSON.parse(await readFile(path.join(dir, 'upload.json'), 'utf8')) as UploadManifest
    } catch (err) {
      if (isMissing(err)) throw new ObjectNotFoundError(key)
      throw err
    }
    // S3 answers NoSuchUpload when the id belongs to another key; so do we.
    if (manifest.key !== key) throw new ObjectNotFoundError(key)
    return { dir, manifest }
  }

  return {
    kind: 'disk',

    async put(key, body, options = {}) {
      assertSafeKey(key)
      const staged = await stage(Buffer.isBuffer(body) ? Readable.from([body]) : body, options.contentLength)
      await commit(key, staged, { contentType: options.contentType, metadata: options.metadata, etag: staged.etag })
      return { size: staged.size, etag: staged.etag }
    },

    async get(key, range) {
      assertSafeKey(key)
      let handle
      try {
        handle = await open(objectPath(key), 'r')
      } catch (err) {
        if (isMissing(err)) throw new ObjectNotFoundError(key)
        throw err
      }
      try {
        // Size and bytes come from the same open file, so a concurrent replace cannot mix versions.
        const st = await handle.stat()
        if (!st.isFile()) throw new ObjectNotFoundError(key)
        const totalSize = st.size
        const sidecar = await readSidecar(key)
        if (!range) {
          return { body: handle.createReadStream(), size: totalSize, totalSize, contentType: sidecar?.contentType }
        }
        const { start, end } = clampRange(range, totalSize)
        return {
          body: handle.createReadStream({ start, end }),
          size: end - start + 1,
          totalSize,
          contentType: sidecar?.contentType,
        }
      } catch (err) {
        await handle.close()
        throw err
      }
    },

    async head(key) {
      assertSafeKey(key)
      let st
      try {
        st = await stat(objectPath(key))
      } catch (err) {
        if (isMissing(err)) return null
        throw err
      }
      if (!st.isFile()) return null
      const sidecar = await readSidecar(key)
      return { key, size: st.size, contentType: sidecar?.contentType, etag: sidecar?.etag, lastModified: st.mtime }
    },

    async delete(key) {
      assertSafeKey(key)
      try {
        await unlink(objectPath(key))
      } catch (err) {
        // EISDIR: the key is only a prefix of other keys, so there is no object to delete.
        if (!isMissing(err) && (err as NodeJS.ErrnoException).code !== 'EISDIR') throw err
      }
      await rm(metaPath(key), { force: true })
    },

    async copy(fromKey, toKey) {
      assertSafeKey(fromKey)
      assertSafeKey(toKey)
      const source = objectPath(fromKey)
      const st = await stat(source).catch((err: unknown) => {
        if (isMissing(err)) throw new ObjectNotFoundError(fromKey)
        throw err
      })
      if (!st.isFile()) throw new ObjectNotFoundError(fromKey)
      const sidecar = await readSidecar(fromKey)
      await mkdir(tmpDir, { recursive: true })
      const tmp = path.join(tmpDir, randomBytes(16).toString('hex'))
      try {
        // FICLONE makes the copy a cheap reflink where the filesystem supports it, a plain copy elsewhere.
        await copyFile(source, tmp, constants.COPYFILE_FICLONE)
        await fsync(tmp)
      } catch (err) {
        await rm(tmp, { force: true })
        if (isMissing(err)) throw new ObjectNotFoundError(fromKey)
        throw err
      }
      const etag = sidecar?.etag ?? (await md5File(tmp))
      await commit(toKey, { tmp, size: st.size, etag }, { ...sidecar, etag })
    },

    async createMultipartUpload(key, options = {}) {
      assertSafeKey(key)
      const uploadId = randomBytes(16).toString('hex')
      const dir = uploadDir(uploadId)
      await mkdir(dir, { recursive: true })
      const manifest: UploadManifest = { key, contentType: options.contentType }
      await writeFile(path.join(dir, 'upload.json'), JSON.stringify(manifest), { flag: 'wx' })
      return { uploadId }
    },

    async uploadPart(key, uploadId, partNumber, body, contentLength) {
      assertSafeKey(key)
      assertPartNumber(partNumber)
      const { dir } = await loadUpload(key, uploadId)
      const staged = await stage(Buffer.isBuffer(body) ? Readable.from([body]) : body, contentLength)
      try {
        // rename replaces an earlier upload of the same part in one step, so a retry is idempotent.
        await rename(staged.tmp, path.join(dir, String(partNumber)))
      } catch (err) {
        await rm(staged.tmp, { force: true })
        // The upload was aborted or completed while this part was streaming.
        if (isMissing(err)) throw new ObjectNotFoundError(key)
        throw err
      }
      return { etag: staged.etag, size: staged.size }
    },

    async completeMultipartUpload(key, uploadId, parts) {
      assertSafeKey(key)
      const { dir, manifest } = await loadUpload(key, uploadId)
      if (parts.length === 0) throw new Error('A multipart upload needs at least one part')
      const ordered = [...parts].sort((a, b) => a.partNumber - b.partNumber)
      for (const [i, part] of ordered.entries()) {
        assertPartNumber(part.partNumber)
        if (i > 0 && ordered[i - 1]?.partNumber === part.partNumber) throw new Error(`Part ${part.partNumber} is listed twice`)
        let size: number
        try {
          size = (await stat(path.join(dir, String(part.partNumber)))).size
        } catch (err) {
          if (isMissing(err)) throw new Error(`Part ${part.partNumber} was not uploaded`)
          throw err
        }
        if (i < ordered.length - 1 && size < MIN_PART_BYTES) {
          throw new Error(`Part ${part.partNumber} is smaller than the ${MIN_PART_BYTES}-byte minimum for a non-final part`)
        }
      }

      async function* concatenate(): AsyncGenerator<Buffer> {
        for (const part of ordered) {
          const hash = createHash('md5')
          for await (const chunk of createReadStream(path.join(dir, String(part.partNumber)))) {
            hash.update(chunk as Buffer)
            yield chunk as Buffer
          }
          // The client's list must name the bytes it uploaded: a part replaced since is a mismatch, as on S3.
          if (hash.digest('hex') !== unquote(part.etag)) throw new Error(`Part ${part.partNumber} does not match its ETag`)
        }
      }

      const staged = await stage(concatenate())
      await commit(key, staged, { contentType: manifest.contentType, etag: staged.etag })
      await rm(dir, { recursive: true, force: true })
      return { size: staged.size, etag: staged.etag }
    },

    async abortMultipartUpload(key, uploadId) {
      assertSafeKey(key)
      try {
        await loadUpload(key, uploadId)
      } catch (err) {
        if (err instanceof ObjectNotFoundError) return
        throw err
      }
      await rm(uploadDir(uploadId), { recursive: true, force: true })
    },

    async signedDownloadUrl(key, options) {
      assertSafeKey(key)
      const exp = Math.floor(Date.now() / 1000 + options.expiresInSeconds)
      const query = opts.signer.sign({ key, name: options.filename, type: options.contentType }, exp)
      return `${publicUrl}/files/download?${query.toString()}`
    },

    async check() {
      try {
        await mkdir(tmpDir, { recursive: true })
        const probe = path.join(tmpDir, `probe-${randomBytes(8).toString('hex')}`)
        await writeFile(probe, '')
        await unlink(probe)
      } catch (err) {
        throw new ServiceUnavailableError('Storage is unavailable', { cause: err })
      }
    },

    async close() {},
  }
}

function assertSafeKey(key: string): void {
  if (!isSafeStorageKey(key)) throw new Error(`Refusing unsafe storage key ${JSON.stringify(key)}`)
}

function assertPartNumber(partNumber: number): void {
  if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > MAX_PART_NUMBER) {
    throw new Error(`Part number must be an integer from 1 to ${MAX_PART_NUMBER}`)
  }
}

/** A second line of defence behind isSafeStorageKey: the resolved path must stay under base. */
function inside(base: string, relative: string): string {
  const resolved = path.resolve(base, relative)
  if (!resolved.startsWith(base + path.sep)) throw new Error('Refusing a storage path outside the root')
  return resolved
}

function clampRange(range: ByteRange, totalSize: number): ByteRange {
  const { start, end } = range
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new RangeError('Invalid byte range')
  }
  if (start >= totalSize) throw new RangeError('Range not satisfiable')
  return { start, end: Math.min(end, totalSize - 1) }
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  // ENOTDIR: a path segment of the key is an object, so the key itself cannot exist.
  return code === 'ENOENT' || code === 'ENOTDIR'
}

function unquote(etag: string): string {
  return etag.replace(/^"|"$/g, '')
}

async function fsync(file: string): Promise<void> {
  const handle = await open(file, 'r+')
  try {
    await handle.datasync()
  } finally {
    await handle.close()
  }
}

async function md5File(file: string): Promise<string> {
  const hash = createHash('md5')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}
