import { PassThrough } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, uploadThroughGraphql, type TestApp } from './helpers/app'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy'
import { TEST_REDIS_URL } from './helpers/services'
import { closeRedis, createRedis, whenReady } from '../src/infra/redis'

// A hang here means waiting on Redis until it returns, which is forever: the limits only have to tell
// that apart from a slow machine. Every Redis wait in the app is bounded by 1-2 s (command and connect
// timeouts). A boot runs migrations, which takes seconds when CI's two cores are shared with other test
// files: a 3 s boot limit failed CI once, when the boot also waited out 2 s for a refused Redis.
const REQUEST_LIMIT_MS = 5_000
const BOOT_LIMIT_MS = 20_000
const withinLimit = <T>(p: Promise<T>, limitMs = REQUEST_LIMIT_MS) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('request hung')), limitMs))])

describe('the app when Redis goes away', () => {
  let proxy: TcpProxy
  let t: TestApp
  const logs: { level: number; msg: string }[] = []
  beforeAll(async () => {
    proxy = await startTcpProxy(6379)
    const stream = new PassThrough()
    stream.on('data', (chunk: Buffer) => logs.push(...chunk.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string })))
    t = await buildTestApp({ redis: false, logStream: stream, env: { REDIS_URL: `redis://127.0.0.1:${proxy.port}`, LOG_LEVEL: 'info' } })
  })
  afterAll(async () => {
    await t.close()
    await proxy.stop()
  })

  it('keeps answering cached reads from the loader, uploads and readiness while Redis is stopped, then recovers', async () => {
    const cache = t.app.services.cache
    await cache.set('greeting', 'hello')
    expect(await cache.get('greeting')).toBe('hello')

    await proxy.stop()
    // L1 keeps serving what this instance already holds; a key it lacks comes from the loader.
    expect(await withinLimit(cache.getOrSet('greeting', async () => 'from-loader'))).toBe('hello')
    expect(await withinLimit(cache.getOrSet('farewell', async () => 'from-loader'))).toBe('from-loader')
    const upload = await withinLimit(
      uploadThroughGraphql(t, t.token('user'), 'mutation($file: Upload!) { uploadFile(file: $file) { __typename } }', { file: null }, {
        filename: 'a.pdf',
        contentType: 'application/pdf',
        content: Buffer.from('%PDF-1.7\nwhile redis is down'),
      }),
    )
    expect(upload.body.data).toEqual({ uploadFile: { __typename: 'UploadFileSuccess' } })
    const ready = await withinLimit(t.app.inject({ method: 'GET', url: '/readyz' }))
    expect(ready.statusCode).toBe(200)
    expect(ready.json()).toMatchObject({ status: 'degraded', checks: { redis: { status: 'down' } } })
    expect(cache.stats().errors).toBeGreaterThan(0)

    await proxy.start()
    // L1 answered 'hello' throughout, so recovery shows as L2 reaching the entry written before the outage again.
    let deleted = 0
    for (let i = 0; i < 50 && deleted === 0; i++) {
      deleted = await cache.del('greeting')
      if (deleted === 0) await new Promise((r) => setTimeout(r, 100))
    }
    expect(deleted).toBe(1)
    // Operators hear of the outage once (not once per reconnect attempt) and of its end.
    expect(logs.filter((l) => l.msg.startsWith('Redis connection lost'))).toHaveLength(1)
    expect(logs.filter((l) => l.level === 40 && l.msg.startsWith('Redis connection lost'))).toHaveLength(1)
    await expect.poll(() => logs.some((l) => l.msg === 'Redis connection restored'), { timeout: 5_000 }).toBe(true)
  })
})

describe('the app when Redis is down at boot', () => {
  let proxy: TcpProxy
  let t: TestApp
  beforeAll(async () => {
    proxy = await startTcpProxy(6379)
    await proxy.stop()
    t = await withinLimit(buildTestApp({ redis: false, env: { REDIS_URL: `redis://127.0.0.1:${proxy.port}` } }), BOOT_LIMIT_MS)
  })
  afterAll(async () => {
    await t?.close()
    await proxy.stop()
  })

  it('boots and serves GraphQL from the loader', async () => {
    const res = await withinLimit(t.gql('{ cacheStats { backend misses } }', {}, t.token('admin')))
    expect(res.data).toEqual({ cacheStats: { backend: 'redis', misses: 0 } })
    expect(await withinLimit(t.app.services.cache.getOrSet('k', async () => 42))).toBe(42)
  })
})

describe('whenReady (boot and the event bus wait with it)', () => {
  it('says true once a connection is ready', async () => {
    const redis = createRedis({ url: TEST_REDIS_URL })
    try {
      expect(await withinLimit(whenReady(redis, REQUEST_LIMIT_MS))).toBe(true)
      expect(await whenReady(redis, 0)).toBe(true)
    } finally {
      await closeRedis(redis)
    }
  })

  it('says false at the first failed attempt, not at the end of its wait', async () => {
    const proxy = await startTcpProxy(6379)
    await proxy.stop()
    const redis = createRedis({ url: `redis://127.0.0.1:${proxy.port}` })
    try {
      // Waiting out its own limit would fail here.
      expect(await withinLimit(whenReady(redis, 10 * BOOT_LIMIT_MS))).toBe(false)
    } finally {
      await closeRedis(redis)
    }
  })
})
