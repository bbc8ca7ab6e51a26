/** HTTP client helpers for benchmarks: streamed request bodies and GraphQL multipart requests. */
import { randomBytes } from 'node:crypto'

/** Default chunk size of streamed bodies: what a socket read typically delivers. */
export const CHUNK_BYTES = 64 * 1024

/**
 * A request body that streams the given buffers in chunks, so neither side sees one big buffer
 * and the request goes out with chunked transfer encoding, as a browser's or SDK's stream would.
 */
export function streamBody(parts: readonly Buffer[], chunkBytes = CHUNK_BYTES): ReadableStream<Uint8Array> {
  let index = 0
  let offset = 0
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      while (index < parts.length && offset >= parts[index]!.length) {
        index++
        offset = 0
      }
      if (index >= parts.length) return controller.close()
      const part = parts[index]!
      const end = Math.min(offset + chunkBytes, part.length)
      controller.enqueue(part.subarray(offset, end))
      offset = end
    },
  })
}

export interface StreamedPost {
  status: number
  /** The response body, read to the end. */
  body: string
  bytesSent: number
}

/** POSTs the parts as one streamed body and reads the whole response. */
export async function postStreamed(url: string, parts: readonly Buffer[], headers: Record<string, string>): Promise<StreamedPost> {
  const res = await fetch(url, { method: 'POST', headers, body: streamBody(parts), duplex: 'half' } as RequestInit)
  const body = await res.text()
  return { status: res.status, body, bytesSent: parts.reduce((n, p) => n + p.length, 0) }
}

export interface MultipartFile {
  /** The variable path the file fills, e.g. "variables.file". */
  path: string
  filename: string
  contentType: string
  content: Buffer
}

/**
 * A GraphQL multipart request (jaydenseric spec) as buffers to stream, without copying the file
 * contents: the parts reference the callers' buffers.
 */
export function graphqlMultipart(
  operations: { query: string; variables: Record<string, unknown> },
  files: readonly MultipartFile[],
): { parts: Buffer[]; contentType: string } {
  const boundary = `----gwbench${randomBytes(12).toString('hex')}`
  const map: Record<string, string[]> = {}
  files.forEach((f, i) => (map[String(i)] = [f.path]))
  const field = (name: string, value: string) => Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`)
  const parts: Buffer[] = [field('operations', JSON.stringify(operations)), field('map', JSON.stringify(map))]
  files.forEach((f, i) => {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${i}"; filename="${f.filename}"\r\nContent-Type: ${f.contentType}\r\n\r\n`))
    parts.push(f.content)
    parts.push(Buffer.from('\r\n'))
  })
  parts.push(Buffer.from(`--${boundary}--\r\n`))
  return { parts, contentType: `multipart/form-data; boundary=${boundary}` }
}
