import type { Readable } from 'node:stream'

export interface PutOptions {
  contentType?: string
  /** Required by S3 for a single PUT of a stream; when absent the S3 adapter streams a multipart upload. */
  contentLength?: number
  metadata?: Record<string, string>
}

export interface ObjectHead {
  key: string
  size: number
  contentType?: string
  etag?: string
  lastModified?: Date
}

export interface ByteRange {
  start: number
  /** Inclusive, as in HTTP Range. */
  end: number
}

export interface GetResult {
  body: Readable
  /** Bytes in `body`. */
  size: number
  /** Size of the whole object. */
  totalSize: number
  contentType?: string
}

export interface SignedUrlOptions {
  expiresInSeconds: number
  filename: string
  contentType: string
}

export interface CompletedPart {
  partNumber: number
  etag: string
}

/**
 * Byte storage. Keys are server-generated (see `isSafeStorageKey`); adapters refuse anything else.
 * Every method is idempotent where the operation allows it: delete of a missing key succeeds,
 * re-uploading a part replaces it.
 */
export interface ObjectStorage {
  readonly kind: 'disk' | 's3'
  put(key: string, body: Readable | Buffer, options?: PutOptions): Promise<{ size: number; etag?: string }>
  /** Throws ObjectNotFoundError when the key is missing. */
  get(key: string, range?: ByteRange): Promise<GetResult>
  head(key: string): Promise<ObjectHead | null>
  delete(key: string): Promise<void>
  copy(fromKey: string, toKey: string): Promise<void>
  createMultipartUpload(key: string, options?: { contentType?: string }): Promise<{ uploadId: string }>
  uploadPart(key: string, uploadId: string, partNumber: number, body: Readable | Buffer, contentLength?: number): Promise<{ etag: string; size: number }>
  completeMultipartUpload(key: string, uploadId: string, parts: CompletedPart[]): Promise<{ size: number; etag?: string }>
  abortMultipartUpload(key: string, uploadId: string): Promise<void>
  /** A URL a browser can GET: presigned on S3, HMAC-signed app URL on disk. */
  signedDownloadUrl(key: string, options: SignedUrlOptions): Promise<string>
  /** Readiness probe: resolves when the backend answers. */
  check(): Promise<void>
  close(): Promise<void>
}

export class ObjectNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`Object not found: ${key}`)
  }
}

const SAFE_KEY = /^[A-Za-z0-9][A-Za-z0-9_\-./]{0,511}$/

/** Keys are made by the server, but adapters still refuse traversal or odd characters as a second line of defence. */
export function isSafeStorageKey(key: string): boolean {
  return SAFE_KEY.test(key) && !key.split('/').some((seg) => seg === '' || seg === '.' || seg === '..')
}
