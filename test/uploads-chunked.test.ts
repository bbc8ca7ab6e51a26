import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { Readable } from 'node:stream'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ObjectStorage } from '../src/infra/storage/types'
import { buildTestApp, type TestApp } from './helpers/app'
import { chunkedUploadClient as client, download, pdf, sha256, type Session } from './helpers/chunked-upload'
import { s3Env, startS3 } from './helpers/s3'
import { createEmptyDatabase, type TestDatabase } from './helpers/services'

const MiB = 1024 * 1024
const PART = 5 * MiB
/** Small steps so tests of a 6 MiB file stay quick: 5 MiB parts (S3's minimum), files of one or two parts. */
const BASE_ENV = { UPLOAD_PART_BYTES: String(PART), UPLOAD_QUOTA_BYTES: String(200 * MiB) }

/** Uploads every part (in the given order) and completes. */
async function uploadWhole(c: ReturnType<typeof client>, content: Buffer, input: Record<string, unknown> = {}, order?: number[]) {
  const started = await c.start({ filename: 'big.pdf', size: content.length, mimeType: 'application/pdf', ...input })
  expect(started.__typename).toBe('StartUploadSuccess')
  const session = started.session!
  const numbers = order ?? Array.from({ length: session.partCount }, (_, i) => i + 1)
  for (const n of numbers) {
    const r = await c.part(session.id, n, content.subarray((n - 1) * session.partSize, n * session.partSize))
    expect(r.errors).toBeUndefined()
    expect(r.data!.uploadChunk.__typename).toBe('UploadChunkSuccess')
  }
  const done = await c.complete(session.id)
  expect(done.__typename).toBe('CompleteUploadSuccess')
  return { session, fileId: done.file!.id }
}

async function multipartDirs(dataDir: string): Promise<string[]> {
  return readdir(path.join(dataDir, 'files', '.multipart')).catch(() => [])
}

describe.each([
  { name: 'disk', s3: false },
  { name: 's3 (fauxqs)', s3: true },
])('chunked uploads to $name', ({ s3 }) => {
  let t: TestApp
  let closeS3: (() => Promise<void>) | undefined
  let c: ReturnType<typeof client>

  beforeAll(async () => {
    let env: Record<string, string | undefined> = { ...BASE_ENV }
    if (s3) {
      const s = await startS3()
      closeS3 = s.close
      env = { ...env, ...s3Env(s.config) }
    }
    t = await buildTestApp({ env })
    c = client(t, t.token('user', 'alice'))
  })
  afterAll(async () => {
    await t.close()
    await closeS3?.()
  })

  it('assembles parts sent out of order, computes the sha256 and serves the file byte for byte', async () => {
    const content = pdf(PART + MiB + 123)
    const { session, fileId } = await uploadWhole(c, content, {}, [2, 1])
    expect(session).toMatchObject({ partSize: PART, partCount: 2, receivedParts: [], status: 'UPLOADING' })
    const file = await c.settled(fileId)
    expect(file).toMatchObject({ status: 'READY', size: content.length, sha256: sha256(content), mimeType: 'application/pdf' })
    expect(file.currentVersion.steps.map((s) => `${s.name}:${s.status}`)).toEqual(['validate:DONE', 'checksum:DONE', 'optimize:SKIPPED', 'variants:SKIPPED', 'finalize:DONE'])
    expect(sha256(await download(t, file.url))).toBe(sha256(content))
    expect(await c.session(session.id)).toMatchObject({ status: 'COMPLETED', receivedParts: [1, 2], bytesReceived: content.length })
    // Completing again is idempotent: a client that lost the first answer gets the same file.
    expect(await c.complete(session.id)).toMatchObject({ __typename: 'CompleteUploadSuccess', file: { id: fileId } })
  })

  it('accepts parts in parallel and reports them for resuming', async () => {
    const content = pdf(3 * PART)
    const { session } = (await c.start({ filename: 'p.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
    const results = await Promise.all([1, 2, 3].map((n) => c.part(session.id, n, content.subarray((n - 1) * PART, n * PART))))
    expect(results.map((r) => r.data?.uploadChunk.__typename)).toEqual(['UploadChunkSuccess', 'UploadChunkSuccess', 'UploadChunkSuccess'])
    expect(await c.session(session.id)).toMatchObject({ receivedParts: [1, 2, 3], bytesReceived: 3 * PART })
    await c.abort(session.id)
  })

  it('replaces a part sent twice (the last one wins)', async () => {
    const content = pdf(PART + 1000)
    const { session } = (await c.start({ filename: 'dup.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
    const stale = Buffer.concat([content.subarray(0, 9), randomBytes(PART - 9)])
    expect((await c.part(session.id, 1, stale)).data!.uploadChunk.__typename).toBe('UploadChunkSuccess')
    expect((await c.part(session.id, 2, content.subarray(PART))).data!.uploadChunk.__typename).toBe('UploadChunkSuccess')
    const again = await c.part(session.id, 1, content.subarray(0, PART))
    expect(again.data!.uploadChunk.session).toMatchObject({ receivedParts: [1, 2], bytesReceived: content.length })
    const done = await c.complete(session.id)
    const file = await c.settled(done.file!.id)
    expect(file.sha256).toBe(sha256(content))
    expect(sha256(await download(t, file.url))).toBe(sha256(content))
  })

  it('refuses a part of the wrong size, either way, and records nothing', async () => {
    const content = pdf(PART + 5000)
    const { session } = (await c.start({ filename: 'w.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
    const short = await c.part(session.id, 1, content.subarray(0, PART - 1))
    expect(short.data!.uploadChunk).toMatchObject({ __typename: 'ValidationError' })
    expect(short.data!.uploadChunk.message).toMatch(/exactly 5242880 bytes/)
    const long = await c.part(session.id, 2, Buffer.concat([content.subarray(PART), Buffer.from('extra')]))
    expect(long.data!.uploadChunk.__typename).toBe('ValidationError')
    const outOfRange = await c.part(session.id, 3, content.subarray(0, 10))
    expect(outOfRange.data!.uploadChunk.message).toMatch(/partNumber must be between 1 and 2/)
    expect(await c.session(session.id)).toMatchObject({ receivedParts: [], bytesReceived: 0, status: 'UPLOADING' })
    await c.abort(session.id)
  })

  it('refuses to complete with missing parts, then completes once they arrive', async () => {
    const content = pdf(2 * PART + 10)
    const { session } = (await c.start({ filename: 'm.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
    await c.part(session.id, 1, content.subarray(0, PART))
    const early = await c.complete(session.id)
    expect(early).toMatchObject({ __typename: 'ValidationError' })
    expect(early.message).toMatch(/Parts missing: 2, 3 \(of 3\)/)
    expect(await c.session(session.id)).toMatchObject({ status: 'UPLOADING' })
    await c.part(session.id, 2, content.subarray(PART, 2 * PART))
    await c.part(session.id, 3, content.subarray(2 * PART))
    const done = await c.complete(session.id)
    expect((await c.settled(done.file!.id)).sha256).toBe(sha256(content))
  })

  it('fails the file with a visible reason when the bytes do not match the given sha256', async () => {
    const content = pdf(PART + 77)
    const { fileId } = await uploadWhole(c, content, { sha256: sha256(Buffer.from('something else')) })
    const file = await c.settled(fileId)
    expect(file.status).toBe('FAILED')
    expect(file.error).toMatch(/sha256/)
    expect(file.url).toBeNull()
    expect(file.currentVersion).toMatchObject({ status: 'FAILED' })
    expect(file.currentVersion.steps.find((s) => s.name === 'checksum')).toMatchObject({ status: 'FAILED', attempts: 1 })
  })

  it('verifies a correct sha256 given up front', async () => {
    const content = pdf(PART + 99)
    const { fileId } = await uploadWhole(c, content, { sha256: sha256(content).toUpperCase() })
    expect(await c.settled(fileId)).toMatchObject({ status: 'READY', sha256: sha256(content) })
  })

  it('refuses a first part whose bytes contradict the declared type, before storing it', async () => {
    const content = pdf(100_000)
    const { session } = (await c.start({ filename: 'x.png', size: content.length, mimeType: 'image/png' })) as { session: Session }
    const r = await c.part(session.id, 1, content)
    expect(r.data!.uploadChunk).toMatchObject({ __typename: 'UnsupportedFileTypeError', detectedType: 'application/pdf' })
    expect(await c.session(session.id)).toMatchObject({ receivedParts: [] })
  })

  it('aborts a session, and refuses parts afterwards', async () => {
    const content = pdf(PART + 10)
    const { session } = (await c.start({ filename: 'a.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
    await c.part(session.id, 1, content.subarray(0, PART))
    const uploadId = (await t.app.db.db.execute(sql`select multipart_upload_id as id from upload_sessions where id = ${session.id}`)).rows[0]!.id
    if (!s3) expect(await multipartDirs(t.dataDir)).toContain(uploadId)
    expect(await c.abort(session.id)).toMatchObject({ __typename: 'AbortUploadSuccess', session: { status: 'ABORTED', receivedParts: [] } })
    if (!s3) expect(await multipartDirs(t.dataDir)).not.toContain(uploadId)
    expect(await c.abort(session.id)).toMatchObject({ __typename: 'AbortUploadSuccess' })
    const late = await c.part(session.id, 2, content.subarray(PART))
    expect(late.data!.uploadChunk).toMatchObject({ __typename: 'ConflictError' })
    expect(await c.complete(session.id)).toMatchObject({ __typename: 'ConflictError' })
  })

  it('keeps a session private: another user gets NotFound, and an unknown id too', async () => {
    const content = pdf(PART + 10)
    const { session } = (await c.start({ filename: 'mine.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
    const mallory = client(t, t.token('user', 'mallory'))
    expect(await mallory.session(session.id)).toBeNull()
    expect((await mallory.part(session.id, 1, content.subarray(0, PART))).data!.uploadChunk.__typename).toBe('NotFoundError')
    expect(await mallory.complete(session.id)).toMatchObject({ __typename: 'NotFoundError' })
    expect(await mallory.abort(session.id)).toMatchObject({ __typename: 'NotFoundError' })
    const unknown = '00000000-0000-4000-8000-000000000000'
    expect(await c.session(unknown)).toBeNull()
    expect(await c.session('not-a-uuid')).toBeNull()
    expect((await c.part(unknown, 1, Buffer.from('x'))).data!.uploadChunk.__typename).toBe('NotFoundError')
    expect(await c.complete(unknown)).toMatchObject({ __typename: 'NotFoundError' })
    await c.abort(session.id)
  })

  it('adds a version to an existing file with startUpload { fileId }', async () => {
    const v1 = pdf(PART + 10)
    const first = await uploadWhole(c, v1)
    await c.settled(first.fileId)
    const v2 = pdf(PART + 20)
    const second = await uploadWhole(c, v2, { fileId: first.fileId })
    expect(second.fileId).toBe(first.fileId)
    const file = await c.settled(first.fileId)
    expect(file.versions).toEqual([{ number: 2, status: "READY" }, { number: 1, status: "READY" }])
    expect(file).toMatchObject({ sha256: sha256(v2), currentVersion: { number: 2 } })
    expect(file.versions.map((v) => v.number)).toEqual([2, 1])
  })

  it('recovers from storage failing in the middle of a part: the part is refused, and sent again it is stored', async () => {
    const storage = t.app.storage as ObjectStorage & { uploadPart: ObjectStorage['uploadPart'] }
    const original = storage.uploadPart
    let failures = 1
    storage.uploadPart = async (key, uploadId, n, body, length) => {
      if (failures-- > 0) {
        // Take some bytes, then drop the connection, as a storage outage does mid-stream.
        for await (const chunk of body as Readable) if (chunk) break
        throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })
      }
      return original(key, uploadId, n, body, length)
    }
    try {
      const content = pdf(PART + 1234)
      const { session } = (await c.start({ filename: 'flaky.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
      const failed = await c.part(session.id, 1, content.subarray(0, PART))
      expect(failed.errors?.[0]?.extensions?.code).toBe('SERVICE_UNAVAILABLE')
      expect(await c.session(session.id)).toMatchObject({ receivedParts: [] })
      expect((await c.part(session.id, 1, content.subarray(0, PART))).data!.uploadChunk.__typename).toBe('UploadChunkSuccess')
      expect((await c.part(session.id, 2, content.subarray(PART))).data!.uploadChunk.__typename).toBe('UploadChunkSuccess')
      const done = await c.complete(session.id)
      expect((await c.settled(done.file!.id)).sha256).toBe(sha256(content))
    } finally {
      storage.uploadPart = original
    }
  })
})

describe('starting a chunked upload', () => {
  let t: TestApp
  let c: ReturnType<typeof client>
  beforeAll(async () => {
    t = await buildTestApp({ env: { ...BASE_ENV, UPLOAD_SESSION_MAX_BYTES: String(1024 * 1024 * MiB), UPLOAD_QUOTA_BYTES: '0', UPLOAD_MAX_IMAGE_BYTES: String(2 * MiB) } })
    c = client(t, t.token('user', 'sam'))
  })
  afterAll(() => t.close())

  it('raises the part size so that no upload needs more than 10,000 parts', async () => {
    const size = 200 * 1000 * MiB
    const r = await c.start({ filename: 'huge.bin', size })
    expect(r.__typename).toBe('StartUploadSuccess')
    const s = r.session!
    expect(s.partSize).toBe(20 * MiB)
    expect(s.partCount).toBe(Math.ceil(size / s.partSize))
    expect(s.partCount).toBeLessThanOrEqual(10_000)
    await c.abort(s.id)
    const small = (await c.start({ filename: 's.pdf', size: 3 * MiB, mimeType: 'application/pdf' })).session!
    expect(small).toMatchObject({ partSize: PART, partCount: 1 })
    await c.abort(small.id)
  })

  it('refuses a zero, negative, fractional or oversized declared size', async () => {
    for (const size of [0, -1, 1.5]) {
      const r = await c.start({ filename: 'z.pdf', size, mimeType: 'application/pdf' })
      expect(r).toMatchObject({ __typename: 'ValidationError', fieldErrors: [{ path: ['input', 'size'] }] })
    }
    const huge = await c.start({ filename: 'h.pdf', size: 2 * 1024 * 1024 * MiB, mimeType: 'application/pdf' })
    expect(huge).toMatchObject({ __typename: 'FileTooLargeError', maxBytes: 1024 * 1024 * MiB })
    const image = await c.start({ filename: 'big.png', size: 3 * MiB, mimeType: 'image/png' })
    expect(image).toMatchObject({ __typename: 'FileTooLargeError', maxBytes: 2 * MiB })
  })

  it('refuses a type outside the allowlist and a malformed sha256', async () => {
    expect(await c.start({ filename: 'a.exe', size: 10, mimeType: 'application/x-msdownload' })).toMatchObject({ __typename: 'UnsupportedFileTypeError' })
    expect(await c.start({ filename: 'a.pdf', size: 10, mimeType: 'application/pdf', sha256: 'abc' })).toMatchObject({ __typename: 'ValidationError' })
  })
})

describe('chunked uploads against a quota', () => {
  let t: TestApp
  let c: ReturnType<typeof client>
  beforeAll(async () => {
    t = await buildTestApp({ env: { ...BASE_ENV, UPLOAD_QUOTA_BYTES: String(20 * MiB) } })
    c = client(t, t.token('user', 'quinn'))
  })
  afterAll(() => t.close())

  it('refuses a session that would exceed the quota before any byte is stored, counting open sessions', async () => {
    const objectsBefore = await multipartDirs(t.dataDir)
    const over = await c.start({ filename: 'o.pdf', size: 21 * MiB, mimeType: 'application/pdf' })
    expect(over).toMatchObject({ __typename: 'QuotaExceededError', limitBytes: 20 * MiB, usedBytes: 0 })
    expect(await multipartDirs(t.dataDir)).toEqual(objectsBefore)
    const first = await c.start({ filename: 'a.pdf', size: 12 * MiB, mimeType: 'application/pdf' })
    expect(first.__typename).toBe('StartUploadSuccess')
    // The open session reserves its 12 MiB: another 12 MiB does not fit.
    expect(await c.start({ filename: 'b.pdf', size: 12 * MiB, mimeType: 'application/pdf' })).toMatchObject({ __typename: 'QuotaExceededError', usedBytes: 12 * MiB })
    await c.abort(first.session!.id)
    expect((await c.start({ filename: 'b.pdf', size: 12 * MiB, mimeType: 'application/pdf' })).__typename).toBe('StartUploadSuccess')
    const usage = await t.gql<{ fileUsage: { usedBytes: number; limitBytes: number } }>('{ fileUsage { usedBytes limitBytes } }', {}, t.token('user', 'quinn'))
    expect(usage.data.fileUsage).toEqual({ usedBytes: 12 * MiB, limitBytes: 20 * MiB })
  })
})

describe('upload session expiry', () => {
  let t: TestApp
  let c: ReturnType<typeof client>
  beforeAll(async () => {
    t = await buildTestApp({ env: BASE_ENV })
    c = client(t, t.token('user', 'eve'))
  })
  afterAll(() => t.close())

  it('refuses parts of an expired session, and the sweeper aborts its multipart upload', async () => {
    const content = pdf(PART + 10)
    const { session } = (await c.start({ filename: 'e.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
    await c.part(session.id, 1, content.subarray(0, PART))
    expect(await multipartDirs(t.dataDir)).toHaveLength(1)
    await t.app.db.db.execute(sql`update upload_sessions set expires_at = now() - interval '1 minute' where id = ${session.id}`)
    const late = await c.part(session.id, 2, content.subarray(PART))
    expect(late.data!.uploadChunk).toMatchObject({ __typename: 'ConflictError', message: 'The upload session has expired' })
    expect(await c.complete(session.id)).toMatchObject({ __typename: 'ConflictError' })

    const swept = await t.app.services.files.sweeper.runOnce()
    expect(swept.expiredSessions).toBe(1)
    expect(await c.session(session.id)).toMatchObject({ status: 'EXPIRED', receivedParts: [], error: 'The upload session expired' })
    expect(await multipartDirs(t.dataDir)).toEqual([])
    expect((await t.app.services.files.sweeper.runOnce()).expiredSessions).toBe(0)
  })

  it('slides the expiry forward with every part', async () => {
    const content = pdf(PART + 10)
    const { session } = (await c.start({ filename: 's.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
    await t.app.db.db.execute(sql`update upload_sessions set expires_at = now() + interval '1 minute' where id = ${session.id}`)
    const after = (await c.part(session.id, 1, content.subarray(0, PART))).data!.uploadChunk.session!
    expect(new Date(after.expiresAt).getTime()).toBeGreaterThan(Date.now() + 23 * 3600_000)
    await c.abort(session.id)
  })
})

describe('a chunked upload across server restarts and instances', () => {
  let database: TestDatabase
  let dataDir: string
  const open: TestApp[] = []
  const boot = async () => {
    const app = await buildTestApp({ database, dataDir, env: BASE_ENV })
    open.push(app)
    return app
  }
  beforeAll(async () => {
    database = await createEmptyDatabase()
    dataDir = await mkdtemp(path.join(tmpdir(), 'gw-chunked-'))
  })
  afterAll(async () => {
    for (const app of open) await app.close().catch(() => {})
    await database.drop()
    await rm(dataDir, { recursive: true, force: true })
  })

  it('resumes after the server restarted between parts', async () => {
    const content = pdf(2 * PART + 321)
    const first = await boot()
    const token = first.token('user', 'rita')
    const before = client(first, token)
    const { session } = (await before.start({ filename: 'r.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
    await before.part(session.id, 1, content.subarray(0, PART))
    await first.close()

    const second = await boot()
    const after = client(second, token)
    const resumed = (await after.session(session.id))!
    expect(resumed).toMatchObject({ status: 'UPLOADING', receivedParts: [1] })
    for (let n = 1; n <= resumed.partCount; n++) {
      if (!resumed.receivedParts.includes(n)) await after.part(session.id, n, content.subarray((n - 1) * PART, n * PART))
    }
    const done = await after.complete(session.id)
    const file = await after.settled(done.file!.id)
    expect(file.sha256).toBe(sha256(content))
    expect(sha256(await download(second, file.url))).toBe(sha256(content))
  })

  it('lets two instances serve one session at the same time', async () => {
    const [a, b] = [await boot(), await boot()]
    const token = a.token('user', 'tess')
    const [ca, cb] = [client(a, token), client(b, token)]
    const content = pdf(3 * PART + 5)
    const { session } = (await ca.start({ filename: 'two.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
    const parts = await Promise.all([1, 2, 3, 4].map((n) => (n % 2 ? ca : cb).part(session.id, n, content.subarray((n - 1) * PART, n * PART))))
    expect(parts.every((p) => p.data?.uploadChunk.__typename === 'UploadChunkSuccess')).toBe(true)
    expect(await cb.session(session.id)).toMatchObject({ receivedParts: [1, 2, 3, 4] })
    const done = await cb.complete(session.id)
    expect((await ca.settled(done.file!.id)).sha256).toBe(sha256(content))
  })
})
