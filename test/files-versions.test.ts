import { createHash, randomBytes } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { sql } from 'drizzle-orm'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ObjectStorage } from '../src/infra/storage/types'
import { buildTestApp, uploadThroughGraphql, type TestApp } from './helpers/app'
import { chunkedUploadClient } from './helpers/chunked-upload'

const UPLOAD = `mutation($file: Upload!, $input: UploadFileInput) { uploadFile(file: $file, input: $input) {
  __typename ... on UploadFileSuccess { file { id currentVersion { number } } } ... on Error { message } ... on QuotaExceededError { limitBytes usedBytes } } }`
const UPLOAD_VERSION = `mutation($id: ID!, $file: Upload!, $input: UploadFileInput) { uploadFileVersion(fileId: $id, file: $file, input: $input) {
  __typename ... on UploadFileVersionSuccess { file { id currentVersion { number } } } ... on Error { message } } }`
const RESTORE = `mutation($id: ID!, $v: Int!) { restoreFileVersion(fileId: $id, version: $v) {
  __typename ... on RestoreFileVersionSuccess { file { currentVersion { number sha256 } } } ... on Error { message } } }`
const DELETE_VERSION = `mutation($id: ID!, $v: Int!) { deleteFileVersion(fileId: $id, version: $v) {
  __typename ... on DeleteFileVersionSuccess { file { versions { number } } } ... on Error { message } } }`
const FILE = `query($id: ID!) { file(id: $id) { id sha256 url currentVersion { number } versions { number status sha256 } } }`

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')
const pdf = (size: number) => Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(size - 9)])
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const USAGE = '{ fileUsage { usedBytes limitBytes } }'

/** JPEG magic bytes followed by garbage: accepted on receipt, failed by the validate step. */
async function corruptJpeg(): Promise<Buffer> {
  const jpeg = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#888' } }).jpeg().toBuffer()
  return Buffer.concat([jpeg.subarray(0, 20), Buffer.alloc(500, 'A')])
}

/** Polls until no version of the file is processing (waitForProcessing: false answers at once). */
async function settle(t: TestApp, token: string, id: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const r = await t.gql<{ file: { versions: { status: string }[] } | null }>('query($id: ID!) { file(id: $id) { versions { status } } }', { id }, token)
    if (!r.data.file?.versions.some((v) => v.status === 'PROCESSING')) return
    await sleep(25)
  }
  throw new Error(`file ${id} is still processing`)
}

type FileView = { id: string; sha256: string; url: string; currentVersion: { number: number }; versions: { number: number; status: string; sha256: string }[] }

function api(t: TestApp, token: string) {
  return {
    upload: async (content: Buffer, input?: Record<string, unknown>) => {
      const r = await uploadThroughGraphql(t, token, UPLOAD, { file: null, input }, { filename: 'doc.pdf', contentType: 'application/pdf', content })
      return (r.body.data as { uploadFile: { __typename: string; message?: string; file?: { id: string; currentVersion: { number: number } } } & Record<string, unknown> }).uploadFile
    },
    version: async (id: string, content: Buffer) => {
      const r = await uploadThroughGraphql(t, token, UPLOAD_VERSION, { id, file: null }, { filename: 'doc.pdf', contentType: 'application/pdf', content })
      return (r.body.data as { uploadFileVersion: { __typename: string; message?: string; file?: { currentVersion: { number: number } } } }).uploadFileVersion
    },
    restore: async (id: string, v: number) => (await t.gql<{ restoreFileVersion: { __typename: string; message?: string } }>(RESTORE, { id, v }, token)).data.restoreFileVersion,
    deleteVersion: async (id: string, v: number) => (await t.gql<{ deleteFileVersion: { __typename: string; message?: string; file?: { versions: { number: number }[] } } }>(DELETE_VERSION, { id, v }, token)).data.deleteFileVersion,
    file: async (id: string) => (await t.gql<{ file: FileView | null }>(FILE, { id }, token)).data.file,
    remove: async (id: string) => t.gql('mutation($id: ID!) { deleteFile(id: $id) { __typename } }', { id }, token),
  }
}

async function storedObjects(dataDir: string): Promise<string[]> {
  const root = path.join(dataDir, 'files')
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => [])
  return entries.filter((e) => e.isFile() && !/(^|\/)\.(tmp|meta|multipart)(\/|$)/.test(path.relative(root, e.parentPath))).map((e) => path.join(path.relative(root, e.parentPath), e.name))
}

async function download(t: TestApp, url: string): Promise<Buffer> {
  const res = await t.app.inject({ method: 'GET', url: url.slice('http://groundwork.test'.length) })
  expect(res.statusCode).toBe(200)
  return res.rawPayload
}

/** Every object's ref_count equals the versions that point at it. */
async function refCountsConsistent(t: TestApp): Promise<boolean> {
  const r = await t.app.db.db.execute(sql`
    select count(*)::int as bad from file_objects o
    where o.ref_count <> (select count(*) from file_versions v where v.object_id = o.id)`)
  return (r.rows[0] as { bad: number }).bad === 0
}

describe('versions, deduplication and deletion', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp()
  })
  afterAll(() => t.close())

  it('stores identical bytes once per owner, and keeps them until the last version using them is gone', async () => {
    const a = api(t, t.token('user', 'dora'))
    const content = pdf(20_000)
    const before = await storedObjects(t.dataDir)
    const first = await a.upload(content)
    const second = await a.upload(content)
    expect(await storedObjects(t.dataDir)).toHaveLength(before.length + 1)
    await a.remove(first.file!.id)
    const survivor = (await a.file(second.file!.id))!
    expect(sha256(await download(t, survivor.url))).toBe(sha256(content))
    await a.remove(second.file!.id)
    expect(await storedObjects(t.dataDir)).toEqual(before)
    expect(await refCountsConsistent(t)).toBe(true)
  })

  it('does not share bytes between owners', async () => {
    const content = pdf(15_000)
    const before = await storedObjects(t.dataDir)
    await api(t, t.token('user', 'ann')).upload(content)
    await api(t, t.token('user', 'ben')).upload(content)
    expect(await storedObjects(t.dataDir)).toHaveLength(before.length + 2)
  })

  it('deletes a non-current version, refuses the current one, and hides versions of others', async () => {
    const a = api(t, t.token('user', 'vic'))
    const id = (await a.upload(pdf(3000))).file!.id
    await a.version(id, pdf(3001))
    await a.version(id, pdf(3002))
    expect(await a.deleteVersion(id, 3)).toMatchObject({ __typename: 'ConflictError', message: expect.stringMatching(/current version cannot be deleted/) })
    expect(await a.deleteVersion(id, 2)).toEqual({ __typename: 'DeleteFileVersionSuccess', file: { versions: [{ number: 3 }, { number: 1 }] } })
    expect(await a.deleteVersion(id, 2)).toMatchObject({ __typename: 'NotFoundError' })
    expect(await api(t, t.token('user', 'mallory')).deleteVersion(id, 1)).toMatchObject({ __typename: 'NotFoundError' })
    // Numbers are never reused: the next version is 4, not 2.
    expect((await a.version(id, pdf(3003))).file!.currentVersion.number).toBe(4)
    expect(await a.restore(id, 2)).toMatchObject({ __typename: 'NotFoundError' })
  })

  it("refuses to delete a new file's only version when it failed, so the file stays readable and listed", async () => {
    const token = t.token('user', 'fay')
    const a = api(t, token)
    const up = await uploadThroughGraphql(t, token, UPLOAD, { file: null, input: { waitForProcessing: false } }, { filename: 'bad.jpg', contentType: 'image/jpeg', content: await corruptJpeg() })
    const id = (up.body.data as { uploadFile: { file: { id: string } } }).uploadFile.file.id
    await settle(t, token, id)
    expect((await a.file(id))!.versions).toMatchObject([{ number: 1, status: 'FAILED' }])

    expect(await a.deleteVersion(id, 1)).toMatchObject({ __typename: 'ConflictError', message: expect.stringMatching(/current version cannot be deleted.*delete the whole file/) })
    const read = await t.gql('query($id: ID!) { file(id: $id) { status size currentVersion { number status } } }', { id }, token)
    expect(read.errors).toBeUndefined()
    expect(read.data).toMatchObject({ file: { status: 'FAILED', currentVersion: { number: 1, status: 'FAILED' } } })
    const list = await t.gql<{ files: { edges: { node: { id: string; size: number } }[] } }>('{ files(first: 10) { edges { node { id size } } } }', {}, token)
    expect(list.errors).toBeUndefined()
    expect(list.data.files.edges.map((e) => e.node.id)).toEqual([id])
    // Deleting the whole file is the way out.
    expect((await a.remove(id)).data).toEqual({ deleteFile: { __typename: 'DeleteFileSuccess' } })
  })

  it('refuses to delete a failed current version while a newer one processes, and allows it once that one is ready', async () => {
    const token = t.token('user', 'gus')
    const a = api(t, token)
    const up = await uploadThroughGraphql(t, token, UPLOAD, { file: null, input: { waitForProcessing: false } }, { filename: 'bad.jpg', contentType: 'image/jpeg', content: await corruptJpeg() })
    const id = (up.body.data as { uploadFile: { file: { id: string } } }).uploadFile.file.id
    await settle(t, token, id)
    expect((await a.file(id))!.versions).toMatchObject([{ number: 1, status: 'FAILED' }])

    // Version 2 is held in its optimise step (slow storage) until released.
    const storage = t.app.storage as ObjectStorage
    const put = storage.put
    let reached!: () => void
    const atOptimize = new Promise<void>((r) => (reached = r))
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    storage.put = async (key, body, opts) => {
      if (key.startsWith(`files/${id}/`) && /\/image\.\w+$/.test(key)) {
        reached()
        await gate
      }
      return put.call(storage, key, body, opts)
    }
    try {
      const png = await sharp({ create: { width: 120, height: 80, channels: 3, background: '#3a7' } }).png().toBuffer()
      await uploadThroughGraphql(t, token, UPLOAD_VERSION, { id, file: null, input: { waitForProcessing: false } }, { filename: 'good.png', contentType: 'image/png', content: png })
      await atOptimize
      expect(await a.deleteVersion(id, 1)).toMatchObject({ __typename: 'ConflictError', message: expect.stringMatching(/current version cannot be deleted/) })
      expect(await a.deleteVersion(id, 2)).toMatchObject({ __typename: 'ConflictError', message: expect.stringMatching(/processing/) })
    } finally {
      release()
      storage.put = put
    }
    await settle(t, token, id)
    expect((await a.file(id))!.currentVersion.number).toBe(2)
    expect(await a.deleteVersion(id, 1)).toEqual({ __typename: 'DeleteFileVersionSuccess', file: { versions: [{ number: 2 }] } })
  })

  it('leaves a file whose current version row is missing out of the list instead of failing the whole page', async () => {
    const token = t.token('user', 'hal')
    const a = api(t, token)
    const healthy = (await a.upload(pdf(2200))).file!.id
    const broken = (await a.upload(pdf(2201))).file!.id
    // What an older release could leave behind: a file row pointing at a version that no longer exists.
    await t.app.db.db.execute(sql`update files set current_version = 99 where id = ${broken}`)
    const list = await t.gql<{ files: { edges: { node: { id: string; size: number } }[] } }>('{ files(first: 10) { edges { node { id size } } } }', {}, token)
    expect(list.errors).toBeUndefined()
    expect(list.data.files.edges).toEqual([{ node: { id: healthy, size: 2200 } }])
  })

  it('keeps version numbers consistent under concurrent restores and uploads of one file', async () => {
    const a = api(t, t.token('user', 'cam'))
    const v1 = pdf(4000)
    const id = (await a.upload(v1)).file!.id
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? a.restore(id, 1) : a.version(id, pdf(4100 + i)))))
    expect(results.map((r) => r.__typename).every((n) => n.endsWith('Success'))).toBe(true)
    const file = (await a.file(id))!
    expect(file.versions.map((v) => v.number)).toEqual(Array.from({ length: 13 }, (_, i) => 13 - i))
    expect(file.versions.every((v) => v.status === 'READY')).toBe(true)
    expect(file.currentVersion.number).toBe(13)
    expect(file.versions.filter((v) => v.sha256 === sha256(v1))).toHaveLength(7)
    expect(await refCountsConsistent(t)).toBe(true)
    const before = await storedObjects(t.dataDir)
    await a.remove(id)
    // The six restores shared version 1's object: 1 + 6 uploaded objects go.
    expect(await storedObjects(t.dataDir)).toHaveLength(before.length - 7)
  })
})

describe('version retention', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ env: { FILE_VERSIONS_KEEP: '2', FILE_VERSIONS_MAX_AGE_DAYS: '30' } })
  })
  afterAll(() => t.close())

  it('keeps the newest N versions, and older ones while they are younger than D days', async () => {
    const a = api(t, t.token('user', 'ret'))
    const id = (await a.upload(pdf(2000))).file!.id
    for (let i = 0; i < 3; i++) await a.version(id, pdf(2001 + i))
    // All four are young: the age rule keeps the two beyond the newest two.
    expect((await a.file(id))!.versions.map((v) => v.number)).toEqual([4, 3, 2, 1])
    await t.app.db.db.execute(sql`update file_versions set created_at = now() - interval '40 days' where file_id = ${id} and number in (1, 3)`)
    const before = await storedObjects(t.dataDir)
    const swept = await t.app.services.files.sweeper.runOnce()
    expect(swept.prunedVersions).toBe(1)
    // Version 1 is old and not among the newest two; version 3 is old but among them; version 2 is young.
    expect((await a.file(id))!.versions.map((v) => v.number)).toEqual([4, 3, 2])
    expect(await storedObjects(t.dataDir)).toHaveLength(before.length - 1)
  })

  it('never prunes the current version, however old', async () => {
    const a = api(t, t.token('user', 'old'))
    const id = (await a.upload(pdf(2100))).file!.id
    await t.app.db.db.execute(sql`update file_versions set created_at = now() - interval '400 days' where file_id = ${id}`)
    await t.app.services.files.sweeper.runOnce()
    expect((await a.file(id))!.versions.map((v) => v.number)).toEqual([1])
  })
})

describe('version retention by count alone', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ env: { FILE_VERSIONS_KEEP: '2' } })
  })
  afterAll(() => t.close())

  it('prunes beyond the newest N as soon as a new version is ready', async () => {
    const a = api(t, t.token('user', 'cnt'))
    const id = (await a.upload(pdf(2500))).file!.id
    for (let i = 0; i < 3; i++) await a.version(id, pdf(2501 + i))
    expect((await a.file(id))!.versions.map((v) => v.number)).toEqual([4, 3])
  })
})

describe('per-user quota', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ env: { UPLOAD_QUOTA_BYTES: '10000' } })
  })
  afterAll(() => t.close())

  it('counts every version and refuses what would exceed the quota before storing it', async () => {
    const a = api(t, t.token('user', 'qua'))
    const id = (await a.upload(pdf(3000))).file!.id
    await a.version(id, pdf(3000))
    await a.version(id, pdf(3000))
    const before = await storedObjects(t.dataDir)
    // Announced size: refused before a byte is read.
    expect(await a.upload(pdf(3000), { size: 3000 })).toMatchObject({ __typename: 'QuotaExceededError', limitBytes: 10000, usedBytes: 9000 })
    // Unannounced: refused as soon as the stream passes what is left.
    expect(await a.upload(pdf(3000))).toMatchObject({ __typename: 'QuotaExceededError' })
    expect(await a.restore(id, 1)).toMatchObject({ __typename: 'QuotaExceededError' })
    expect(await storedObjects(t.dataDir)).toEqual(before)
    expect((await a.upload(pdf(900))).__typename).toBe('UploadFileSuccess')
    // Deleting a version frees its bytes.
    expect((await a.deleteVersion(id, 1)).__typename).toBe('DeleteFileVersionSuccess')
    expect((await a.upload(pdf(2000))).__typename).toBe('UploadFileSuccess')
  })

  it("checks an admin's new version of a user's file against the owner's quota, not the admin's", async () => {
    const owner = api(t, t.token('user', 'own'))
    const admin = api(t, t.token('admin', 'adm'))
    const usage = async (token: string) => (await t.gql<{ fileUsage: { usedBytes: number } }>(USAGE, {}, token)).data.fileUsage.usedBytes
    const id = (await owner.upload(pdf(6000))).file!.id
    // The owner has 4000 bytes left: 6000 more do not fit, even though the admin stores nothing yet.
    expect(await admin.version(id, pdf(6000))).toMatchObject({ __typename: 'QuotaExceededError' })
    expect(await usage(t.token('user', 'own'))).toBe(6000)
    // The admin's own use does not count: with 9000 of their own stored, 3000 more for the owner fit.
    expect((await admin.upload(pdf(9000))).__typename).toBe('UploadFileSuccess')
    expect(await admin.version(id, pdf(3000))).toMatchObject({ __typename: 'UploadFileVersionSuccess', file: { currentVersion: { number: 2 } } })
    expect(await usage(t.token('user', 'own'))).toBe(9000)
    expect(await usage(t.token('admin', 'adm'))).toBe(9000)
  })
})

describe("chunked uploads to another user's file against a quota", () => {
  const MiB = 1024 * 1024
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ env: { UPLOAD_QUOTA_BYTES: String(3 * MiB), UPLOAD_PART_BYTES: String(5 * MiB) } })
  })
  afterAll(() => t.close())

  it("reserves an admin's session on a user's file in the owner's quota, not the admin's", async () => {
    const ownerToken = t.token('user', 'cho')
    const owner = api(t, ownerToken)
    const admin = chunkedUploadClient(t, t.token('admin', 'cad'))
    const id = (await owner.upload(pdf(2 * MiB))).file!.id
    // Refused at start: the owner has 1 MiB left.
    expect(await admin.start({ filename: 'v.pdf', size: 2 * MiB, mimeType: 'application/pdf', fileId: id })).toMatchObject({ __typename: 'QuotaExceededError', usedBytes: 2 * MiB })
    // Half a MiB fits when the session starts, and is the owner's from then on: the owner cannot take it
    // (2 + 0.5 + 0.8 MiB is past 3), the admin's own space is untouched, and the complete goes through.
    const content = pdf(MiB / 2)
    const started = await admin.start({ filename: 'v.pdf', size: content.length, mimeType: 'application/pdf', fileId: id })
    expect(started.__typename).toBe('StartUploadSuccess')
    const usage = async (token: string) => (await t.gql<{ fileUsage: { usedBytes: number; limitBytes: number } }>(USAGE, {}, token)).data.fileUsage
    expect((await usage(ownerToken)).usedBytes).toBe(2 * MiB + content.length)
    expect((await usage(t.token('admin', 'cad'))).usedBytes).toBe(0)
    expect(await owner.upload(pdf(0.8 * MiB))).toMatchObject({ __typename: 'QuotaExceededError' })
    expect((await admin.part(started.session!.id, 1, content)).data?.uploadChunk.__typename).toBe('UploadChunkSuccess')
    expect(await admin.complete(started.session!.id)).toMatchObject({ __typename: 'CompleteUploadSuccess' })
    const after = await usage(ownerToken)
    expect(after.usedBytes).toBe(2 * MiB + content.length)
    expect(after.usedBytes).toBeLessThanOrEqual(after.limitBytes)
    expect((await owner.file(id))!.versions.map((v) => v.number).sort()).toEqual([1, 2])
  })
})
