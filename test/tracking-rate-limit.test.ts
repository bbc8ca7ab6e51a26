import { setTimeout as sleep } from 'node:timers/promises'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { closeRedis, createRedis } from '../src/infra/redis'
import { createHitRateLimiter, type HitRateLimiter, type HitRateLimiterOptions } from '../src/services/tracking/hit-rate-limiter'
import { buildTestApp, type TestApp } from './helpers/app'
import { TEST_REDIS_URL, uniqueRedisPrefix } from './helpers/services'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy'

/** Takes `n` requests of `key`, round robin over the limiters, one after the other; returns how many were admitted. */
async function admitted(limiters: HitRateLimiter[], key: string, n: number): Promise<number> {
  let count = 0
  for (let i = 0; i < n; i++) if ((await limiters[i % limiters.length]!.take(key)) === 0) count++
  return count
}

describe('the tracking per-IP limiter', () => {
  let redis: Redis
  const limiters: HitRateLimiter[] = []
  const limiter = (options: Partial<HitRateLimiterOptions> & Pick<HitRateLimiterOptions, 'max'>) => {
    const l = createHitRateLimiter({ windowMs: 60_000, chunk: 100, ...options })
    limiters.push(l)
    return l
  }
  beforeAll(() => {
    redis = createRedis({ url: TEST_REDIS_URL })
  })
  afterAll(async () => {
    for (const l of limiters) l.close()
    await closeRedis(redis)
  })

  it('without Redis admits max per key in a window, then refuses with the time left, and keys are counted apart', async () => {
    const l = limiter({ max: 5 })
    expect(await admitted([l], '1.2.3.4', 8)).toBe(5)
    const refused = await l.take('1.2.3.4')
    expect(refused).toBeGreaterThan(0)
    expect(refused).toBeLessThanOrEqual(60_000)
    expect(await l.take('5.6.7.8')).toBe(0)
    expect(l.stats()).toMatchObject({ keys: 2, leases: 0, limited: 4, fallbacks: 0 })
  })

  it('tracks at most maxKeys addresses under a flood of new ones, forgetting the oldest, and still limits a busy one', async () => {
    const l = limiter({ max: 3, maxKeys: 1_000 })
    expect(await admitted([l], 'busy', 2)).toBe(2)
    for (let i = 0; i < 20_000; i++) expect(await l.take(`10.0.${i >> 8}.${i & 255}`)).toBe(0)
    expect(l.stats().keys).toBe(1_000)
    // The busy address was forgotten with the oldest: it starts a new window (without Redis, a fresh count).
    expect(await admitted([l], 'busy', 5)).toBe(3)
    expect(l.stats().keys).toBe(1_000)
  })

  it('opens a new window once the last one ended', async () => {
    const l = limiter({ max: 2, windowMs: 200 })
    expect(await admitted([l], 'k', 3)).toBe(2)
    await sleep(250)
    expect(await admitted([l], 'k', 3)).toBe(2)
  })

  it('admits no more than max across two instances sharing Redis, and no fewer than max minus what they hold unspent', async () => {
    const prefix = uniqueRedisPrefix()
    // chunk 50 (under a tenth of max): each instance holds at most 75 unspent units.
    const a = limiter({ max: 1000, chunk: 50, redis, keyPrefix: prefix })
    const b = limiter({ max: 1000, chunk: 50, redis, keyPrefix: prefix })
    const count = await admitted([a, b], '10.0.0.1', 1500)
    expect(count).toBeLessThanOrEqual(1000)
    expect(count).toBeGreaterThanOrEqual(1000 - 2 * 75)
    // The Redis counter holds what was granted: spent plus unspent, never past max.
    const granted = Number(await redis.get(`${prefix}tracking-limit:10.0.0.1`))
    expect(granted).toBeGreaterThanOrEqual(count)
    expect(granted).toBeLessThanOrEqual(1000)
    // Quota came in chunks, not a round trip per request.
    expect(a.stats().leases + b.stats().leases).toBeLessThan(count / 10)
    const refused = await a.take('10.0.0.1')
    expect(refused).toBeGreaterThan(0)
    expect(refused).toBeLessThanOrEqual(60_000)
  })

  it('is exact with a small max: concurrent first requests on two instances never overshoot', async () => {
    const prefix = uniqueRedisPrefix()
    // max 10 caps the chunk at 1: one unit per lease.
    const a = limiter({ max: 10, redis, keyPrefix: prefix })
    const b = limiter({ max: 10, redis, keyPrefix: prefix })
    const verdicts = await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).take('10.0.0.2')))
    expect(verdicts.filter((v) => v === 0)).toHaveLength(10)
    expect(verdicts.filter((v) => v > 0)).toHaveLength(20)
  })

  it('drops units left from a window Redis has closed instead of spending them in the next one', async () => {
    const prefix = uniqueRedisPrefix()
    const l = limiter({ max: 100, chunk: 10, windowMs: 1000, redis, keyPrefix: prefix })
    // 1 + 2 + 4 + 8 units leased: some are left unspent when the window ends.
    expect(await admitted([l], '10.0.0.3', 10)).toBe(10)
    await sleep(1100)
    expect(await admitted([l], '10.0.0.3', 150)).toBe(100)
    expect(Number(await redis.get(`${prefix}tracking-limit:10.0.0.3`))).toBe(100)
  })
})

describe('the tracking per-IP limiter when Redis fails', () => {
  let proxy: TcpProxy
  let redis: Redis
  const limiters: HitRateLimiter[] = []
  beforeAll(async () => {
    proxy = await startTcpProxy(6379)
    redis = createRedis({ url: `redis://127.0.0.1:${proxy.port}`, commandTimeoutMs: 300 })
    await new Promise((resolve) => redis.once('ready', resolve))
  })
  afterAll(async () => {
    for (const l of limiters) l.close()
    await closeRedis(redis)
    await proxy.stop()
  })

  it('counts on this instance alone while Redis is down (neither open nor closed), and goes back to Redis once it is up', async () => {
    const prefix = uniqueRedisPrefix()
    const l = createHitRateLimiter({ max: 5, windowMs: 60_000, chunk: 100, redis, keyPrefix: prefix, redisRetryMs: 1000 })
    limiters.push(l)
    await proxy.stop()
    expect(await admitted([l], '10.1.0.1', 8)).toBe(5)
    expect(await l.take('10.1.0.1')).toBeGreaterThan(0)
    expect(l.stats().fallbacks).toBeGreaterThanOrEqual(1)
    // A new key during the retry pause does not even try Redis.
    const fallbacks = l.stats().fallbacks
    expect(await l.take('10.1.0.2')).toBe(0)
    expect(l.stats().fallbacks).toBe(fallbacks)

    await proxy.start()
    await new Promise((resolve) => (redis.status === 'ready' ? resolve(null) : redis.once('ready', resolve)))
    await sleep(1100)
    const leases = l.stats().leases
    expect(await l.take('10.1.0.3')).toBe(0)
    // Its first lease, and the next one asked for ahead of need.
    expect(l.stats().leases).toBeGreaterThan(leases)
    expect(Number(await redis.get(`${prefix}tracking-limit:10.1.0.3`))).toBeGreaterThanOrEqual(1)
    expect(l.stats().fallbacks).toBe(fallbacks)
  })

  it('does not hang when Redis stops answering: the lease times out and the request is counted locally', async () => {
    const l = createHitRateLimiter({ max: 5, windowMs: 60_000, chunk: 100, redis, keyPrefix: uniqueRedisPrefix(), redisRetryMs: 100 })
    limiters.push(l)
    await new Promise((resolve) => (redis.status === 'ready' ? resolve(null) : redis.once('ready', resolve)))
    proxy.pause()
    try {
      expect(await l.take('10.1.0.4')).toBe(0)
      expect(l.stats().fallbacks).toBe(1)
    } finally {
      proxy.resume()
    }
  })
})

describe('the tracking endpoints per-IP limit, two instances sharing Redis', () => {
  let a: TestApp
  let b: TestApp
  beforeAll(async () => {
    a = await buildTestApp({ env: { TRACKING_RATE_LIMIT_MAX: '4' } })
    b = await buildTestApp({ database: a.database, redisPrefix: a.redisPrefix, env: { TRACKING_RATE_LIMIT_MAX: '4' } })
  })
  afterAll(async () => {
    await b.close()
    await a.close()
  })

  it('admits the max across both, then answers 429 RATE_LIMITED with Retry-After on each, per endpoint', async () => {
    const exp = Math.floor(Date.now() / 1000) + 3600
    const pixel = `/t/o/${a.app.services.tracking.tokens.openToken(1, exp)}.gif`
    const statuses: number[] = []
    for (let i = 0; i < 6; i++) statuses.push((await (i % 2 ? a : b).app.inject({ method: 'GET', url: pixel })).statusCode)
    expect(statuses).toEqual([200, 200, 200, 200, 429, 429])
    for (const t of [a, b]) {
      const res = await t.app.inject({ method: 'GET', url: pixel })
      expect(res.statusCode).toBe(429)
      expect(Number(res.headers['retry-after'])).toBeGreaterThan(0)
      expect(res.json().error.code).toBe('RATE_LIMITED')
    }
    // The redirect has a quota of its own: a flood of pixels does not stop clicks.
    const click = `/t/c/${a.app.services.tracking.tokens.clickToken(1, 0, 'https://example.com/', exp)}`
    expect((await a.app.inject({ method: 'GET', url: click })).statusCode).not.toBe(429)

    const metrics = (await a.app.inject({ method: 'GET', url: '/metrics' })).body
    expect(metrics).toMatch(/http_requests_counted_total\{[^}]*route="\/t\/o\/:file"[^}]*status_class="4xx"[^}]*\} [1-9]/)
    expect(metrics).toMatch(/http_requests_counted_total\{[^}]*route="\/t\/o\/:file"[^}]*status_class="2xx"[^}]*\} [1-9]/)
    expect(metrics).not.toMatch(/http_request_duration_seconds_count\{[^}]*route="\/t\/o\/:file"/)
    expect(metrics).toMatch(/groundwork_tracking_rate_limited_total\{[^}]*\} [1-9]/)
  })
})

describe('the tracking endpoints per-IP limit with Redis down', () => {
  let proxy: TcpProxy
  let t: TestApp
  beforeAll(async () => {
    proxy = await startTcpProxy(6379)
    await proxy.stop()
    t = await buildTestApp({ redis: false, env: { REDIS_URL: `redis://127.0.0.1:${proxy.port}`, TRACKING_RATE_LIMIT_MAX: '3' } })
  })
  afterAll(async () => {
    await t.close()
    await proxy.stop()
  })

  it('still answers the pixel and limits per instance', async () => {
    const pixel = `/t/o/${t.app.services.tracking.tokens.openToken(1, Math.floor(Date.now() / 1000) + 3600)}.gif`
    const statuses: number[] = []
    for (let i = 0; i < 5; i++) statuses.push((await t.app.inject({ method: 'GET', url: pixel })).statusCode)
    expect(statuses).toEqual([200, 200, 200, 429, 429])
  })
})
