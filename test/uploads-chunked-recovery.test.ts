/**
 * A chunked upload whose completeUpload was interrupted: the instance died in the middle (before or
 * after the parts were assembled), or the database failed after the assembly. Nothing may be stuck,
 * lost or left behind. The `completing` lease runs out by moving updated_at back, not by waiting.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FileRepository } from '../src/infra/db/file-repository'
import type { CompletedPart, ObjectStorage } from '../src/infra/storage/types'
import { COMPLETING_LEASE_MS } from '../src/services/files/upload-sessions'
import { buildTestApp, type TestApp } from './helpers/app'
import { chunkedUploadClient as client, download, pdf, sha256, type Session } from './helpers/chunked-upload'
import { s3Env, startS3 } from './helpers/s3'
import { createEmptyDatabase, type TestDatabase } from './helpers/services'

const MiB = 1024 * 1024
const PART = 5 * MiB
const BASE_ENV = { UPLOAD_PART_BYTES: String(PART), UPLOAD_QUOTA_BYTES: String(200 * MiB) }
type Client = ReturnType<typeof client>

/**
 * Makes the instance "die" inside completeMultipartUpload: the call never returns (after assembling
 * the parts when `assembled`); `reached` settles once it hangs. release() lets it go on at last, as
 * a holder that outlived its lease.
 */
function dieWhileCompleting(t: TestApp, assembled: boolean): { reached: Promise<void>; release(): void } {
  const storage = t.app.storage as ObjectStorage
  const original = storage.completeMultipartUpload.bind(storage)
  let reached: () => void = () => {}
  let release: () => void = () => {}
  const hung = new Promise<void>((resolve) => (reached = resolve))
  storage.completeMultipartUpload = async (key: string, uploadId: string, parts: CompletedPart[]) => {
    const done = assembled ? await original(key, uploadId, parts) : undefined
    await new Promise<void>((resolve) => {
      release = resolve
      reached()
    })
    return done ?? original(key, uploadId, parts)
  }
  return { reached: hung, release: () => release() }
}

async function uploadAllParts(c: Client, content: Buffer): Promise<Session> {
  const { session } = (await c.start({ filename: 'r.pdf', size: content.length, mimeType: 'application/pdf' })) as { session: Session }
  for (let n = 1; n <= session.partCount; n++) {
    const r = await c.part(session.id, n, content.subarray((n - 1) * PART, n * PART))
    expect(r.data?.uploadChunk.__typename).toBe('UploadChunkSuccess')
  }
  return session
}

async function expireLease(t: TestApp, id: string): Promise<void> {
  await t.app.db.db.execute(sql`update upload_sessions set updated_at = now() - make_interval(secs => ${COMPLETING_LEASE_MS / 1000 + 60}) where id = ${id}`)
}

async function storageKey(t: TestApp, id: string): Promise<string> {
  const result = await t.app.db.db.execute(sql`select storage_key from upload_sessions where id = ${id}`)
  return (result.rows[0] as { storage_key: string }).storage_key
}

async function versionCount(t: TestApp, fileId: string): Promise<number> {
  const result = await t.app.db.db.execute(sql`select count(*)::int as n from file_versions where file_id = ${fileId}`)
  return (result.rows[0] as { n: number }).n
}

describe.each([
  { name: 'disk', s3: false },
  { name: 's3 (fauxqs)', s3: true },
])('an interrupted completeUpload on $name', ({ s3 }) => {
  let database: TestDatabase
  let dataDir: string
  let env: Record<string, string | undefined> = BASE_ENV
  let closeS3: (() => Promise<void>) | undefined
  const open: TestApp[] = []
  const boot = async () => {
    const app = await buildTestApp({ database, dataDir, env })
    open.push(app)
    return app
  }
  /** Multipart uploads left on disk (S3 keeps its own; the adapters abort them the same way). */
  const multipartDirs = async () => (s3 ? [] : readdir(path.join(dataDir, 'files', '.multipart')).catch(() => []))

  beforeAll(async () => {
    database = await createEmptyDatabase()
    dataDir = await mkdtemp(path.join(tmpdir(), 'gw-recovery-'))
    if (s3) {
      const s = await startS3()
      closeS3 = s.close
      env = { ...BASE_ENV, ...s3Env(s.config) }
    }
  })
  afterAll(async () => {
    for (const app of open) await app.close().catch(() => {})
    await closeS3?.()
    await database.drop()
    await rm(dataDir, { recursive: true, force: true })
  })

  it.each([
    { when: 'before', assembled: false },
    { when: 'after', assembled: true },
  ])('an instance dying $when assembling the parts: once its lease ran out a retry on another instance completes, once', async ({ assembled }) => {
    const [a, b] = [await boot(), await boot()]
    const token = a.token('user', `zoe-${assembled}`)
    const [ca, cb] = [client(a, token), client(b, token)]
    const content = pdf(PART + 77)
    const session = await uploadAllParts(ca, content)
    const dead = dieWhileCompleting(a, assembled)
    const first = ca.complete(session.id)
    await dead.reached
    expect(await cb.session(session.id)).toMatchObject({ status: 'COMPLETING', receivedParts: [1, 2] })

    // While the lease is fresh, the session is being completed: refused on any instance.
    expect(await cb.complete(session.id)).toMatchObject({ __typename: 'ConflictError' })
    expect(await cb.abort(session.id)).toMatchObject({ __typename: 'ConflictError' })

    await expireLease(b, session.id)
    const done = await cb.complete(session.id)
    expect(done).toMatchObject({ __typename: 'CompleteUploadSuccess' })
    const file = await cb.settled(done.file!.id)
    expect(file).toMatchObject({ status: 'READY', size: content.length, sha256: sha256(content) })
    expect(sha256(await download(b, file.url))).toBe(sha256(content))
    expect(await cb.complete(session.id)).toMatchObject({ __typename: 'CompleteUploadSuccess', file: { id: done.file!.id } })
    expect(await cb.session(session.id)).toMatchObject({ status: 'COMPLETED', receivedParts: [1, 2] })
    expect(await multipartDirs()).toEqual([])

    // The first request goes on at last: it cannot record a second version, and answers with the same file.
    dead.release()
    expect(await first).toMatchObject({ __typename: 'CompleteUploadSuccess', file: { id: done.file!.id } })
    expect(await versionCount(b, done.file!.id)).toBe(1)
    expect(await cb.session(session.id)).toMatchObject({ status: 'COMPLETED' })
  })

  it('the sweeper gives a session stuck completing back to uploading with its parts, instead of expiring it', async () => {
    const [a, b] = [await boot(), await boot()]
    const token = a.token('user', 'sam')
    const [ca, cb] = [client(a, token), client(b, token)]
    const content = pdf(PART + 11)
    const session = await uploadAllParts(ca, content)
    const dead = dieWhileCompleting(a, false)
    const first = ca.complete(session.id)
    await dead.reached
    expect(await cb.session(session.id)).toMatchObject({ status: 'COMPLETING', receivedParts: [1, 2] })

    // Past its expiry, but its lease is fresh: the sweeper leaves it alone.
    await b.app.db.db.execute(sql`update upload_sessions set expires_at = now() - interval '1 minute' where id = ${session.id}`)
    expect((await b.app.services.files.sweeper.runOnce()).expiredSessions).toBe(0)
    expect(await cb.session(session.id)).toMatchObject({ status: 'COMPLETING', receivedParts: [1, 2] })

    // Once the lease ran out, it is given back (with time to complete it), never expired.
    await expireLease(b, session.id)
    expect((await b.app.services.files.sweeper.runOnce()).expiredSessions).toBe(0)
    const released = (await cb.session(session.id))!
    expect(released).toMatchObject({ status: 'UPLOADING', receivedParts: [1, 2], bytesReceived: content.length })
    expect(new Date(released.expiresAt).getTime()).toBeGreaterThan(Date.now() + 3600_000)
    expect(await multipartDirs()).toHaveLength(s3 ? 0 : 1)

    const done = await cb.complete(session.id)
    expect(done).toMatchObject({ __typename: 'CompleteUploadSuccess' })
    expect((await cb.settled(done.file!.id)).sha256).toBe(sha256(content))
    dead.release()
    expect(await first).toMatchObject({ __typename: 'CompleteUploadSuccess', file: { id: done.file!.id } })
  })

  it('abortUpload accepts a session stuck completing once its lease ran out, and leaves no object or part behind', async () => {
    const [a, b] = [await boot(), await boot()]
    const token = a.token('user', 'abe')
    const [ca, cb] = [client(a, token), client(b, token)]
    const session = await uploadAllParts(ca, pdf(PART + 5))
    const key = await storageKey(b, session.id)
    const dead = dieWhileCompleting(a, true)
    const first = ca.complete(session.id)
    await dead.reached
    expect(await cb.session(session.id)).toMatchObject({ status: 'COMPLETING', receivedParts: [1, 2] })
    expect(await b.app.storage.head(key)).not.toBeNull()

    await expireLease(b, session.id)
    expect(await cb.abort(session.id)).toMatchObject({ __typename: 'AbortUploadSuccess', session: { status: 'ABORTED', receivedParts: [] } })
    expect(await b.app.storage.head(key)).toBeNull()
    expect(await multipartDirs()).toEqual([])

    // The first request, going on at last, cannot turn the aborted session into a file.
    dead.release()
    expect(await first).toMatchObject({ __typename: 'ConflictError', message: 'The upload session is aborted' })
    expect(await cb.session(session.id)).toMatchObject({ status: 'ABORTED' })
    expect(await cb.file(session.fileId)).toBeNull()
  })

  describe('a complete that failed at the database after assembling the parts', () => {
    let t: TestApp
    let c: Client
    beforeAll(async () => {
      t = await boot()
      c = client(t, t.token('user', 'dan'))
    })

    async function assembledButNotRecorded(content: Buffer): Promise<Session> {
      const session = await uploadAllParts(c, content)
      const original = FileRepository.prototype.createWithVersion
      FileRepository.prototype.createWithVersion = () => Promise.reject(new Error('Connection terminated unexpectedly'))
      try {
        const r = await t.gql('mutation($id: ID!) { completeUpload(sessionId: $id) { __typename } }', { id: session.id }, t.token('user', 'dan'))
        expect(r.errors?.[0]?.extensions?.code).toBe('SERVICE_UNAVAILABLE')
      } finally {
        FileRepository.prototype.createWithVersion = original
      }
      expect(await c.session(session.id)).toMatchObject({ status: 'UPLOADING', receivedParts: [1, 2] })
      expect(await t.app.storage.head(await storageKey(t, session.id))).not.toBeNull()
      return session
    }

    it('refuses a re-sent part with a reason that says what to do, and completing again finishes it', async () => {
      const content = pdf(PART + 99)
      const session = await assembledButNotRecorded(content)
      const again = await c.part(session.id, 2, content.subarray(PART))
      expect(again.data?.uploadChunk).toMatchObject({
        __typename: 'ConflictError',
        message: 'The parts were already assembled and can no longer be replaced: complete the upload again, or abort it',
      })
      const done = await c.complete(session.id)
      expect(done).toMatchObject({ __typename: 'CompleteUploadSuccess' })
      expect((await c.settled(done.file!.id)).sha256).toBe(sha256(content))
    })

    it('abortUpload removes the assembled object', async () => {
      const session = await assembledButNotRecorded(pdf(PART + 99))
      const key = await storageKey(t, session.id)
      expect(await c.abort(session.id)).toMatchObject({ __typename: 'AbortUploadSuccess', session: { status: 'ABORTED' } })
      expect(await t.app.storage.head(key)).toBeNull()
      expect(await multipartDirs()).toEqual([])
    })

    /** Makes the next storage.delete fail, as an unreachable storage would. */
    function failNextDelete() {
      const storage = t.app.storage as ObjectStorage
      const original = storage.delete.bind(storage)
      storage.delete = async () => {
        storage.delete = original
        throw new Error('ECONNRESET')
      }
    }

    it('a cleanup that storage failed is finished by aborting again', async () => {
      const session = await assembledButNotRecorded(pdf(PART + 99))
      const key = await storageKey(t, session.id)
      failNextDelete()
      const first = await t.gql('mutation($id: ID!) { abortUpload(sessionId: $id) { __typename } }', { id: session.id }, t.token('user', 'dan'))
      expect(first.errors?.[0]?.extensions?.code).toBe('SERVICE_UNAVAILABLE')
      expect(await t.app.storage.head(key)).not.toBeNull()
      expect(await c.abort(session.id)).toMatchObject({ __typename: 'AbortUploadSuccess', session: { status: 'ABORTED', receivedParts: [] } })
      expect(await t.app.storage.head(key)).toBeNull()
    })

    it('or by the sweeper, a minute on, when the client never aborts again', async () => {
      const session = await assembledButNotRecorded(pdf(PART + 99))
      const key = await storageKey(t, session.id)
      failNextDelete()
      await t.gql('mutation($id: ID!) { abortUpload(sessionId: $id) { __typename } }', { id: session.id }, t.token('user', 'dan'))
      // Tried just now: the sweeper leaves it for a minute.
      await t.app.services.files.sweeper.runOnce()
      expect(await t.app.storage.head(key)).not.toBeNull()
      await t.app.db.db.execute(sql`update upload_sessions set updated_at = now() - interval '2 minutes' where id = ${session.id}`)
      await t.app.services.files.sweeper.runOnce()
      expect(await t.app.storage.head(key)).toBeNull()
      expect(await c.session(session.id)).toMatchObject({ status: 'ABORTED', receivedParts: [] })
    })
  })
})
