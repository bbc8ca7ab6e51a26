/**
 * ObjectStorage on S3 or any S3-compatible service. Every failure to reach the service becomes a
 * ServiceUnavailableError whose message is safe to show; the SDK error stays in `cause` for the logs.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'
import { pipeline, Readable, Transform } from 'node:stream'
import type { S3Config } from '../../config'
import { contentDisposition, dispositionTypeFor } from '../../lib/content-disposition'
import { ServiceUnavailableError } from '../../lib/errors'
import { isSafeStorageKey, ObjectNotFoundError, type ObjectStorage } from './types'

export interface S3StorageOptions {
  /**
   * Until the response headers arrive. A streamed body is exempt, as it moves at its uploader's pace;
   * the same value then bounds how long the socket may sit idle.
   */
  requestTimeoutMs?: number
  connectTimeoutMs?: number
}

interface HttpOptions {
  abortSignal?: AbortSignal
  requestTimeout?: number
}

/** lib-storage buffers queueSize * partSize bytes per upload of unknown length. */
const UPLOAD_PART_BYTES = 8 * 1024 * 1024
const UPLOAD_QUEUE_SIZE = 2

export function createS3Storage(config: S3Config, opts: S3StorageOptions = {}): ObjectStorage {
  const requestTimeout = opts.requestTimeoutMs ?? 60_000
  const client = new S3Client({
    region: config.region,
    endpoint: config.endpoint,
    forcePathStyle: config.forcePathStyle,
    // Without explicit keys the SDK's default chain applies (instance role, web identity, profile).
    credentials:
      config.accessKeyId && config.secretAccessKey
        ? { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey }
        : undefined,
    // The default (WHEN_SUPPORTED) wraps a streamed body in an aws-chunked stream that the SDK pipes
    // without an error listener: a caller's stream failing midway then crashes the process with an
    // uncaught error. Several S3-compatible services reject it too. Checksums stay on where S3 requires them.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    // One retry hides a blip; more would hold a request for longer than a client will wait.
    maxAttempts: 2,
    requestHandler: {
      connectionTimeout: opts.connectTimeoutMs ?? 3_000,
      requestTimeout,
      // Without it a request timeout is only logged and the request goes on waiting.
      throwOnRequestTimeout: true,
      // Covers a download body that stalls after its headers arrived, which requestTimeout does not.
      socketTimeout: requestTimeout,
    },
  })
  const Bucket = config.bucket

  async function send<T>(run: (options: HttpOptions) => Promise<T>, key?: string, body?: Readable | Buffer): Promise<T> {
    // The SDK pipes a stream into the socket: if the caller's stream fails (a size cap, a client that
    // went away), nothing ends the request, so abort it and report the caller's own error.
    let bodyError: unknown
    const controller = new AbortController()
    const onBodyError = (err: unknown): void => {
      bodyError = err
      controller.abort()
    }
    const stream = body instanceof Readable ? body : undefined
    stream?.once('error', onBodyError)
    try {
      // A streamed body moves at the pace of whoever is uploading it, so only the socket's idle timeout applies.
      return await run(stream ? { abortSignal: controller.signal, requestTimeout: 0 } : {})
    } catch (err) {
      if (bodyError !== undefined) throw bodyError
      throw translate(err, key)
    } finally {
      stream?.off('error', onBodyError)
    }
  }

  return {
    kind: 's3',

    async put(key, body, options = {}) {
      assertSafeKey(key)
      const common = { Bucket, Key: key, ContentType: options.contentType, Metadata: options.metadata }
      if (Buffer.isBuffer(body) || options.contentLength !== undefined) {
        const ContentLength = Buffer.isBuffer(body) ? body.length : options.contentLength
        const out = await send(
          (options) => client.send(new PutObjectCommand({ ...common, Body: body, ContentLength }), options),
          key,
          body,
        )
        return { size: ContentLength ?? 0, etag: unquote(out.ETag) }
      }
      // Unknown length: lib-storage sends one PutObject when the stream fits in a part, a multipart upload otherwise.
      let size = 0
      const counted = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          size += chunk.length
          callback(null, chunk)
        },
      })
      const upload = new Upload({
        client,
        params: { ...common, Body: counted },
        partSize: UPLOAD_PART_BYTES,
        queueSize: UPLOAD_QUEUE_SIZE,
      })
      let bodyError: unknown
      pipeline(body, counted, (err) => {
        if (err && bodyError === undefined) bodyError = err
      })
      try {
        const out = await upload.done()
        return { size, etag: unquote(out.ETag) }
      } catch (err) {
        // Stops the caller's stream too, which would otherwise sit paused forever.
        counted.destroy()
        if (bodyError !== undefined) throw bodyError
        throw translate(err, key)
      }
    },

    async get(key, range) {
      assertSafeKey(key)
      if (range && (!Number.isSafeInteger(range.start) || !Number.isSafeInteger(range.end) || range.start < 0 || range.end < range.start)) {
        throw new RangeError('Invalid byte range')
      }
      const out = await send(() =>
        client.send(
          new GetObjectCommand({ Bucket, Key: key, Range: range ? `bytes=${range.start}-${range.end}` : undefined }),
        ), key)
      const size = out.ContentLength ?? 0
      const totalSize = Number(/\/(\d+)$/.exec(out.ContentRange ?? '')?.[1] ?? size)
      return { body: out.Body as Readable, size, totalSize, contentType: out.ContentType }
    },

    async head(key) {
      assertSafeKey(key)
      try {
        const out = await send(() => client.send(new HeadObjectCommand({ Bucket, Key: key })), key)
        return {
          key,
          size: out.ContentLength ?? 0,
          contentType: out.ContentType,
          etag: unquote(out.ETag),
          lastModified: out.LastModified,
        }
      } catch (err) {
        if (err instanceof ObjectNotFoundError) return null
        throw err
      }
    },

    async delete(key) {
      assertSafeKey(key)
      await send(() => client.send(new DeleteObjectCommand({ Bucket, Key: key })), key)
    },

    async copy(fromKey, toKey) {
      assertSafeKey(fromKey)
      assertSafeKey(toKey)
      // Safe keys need no URL encoding in CopySource. A single CopyObject handles objects up to 5 GiB.
      await send(() => client.send(new CopyObjectCommand({ Bucket, Key: toKey, CopySource: `${Bucket}/${fromKey}` })), fromKey)
    },

    async createMultipartUpload(key, options = {}) {
      assertSafeKey(key)
      const out = await send(
        () => client.send(new CreateMultipartUploadCommand({ Bucket, Key: key, ContentType: options.contentType })),
        key,
      )
      if (!out.UploadId) throw new ServiceUnavailableError('Storage is unavailable', { cause: new Error('No UploadId in the response') })
      return { uploadId: out.UploadId }
    },

    async uploadPart(key, uploadId, partNumber, body, contentLength) {
      assertSafeKey(key)
      // S3 needs the length of a part up front; a part is bounded by the session's part size, so buffering is fine.
      const payload = Buffer.isBuffer(body) || contentLength !== undefined ? body : await collect(body)
      const ContentLength = Buffer.isBuffer(payload) ? payload.length : contentLength
      const out = await send(
        (options) =>
          client.send(
            new UploadPartCommand({ Bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: payload, ContentLength }),
            options,
          ),
        key,
        payload,
      )
      return { etag: unquote(out.ETag) ?? '', size: ContentLength ?? 0 }
    },

    async completeMultipartUpload(key, uploadId, parts) {
      assertSafeKey(key)
      const Parts = [...parts]
        .sort((a, b) => a.partNumber - b.partNumber)
        .map((p) => ({ PartNumber: p.partNumber, ETag: `"${unquote(p.etag)}"` }))
      const out = await send(
        () => client.send(new CompleteMultipartUploadCommand({ Bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts } })),
        key,
      )
      // CompleteMultipartUpload does not report the size.
      const head = await send(() => client.send(new HeadObjectCommand({ Bucket, Key: key })), key)
      return { size: head.ContentLength ?? 0, etag: unquote(out.ETag) }
    },

    async abortMultipartUpload(key, uploadId) {
      assertSafeKey(key)
      try {
        await send(() => client.send(new AbortMultipartUploadCommand({ Bucket, Key: key, UploadId: uploadId })), key)
      } catch (err) {
        // Already aborted or completed: the goal, no upload left behind, holds.
        if (err instanceof ObjectNotFoundError) return
        throw err
      }
    },

    async signedDownloadUrl(key, options) {
      assertSafeKey(key)
      const command = new GetObjectCommand({
        Bucket,
        Key: key,
        ResponseContentType: options.contentType,
        ResponseContentDisposition: contentDisposition(options.filename, dispositionTypeFor(options.contentType)),
      })
      return getSignedUrl(client, command, { expiresIn: options.expiresInSeconds })
    },

    async check() {
      try {
        await client.send(new HeadBucketCommand({ Bucket }))
      } catch (err) {
        // A readiness probe only needs to know that storage is not usable, whatever the reason.
        throw new ServiceUnavailableError('Storage is unavailable', { cause: err })
      }
    },

    async close() {
      client.destroy()
    },
  }
}

function assertSafeKey(key: string): void {
  if (!isSafeStorageKey(key)) throw new Error(`Refusing unsafe storage key ${JSON.stringify(key)}`)
}

/** ETags come quoted from S3; the adapters hand them out bare, the same as the disk adapter. */
function unquote(etag: string | undefined): string | undefined {
  return etag?.replace(/^"|"$/g, '')
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string))
  return Buffer.concat(chunks)
}

interface SdkError {
  name?: string
  code?: string
  $fault?: 'client' | 'server'
  $metadata?: { httpStatusCode?: number }
}

const NOT_FOUND = new Set(['NoSuchKey', 'NotFound', 'NoSuchUpload'])
const TRANSIENT_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN',
  'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'UND_ERR_SOCKET',
])
const TRANSIENT_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'SlowDown', 'AbortError'])

function translate(err: unknown, key: string | undefined): unknown {
  const e = (err ?? {}) as SdkError
  const status = e.$metadata?.httpStatusCode
  if (key !== undefined && ((e.name !== undefined && NOT_FOUND.has(e.name)) || status === 404)) {
    // A missing bucket is a deployment fault, not a missing object.
    if (e.name !== 'NoSuchBucket') return new ObjectNotFoundError(key)
  }
  if (e.name === 'InvalidRange' || status === 416) return new RangeError('Range not satisfiable')
  const transient =
    (status !== undefined && (status >= 500 || status === 429)) ||
    e.$fault === 'server' ||
    (e.code !== undefined && TRANSIENT_CODES.has(e.code)) ||
    (e.name !== undefined && TRANSIENT_NAMES.has(e.name))
  if (transient) return new ServiceUnavailableError('Storage is unavailable', { cause: err })
  return err
}
