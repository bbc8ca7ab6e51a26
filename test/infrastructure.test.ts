import { randomBytes } from 'node:crypto'
import pg from 'pg'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { InfrastructureStats } from '../src/services/system/infrastructure-stats'
import { TtlMemo } from '../src/services/system/ttl-memo'
import { buildTestApp, uploadThroughGraphql, type TestApp } from './helpers/app'
import { chunkedUploadClient, pdf } from './helpers/chunked-upload'
import { createEmptyDatabase, uniqueRedisPrefix, type TestDatabase } from './helpers/services'

const SYSTEM = '{ infrastructureStats { system { version nodeVersion uptimeSeconds instanceId instances { id self version } eventLoopLagMs { p50 p99 max } memory { rssBytes } } } }'
type System = { infrastructureStats: { system: { instanceId: string; instances: { id: string; self: boolean }[]; memory: { rssBytes: number }; version: string } } }

describe('infrastructureStats.system across instances', () => {
  let database: TestDatabase
  let a: TestApp
  let b: TestApp
  beforeAll(async () => {
    database = await createEmptyDatabase()
    const redisPrefix = uniqueRedisPrefix()
    // Exact per-level counts below: a Redis read past the soft timeout on a busy machine would count as an error, not a hit.
    const env = { CACHE_SOFT_TIMEOUT_MS: '2000', CACHE_HARD_TIMEOUT_MS: '4000' }
    a = await buildTestApp({ database, redisPrefix, env })
    b = await buildTestApp({ database, redisPrefix, env })
  })
  afterAll(async () => {
    await a.close()
    await database.drop()
  })

  it('lists every instance with a recent heartbeat and marks the one answering', async () => {
    const res = await a.gql<System>(SYSTEM, {}, a.token('admin'))
    const system = res.data.infrastructureStats.system
    expect(system.version).toMatch(/^\d+\.\d+\.\d+/)
    expect(system.memory.rssBytes).toBeGreaterThan(0)
    const ids = system.instances.map((i) => i.id)
    expect(ids).toHaveLength(2)
    expect(system.instances.find((i) => i.self)?.id).toBe(system.instanceId)
    const fromB = await b.gql<System>(SYSTEM, {}, b.token('admin'))
    expect(fromB.data.infrastructureStats.system.instanceId).not.toBe(system.instanceId)
    expect(fromB.data.infrastructureStats.system.instances.map((i) => i.id).sort()).toEqual([...ids].sort())
  })

  it('reports cache hits and misses per level, memory and popular keys of the answering instance', async () => {
    const COUNTERS = 'backend hits staleHits misses hitRate levels { level hits staleHits misses hitRate }'
    // Memory and popular keys are kept for STATS_CACHE_MS (5 s here): read them once, after the traffic.
    const ALL = `${COUNTERS} memory { l1Items l1Bytes redis { usedBytes keys } } popularKeys(limit: 1) { key frequency }`
    type Level = { level: string; hits: number; staleHits: number; misses: number; hitRate: number }
    type Cache = { backend: string; hits: number; staleHits: number; misses: number; hitRate: number; levels: Level[]; memory: { l1Items: number; l1Bytes: number; redis: { usedBytes: number; keys: number } | null }; popularKeys: { key: string; frequency: number }[] }
    const read = async (fields: string) => {
      const res = await a.gql<{ infrastructureStats: { cache: Cache } }>(`{ infrastructureStats { cache { ${fields} } } }`, {}, a.token('admin'))
      expect(res.errors).toBeUndefined()
      return res.data.infrastructureStats.cache
    }
    const before = await read(COUNTERS)
    const cacheA = a.app.services.cache
    await b.app.services.cache.set('infra:remote', 'from b')
    expect(await cacheA.get('infra:remote')).toBe('from b') // L1 miss, L2 hit
    await cacheA.set('infra:hot', 'v')
    for (let i = 0; i < 5; i++) expect(await cacheA.get('infra:hot')).toBe('v') // L1 hits
    expect(await cacheA.get('infra:absent')).toBeUndefined() // a miss everywhere
    const after = await read(ALL)
    const level = (c: Cache, name: string) => c.levels.find((l) => l.level === name)!
    expect(after.backend).toBe('redis')
    expect({ hits: after.hits - before.hits, staleHits: after.staleHits - before.staleHits, misses: after.misses - before.misses }).toEqual({ hits: 6, staleHits: 0, misses: 1 })
    expect({ hits: level(after, 'l1').hits - level(before, 'l1').hits, misses: level(after, 'l1').misses - level(before, 'l1').misses }).toEqual({ hits: 5, misses: 2 })
    expect({ hits: level(after, 'l2').hits - level(before, 'l2').hits, misses: level(after, 'l2').misses - level(before, 'l2').misses }).toEqual({ hits: 1, misses: 1 })
    expect(after.hitRate).toBeCloseTo(after.hits / (after.hits + after.misses), 10)
    for (const l of after.levels) expect(l.hitRate).toBeCloseTo(l.hits / (l.hits + l.misses), 10)
    const stats = cacheA.stats()
    expect(after.memory.l1Items).toBe(stats.items)
    expect(after.memory.l1Bytes).toBe(stats.l1Bytes)
    // infra:hot at least: b's invalidation of infra:remote (its set) may reach a after a cached it, and drop it from a's L1.
    expect(after.memory.l1Items).toBeGreaterThanOrEqual(1)
    expect(after.memory.redis!.usedBytes).toBeGreaterThan(0)
    expect(after.memory.redis!.keys).toBeGreaterThanOrEqual(2)
    expect(after.popularKeys).toEqual([{ key: 'infra:hot', frequency: expect.any(Number) }])
    expect(after.popularKeys[0]!.frequency).toBeGreaterThanOrEqual(5)
  })

  it('refuses a popularKeys limit out of range', async () => {
    for (const limit of [0, 101]) {
      const res = await a.gql(`{ infrastructureStats { cache { popularKeys(limit: ${limit}) { key } } } }`, {}, a.token('admin'))
      expect(res.errors?.[0]?.extensions?.code).toBe('VALIDATION_FAILED')
    }
  })

  it('drops an instance that shut down', async () => {
    await b.close()
    const res = await a.gql<System>(SYSTEM, {}, a.token('admin'))
    expect(res.data.infrastructureStats.system.instances).toHaveLength(1)
  })

  it('is for admins only', async () => {
    const res = await a.gql(SYSTEM, {}, a.token('user'))
    expect(res.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
  })
})

const MiB = 1024 * 1024
const FILES = `query($window: Int, $users: Int) { infrastructureStats { files {
  files versions storedBytes
  byType { type versions bytes }
  byStatus { status files versions bytes }
  uploadsInProgress { sessions sessionBytes sessionReceivedBytes receiving processing }
  processing(windowHours: $window) { windowHours finished succeeded failed successRate failureReasons { code step runs } }
  topUsers(limit: $users) { ownerId versions usedBytes reservedBytes quotaBytes quotaUsed }
} } }`
const UPLOAD = `mutation($file: Upload!) { uploadFile(file: $file) { __typename ... on UploadFileSuccess { file { id status size } } ... on Error { message } } }`
const UPLOAD_VERSION = `mutation($id: ID!, $file: Upload!) { uploadFileVersion(fileId: $id, file: $file) { __typename ... on UploadFileVersionSuccess { file { id status size currentVersion { number } } } ... on Error { message } } }`

type UploadResult = { __typename: string; message?: string; file?: { id: string; status: string; size: number } }
type FilesSection = {
  files: number
  versions: number
  storedBytes: number
  byType: { type: string; versions: number; bytes: number }[]
  byStatus: { status: string; files: number; versions: number; bytes: number }[]
  uploadsInProgress: { sessions: number; sessionBytes: number; sessionReceivedBytes: number; receiving: number; processing: number }
  processing: { windowHours: number; finished: number; succeeded: number; failed: number; successRate: number | null; failureReasons: { code: string; step: string; runs: number }[] }
  topUsers: { ownerId: string; versions: number; usedBytes: number; reservedBytes: number; quotaBytes: number | null; quotaUsed: number | null }[]
}

const jpeg = (width: number, height: number) => sharp({ create: { width, height, channels: 3, background: { r: 200, g: 80, b: 20 } } }).jpeg().toBuffer()

describe('infrastructureStats.files', () => {
  const QUOTA = 100 * MiB
  let t: TestApp
  let admin: string
  let ann: string
  let bob: string
  let photo: { id: string; size: number }
  let doc: { id: string; size: number }
  let corrupt: Buffer

  async function upload(token: string, filename: string, contentType: string, content: Buffer, query = UPLOAD, variables: Record<string, unknown> = {}) {
    const res = await uploadThroughGraphql(t, token, query, { ...variables, file: null }, { filename, contentType, content })
    const data = res.body.data as Record<string, UploadResult> | undefined
    return Object.values(data ?? {})[0] ?? { __typename: 'none', message: JSON.stringify(res.body.errors) }
  }

  async function files(variables: { window?: number; users?: number } = {}): Promise<FilesSection> {
    const res = await t.gql<{ infrastructureStats: { files: FilesSection } }>(FILES, variables, admin)
    expect(res.errors).toBeUndefined()
    return res.data.infrastructureStats.files
  }

  beforeAll(async () => {
    t = await buildTestApp({ env: { STATS_CACHE_MS: '0', UPLOAD_PART_BYTES: String(5 * MiB), UPLOAD_QUOTA_BYTES: String(QUOTA) } })
    admin = t.token('admin', 'root')
    ann = t.token('user', 'ann')
    bob = t.token('user', 'bob')
  })
  afterAll(() => t.close())

  it('starts at zero with no success rate', async () => {
    const empty = await files()
    expect(empty).toEqual({
      files: 0,
      versions: 0,
      storedBytes: 0,
      byType: [],
      byStatus: [],
      uploadsInProgress: { sessions: 0, sessionBytes: 0, sessionReceivedBytes: 0, receiving: 0, processing: 0 },
      processing: { windowHours: 24, finished: 0, succeeded: 0, failed: 0, successRate: null, failureReasons: [] },
      topUsers: [],
    })
  })

  it('counts files and bytes by type and status, uploads in progress, the success rate and the failure reasons', async () => {
    const image = await upload(ann, 'photo.jpg', 'image/jpeg', await jpeg(320, 240))
    expect(image).toMatchObject({ __typename: 'UploadFileSuccess', file: { status: 'READY' } })
    photo = image.file!
    const pdfUpload = await upload(ann, 'doc.pdf', 'application/pdf', pdf(200_000))
    expect(pdfUpload).toMatchObject({ __typename: 'UploadFileSuccess', file: { status: 'READY', size: 200_000 } })
    doc = pdfUpload.file!
    const whole = await sharp(randomBytes(256 * 256 * 3), { raw: { width: 256, height: 256, channels: 3 } }).jpeg().toBuffer()
    corrupt = whole.subarray(0, Math.floor(whole.length / 2))
    const broken = await upload(bob, 'broken.jpg', 'image/jpeg', corrupt)
    expect(broken).toMatchObject({ __typename: 'ValidationError', message: 'The image is corrupt or cannot be decoded' })
    const chunked = chunkedUploadClient(t, bob)
    const started = await chunked.start({ filename: 'big.pdf', size: 6 * MiB, mimeType: 'application/pdf' })
    expect(started.__typename).toBe('StartUploadSuccess')
    const part = await chunked.part(started.session!.id, 1, pdf(6 * MiB).subarray(0, 5 * MiB))
    expect(part.data?.uploadChunk.__typename).toBe('UploadChunkSuccess')

    const stats = await files()
    const stored = photo.size + doc.size
    expect(stats).toEqual({
      files: 3,
      versions: 3,
      storedBytes: stored,
      byType: [
        { type: 'PDF', versions: 1, bytes: doc.size },
        { type: 'IMAGE', versions: 1, bytes: photo.size },
      ],
      byStatus: [
        { status: 'failed', files: 1, versions: 1, bytes: corrupt.length },
        { status: 'ready', files: 2, versions: 2, bytes: stored },
      ],
      uploadsInProgress: { sessions: 1, sessionBytes: 6 * MiB, sessionReceivedBytes: 5 * MiB, receiving: 0, processing: 0 },
      processing: { windowHours: 24, finished: 3, succeeded: 2, failed: 1, successRate: 2 / 3, failureReasons: [{ code: 'VALIDATION_FAILED', step: 'optimize', runs: 1 }] },
      // Bob stores nothing (his one version failed); his open session is a reservation, not usage.
      topUsers: [{ ownerId: 'ann', versions: 2, usedBytes: stored, reservedBytes: 0, quotaBytes: QUOTA, quotaUsed: stored / QUOTA }],
    })
    expect((await files({ window: 168 })).processing).toMatchObject({ windowHours: 168, finished: 3, succeeded: 2 })
    // The user's own usage figure (the quota's) says the same.
    const usage = await t.gql<{ fileUsage: { usedBytes: number } }>('{ fileUsage { usedBytes } }', {}, ann)
    expect(usage.data.fileUsage.usedBytes).toBe(stored)
  })

  it('follows new versions, restores and deletes, counting processing runs as they happened', async () => {
    const v2 = await upload(ann, 'photo-2.jpg', 'image/jpeg', await jpeg(200, 100), UPLOAD_VERSION, { id: photo.id })
    expect(v2).toMatchObject({ __typename: 'UploadFileVersionSuccess', file: { status: 'READY' } })
    const restored = await t.gql<{ restoreFileVersion: { __typename: string } }>(
      'mutation($id: ID!) { restoreFileVersion(fileId: $id, version: 1) { __typename } }', { id: photo.id }, ann)
    expect(restored.data.restoreFileVersion.__typename).toBe('RestoreFileVersionSuccess')
    const dropped = await t.gql<{ deleteFileVersion: { __typename: string } }>(
      'mutation($id: ID!) { deleteFileVersion(fileId: $id, version: 2) { __typename } }', { id: photo.id }, ann)
    expect(dropped.data.deleteFileVersion.__typename).toBe('DeleteFileVersionSuccess')
    const deleted = await t.gql<{ deleteFile: { __typename: string } }>('mutation($id: ID!) { deleteFile(id: $id) { __typename } }', { id: doc.id }, ann)
    expect(deleted.data.deleteFile.__typename).toBe('DeleteFileSuccess')

    const stats = await files()
    // Version 1 and its restored copy (version 3) share their bytes but both count, as in the quota.
    const stored = 2 * photo.size
    expect(stats).toMatchObject({
      files: 2,
      versions: 3,
      storedBytes: stored,
      byType: [{ type: 'IMAGE', versions: 2, bytes: stored }],
      byStatus: [
        { status: 'failed', files: 1, versions: 1, bytes: corrupt.length },
        { status: 'ready', files: 1, versions: 2, bytes: stored },
      ],
      // Runs are events: the new version's run counts, deleting versions takes none away, a restore is no run.
      processing: { finished: 4, succeeded: 3, failed: 1, successRate: 3 / 4 },
      topUsers: [{ ownerId: 'ann', versions: 2, usedBytes: stored, reservedBytes: 0 }],
    })
    const usage = await t.gql<{ fileUsage: { usedBytes: number } }>('{ fileUsage { usedBytes } }', {}, ann)
    expect(usage.data.fileUsage.usedBytes).toBe(stored)
  })

  it('keeps counters that agree with a full count of the tables', async () => {
    await t.app.services.files.stats.compact()
    const db = new pg.Client({ connectionString: t.database!.url })
    await db.connect()
    try {
      const q = async (text: string) => (await db.query(text)).rows.map((r: Record<string, unknown>) => Object.values(r).map(String).join(' ')).sort()
      expect(await q('select mime_type, status, versions, bytes from file_stat_totals where versions <> 0 or bytes <> 0')).toEqual(
        await q('select mime_type, status::text, count(*), sum(size) from file_versions group by 1, 2'),
      )
      expect(await q('select status, files from file_status_totals where files <> 0')).toEqual(await q('select status::text, count(*) from files group by 1'))
      expect(await q('select owner_id, versions, bytes from file_owner_usage')).toEqual(
        await q(`select f.owner_id, count(*), sum(v.size) from file_versions v join files f on f.id = v.file_id where v.status <> 'failed' group by 1`),
      )
      expect(await q('select count(*) from file_stat_deltas')).toEqual(['0'])
    } finally {
      await db.end()
    }
  })

  it('refuses a window or a limit out of range', async () => {
    for (const [variables, field] of [
      [{ window: 0 }, 'windowHours'],
      [{ window: 721 }, 'windowHours'],
      [{ users: 0 }, 'limit'],
      [{ users: 101 }, 'limit'],
    ] as const) {
      const res = await t.gql(FILES, variables, admin)
      expect(res.errors?.[0]?.extensions?.code).toBe('VALIDATION_FAILED')
      expect(res.errors?.[0]?.message).toMatch(field)
    }
  })

  it('is for admins only', async () => {
    const res = await t.gql('{ infrastructureStats { files { files } } }', {}, ann)
    expect(res.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
    expect(res.data?.infrastructureStats ?? null).toBeNull()
  })

  it('reuses a computed section for STATS_CACHE_MS, then reads the change', async () => {
    const memoised = new InfrastructureStats({ cache: t.app.services.cache, files: t.app.services.files.stats, cacheMs: 60_000 })
    const before = await memoised.fileTotals()
    expect(await upload(bob, 'small.jpg', 'image/jpeg', await jpeg(16, 16))).toMatchObject({ __typename: 'UploadFileSuccess' })
    expect(await memoised.fileTotals()).toBe(before)
    expect((await t.app.services.infrastructure.fileTotals()).files).toBe(before.files + 1)
  })
})

describe('TtlMemo', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

  it('shares a load in flight and its result until the TTL passes', async () => {
    const memo = new TtlMemo(50)
    let loads = 0
    const load = async () => ++loads
    const [a, b] = await Promise.all([memo.get('k', load), memo.get('k', load)])
    expect([a, b, loads]).toEqual([1, 1, 1])
    expect(await memo.get('other', load)).toBe(2)
    await sleep(80)
    expect(await memo.get('k', load)).toBe(3)
  })

  it('does not keep a failed load', async () => {
    const memo = new TtlMemo(60_000)
    await expect(memo.get('k', () => Promise.reject(new Error('down')))).rejects.toThrow('down')
    expect(await memo.get('k', async () => 'up')).toBe('up')
  })

  it('with a TTL of 0, loads on every call but still shares a load in flight', async () => {
    const memo = new TtlMemo(0)
    let loads = 0
    const load = async () => ++loads
    expect(await Promise.all([memo.get('k', load), memo.get('k', load)])).toEqual([1, 1])
    expect(await memo.get('k', load)).toBe(2)
    expect(loads).toBe(2)
  })
})
