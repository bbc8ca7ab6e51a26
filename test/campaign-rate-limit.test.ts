import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedis } from '../src/infra/redis'
import { createRateLimiter, MAX_BACK_OFF_MS } from '../src/services/campaigns/rate-limiter'
import { buildTestApp, type TestApp } from './helpers/app'
import { startFakeResend, type FakeResend } from './helpers/fake-resend'
import { TEST_REDIS_URL, uniqueRedisPrefix } from './helpers/services'
import { addContacts, campaignAction, createAudience, createCampaign, createPublishedTemplate, getCampaign } from './campaign-fixtures'

const redisClients: Redis[] = []
function redis(): Redis {
  const client = new Redis(TEST_REDIS_URL)
  redisClients.push(client)
  return client
}
afterAll(async () => {
  await Promise.all(redisClients.map((c) => c.quit()))
})

async function timeAcquisitions(acquire: (i: number) => Promise<void>, count: number): Promise<number> {
  const started = Date.now()
  for (let i = 0; i < count; i++) await acquire(i)
  return Date.now() - started
}

describe('rate limiter', () => {
  it('spaces requests at the configured rate in process', async () => {
    const limiter = createRateLimiter({ ratePerSecond: 5 })
    const elapsed = await timeAcquisitions(() => limiter.acquire(), 6)
    expect(elapsed).toBeGreaterThanOrEqual(950)
  })

  it('shares one bucket between instances through Redis', async () => {
    const keyPrefix = uniqueRedisPrefix()
    const a = createRateLimiter({ ratePerSecond: 10, redis: redis(), keyPrefix })
    const b = createRateLimiter({ ratePerSecond: 10, redis: redis(), keyPrefix })
    const started = Date.now()
    await Promise.all([timeAcquisitions(() => a.acquire(), 5), timeAcquisitions(() => b.acquire(), 5)])
    // Ten requests at 10/s from two instances: nine intervals of 100 ms, not 4 as each alone would take.
    expect(Date.now() - started).toBeGreaterThanOrEqual(850)
  })

  it('makes every instance wait out a back-off that one of them was told', async () => {
    const keyPrefix = uniqueRedisPrefix()
    const told = createRateLimiter({ ratePerSecond: 0, redis: redis(), keyPrefix })
    const other = createRateLimiter({ ratePerSecond: 0, redis: redis(), keyPrefix })
    await told.backOff(400)
    const elapsed = await timeAcquisitions(() => other.acquire(), 1)
    expect(elapsed).toBeGreaterThanOrEqual(300)
  })

  it('bounds a back-off to a minute for everyone, and never sleeps past it', async () => {
    const keyPrefix = uniqueRedisPrefix()
    const client = redis()
    const told = createRateLimiter({ ratePerSecond: 0, redis: client, keyPrefix })
    // A month: as a timer that would fire at once (past 2^31 ms) and spin on Redis.
    await told.backOff(30 * 86_400_000)
    const blocked = await client.pttl(`${keyPrefix}campaign-rate:{global}:block`)
    expect(blocked).toBeGreaterThan(MAX_BACK_OFF_MS - 5_000)
    expect(blocked).toBeLessThanOrEqual(MAX_BACK_OFF_MS)
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 200)
    let asked = 0
    const counted = new Proxy(client, { get: (target, prop, receiver) => (prop === 'pttl' ? (...args: unknown[]) => (asked++, target.pttl(...(args as [string]))) : Reflect.get(target, prop, receiver)) })
    const other = createRateLimiter({ ratePerSecond: 0, redis: counted, keyPrefix })
    await expect(other.acquire(controller.signal)).rejects.toThrow()
    expect(asked).toBe(1)
  })

  it('keeps limiting in process when Redis is unreachable', async () => {
    const down = createRedis({ url: 'redis://127.0.0.1:1', connectTimeoutMs: 100 })
    try {
      const limiter = createRateLimiter({ ratePerSecond: 5, redis: down, keyPrefix: 'x:' })
      const elapsed = await timeAcquisitions(() => limiter.acquire(), 3)
      expect(elapsed).toBeGreaterThanOrEqual(350)
    } finally {
      down.disconnect()
    }
  })

  it('stops waiting when the signal aborts', async () => {
    const limiter = createRateLimiter({ ratePerSecond: 1 })
    await limiter.acquire()
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 50)
    await expect(limiter.acquire(controller.signal)).rejects.toThrow()
  })
})

describe('dispatch under the global limit', () => {
  let fake: FakeResend
  let apps: TestApp[]

  beforeAll(async () => {
    fake = await startFakeResend()
    process.env.RESEND_BASE_URL = fake.url
    const env = { RESEND_API_KEY: 're_test_key', CAMPAIGN_RATE_LIMIT_PER_SECOND: '5', CAMPAIGN_BATCH_SIZE: '10' }
    const first = await buildTestApp({ env })
    const second = await buildTestApp({ env, database: first.database, redisPrefix: first.redisPrefix })
    apps = [first, second]
  })
  afterAll(async () => {
    await apps[1]!.close()
    await apps[0]!.close()
    await fake.close()
  })

  it('holds two instances together to 5 requests a second', async () => {
    const [t] = apps
    const admin = t!.token('admin')
    const templateId = await createPublishedTemplate(t!, admin)
    const audienceId = await createAudience(t!, admin)
    await addContacts(t!, admin, audienceId, Array.from({ length: 110 }, (_, i) => ({ email: `lim${i}@example.com` })))
    const id = await createCampaign(t!, admin, { templateId, audienceIds: [audienceId] })
    await campaignAction(t!, admin, 'sendCampaign', id)

    const started = Date.now()
    const [one, two] = await Promise.all(apps.map((a) => a.app.campaignDispatcher.drain()))
    const elapsed = Date.now() - started
    expect(one! + two!).toBe(110)
    expect(Math.min(one!, two!)).toBeGreaterThan(0)
    // Eleven requests with a burst of one: ten gaps of 200 ms, whichever instance sends them.
    expect(fake.requests.filter((r) => r.path === '/emails/batch')).toHaveLength(11)
    expect(elapsed).toBeGreaterThanOrEqual(1_900)
    expect(await getCampaign(t!, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 110 } })
  })
})

describe('dispatch that follows the provider\'s ratelimit headers', () => {
  let fake: FakeResend
  let t: TestApp

  beforeAll(async () => {
    fake = await startFakeResend()
    process.env.RESEND_BASE_URL = fake.url
    // No limit of our own: only the provider's window can space the requests.
    // One batch at a time, so the second is sent after the first response reported the window.
    t = await buildTestApp({ env: { RESEND_API_KEY: 're_test_key', CAMPAIGN_RATE_LIMIT_PER_SECOND: '0', CAMPAIGN_BATCH_SIZE: '2', CAMPAIGN_CONCURRENCY: '1' } })
  })
  afterAll(async () => {
    await t.close()
    await fake.close()
  })

  it('waits for the window to reset when a response says none is left, before a 429', async () => {
    const admin = t.token('admin')
    const templateId = await createPublishedTemplate(t, admin)
    const audienceId = await createAudience(t, admin)
    await addContacts(t, admin, audienceId, Array.from({ length: 4 }, (_, i) => ({ email: `window${i}@example.com` })))
    const id = await createCampaign(t, admin, { templateId, audienceIds: [audienceId] })
    await campaignAction(t, admin, 'sendCampaign', id)
    fake.successHeaders({ 'ratelimit-limit': '2', 'ratelimit-remaining': '0', 'ratelimit-reset': '1' })

    const started = Date.now()
    expect(await t.app.campaignDispatcher.drain()).toBe(4)
    const batches = fake.requests.filter((r) => r.path === '/emails/batch')
    expect(batches).toHaveLength(2)
    // Two batches, and the window said "none left, resets in 1 s" after the first.
    expect(Date.now() - started).toBeGreaterThanOrEqual(900)
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 4 } })
  })
})
