import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'
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
    a = await buildTestApp({ database, redisPrefix })
    b = await buildTestApp({ database, redisPrefix })
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
