import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'
import { startCluster, stopCluster, type LocalCluster } from './helpers/redis-cluster'

let local: LocalCluster | null = null
try {
  local = await startCluster()
} catch (err) {
  console.warn(`Redis Cluster app test skipped: a local cluster could not be formed (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`)
}

describe.skipIf(local === null)('the app on a Redis Cluster (REDIS_CLUSTER=true)', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ redis: false, env: { REDIS_URL: `redis://127.0.0.1:${local!.ports[0]}`, REDIS_CLUSTER: 'true', RATE_LIMIT_MAX: '1000' } })
  })
  afterAll(async () => {
    await t?.close()
    if (local) await stopCluster(local)
  })

  it('reports Redis ready and invalidates a pattern across every master through GraphQL', async () => {
    const ready = await t.app.inject({ method: 'GET', url: '/readyz' })
    expect(ready.json().checks.redis.status).toBe('up')
    const cache = t.app.services.cache
    const keys = Array.from({ length: 60 }, (_, i) => `user:${i}`)
    for (const key of keys) await cache.set(key, { i: key })
    await cache.set('order:1', 'keep')
    const res = await t.gql<{ invalidateCache: { result: { deleted: number } } }>(
      'mutation { invalidateCache(input: { pattern: "user:*" }) { ... on InvalidateCacheSuccess { result { deleted } } } }',
      {},
      t.token('admin'),
    )
    expect(res.data.invalidateCache.result.deleted).toBe(60)
    expect(await cache.get('user:7')).toBeUndefined()
    expect(await cache.get('order:1')).toBe('keep')
  })
})
