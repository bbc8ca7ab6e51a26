import { setTimeout as sleep } from 'node:timers/promises'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { closeRedis, createRedis } from '../src/infra/redis'
import { ServiceUnavailableError, ValidationError } from '../src/lib/errors'
import { CacheService, type CacheServiceOptions } from '../src/services/cache/cache-service'
import { typedJsonSerializer } from '../src/services/cache/serializer'
import { TEST_REDIS_URL, uniqueRedisPrefix } from './helpers/services'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy'

const basePrefix = uniqueRedisPrefix()
let prefixCounter = 0
const nextPrefix = (): string => `${basePrefix}${++prefixCounter}:`

let redis: Redis

beforeAll(async () => {
  redis = createRedis({ url: TEST_REDIS_URL })
  await waitUntilReady(redis)
})

afterAll(async () => {
  await unlinkAll(redis, `${basePrefix}*`)
  await closeRedis(redis)
})

async function waitUntilReady(client: Redis, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (client.status !== 'ready') {
    if (Date.now() > deadline) throw new Error(`Redis client still ${client.status} after ${timeoutMs} ms`)
    await sleep(20)
  }
}

async function unlinkAll(client: Redis, match: string): Promise<void> {
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', match, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) await client.unlink(...keys)
  } while (cursor !== '0')
}

/** Fails the test when a call that must fail soft hangs instead. */
async function withinHangLimit<T>(promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('the call hung for 2 s')), 2_000)
  })
  try {
    return await Promise.race([promise, hang])
  } finally {
    clearTimeout(timer)
  }
}

type Options = Partial<CacheServiceOptions>

const backends: { name: 'memory' | 'redis'; create: (options?: Options) => CacheService }[] = [
  { name: 'memory', create: (options) => new CacheService({ keyPrefix: nextPrefix(), ...options }) },
  {
    name: 'redis',
    // A generous timeout: these tests are about correctness, not about a loaded CI machine.
    create: (options) => new CacheService({ redis, keyPrefix: nextPrefix(), timeoutMs: 2_000, ...options }),
  },
]

describe.each(backends)('CacheService on $name', ({ name, create }) => {
  it('returns a cached 0, empty string, false and null as hits', async () => {
    const cache = create()
    const values = { zero: 0, empty: '', no: false, nothing: null }
    for (const [key, value] of Object.entries(values)) await cache.set(key, value)

    for (const [key, value] of Object.entries(values)) {
      expect(await cache.get(key)).toBe(value)
      expect(await cache.has(key)).toBe(true)
    }
    expect(cache.stats()).toMatchObject({ hits: 4, misses: 0 })
  })

  it('reports an absent key as undefined and counts a miss', async () => {
    const cache = create()
    expect(await cache.get('absent')).toBeUndefined()
    expect(await cache.has('absent')).toBe(false)
    expect(cache.stats()).toMatchObject({ backend: name, hits: 0, misses: 1, hitRate: 0 })
  })

  it('round-trips Date, Map, Set, BigInt, Buffer, Uint8Array, undefined, NaN and Infinity', async () => {
    const cache = create()
    const value = {
      at: new Date('2024-02-29T12:34:56.789Z'),
      invalidDate: new Date(Number.NaN),
      byId: new Map<unknown, unknown>([[1, { tags: new Set(['a', 'b']) }], ['k', [undefined, 2n]]]),
      big: 2n ** 70n,
      bytes: Buffer.from([0, 1, 254, 255]),
      view: new Uint8Array([9, 8, 7]),
      missing: undefined,
      list: [1, undefined, Number.NaN, Infinity, -Infinity, -0],
      $t: 'a user key that looks like a tag',
    }
    await cache.set('typed', value)

    const back = await cache.get<typeof value>('typed')
    expect(back).toStrictEqual(value)
    expect(Buffer.isBuffer(back?.bytes)).toBe(true)
    expect(Buffer.isBuffer(back?.view)).toBe(false)
    expect(Object.is(back?.list[5], -0)).toBe(true)
  })

  it('expires an entry after its TTL', async () => {
    const cache = create()
    await cache.set('short', 'lived', 0.05)
    await cache.set('long', 'lived', 60)
    expect(await cache.get('short')).toBe('lived')

    await sleep(150)

    expect(await cache.get('short')).toBeUndefined()
    expect(await cache.has('short')).toBe(false)
    expect(await cache.get('long')).toBe('lived')
  })

  it('rejects a TTL that is not a positive number', async () => {
    const cache = create()
    await expect(cache.set('k', 1, 0)).rejects.toBeInstanceOf(ValidationError)
    await expect(cache.set('k', 1, Number.NaN)).rejects.toBeInstanceOf(ValidationError)
  })

  it('deletes one key or a list and returns how many existed', async () => {
    const cache = create()
    await Promise.all(['a', 'b', 'c'].map((k) => cache.set(k, k)))

    expect(await cache.del('a')).toBe(1)
    expect(await cache.del('a')).toBe(0)
    expect(await cache.del(['b', 'c', 'absent'])).toBe(2)
    expect(await cache.del([])).toBe(0)
    expect(await cache.get('b')).toBeUndefined()
    expect(cache.stats().deletes).toBe(3)
  })

  it('removes the key when set to undefined', async () => {
    const cache = create()
    await cache.set('k', 1)
    await cache.set('k', undefined)
    expect(await cache.has('k')).toBe(false)
  })

  it('invalidates exactly the matching keys among 5,000+ without calling KEYS', async () => {
    const keysSpy = vi.spyOn(redis, 'keys').mockImplementation(() => {
      throw new Error('KEYS blocks Redis and must never be called')
    })
    try {
      const cache = create()
      const neighbour = create()
      const matching = Array.from({ length: 2_600 }, (_, i) => `user:${i}:profile`)
      const others = [
        ...Array.from({ length: 2_600 }, (_, i) => `post:${i}`),
        'user',
        'xuser:1:profile',
        'user:1:profile:extra',
      ]
      for (let i = 0; i < matching.length + others.length; i += 500) {
        const batch = [...matching, ...others].slice(i, i + 500)
        await Promise.all(batch.map((k) => cache.set(k, 1)))
      }
      await neighbour.set('user:1:profile', 'kept')

      expect(await cache.invalidatePattern('user:*:profile')).toBe(matching.length)

      expect(await cache.get('user:7:profile')).toBeUndefined()
      for (const key of others) expect(await cache.has(key), key).toBe(true)
      expect(await neighbour.get('user:1:profile')).toBe('kept')
      expect(keysSpy).not.toHaveBeenCalled()
    } finally {
      keysSpy.mockRestore()
    }
  })

  it('supports ?, character classes and escapes in patterns', async () => {
    const cache = create()
    await Promise.all(['a1', 'a2', 'a3', 'ab', 'a*', 'b1'].map((k) => cache.set(k, k)))

    expect(await cache.invalidatePattern('a[12]')).toBe(2)
    expect(await cache.invalidatePattern('a\\*')).toBe(1)
    // Not starting with a literal: a `?` or class first needs confirm, however few keys it happens to match.
    await expect(cache.invalidatePattern('?b')).rejects.toBeInstanceOf(ValidationError)
    expect(await cache.invalidatePattern('?b', { confirm: true })).toBe(1)
    await expect(cache.invalidatePattern('[^b]?')).rejects.toBeInstanceOf(ValidationError)
    expect(await cache.invalidatePattern('[^b]?', { confirm: true })).toBe(1)
    expect(await cache.has('b1')).toBe(true)
  })

  it('treats glob characters in the key prefix literally', async () => {
    const prefix = nextPrefix()
    const starred = create({ keyPrefix: `${prefix}a*:` })
    const plain = create({ keyPrefix: `${prefix}ab:` })
    await starred.set('k', 1)
    await plain.set('k', 2)

    expect(await starred.invalidatePattern('k')).toBe(1)
    expect(await plain.get('k')).toBe(2)
  })

  it('refuses a wildcard-only pattern unless confirmed, and then clears only its own prefix', async () => {
    const cache = create()
    const neighbour = create()
    await Promise.all([cache.set('a', 1), cache.set('b', 2), neighbour.set('a', 3)])

    await expect(cache.invalidatePattern('*')).rejects.toBeInstanceOf(ValidationError)
    await expect(cache.invalidatePattern('**?')).rejects.toBeInstanceOf(ValidationError)
    expect(await cache.has('a')).toBe(true)

    expect(await cache.invalidatePattern('*', { confirm: true })).toBe(2)
    expect(await neighbour.get('a')).toBe(3)
  })

  it('refuses, unless confirmed, every pattern that does not start with a literal: classes, ? and *:* cannot slip past the check', async () => {
    const cache = create()
    await Promise.all([cache.set('a:1', 1), cache.set('b:2', 2), cache.set('*', 3)])

    for (const pattern of ['*[^]', '[^]*', '?*', '*?', '[a-z]*', '[a]*', '[*]', '*[', '[^:]*[^]', '*:*', '*[^]*:*', '?:*']) {
      const err = await cache.invalidatePattern(pattern).catch((e: unknown) => e)
      expect(err, pattern).toBeInstanceOf(ValidationError)
      expect((err as ValidationError).fieldErrors, pattern).toEqual([{ path: ['pattern'], message: expect.stringContaining('confirm: true') }])
    }
    expect(await cache.getMany(['a:1', 'b:2', '*'])).toEqual([1, 2, 3])

    // An escaped `*` is a literal: it deletes the key "*" alone, with no confirm.
    expect(await cache.invalidatePattern('\\*')).toBe(1)
    expect(await cache.getMany(['a:1', 'b:2', '*'])).toEqual([1, 2, undefined])
    expect(await cache.invalidatePattern('*[^]', { confirm: true })).toBe(2)
  })

  it('invalidates keys, a pattern and tags in one call only when every part is valid', async () => {
    const cache = create()
    await Promise.all([cache.set('k', 1), cache.set('p:1', 2), cache.set('t', 3, { tags: ['tag'] })])
    const tags = Array.from({ length: 65 }, (_, i) => `t${i}`)

    for (const [request, path] of [
      [{ keys: ['k'], tags }, ['tags']],
      [{ keys: ['k'], pattern: '*' }, ['pattern']],
      [{ keys: ['k'], pattern: '[^]*' }, ['pattern']],
      [{ keys: ['k', ''], pattern: 'p:*' }, ['keys', '1']],
      [{}, []],
    ] as const) {
      const err = await cache.invalidate(request).catch((e: unknown) => e)
      expect(err, JSON.stringify(request)).toBeInstanceOf(ValidationError)
      expect((err as ValidationError).fieldErrors.map((e) => e.path), JSON.stringify(request)).toEqual([path])
    }
    expect(await cache.getMany(['k', 'p:1', 't'])).toEqual([1, 2, 3])

    expect(await cache.invalidate({ keys: ['k'], pattern: 'p:*', tags: ['tag'] })).toEqual({ deleted: 2, tags: 1 })
    expect(await cache.getMany(['k', 'p:1', 't'])).toEqual([undefined, undefined, undefined])
  })

  it('words the tag limit for an entry and for an invalidation, and shares it', async () => {
    const cache = create()
    const tags = Array.from({ length: 65 }, (_, i) => `t${i}`)
    await expect(cache.set('k', 1, { tags })).rejects.toMatchObject({ fieldErrors: [{ path: ['tags'], message: 'At most 64 tags per entry' }] })
    await expect(cache.invalidateTags(tags)).rejects.toMatchObject({ fieldErrors: [{ path: ['tags'], message: 'At most 64 tags at once' }] })
    await expect(cache.invalidateTags(tags.slice(0, 64))).resolves.toBe(64)
  })

  it('refuses an empty or over-long pattern', async () => {
    const cache = create()
    await expect(cache.invalidatePattern('')).rejects.toBeInstanceOf(ValidationError)
    await expect(cache.invalidatePattern(`${'x'.repeat(512)}*`)).rejects.toBeInstanceOf(ValidationError)
    await expect(cache.invalidatePattern(`${'x'.repeat(511)}*`)).resolves.toBe(0)
  })

  it('calls the loader once for 1,000 concurrent misses on one key', async () => {
    const cache = create()
    const loader = vi.fn(async () => {
      await sleep(20)
      return { answer: 42 }
    })

    const results = await Promise.all(Array.from({ length: 1_000 }, () => cache.getOrSet('hot', loader)))

    expect(loader).toHaveBeenCalledTimes(1)
    for (const result of results) expect(result).toEqual({ answer: 42 })
    expect(cache.stats().dedupes).toBe(999)
    expect(await cache.getOrSet('hot', loader)).toEqual({ answer: 42 })
    expect(loader).toHaveBeenCalledTimes(1)
  })

  it('returns a cached falsy value from getOrSet without calling the loader', async () => {
    const cache = create()
    await cache.set('zero', 0)
    const loader = vi.fn(async () => 1)
    expect(await cache.getOrSet('zero', loader)).toBe(0)
    expect(loader).not.toHaveBeenCalled()
  })

  it('propagates a loader error to every waiter and does not cache it', async () => {
    const cache = create()
    const failure = new Error('database down')
    const failing = vi.fn(async () => {
      await sleep(10)
      throw failure
    })

    const outcomes = await Promise.allSettled(Array.from({ length: 50 }, () => cache.getOrSet('flaky', failing)))

    expect(failing).toHaveBeenCalledTimes(1)
    for (const outcome of outcomes) expect(outcome).toEqual({ status: 'rejected', reason: failure })
    expect(await cache.has('flaky')).toBe(false)
    expect(await cache.getOrSet('flaky', async () => 'recovered')).toBe('recovered')
  })

  it('does not cache undefined from a loader', async () => {
    const cache = create()
    const loader = vi.fn(async () => undefined)
    expect(await cache.getOrSet('nothing', loader)).toBeUndefined()
    expect(await cache.getOrSet('nothing', loader)).toBeUndefined()
    expect(loader).toHaveBeenCalledTimes(2)
  })

  it.each([
    ['empty', ''],
    ['longer than 1024 characters', 'k'.repeat(1025)],
    ['with a newline', 'a\nb'],
    ['with a NUL', 'a\u0000b'],
    ['with DEL', 'a\u007fb'],
  ])('rejects a key that is %s', async (_, key) => {
    const cache = create()
    await expect(cache.get(key)).rejects.toBeInstanceOf(ValidationError)
    await expect(cache.set(key, 1)).rejects.toBeInstanceOf(ValidationError)
    await expect(cache.has(key)).rejects.toBeInstanceOf(ValidationError)
    await expect(cache.del(['ok', key])).rejects.toBeInstanceOf(ValidationError)
    await expect(cache.getOrSet(key, async () => 1)).rejects.toBeInstanceOf(ValidationError)
  })

  it('accepts a key of exactly 1024 characters', async () => {
    const cache = create()
    const key = 'k'.repeat(1024)
    await cache.set(key, 'max')
    expect(await cache.get(key)).toBe('max')
  })

  it('reports raw counters and a hit rate', async () => {
    const cache = create()
    await cache.set('a', 1)
    await cache.get('a')
    await cache.get('a')
    await cache.get('b')
    await cache.del('a')

    const stats = cache.stats()
    expect(stats).toMatchObject({ backend: name, hits: 2, misses: 1, errors: 0, sets: 1, deletes: 1, dedupes: 0 })
    expect(stats.hitRate).toBeCloseTo(2 / 3)
    // Both backends now report L1 items (the Redis backend used to report none).
    expect(stats.items).toBe(0)
  })
})

describe('CacheService in memory', () => {
  it('evicts the least recently used entry beyond maxItems', async () => {
    const cache = new CacheService({ keyPrefix: 'lru:', memory: { maxItems: 2 } })
    await cache.set('a', 1)
    await cache.set('b', 2)
    await cache.get('a')
    await cache.set('c', 3)

    expect(await cache.get('b')).toBeUndefined()
    expect(await cache.get('a')).toBe(1)
    expect(await cache.get('c')).toBe(3)
    expect(cache.stats().items).toBe(2)
  })

  // Intentionally changed: L1 serves the stored object without copying, so cached values are treated as immutable.
  it('serves the stored object itself from L1, without copying it on read', async () => {
    const cache = new CacheService({ keyPrefix: 'copy:' })
    const original = { n: 1 }
    await cache.set('k', original)
    expect(await cache.get('k')).toBe(original)
    expect(await cache.get('k')).toBe(await cache.get('k'))
  })
})

describe('typedJsonSerializer', () => {
  it('stores plain JSON values as plain JSON', () => {
    const value = { a: [1, 'two', null, true], b: { c: 1.5 } }
    expect(typedJsonSerializer.serialize(value)).toBe(JSON.stringify(value))
  })

  it('keeps a "__proto__" key as data rather than a prototype', () => {
    const value = JSON.parse('{"__proto__": {"polluted": true}}') as Record<string, unknown>
    value.at = new Date(0)

    const back = typedJsonSerializer.deserialize(typedJsonSerializer.serialize(value)) as Record<string, unknown>

    expect(Object.getPrototypeOf(back)).toBe(Object.prototype)
    expect(Object.getOwnPropertyDescriptor(back, '__proto__')?.value).toEqual({ polluted: true })
    expect(back.at).toEqual(new Date(0))
  })

  it('rejects a circular structure', () => {
    const loop: Record<string, unknown> = { at: new Date(0) }
    loop.self = loop
    expect(() => typedJsonSerializer.serialize(loop)).toThrow(TypeError)
  })
})

describe('CacheService when Redis fails', () => {
  let proxy: TcpProxy
  let client: Redis

  beforeAll(async () => {
    proxy = await startTcpProxy(Number(new URL(TEST_REDIS_URL).port || 6379))
    client = createRedis({ url: `redis://127.0.0.1:${proxy.port}`, commandTimeoutMs: 5_000 })
    await waitUntilReady(client)
  })

  afterAll(async () => {
    await closeRedis(client)
    await proxy.stop()
  })

  it('serves misses and loader values while Redis is down, and recovers when it returns', async () => {
    const prefix = nextPrefix()
    const cache = new CacheService({ redis: client, keyPrefix: prefix, timeoutMs: 200 })
    // Written by another instance, so this one's L1 does not hold it: with L1, a key read before the outage keeps being served.
    await new CacheService({ redis: client, keyPrefix: prefix, timeoutMs: 200 }).set('kept', 'from before')

    await proxy.stop()

    expect(await withinHangLimit(cache.get('kept'))).toBeUndefined()
    expect(await withinHangLimit(cache.getOrSet('fresh', async () => 'loaded'))).toBe('loaded')
    await withinHangLimit(cache.set('other', 1))
    expect(await withinHangLimit(cache.del('kept'))).toBe(0)
    expect(await withinHangLimit(cache.has('kept'))).toBe(false)
    await expect(withinHangLimit(cache.invalidatePattern('k*'))).rejects.toBeInstanceOf(ServiceUnavailableError)
    expect(cache.stats().errors).toBeGreaterThanOrEqual(6)

    await proxy.start()
    await waitUntilReady(client)

    expect(await cache.get('kept')).toBe('from before')
    await cache.set('after', 'works')
    expect(await cache.get('after')).toBe('works')
  })

  it('treats a Redis that stops answering as a miss', async () => {
    const prefix = nextPrefix()
    const cache = new CacheService({ redis: client, keyPrefix: prefix, timeoutMs: 200 })
    await new CacheService({ redis: client, keyPrefix: prefix, timeoutMs: 200 }).set('k', 'v')

    proxy.pause()
    try {
      expect(await withinHangLimit(cache.get('k'))).toBeUndefined()
      expect(await withinHangLimit(cache.getOrSet('k', async () => 'loaded'))).toBe('loaded')
      expect(cache.stats().errors).toBeGreaterThanOrEqual(2)
    } finally {
      proxy.resume()
    }

    // The stalled SET still reached Redis; only its reply was held back.
    expect(await new CacheService({ redis: client, keyPrefix: prefix, timeoutMs: 2_000 }).get('k')).toBe('loaded')
  })

  it('serves misses when Redis is down at construction, then uses it once it is up', async () => {
    const downProxy = await startTcpProxy(Number(new URL(TEST_REDIS_URL).port || 6379))
    await downProxy.stop()
    const downClient = createRedis({ url: `redis://127.0.0.1:${downProxy.port}` })
    try {
      const cache = new CacheService({ redis: downClient, keyPrefix: nextPrefix(), timeoutMs: 200 })

      expect(await withinHangLimit(cache.get('k'))).toBeUndefined()
      expect(await withinHangLimit(cache.getOrSet('k', async () => 'loaded'))).toBe('loaded')

      await downProxy.start()
      await waitUntilReady(downClient)

      await cache.set('k', 'stored')
      expect(await cache.get('k')).toBe('stored')
    } finally {
      await closeRedis(downClient)
      await downProxy.stop()
    }
  })
})
