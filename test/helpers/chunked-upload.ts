/**
 * A client of the chunked upload API (startUpload, uploadChunk, completeUpload, abortUpload,
 * uploadSession) over a TestApp, for the upload tests, the multi-instance test and the fault scripts.
 */
import { createHash, randomBytes } from 'node:crypto'
import { expect } from 'vitest'
import { uploadThroughGraphql, type TestApp } from './app'

const SESSION = 'id filename mimeType size sha256 fileId partSize partCount receivedParts bytesReceived status error expiresAt'
const START = `mutation($input: StartUploadInput!) { startUpload(input: $input) {
  __typename ... on StartUploadSuccess { session { ${SESSION} } } ... on Error { message }
  ... on ValidationError { fieldErrors { path message } } ... on QuotaExceededError { limitBytes usedBytes } ... on FileTooLargeError { maxBytes } } }`
const CHUNK = `mutation($sessionId: ID!, $partNumber: Int!, $chunk: Upload!) { uploadChunk(sessionId: $sessionId, partNumber: $partNumber, chunk: $chunk) {
  __typename ... on UploadChunkSuccess { session { ${SESSION} } } ... on Error { message } ... on UnsupportedFileTypeError { detectedType } } }`
const COMPLETE = `mutation($id: ID!) { completeUpload(sessionId: $id) { __typename ... on CompleteUploadSuccess { file { id status } } ... on Error { message } } }`
const ABORT = `mutation($id: ID!) { abortUpload(sessionId: $id) { __typename ... on AbortUploadSuccess { session { ${SESSION} } } ... on Error { message } } }`
const SESSION_QUERY = `query($id: ID!) { uploadSession(id: $id) { ${SESSION} } }`
const FILE_QUERY = `query($id: ID!) { file(id: $id) { id status error filename mimeType size sha256 url
  currentVersion { number status error pageCount steps { name status attempts } } versions { number status } } }`

export type Session = { id: string; partSize: number; partCount: number; receivedParts: number[]; bytesReceived: number; status: string; fileId: string; expiresAt: string; error: string | null }
type Result<T extends string, V> = { __typename: string; message?: string } & { [K in T]?: V } & Record<string, unknown>
export type FileView = {
  id: string
  status: string
  error: string | null
  size: number
  sha256: string
  url: string
  mimeType: string
  currentVersion: { number: number; status: string; error: string | null; pageCount: number | null; steps: { name: string; status: string; attempts: number }[] }
  versions: { number: number; status: string }[]
}
export type ChunkResponse = { data?: { uploadChunk: Result<'session', Session> }; errors?: { message: string; extensions?: Record<string, unknown> }[] }

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')
/** A PDF (by its magic bytes) of exactly `size` random bytes. */
export const pdf = (size: number) => Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(size - 9)])
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export function chunkedUploadClient(t: TestApp, token: string) {
  return {
    start: async (input: Record<string, unknown>) => {
      const r = await t.gql<{ startUpload: Result<'session', Session> }>(START, { input }, token)
      expect(r.errors).toBeUndefined()
      return r.data.startUpload
    },
    part: async (sessionId: string, partNumber: number, content: Buffer) => {
      const res = await uploadThroughGraphql(t, token, CHUNK, { sessionId, partNumber, chunk: null }, { filename: `part-${partNumber}`, contentType: 'application/octet-stream', content, path: 'variables.chunk' })
      return res.body as ChunkResponse
    },
    complete: async (id: string) => {
      const r = await t.gql<{ completeUpload: Result<'file', { id: string; status: string }> }>(COMPLETE, { id }, token)
      expect(r.errors).toBeUndefined()
      return r.data.completeUpload
    },
    abort: async (id: string) => (await t.gql<{ abortUpload: Result<'session', Session> }>(ABORT, { id }, token)).data.abortUpload,
    session: async (id: string) => (await t.gql<{ uploadSession: Session | null }>(SESSION_QUERY, { id }, token)).data.uploadSession,
    file: async (id: string) => (await t.gql<{ file: FileView | null }>(FILE_QUERY, { id }, token)).data.file,
    /** Waits for processing to end (completeUpload answers while the file is still PROCESSING). */
    settled: async (id: string): Promise<FileView> => {
      for (let i = 0; i < 600; i++) {
        const r = await t.gql<{ file: FileView | null }>('query($id: ID!) { file(id: $id) { id status versions { status } } }', { id }, token)
        const f = r.data.file
        if (f && f.status !== 'PROCESSING' && f.versions.every((v) => v.status !== 'PROCESSING')) return (await t.gql<{ file: FileView }>(FILE_QUERY, { id }, token)).data.file
        await sleep(25)
      }
      throw new Error(`file ${id} is still processing`)
    },
  }
}

/** The bytes behind a file URL: a signed app URL through the app, a presigned storage URL over HTTP. */
export async function download(t: TestApp, url: string): Promise<Buffer> {
  if (url.startsWith('http://groundwork.test/')) {
    const res = await t.app.inject({ method: 'GET', url: url.slice('http://groundwork.test'.length) })
    expect(res.statusCode).toBe(200)
    return res.rawPayload
  }
  const res = await fetch(url)
  expect(res.status).toBe(200)
  return Buffer.from(await res.arrayBuffer())
}
