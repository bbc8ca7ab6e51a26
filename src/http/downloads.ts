/**
 * GET/HEAD /files/download: serves an object named by an HMAC-signed link (disk mode; on S3 the
 * browser goes to a presigned URL instead). The link fixes the key, the filename and the content
 * type, so the client cannot make the app serve a stored file as HTML on its own origin.
 */
import type { FastifyInstance, FastifyReply } from 'fastify'
import { contentDisposition, dispositionTypeFor } from '../lib/content-disposition'
import type { UrlSigner } from '../infra/storage/signed-url'
import { isSafeStorageKey, ObjectNotFoundError, type ByteRange, type ObjectStorage } from '../infra/storage/types'

export interface DownloadRoutesOptions {
  storage: ObjectStorage
  signer: UrlSigner
}

/** Browsers may keep the bytes no longer than this, and never past the link's own expiry. */
const MAX_CACHE_SECONDS = 3600
const MIME_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/

export async function downloadRoutes(app: FastifyInstance, opts: DownloadRoutesOptions): Promise<void> {
  const { storage, signer } = opts

  app.route({
    method: ['GET', 'HEAD'],
    url: '/files/download',
    handler: async (request, reply) => {
      const query = request.query as Record<string, unknown>
      const verified = signer.verify(query)
      if (!verified.ok) {
        return verified.reason === 'expired'
          ? sendError(reply, 410, 'LINK_EXPIRED', 'This download link has expired')
          : sendError(reply, 403, 'INVALID_SIGNATURE', 'This download link is not valid')
      }
      const { key, name, type } = verified.params
      // A validly signed link without these was not made by signedDownloadUrl (an email link, say).
      if (!key || !isSafeStorageKey(key) || name === undefined || type === undefined) {
        return sendError(reply, 403, 'INVALID_SIGNATURE', 'This download link is not valid')
      }

      const head = await storage.head(key)
      if (!head) return sendError(reply, 404, 'NOT_FOUND', 'File not found')

      const contentType = MIME_TYPE.test(type) ? type.toLowerCase() : 'application/octet-stream'
      const etag = head.etag ? `"${head.etag}"` : undefined
      const exp = Number(query.exp)
      const maxAge = Math.max(0, Math.min(MAX_CACHE_SECONDS, exp - Math.floor(Date.now() / 1000)))
      reply.headers({
        'content-type': contentType,
        'content-disposition': contentDisposition(name, dispositionTypeFor(contentType)),
        'x-content-type-options': 'nosniff',
        'content-security-policy': "default-src 'none'; sandbox",
        'cache-control': `private, max-age=${maxAge}`,
        'accept-ranges': 'bytes',
      })
      if (etag) reply.header('etag', etag)
      if (head.lastModified) reply.header('last-modified', head.lastModified.toUTCString())

      const rangeHeader = request.headers.range
      const ifRange = request.headers['if-range']
      // A Range for another version of the file must not be spliced onto this one: serve it whole.
      const honourRange = rangeHeader !== undefined && (ifRange === undefined || (etag !== undefined && ifRange === etag))
      const range = honourRange ? parseRange(rangeHeader, head.size) : undefined
      if (range === 'unsatisfiable') {
        reply.header('content-range', `bytes */${head.size}`)
        return sendError(reply, 416, 'RANGE_NOT_SATISFIABLE', 'The requested range is not satisfiable')
      }

      if (request.method === 'HEAD') {
        if (range) {
          reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${head.size}`)
          return reply.header('content-length', range.end - range.start + 1).send()
        }
        return reply.code(200).header('content-length', head.size).send()
      }

      let object
      try {
        object = await storage.get(key, range)
      } catch (err) {
        // Deleted or shrunk between head and get.
        if (err instanceof ObjectNotFoundError) return sendError(reply, 404, 'NOT_FOUND', 'File not found')
        if (err instanceof RangeError) {
          reply.header('content-range', `bytes */${head.size}`)
          return sendError(reply, 416, 'RANGE_NOT_SATISFIABLE', 'The requested range is not satisfiable')
        }
        throw err
      }
      reply.header('content-length', object.size)
      if (range) {
        const end = range.start + object.size - 1
        reply.code(206).header('content-range', `bytes ${range.start}-${end}/${object.totalSize}`)
      } else {
        reply.code(200)
      }
      return reply.send(object.body)
    },
  })
}

function sendError(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  // Drop the file's headers if they were set already: this body is JSON, not the file.
  reply.removeHeader('content-disposition')
  reply.removeHeader('etag')
  reply.removeHeader('last-modified')
  reply.removeHeader('accept-ranges')
  return reply
    .code(status)
    .header('content-type', 'application/json; charset=utf-8')
    .header('cache-control', 'no-store')
    .header('x-content-type-options', 'nosniff')
    .send({ error: { message, code } })
}

/**
 * One range of `bytes=a-b`, `bytes=a-` or `bytes=-n`. Anything else, multiple ranges included, returns
 * undefined: RFC 9110 lets a server ignore a Range header and send the whole representation.
 */
export function parseRange(header: string, size: number): ByteRange | 'unsatisfiable' | undefined {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (!match) return undefined
  const [, first = '', last = ''] = match
  if (first === '' && last === '') return undefined
  if (first === '') {
    const suffix = Number(last)
    if (!Number.isSafeInteger(suffix)) return undefined
    if (suffix === 0 || size === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(first)
  const end = last === '' ? undefined : Number(last)
  if (!Number.isSafeInteger(start) || (end !== undefined && (!Number.isSafeInteger(end) || end < start))) return undefined
  if (start >= size) return 'unsatisfiable'
  return { start, end: Math.min(end ?? size - 1, size - 1) }
}
