import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'

async function waitUntil(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await sleep(10)
  }
}

const STATS = `{ cacheStats {
  backend hits misses hitRate evictions items
  levels { level hits staleHits misses hitRate }
  namespaces { namespace hits misses sets }
  loaderLatency { count p50Ms p95Ms p99Ms }
  popularKeys(limit: 2) { key frequency }
  memory { l1Items l1Bytes l1MaxItems redis { usedBytes keys estimatedBytes sampledKeys } }
  warming { running entries warmers }
} }`

describe('cache over GraphQL, two instances sharing Redis and PostgreSQL', () => {
  let a: TestApp
  let b: TestApp

  beforeAll(async () => {
    a = await buildTestApp()
    b = await buildTestApp({ database: a.database, redisPrefix: a.redisPrefix })
    await waitUntil(() => a.app.services.cache.stats().busResubscribes > 0 && b.app.services.cache.stats().busResubscribes > 0, 'both buses are subscribed')
  })

  afterAll(async () => {
    await b?.close()
    await a?.close()
  })

  it('evicts a key from the other instance\'s L1 when one instance writes it', async () => {
    await a.app.services.cache.set('shared', 'v1')
    expect(await b.app.services.cache.get('shared')).toBe('v1')
    await a.app.services.cache.set('shared', 'v2')
    await waitUntil(async () => (await b.app.services.cache.get('shared')) === 'v2', 'instance b sees v2')
  })

  it('invalidates by keys, pattern and tags on every instance through the mutation', async () => {
    const cache = a.app.services.cache
    await cache.set('page:1', 'p1')
    await cache.set('page:2', 'p2')
    await cache.set('tagged', 't', { tags: ['campaign:1'] })
    expect(await b.app.services.cache.getMany(['page:1', 'page:2', 'tagged'])).toEqual(['p1', 'p2', 't'])

    const res = await a.gql(
      `mutation($input: InvalidateCacheInput!) { invalidateCache(input: $input) {
        __typename ... on InvalidateCacheSuccess { result { deleted tags } } } }`,
      { input: { pattern: 'page:*', tags: ['campaign:1'] } },
      a.token('admin'),
    )

    expect(res.data.invalidateCache).toEqual({ __typename: 'InvalidateCacheSuccess', result: { deleted: 2, tags: 1 } })
    await waitUntil(async () => (await b.app.services.cache.getMany(['page:1', 'page:2', 'tagged'])).every((v) => v === undefined), 'instance b drops all three')
  })

  it('answers a wildcard-only pattern without confirm, or an empty input, with a ValidationError', async () => {
    const query = `mutation($input: InvalidateCacheInput!) { invalidateCache(input: $input) { __typename ... on ValidationError { message } } }`
    for (const input of [{ pattern: '*' }, { pattern: '*[^]' }, { pattern: '[^]*' }, { pattern: '?*' }, {}, { tags: [''] }, { keys: [''] }]) {
      const res = await a.gql(query, { input }, a.token('admin'))
      expect(res.data.invalidateCache).toMatchObject({ __typename: 'ValidationError' })
    }
  })

  it('validates keys, pattern and tags before deleting anything, and reports each with its path under input', async () => {
    const cache = a.app.services.cache
    const query = `mutation($input: InvalidateCacheInput!) { invalidateCache(input: $input) {
      __typename ... on InvalidateCacheSuccess { result { deleted tags } } ... on ValidationError { message fieldErrors { path message } } } }`
    const tags = (n: number) => Array.from({ length: n }, (_, i) => `t${i}`)
    await cache.set('victim', 1)

    const cases: Array<[Record<string, unknown>, Array<{ path: string[]; message: string }>]> = [
      [{ keys: ['victim'], tags: tags(65) }, [{ path: ['input', 'tags'], message: 'At most 64 tags at once' }]],
      [{ keys: ['victim'], tags: tags(100) }, [{ path: ['input', 'tags'], message: 'At most 64 tags at once' }]],
      [{ keys: ['victim'], pattern: '*' }, [{ path: ['input', 'pattern'], message: expect.stringContaining('confirm: true') }]],
      [{ keys: ['victim'], pattern: '' }, [{ path: ['input', 'pattern'], message: 'Pattern must not be empty' }]],
      [{ keys: ['victim'], tags: ['ok', ''] }, [{ path: ['input', 'tags'], message: expect.stringContaining('A tag must be') }]],
      [{ keys: ['victim', ''] }, [{ path: ['input', 'keys', '1'], message: 'Cache key must not be empty' }]],
      [
        { keys: ['victim', 'x'.repeat(1025)], pattern: '*[^]', tags: tags(70) },
        [
          { path: ['input', 'keys', '1'], message: expect.stringContaining('at most 1024') },
          { path: ['input', 'pattern'], message: expect.stringContaining('confirm: true') },
          { path: ['input', 'tags'], message: 'At most 64 tags at once' },
        ],
      ],
    ]
    for (const [input, fieldErrors] of cases) {
      const res = await a.gql(query, { input }, a.token('admin'))
      expect(res.data.invalidateCache, JSON.stringify(input).slice(0, 80)).toMatchObject({ __typename: 'ValidationError', fieldErrors })
      expect(await cache.get('victim'), JSON.stringify(input).slice(0, 80)).toBe(1)
    }

    const res = await a.gql(query, { input: { keys: ['victim'], tags: tags(64) } }, a.token('admin'))
    expect(res.data.invalidateCache).toEqual({ __typename: 'InvalidateCacheSuccess', result: { deleted: 1, tags: 64 } })
    expect(await cache.get('victim')).toBeUndefined()
  })

  it('reports stats per level, popular keys, memory and namespaces to an admin', async () => {
    const cache = a.app.services.cache
    for (let i = 0; i < 5; i++) await cache.getMultiLevel('popular', async () => 'p')
    const res = await a.gql(STATS, {}, a.token('admin'))

    expect(res.errors).toBeUndefined()
    const stats = res.data.cacheStats as {
      backend: string
      levels: { level: string; hits: number }[]
      popularKeys: { key: string }[]
      memory: { l1Items: number; redis: { usedBytes: number; sampledKeys: number; estimatedBytes: number } }
      loaderLatency: { count: number }
      namespaces: { namespace: string }[]
    }
    expect(stats.backend).toBe('redis')
    expect(stats.levels.map((l) => l.level)).toEqual(['l1', 'l2'])
    expect(stats.levels[0]!.hits).toBeGreaterThanOrEqual(4)
    expect(stats.popularKeys[0]).toMatchObject({ key: 'popular' })
    expect(stats.memory.l1Items).toBeGreaterThan(0)
    expect(stats.memory.redis.usedBytes).toBeGreaterThan(0)
    expect(stats.memory.redis.sampledKeys).toBeGreaterThan(0)
    expect(stats.memory.redis.estimatedBytes).toBeGreaterThan(0)
    expect(stats.loaderLatency.count).toBeGreaterThanOrEqual(1)
    expect(stats.namespaces.some((n) => n.namespace === '(root)')).toBe(true)
  })

  it('refuses cache stats and warming to a non-admin', async () => {
    const stats = await a.gql('{ cacheStats { hits } }', {}, a.token('user'))
    expect(stats.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
    const warm = await a.gql('mutation { warmCache { __typename } }', {}, a.token('user'))
    expect(warm.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
  })

  it('warms registered warmers through the mutation and shows the run in cacheStats', async () => {
    a.app.services.cache.registerWarmer({
      name: 'greetings',
      pattern: 'greeting:*',
      load: () => Array.from({ length: 1500 }, (_, i) => ({ key: `greeting:${i}`, value: `hello ${i}` })),
    })
    const res = await a.gql(
      `mutation { warmCache(input: { patterns: ["greetings"], popular: false }) {
        __typename ... on WarmCacheSuccess { result { warmers entries failed } } } }`,
      {},
      a.token('admin'),
    )
    expect(res.data.warmCache).toEqual({ __typename: 'WarmCacheSuccess', result: { warmers: ['greetings'], entries: 1500, failed: 0 } })
    expect(await b.app.services.cache.get('greeting:1499')).toBe('hello 1499')
    const stats = await a.gql('{ cacheStats { warming { running entries warmers finishedAt } } }', {}, a.token('admin'))
    expect(stats.data.cacheStats).toMatchObject({ warming: { running: false, entries: 1500, warmers: ['greetings'] } })
  })

  it('answers an empty warm pattern with a ValidationError', async () => {
    const res = await a.gql('mutation { warmCache(input: { patterns: [""] }) { __typename } }', {}, a.token('admin'))
    expect(res.data.warmCache).toEqual({ __typename: 'ValidationError' })
  })
})
