import { describe, expect, it } from 'vitest'
import type { RedisLevel } from '../src/services/cache/redis-level'
import { TagVersions } from '../src/services/cache/tag-versions'

describe('tag versions', () => {
  it('keeps the newer version when an invalidation finishes during a slower read', async () => {
    let counter = 1
    let releaseRead!: () => void
    const readGate = new Promise<void>((r) => (releaseRead = r))
    const l2 = {
      // The read sees the counter as it was when it started, then stalls.
      readCounters: async (keys: string[]) => {
        const seen = keys.map(() => counter)
        await readGate
        return seen
      },
      incrementCounters: async (keys: string[]) => keys.map(() => ++counter),
    } as unknown as RedisLevel
    const tags = new TagVersions(l2, (t) => `tag:${t}`, 60_000)

    const stamping = tags.stamp(['org:1'])
    await tags.invalidate(['org:1'])
    releaseRead()
    const stamp = await stamping

    expect(stamp['org:1']).toBe(2)
    // An entry written under the pre-invalidation version must read as dead.
    expect(await tags.check({ 'org:1': 1 })).toBe(false)
  })
})
