/**
 * The cache against a real, local three-master Redis Cluster: started here from /usr/bin/redis-server,
 * joined with `redis-cli --cluster create`, torn down in afterAll. Skipped, with the reason, when the
 * cluster cannot be formed on this machine.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Cluster, Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { closeRedis, createRedis } from '../src/infra/redis'
import { CacheService } from '../src/services/cache/cache-service'

import { startCluster, stopCluster, type LocalCluster } from './helpers/redis-cluster'

let local: LocalCluster | null = null
let skipReason = ''
try {
  local = await startCluster()
} catch (err) {
  skipReason = `Redis Cluster tests skipped: a local cluster could not be formed (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`
  console.warn(skipReason)
}

const clients: Cluster[] = []
const caches: CacheService[] = []

afterAll(async () => {
  for (const cache of caches) await cache.close()
  for (const client of clients) await closeRedis(client)
  if (local) await stopCluster(local)
})

async function connect(): Promise<Cluster> {
  const client = createRedis({ url: `redis://127.0.0.1:${local!.ports[0]}`, cluster: true })
  clients.push(client)
  if (client.status !== 'ready') await new Promise<void>((resolve, reject) => {
    client.once('ready', resolve)
    setTimeout(() => reject(new Error('cluster client not ready')), 10_000).unref()
  })
  return client
}

function cacheOn(client: Cluster, keyPrefix: string, bus = false): CacheService {
  const cache = new CacheService({ redis: client, keyPrefix, timeoutMs: 2_000, jitter: 0, bus })
  caches.push(cache)
  return cache
}

/** Every key matching the glob (the cache stores `<keyPrefix>cache:<key>`), node by node: what is really in the cluster. */
async function keysPerMaster(client: Cluster, glob: string): Promise<string[][]> {
  return Promise.all(
    client.nodes('master').map(async (node: Redis) => {
      const found: string[] = []
      let cursor = '0'
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', glob, 'COUNT', 1000)
        cursor = next
        found.push(...keys)
      } while (cursor !== '0')
      return found
    }),
  )
}

describe.skipIf(local === null)('cache on a Redis Cluster (3 local masters)', () => {
  it('createRedis with cluster: true builds an ioredis Cluster that discovers every master from the seed node', async () => {
    const client = await connect()
    expect(client.isCluster).toBe(true)
    expect(client.nodes('master')).toHaveLength(3)
  })

  it('invalidatePattern deletes matching keys on all three masters and nothing else', async () => {
    const client = await connect()
    const prefix = `gw-cluster-${process.pid}-a:`
    const cache = cacheOn(client, prefix)
    const users = Array.from({ length: 300 }, (_, i) => ({ key: `user:${i}`, value: { i } }))
    const orders = Array.from({ length: 300 }, (_, i) => ({ key: `order:${i}`, value: { i } }))
    expect(await cache.setMany([...users, ...orders])).toBe(600)
    await client.set('outside:user:1', 'not the cache\'s')

    const before = await keysPerMaster(client, `${prefix}cache:user:*`)
    // The keys really are spread: every master holds some of them.
    expect(before.every((keys) => keys.length > 0)).toBe(true)
    expect(before.flat()).toHaveLength(300)

    expect(await cache.invalidatePattern('user:*')).toBe(300)

    expect((await keysPerMaster(client, `${prefix}cache:user:*`)).flat()).toEqual([])
    expect((await keysPerMaster(client, `${prefix}cache:order:*`)).flat()).toHaveLength(300)
    expect(await client.get('outside:user:1')).toBe('not the cache\'s')
    // L1 went too: a read is a miss, not a stale hit.
    expect(await cache.get('user:7')).toBeUndefined()
    expect(await cache.get('order:7')).toEqual({ i: 7 })
  })

  it('a namespace pattern stays inside the namespace across the masters', async () => {
    const client = await connect()
    const root = cacheOn(client, `gw-cluster-${process.pid}-b:`)
    const a = root.namespace('a')
    const b = root.namespace('b')
    await a.setMany(Array.from({ length: 100 }, (_, i) => ({ key: `k${i}`, value: i })))
    await b.setMany(Array.from({ length: 100 }, (_, i) => ({ key: `k${i}`, value: i })))
    expect(await a.invalidatePattern('*', { confirm: true })).toBe(100)
    const reader = cacheOn(client, `gw-cluster-${process.pid}-b:`).namespace('b')
    expect(await reader.getMany(Array.from({ length: 100 }, (_, i) => `k${i}`))).toEqual(Array.from({ length: 100 }, (_, i) => i))
  })

  it('multi-key operations (getMany, setMany, del, tags) work across hash slots', async () => {
    const client = await connect()
    const prefix = `gw-cluster-${process.pid}-c:`
    const writer = cacheOn(client, prefix)
    const keys = Array.from({ length: 50 }, (_, i) => `item:${i}`)
    await writer.setMany(keys.map((key, i) => ({ key, value: { i, at: new Date(0) }, tags: [`group:${i % 5}`] })))
    // A second instance has an empty L1: every value comes from the cluster (MGET would fail with CROSSSLOT).
    const reader = cacheOn(client, prefix)
    const values = await reader.getMany<{ i: number; at: Date }>(keys)
    expect(values.map((v) => v?.i)).toEqual(keys.map((_, i) => i))
    expect(values[0]?.at).toBeInstanceOf(Date)

    expect(await writer.del(['item:0', 'item:1', 'item:2'])).toBe(3)
    await writer.invalidateTags(['group:3', 'group:4'])
    const fresh = cacheOn(client, prefix)
    const left = (await fresh.getMany(keys)).filter((v) => v !== undefined)
    // 50 keys, 3 deleted, and groups 3 and 4 (20 keys, none of them among the deleted) are stale.
    expect(left).toHaveLength(27)
  })

  it('memory stats sample MEMORY USAGE on every master and count the keys of all of them', async () => {
    const client = await connect()
    const prefix = `gw-cluster-${process.pid}-d:`
    const cache = cacheOn(client, prefix)
    await cache.setMany(Array.from({ length: 120 }, (_, i) => ({ key: `m:${i}`, value: 'x'.repeat(100) })))
    const memory = await cache.memory(30)
    expect(memory.redis?.keys).toBe(120)
    expect(memory.redis?.sampledKeys).toBeGreaterThan(0)
    expect(memory.redis?.estimatedBytes).toBeGreaterThan(0)
    expect(memory.redis?.usedBytes).toBeGreaterThan(0)
  })

  it('the invalidation bus works over the cluster: a set on one instance evicts the key from the other\'s L1', async () => {
    const client = await connect()
    const prefix = `gw-cluster-${process.pid}-e:`
    const one = cacheOn(client, prefix, true)
    const two = cacheOn(await connect(), prefix, true)
    const deadline = Date.now() + 10_000
    while (!(one.stats().busConnected && two.stats().busConnected)) {
      if (Date.now() > deadline) throw new Error('bus never connected')
      await sleep(20)
    }
    await one.set('shared', 'v1')
    expect(await two.get('shared')).toBe('v1')
    await one.set('shared', 'v2')
    const until = Date.now() + 5_000
    while ((await two.get('shared')) !== 'v2') {
      if (Date.now() > until) throw new Error('instance two kept the old value')
      await sleep(20)
    }
    expect(await two.get('shared')).toBe('v2')
  })
})

describe.runIf(local === null)('cache on a Redis Cluster', () => {
  it.skip(skipReason || 'placeholder: reports why the cluster tests were skipped, when they are', () => {})
})
