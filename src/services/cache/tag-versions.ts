import type { RedisLevel } from './redis-level'
import type { TagStamp } from './tiny-lfu-cache'

/**
 * Tag invalidation in O(1): a tag is a counter, invalidating it is one INCR, and an
 * entry records the counters it was written under. An entry whose stamp no longer
 * matches is dead, found lazily on read. Counters are cached in process for
 * `ttlMs` (the bus drops them early on invalidation), so a hot read checks its
 * tags without a round trip.
 */
export class TagVersions {
  private readonly local = new Map<string, { version: number; at: number }>()

  constructor(
    private readonly l2: RedisLevel | null,
    private readonly keyFor: (tag: string) => string,
    private readonly ttlMs: number,
  ) {}

  /** true or false when every tag is known locally; undefined when Redis must be asked. */
  checkSync(stamp: TagStamp, now: number): boolean | undefined {
    for (const tag in stamp) {
      const known = this.local.get(tag)
      if (known === undefined || (this.l2 !== null && now - known.at > this.ttlMs)) return undefined
      if (known.version !== stamp[tag]) return false
    }
    return true
  }

  async check(stamp: TagStamp): Promise<boolean> {
    const quick = this.checkSync(stamp, Date.now())
    if (quick !== undefined) return quick
    const tags = Object.keys(stamp)
    const versions = await this.current(tags)
    return tags.every((tag, i) => versions[i] === stamp[tag])
  }

  /** Read before the loader runs, so an invalidation racing the load leaves the entry dead, not stale. */
  async stamp(tags: readonly string[]): Promise<TagStamp> {
    const versions = await this.current(tags)
    // No prototype: a tag may be named like one of Object's own properties (`__proto__`).
    const stamp: TagStamp = Object.create(null) as TagStamp
    tags.forEach((tag, i) => (stamp[tag] = versions[i] as number))
    return stamp
  }

  async invalidate(tags: readonly string[]): Promise<void> {
    const now = Date.now()
    if (this.l2 === null) {
      for (const tag of tags) this.local.set(tag, { version: (this.local.get(tag)?.version ?? 0) + 1, at: now })
      return
    }
    const versions = await this.l2.incrementCounters(tags.map(this.keyFor))
    tags.forEach((tag, i) => this.local.set(tag, { version: versions[i] as number, at: now }))
  }

  forget(tags: readonly string[]): void {
    for (const tag of tags) this.local.delete(tag)
  }

  clear(): void {
    if (this.l2 !== null) this.local.clear()
  }

  private async current(tags: readonly string[]): Promise<number[]> {
    const now = Date.now()
    if (this.l2 === null) return tags.map((tag) => this.local.get(tag)?.version ?? 0)
    const missing = tags.filter((tag) => {
      const known = this.local.get(tag)
      return known === undefined || now - known.at > this.ttlMs
    })
    if (missing.length > 0) {
      const fetched = await this.l2.readCounters(missing.map(this.keyFor))
      // Counters only grow (INCR): an invalidate() that finished while this read was in flight
      // holds a newer version, which a stale read must not overwrite.
      missing.forEach((tag, i) => {
        const known = this.local.get(tag)
        const version = Math.max(fetched[i] as number, known?.version ?? 0)
        this.local.set(tag, { version, at: now })
      })
    }
    return tags.map((tag) => this.local.get(tag)!.version)
  }
}
