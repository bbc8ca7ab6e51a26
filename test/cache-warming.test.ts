import { setTimeout as sleep } from 'node:timers/promises'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { closeRedis, createRedis } from '../src/infra/redis'
import { ValidationError } from '../src/lib/errors'
import { CacheService, type WarmEntry } from '../src/services/cache/cache-service'
import { TEST_REDIS_URL, uniqueRedisPrefix } from './helpers/services'

const basePrefix = uniqueRedisPrefix()
let counter = 0
let redis: Redis
const create = () => new CacheService({ redis, keyPrefix: `${basePrefix}${++counter}:`, timeoutMs: 2_000, warm: { batchSize: 500, concurrency: 3 } })

async function* rows(n: number, prefix = 'row'): AsyncIterable<WarmEntry> {
  for (let i = 0; i < n; i++) yield { key: `${prefix}:${i}`, value: { id: i }, ttlSeconds: 300 }
}

beforeAll(async () => {
  redis = createRedis({ url: TEST_REDIS_URL, commandTimeoutMs: 5_000 })
  while (redis.status !== 'ready') await sleep(10)
})

afterAll(async () => {
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${basePrefix}*`, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) await redis.unlink(...keys)
  } while (cursor !== '0')
  await closeRedis(redis)
})

describe('cache warming', () => {
  it('writes every entry of a warmer in pipelined batches with bounded concurrency', async () => {
    const cache = create()
    const pipeline = vi.spyOn(redis, 'pipeline')
    cache.registerWarmer({ name: 'rows', pattern: 'row:*', load: () => rows(10_000) })

    const result = await cache.warmCache()

    expect(result).toMatchObject({ warmers: ['rows'], entries: 10_000, failed: 0 })
    expect(pipeline).toHaveBeenCalledTimes(20)
    pipeline.mockRestore()
    const other = new CacheService({ redis, keyPrefix: `${basePrefix}${counter}:` })
    expect(await other.get('row:9999')).toEqual({ id: 9999 })
    expect(cache.warmProgress()).toMatchObject({ running: false, entries: 10_000, current: null })
  })

  it('selects warmers by name, by pattern or by glob', async () => {
    const cache = create()
    cache.registerWarmer({ name: 'users', pattern: 'user:*', load: () => rows(3, 'user') })
    cache.registerWarmer({ name: 'posts', pattern: 'post:*', load: () => rows(5, 'post') })

    expect((await cache.warmCache(['users'])).warmers).toEqual(['users'])
    expect((await cache.warmCache(['post:*'])).entries).toBe(5)
    expect((await cache.warmCache(['*'])).warmers).toEqual(['users', 'posts'])
    expect((await cache.warmCache(['nothing:*'])).warmers).toEqual([])
  })

  it('reports progress while running, and a second call joins the run in progress', async () => {
    const cache = create()
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    cache.registerWarmer({
      name: 'slow',
      pattern: 'slow:*',
      load: async function* () {
        yield* rows(600, 'slow')
        await gate
      },
    })
    const first = cache.warmCache()
    const second = cache.warmCache()
    await sleep(50)
    expect(cache.warmProgress()).toMatchObject({ running: true, current: 'slow', warmers: ['slow'] })
    expect(cache.warmProgress().entries).toBe(500)
    release()
    expect(await first).toBe(await second)
  })

  it('recomputes the currently popular keys through the loaders that filled them', async () => {
    const cache = create()
    const loaders = Array.from({ length: 5 }, (_, i) => vi.fn(async () => `v${i}`))
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 5; i++) await cache.getMultiLevel(`hot:${i}`, loaders[i]!)
    }
    await cache.set('plain', 'no loader')

    const result = await cache.warmCache()

    expect(result.popularKeys).toBe(5)
    for (const loader of loaders) expect(loader).toHaveBeenCalledTimes(2)
    expect(cache.popularKeys(5).map((p) => p.key).sort()).toEqual(['hot:0', 'hot:1', 'hot:2', 'hot:3', 'hot:4'])
  })

  it('recomputes the popular keys a selected warmer covers in its namespace', async () => {
    const cache = create()
    const files = cache.namespace('files')
    files.registerWarmer({ name: 'files', pattern: 'file:*', load: () => rows(0) })
    const loader = vi.fn(async () => 'row')
    for (let round = 0; round < 3; round++) await files.getMultiLevel('file:1', loader)
    await cache.getMultiLevel('other:1', async () => 'other')
    // The pattern is the warmer's, relative to its namespace: it selects the warmer and the keys it covers (files:file:1).
    const result = await cache.warmCache(['file:*'])
    expect(result).toMatchObject({ warmers: ['files'], popularKeys: 1 })
    expect(loader).toHaveBeenCalledTimes(2)
  })

  it('counts entries it could not store, such as one over the maximum entry size', async () => {
    const cache = new CacheService({ redis, keyPrefix: `${basePrefix}${++counter}:`, maxEntryBytes: 1024 })
    cache.registerWarmer({ name: 'mixed', pattern: 'm:*', load: () => [{ key: 'm:ok', value: 1 }, { key: 'm:huge', value: 'x'.repeat(5000) }] })
    expect(await cache.warmCache()).toMatchObject({ entries: 1, failed: 1 })
  })

  it('refuses a warmer with a duplicate name or an empty pattern, and an empty warm pattern', () => {
    const cache = create()
    cache.registerWarmer({ name: 'a', pattern: 'a:*', load: () => [] })
    expect(() => cache.registerWarmer({ name: 'a', pattern: 'b:*', load: () => [] })).toThrow(ValidationError)
    expect(() => cache.registerWarmer({ name: 'b', pattern: '', load: () => [] })).toThrow(ValidationError)
    expect(() => cache.warmCache([''])).toThrow(ValidationError)
  })
})
