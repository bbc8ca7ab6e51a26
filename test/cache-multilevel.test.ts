import { setTimeout as sleep } from 'node:timers/promises'
import type { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { closeRedis, createRedis } from '../src/infra/redis'
import { ServiceUnavailableError, ValidationError } from '../src/lib/errors'
import { CacheService, type CacheServiceOptions } from '../src/services/cache/cache-service'
import { TEST_REDIS_URL, uniqueRedisPrefix } from './helpers/services'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy'

const basePrefix = uniqueRedisPrefix()
let counter = 0
const nextPrefix = (): string => `${basePrefix}${++counter}:`
let redis: Redis
const open: CacheService[] = []

async function waitUntil(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await sleep(10)
  }
}

async function withinHangLimit<T>(promise: Promise<T>, limitMs = 2_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the call hung for ${limitMs} ms`)), limitMs)
  })
  try {
    return await Promise.race([promise, hang])
  } finally {
    clearTimeout(timer)
  }
}

function cacheOn(client: Redis | null, options: Partial<CacheServiceOptions> = {}): CacheService {
  const cache = new CacheService({ redis: client, keyPrefix: options.keyPrefix ?? nextPrefix(), timeoutMs: 2_000, jitter: 0, ...options })
  open.push(cache)
  return cache
}

/** Two instances: same prefix, separate L1s. */
function pair(options: Partial<CacheServiceOptions> = {}): [CacheService, CacheService] {
  const keyPrefix = nextPrefix()
  return [cacheOn(redis, { keyPrefix, ...options }), cacheOn(redis, { keyPrefix, ...options })]
}

const busConnected = (c: CacheService) => c.stats().busConnected === true && c.stats().busResubscribes > 0

beforeAll(async () => {
  redis = createRedis({ url: TEST_REDIS_URL, commandTimeoutMs: 5_000 })
  await waitUntil(() => redis.status === 'ready', 'Redis is ready')
})

afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()))
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

describe('getMultiLevel', () => {
  it('goes L1, then L2, then the loader, and fills the levels above on the way back', async () => {
    const [a, b] = pair()
    const loader = vi.fn(async () => ({ id: 1, at: new Date(0) }))

    expect(await a.getMultiLevel('user:1', loader)).toEqual({ id: 1, at: new Date(0) })
    expect(await b.getMultiLevel('user:1', loader)).toEqual({ id: 1, at: new Date(0) })
    expect(await b.getMultiLevel('user:1', loader)).toEqual({ id: 1, at: new Date(0) })

    expect(loader).toHaveBeenCalledTimes(1)
    const [l1, l2] = b.stats().levels
    expect(l1).toMatchObject({ level: 'l1', hits: 1, misses: 1 })
    expect(l2).toMatchObject({ level: 'l2', hits: 1, misses: 0 })
    expect(a.stats()).toMatchObject({ misses: 1, loads: 1 })
  })

  it('calls the loader once for 10,000 concurrent misses on one key', async () => {
    const cache = cacheOn(redis)
    const loader = vi.fn(async () => {
      await sleep(20)
      return 'v'
    })
    const results = await Promise.all(Array.from({ length: 10_000 }, () => cache.getMultiLevel('hot', loader)))
    expect(loader).toHaveBeenCalledTimes(1)
    expect(new Set(results)).toEqual(new Set(['v']))
    expect(cache.stats().dedupes).toBe(9_999)
  })

  it('calls the loader once across two instances with the distributed lock', async () => {
    const [a, b] = pair()
    const loader = vi.fn(async () => {
      await sleep(100)
      return 'once'
    })
    const results = await Promise.all([
      ...Array.from({ length: 20 }, () => a.getMultiLevel('locked', loader, { lock: true })),
      ...Array.from({ length: 20 }, () => b.getMultiLevel('locked', loader, { lock: true })),
    ])
    expect(loader).toHaveBeenCalledTimes(1)
    expect(new Set(results)).toEqual(new Set(['once']))
    expect(a.stats().lockWaits + b.stats().lockWaits).toBe(1)
  })

  it('stops waiting for a lock holder after the bounded wait and loads itself', async () => {
    const [holder, waiter] = pair({ lock: { waitMs: 100 } })
    let release!: () => void
    const slow = new Promise<string>((resolve) => (release = () => resolve('slow')))
    const holding = holder.getMultiLevel('k', () => slow, { lock: true })
    await sleep(30)

    expect(await waiter.getMultiLevel('k', async () => 'own', { lock: true })).toBe('own')
    expect(waiter.stats()).toMatchObject({ lockWaits: 1, lockTimeouts: 1 })
    release()
    expect(await holding).toBe('slow')
  })

  it('serves a stale value within grace while one background refresh runs', async () => {
    const cache = cacheOn(redis)
    let version = 0
    const loader = vi.fn(async () => {
      await sleep(30)
      return ++version
    })
    expect(await cache.getMultiLevel('swr', loader, { ttlSeconds: 0.05, graceSeconds: 10 })).toBe(1)
    await sleep(80)

    const stale = await Promise.all(Array.from({ length: 50 }, () => cache.getMultiLevel('swr', loader, { ttlSeconds: 0.05, graceSeconds: 10 })))
    expect(new Set(stale)).toEqual(new Set([1]))
    await waitUntil(async () => (await cache.get('swr')) === 2, 'the refresh landed')
    expect(loader).toHaveBeenCalledTimes(2)
    expect(cache.stats()).toMatchObject({ staleHits: 50, refreshes: 1 })
  })

  it('refreshes a stale entry found in L2 by an instance whose L1 never held it', async () => {
    const prefix = nextPrefix()
    const writer = cacheOn(redis, { keyPrefix: prefix })
    expect(await writer.getMultiLevel('swr-l2', async () => 1, { ttlSeconds: 0.05, graceSeconds: 10 })).toBe(1)
    await sleep(80)

    const reader = cacheOn(redis, { keyPrefix: prefix })
    const loader = vi.fn(async () => 2)
    expect(await reader.getMultiLevel('swr-l2', loader, { ttlSeconds: 0.05, graceSeconds: 10 })).toBe(1)
    await waitUntil(() => loader.mock.calls.length === 1, 'the background refresh ran')
    expect(reader.stats()).toMatchObject({ staleHits: 1, refreshes: 1 })
    await waitUntil(async () => (await reader.peek('swr-l2')) === 2, 'the refreshed value reached L2')
  })

  it('keeps serving stale data while the loader fails, backing off between refresh attempts', async () => {
    const cache = cacheOn(redis, { refreshBackoff: { minMs: 10_000, maxMs: 60_000 } })
    await cache.getMultiLevel('flaky', async () => 'good', { ttlSeconds: 0.05, graceSeconds: 10 })
    await sleep(80)
    const failing = vi.fn(async () => {
      throw new Error('database down')
    })

    for (let i = 0; i < 20; i++) {
      expect(await cache.getMultiLevel('flaky', failing, { ttlSeconds: 0.05, graceSeconds: 10 })).toBe('good')
      await sleep(5)
    }
    expect(failing).toHaveBeenCalledTimes(1)
    expect(cache.stats().refreshErrors).toBe(1)
  })

  it('rejects a loader that hangs once its timeout passes, and does not cache anything', async () => {
    const cache = cacheOn(redis)
    const hanging = () => new Promise<string>(() => {})
    await expect(withinHangLimit(cache.getMultiLevel('hang', hanging, { loaderTimeoutMs: 50 }))).rejects.toBeInstanceOf(ServiceUnavailableError)
    expect(await cache.has('hang')).toBe(false)
    expect(cache.stats()).toMatchObject({ loaderTimeouts: 1, loadErrors: 1 })
    expect(await cache.getMultiLevel('hang', async () => 'later')).toBe('later')
  })

  it('returns a value over the maximum entry size without caching it, and refuses it in set', async () => {
    const cache = cacheOn(redis, { maxEntryBytes: 1024 })
    const huge = 'x'.repeat(10_000)
    expect(await cache.getMultiLevel('huge', async () => huge)).toBe(huge)
    expect(await cache.has('huge')).toBe(false)
    await expect(cache.set('huge', huge)).rejects.toBeInstanceOf(ValidationError)
    expect(cache.stats().oversized).toBe(2)
  })

  it('refuses the same oversized value without Redis, measured by estimate', async () => {
    const cache = cacheOn(null, { maxEntryBytes: 1024 })
    await expect(cache.set('huge', { blob: 'x'.repeat(10_000) })).rejects.toBeInstanceOf(ValidationError)
    expect(await cache.has('huge')).toBe(false)
  })
})

describe('tags, namespaces and batches', () => {
  it('invalidates every entry of a tag on every instance, leaving other tags alone', async () => {
    const [a, b] = pair({ bus: true })
    await waitUntil(() => busConnected(a) && busConnected(b), 'both buses are subscribed')
    await a.set('post:1', 'p1', { tags: ['user:7'] })
    await a.set('post:2', 'p2', { tags: ['user:7', 'feed'] })
    await a.set('post:3', 'p3', { tags: ['user:8'] })
    expect(await b.getMany(['post:1', 'post:2', 'post:3'])).toEqual(['p1', 'p2', 'p3'])
    const scan = vi.spyOn(redis, 'scan')

    expect(await a.invalidateTags(['user:7'])).toBe(1)

    expect(await a.getMany(['post:1', 'post:2', 'post:3'])).toEqual([undefined, undefined, 'p3'])
    await waitUntil(async () => (await b.get('post:1')) === undefined, 'instance b drops the tagged entry')
    expect(await b.get('post:2')).toBeUndefined()
    expect(await b.get('post:3')).toBe('p3')
    expect(scan).not.toHaveBeenCalled()
    scan.mockRestore()
  })

  it('does not resurrect a value a loader read before its tag was invalidated', async () => {
    const cache = cacheOn(redis)
    const loader = async () => {
      await cache.invalidateTags(['t'])
      return 'read before the write'
    }
    expect(await cache.getMultiLevel('raced', loader, { tags: ['t'] })).toBe('read before the write')
    expect(await cache.get('raced')).toBeUndefined()
  })

  it('isolates namespaces, clears one by pattern, and counts each separately', async () => {
    const root = cacheOn(redis)
    const users = root.namespace('users')
    const posts = root.namespace('posts')
    await users.set('1', 'alice')
    await posts.set('1', 'hello')

    expect(await root.get('users:1')).toBe('alice')
    expect(await users.invalidatePattern('*', { confirm: true })).toBe(1)
    expect(await users.get('1')).toBeUndefined()
    expect(await posts.get('1')).toBe('hello')
    const byName = Object.fromEntries(root.stats().namespaces.map((n) => [n.namespace, n]))
    expect(byName.users).toMatchObject({ sets: 1, hits: 0, misses: 1 })
    expect(byName.posts).toMatchObject({ sets: 1, hits: 1 })
    expect(() => root.namespace('bad name')).toThrow(ValidationError)
  })

  it('writes setMany in one pipeline and reads getMany misses in one MGET', async () => {
    const [a, b] = pair()
    const pipeline = vi.spyOn(redis, 'pipeline')
    const entries = Array.from({ length: 100 }, (_, i) => ({ key: `k${i}`, value: i, ttlSeconds: 60 }))
    expect(await a.setMany(entries)).toBe(100)
    expect(pipeline).toHaveBeenCalledTimes(1)
    pipeline.mockRestore()

    const mget = vi.spyOn(redis, 'mget')
    const values = await b.getMany([...entries.map((e) => e.key), 'absent'])
    expect(values).toEqual([...entries.map((e) => e.value), undefined])
    expect(mget).toHaveBeenCalledTimes(1)
    mget.mockRestore()
  })

  it('peeks without counting or filling L1, and answers has from either level', async () => {
    const [a, b] = pair()
    await a.set('k', 0)
    expect(await b.peek('k')).toBe(0)
    expect(b.stats()).toMatchObject({ hits: 0, misses: 0, items: 0 })
    expect(await b.has('k')).toBe(true)
    expect(await b.has('nope')).toBe(false)
  })

  it('spreads TTLs by ±10% so keys written together expire apart', async () => {
    const cache = cacheOn(redis, { jitter: 0.1 })
    const keyPrefix = (cache as unknown as { core: { redisPrefix: string } }).core.redisPrefix
    await cache.setMany(Array.from({ length: 200 }, (_, i) => ({ key: `j${i}`, value: i, ttlSeconds: 100 })))
    const ttls = await Promise.all(Array.from({ length: 200 }, (_, i) => redis.pttl(`${keyPrefix}j${i}`)))
    expect(Math.min(...ttls)).toBeGreaterThanOrEqual(89_000)
    expect(Math.max(...ttls)).toBeLessThanOrEqual(110_000)
    expect(new Set(ttls.map((t) => Math.round(t / 1000))).size).toBeGreaterThan(10)
  })

  it.each([
    ['an empty tag', ['']],
    ['a tag with a newline', ['a\nb']],
    ['no tags at all', []],
  ])('refuses %s', async (_, tags) => {
    const cache = cacheOn(redis)
    await expect(cache.invalidateTags(tags)).rejects.toBeInstanceOf(ValidationError)
  })
})

describe('a load or read in flight when the key changes', () => {
  /** A loader that reads `db` now and answers once released. */
  function held(db: { value: string }) {
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    return { loader: async () => { const read = db.value; await gate; return read }, release }
  }
  const changes: [string, (cache: CacheService) => Promise<unknown>][] = [
    ['del', (cache) => cache.del('k')],
    ['set', (cache) => cache.set('k', 'written')],
    ['invalidatePattern', (cache) => cache.invalidatePattern('k*')],
    ['invalidateTags', (cache) => cache.invalidateTags(['t'])],
  ]

  it.each(changes)('after %s, later callers load anew and the older load stores nothing', async (change, apply) => {
    const keyPrefix = nextPrefix()
    const cache = cacheOn(redis, { keyPrefix })
    const db = { value: 'v1' }
    const first = held(db)
    const before = cache.getOrSet('k', first.loader, { tags: ['t'] })
    await sleep(20)
    db.value = 'v2'
    await apply(cache)
    const after = cache.getOrSet('k', async () => db.value, { tags: ['t'] })
    first.release()
    // The caller that came first gets what it read; the one that came after the change does not join it.
    expect(await before).toBe('v1')
    expect(await after).toBe(change === 'set' ? 'written' : 'v2')
    expect(await cache.get('k')).toBe(change === 'set' ? 'written' : 'v2')
    // Nor did the older load reach Redis, where another instance would find it.
    expect(await cacheOn(redis, { keyPrefix }).get('k')).not.toBe('v1')
  })

  it.each([
    ['del', 'unlink', (cache: CacheService) => cache.del('k')],
    ['invalidatePattern', 'deleteMatching', (cache: CacheService) => cache.invalidatePattern('k*')],
  ] as const)('a read that starts while %s is on its way to Redis keeps nothing in L1', async (_change, method, apply) => {
    const cache = cacheOn(redis)
    await cache.set('k', 'old')
    const l2 = (cache as unknown as { core: { l2: Record<string, (...args: unknown[]) => Promise<unknown>> } }).core.l2
    const original = l2[method]!.bind(l2)
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    vi.spyOn(l2, method).mockImplementationOnce(async (...args: unknown[]) => {
      await gate
      return original(...args)
    })
    const change = apply(cache)
    await sleep(10)
    // Redis still holds the old value: this read finds it.
    expect(await cache.get('k')).toBe('old')
    release()
    await change
    expect(await cache.get('k')).toBeUndefined()
  })

  it('a value read from Redis before another instance deleted it is not kept in L1', async () => {
    const keyPrefix = nextPrefix()
    const slowClient = createRedis({ url: TEST_REDIS_URL, commandTimeoutMs: 5_000 })
    try {
      await waitUntil(() => slowClient.status === 'ready', 'the second client is ready')
      const a = cacheOn(redis, { keyPrefix, bus: true, tagVersionTtlMs: 1 })
      const b = cacheOn(slowClient, { keyPrefix, bus: true, tagVersionTtlMs: 1 })
      await waitUntil(() => busConnected(a) && busConnected(b), 'both buses are subscribed')
      await a.set('k', 'old', { tags: ['t'] })
      await sleep(20)
      // B's read of the tag versions waits, as on a busy Redis, while A deletes the key.
      const mget = slowClient.mget.bind(slowClient)
      let release!: () => void
      const gate = new Promise<void>((resolve) => (release = resolve))
      vi.spyOn(slowClient, 'mget').mockImplementation((async (...args: Parameters<typeof mget>) => {
        await gate
        return mget(...args)
      }) as never)
      const read = b.get('k')
      await sleep(20)
      const received = b.stats().busReceived
      await a.del('k')
      await waitUntil(() => b.stats().busReceived > received, 'B heard of the delete')
      release()
      expect(await read).toBe('old')
      vi.restoreAllMocks()
      expect(await b.get('k')).toBeUndefined()
    } finally {
      vi.restoreAllMocks()
      await closeRedis(slowClient)
    }
  })
})

describe('a tagged set whose tag versions cannot be read', () => {
  it('is not cached, and its older value is gone from Redis and from other instances', async () => {
    const [a, b] = pair({ bus: true })
    await waitUntil(() => busConnected(a) && busConnected(b), 'both buses are subscribed')
    await a.set('k', 'old', { tags: ['t'] })
    expect(await b.get('k')).toBe('old')
    // One tag version read fails (a timeout, say) while Redis is otherwise there.
    const tags = (a as unknown as { core: { tags: { stamp: () => Promise<unknown> } } }).core.tags
    vi.spyOn(tags, 'stamp').mockRejectedValueOnce(new Error('timed out'))
    const received = b.stats().busReceived
    await a.set('k', 'new', { tags: ['t'] })
    await waitUntil(() => b.stats().busReceived > received, 'B heard of it')
    expect(await a.get('k')).toBeUndefined()
    expect(await b.get('k')).toBeUndefined()
  })
})

describe('entry bounds', () => {
  it('counts an entry\'s size in UTF-8 bytes, as Redis stores it', async () => {
    const cache = cacheOn(redis, { maxEntryBytes: 10_000 })
    await expect(cache.set('ascii', 'a'.repeat(5_000))).resolves.toBeUndefined()
    // 5,000 UTF-16 units, 15,000 bytes.
    await expect(cache.set('euros', '€'.repeat(5_000))).rejects.toBeInstanceOf(ValidationError)
  })

  it('refuses a TTL or grace longer than ten years, which Redis could not keep', async () => {
    const cache = cacheOn(redis)
    await expect(cache.set('k', 'v', 1e16)).rejects.toBeInstanceOf(ValidationError)
    await expect(cache.set('k', 'v', { ttlSeconds: 60, graceSeconds: 1e17 })).rejects.toBeInstanceOf(ValidationError)
    await expect(cache.set('k', 'v', 10 * 365 * 24 * 3600)).resolves.toBeUndefined()
  })

  it('invalidates a tag named like a property of Object (__proto__, constructor)', async () => {
    const cache = cacheOn(redis)
    for (const tag of ['__proto__', 'constructor', 'toString']) {
      await cache.set(`k-${tag}`, 'old', { tags: [tag] })
      await cache.invalidateTags([tag])
      expect(await cache.get(`k-${tag}`), tag).toBeUndefined()
    }
  })
})

describe('the invalidation bus', () => {
  it('evicts a key from the other instance after set, del and invalidatePattern, and ignores its own messages', async () => {
    const [a, b] = pair({ bus: true })
    await waitUntil(() => busConnected(a) && busConnected(b), 'both buses are subscribed')
    await a.set('k', 'v1')
    expect(await b.get('k')).toBe('v1')

    await a.set('k', 'v2')
    await waitUntil(async () => (await b.get('k')) === 'v2', 'b sees v2')

    await a.del('k')
    await waitUntil(async () => (await b.get('k')) === undefined, 'b sees the delete')

    await a.set('user:1', 'x')
    expect(await b.get('user:1')).toBe('x')
    await a.invalidatePattern('user:*')
    await waitUntil(async () => (await b.get('user:1')) === undefined, 'b sees the pattern invalidation')

    expect(a.stats().busReceived).toBe(0)
    expect(b.stats().busReceived).toBeGreaterThanOrEqual(4)
  })

  it('bounds a silently lost message by the L1 TTL cap', async () => {
    const keyPrefix = nextPrefix()
    const reader = cacheOn(redis, { keyPrefix, bus: true, l1MaxTtlSeconds: 0.2 })
    // This writer has no bus: its writes reach Redis but no message goes out, as if it were lost.
    const silent = cacheOn(redis, { keyPrefix })
    // Subscribing flushes L1, which would hide the point of this test.
    await waitUntil(() => busConnected(reader), 'the reader is subscribed')
    await silent.set('k', 'old')
    expect(await reader.get('k')).toBe('old')
    await silent.set('k', 'new')
    expect(await reader.get('k')).toBe('old')
    await waitUntil(async () => (await reader.get('k')) === 'new', 'the local copy expires', 2_000)
  })
})

describe('the cache when Redis fails', () => {
  let proxy: TcpProxy
  let client: Redis

  beforeAll(async () => {
    proxy = await startTcpProxy(Number(new URL(TEST_REDIS_URL).port || 6379))
    client = createRedis({ url: `redis://127.0.0.1:${proxy.port}`, commandTimeoutMs: 5_000 })
    await waitUntil(() => client.status === 'ready', 'the proxied client is ready')
  })

  afterAll(async () => {
    await closeRedis(client)
    await proxy.stop()
  })

  it('flushes L1 after the bus reconnects, so a message lost during the outage leaves nothing stale', async () => {
    const keyPrefix = nextPrefix()
    const writer = cacheOn(redis, { keyPrefix, bus: true })
    const reader = cacheOn(client, { keyPrefix, bus: true })
    await waitUntil(() => busConnected(writer) && busConnected(reader), 'both buses are subscribed')
    await writer.set('k', 'before')
    await waitUntil(() => reader.stats().busReceived === 1, 'the reader got the first message')
    expect(await reader.get('k')).toBe('before')
    const { busResubscribes: resubscribes, busReceived: received } = reader.stats()

    await proxy.stop()
    await writer.set('k', 'during')
    await sleep(50)
    expect(reader.stats().busReceived).toBe(received)
    await proxy.start()

    await waitUntil(() => reader.stats().busResubscribes > resubscribes && client.status === 'ready', 'the reader reconnected and resubscribed')
    expect(await reader.get('k')).toBe('during')
  })

  it('opens the breaker while Redis is down, serving L1 and the loader within the soft timeout, and closes it when Redis is back', async () => {
    const cache = cacheOn(client, { timeoutMs: 75, breaker: { threshold: 2, cooldownMs: 60_000 } })
    await cache.set('held', 'in l1')

    await proxy.stop()
    expect(await withinHangLimit(cache.get('held'), 500)).toBe('in l1')
    for (let i = 0; i < 3; i++) expect(await withinHangLimit(cache.getOrSet(`fresh${i}`, async () => i), 500)).toBe(i)
    expect(cache.stats()).toMatchObject({ breaker: 'open', breakerOpened: 1 })

    await proxy.start()
    await waitUntil(() => client.status === 'ready', 'the client reconnected')
    expect(cache.stats().breaker).toBe('closed')
    await cache.set('after', 'stored')
    expect(await cacheOn(client, { keyPrefix: (cache as unknown as { core: { options: { keyPrefix: string } } }).core.options.keyPrefix }).get('after')).toBe('stored')
  })

  it('refuses a tagged set or setMany while Redis is out of reach, and serves no older copy meanwhile', async () => {
    const cache = cacheOn(client, { timeoutMs: 75, breaker: { threshold: 1_000, cooldownMs: 60_000 } })
    await cache.set('tagged', 'old', { tags: ['t'] })
    await cache.set('many', 'old', { tags: ['t'] })
    await proxy.stop()
    try {
      // Tag `u` has no version this instance knows: it would have to be read from Redis, and the old value deleted there.
      await expect(withinHangLimit(cache.set('tagged', 'new', { tags: ['u'] }))).rejects.toBeInstanceOf(ServiceUnavailableError)
      await expect(withinHangLimit(cache.setMany([{ key: 'many', value: 'new', tags: ['u'] }]))).rejects.toBeInstanceOf(ServiceUnavailableError)
      // Neither the new value (unstamped) nor the old one (replaced, as far as the caller knows) is served from memory.
      expect(await withinHangLimit(cache.getOrSet('tagged', async () => 'loaded', { tags: ['u'] }))).toBe('loaded')
      expect(await withinHangLimit(cache.getOrSet('many', async () => 'loaded', { tags: ['u'] }))).toBe('loaded')
    } finally {
      await proxy.start()
      await waitUntil(() => client.status === 'ready', 'the client reconnected')
    }
  })

  it('never makes a caller wait past the soft timeout when Redis stalls', async () => {
    const keyPrefix = nextPrefix()
    await cacheOn(redis, { keyPrefix }).set('k', 'v')
    const cache = cacheOn(client, { keyPrefix, timeoutMs: 75, hardTimeoutMs: 5_000 })
    proxy.pause()
    try {
      expect(await withinHangLimit(cache.getMultiLevel('k', async () => 'loader'), 1_000)).toBe('loader')
      expect(cache.stats().l2Timeouts).toBeGreaterThanOrEqual(1)
    } finally {
      proxy.resume()
    }
  })
})
