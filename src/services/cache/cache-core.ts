import { randomUUID } from 'node:crypto'
import { ServiceUnavailableError } from '../../lib/errors'
import { newCounters, newTally, type CacheCounters, type LevelMisses, type NamespaceTally } from './cache-stats'
import { decodeEntry, encodeEntry, type DecodedEntry } from './entry-codec'
import { EntryTooLargeError, type EntryOrigin, type LoadSpec, type Loader, type WriteSpec } from './entry-spec'
import { FillClaims, type Claim } from './fill-claims'
import { escapeGlob, globMatcher } from './glob'
import { InvalidationBus, type BusMessage } from './invalidation-bus'
import { LatencyHistogram } from './latency-histogram'
import { LoadCoordinator } from './load-coordinator'
import { RedisLevel, type RedisClient } from './redis-level'
import type { Serializer } from './serializer'
import { estimateBytes } from './size-estimate'
import { TagVersions } from './tag-versions'
import { TinyLfuCache, type L1Node, type TagStamp } from './tiny-lfu-cache'

// The facade imports these from the core it drives; they live in entry-spec so load-coordinator can share them without a cycle.
export type { EntryOrigin, LoadSpec, WriteSpec } from './entry-spec'

export interface CoreOptions {
  redis: RedisClient | null
  keyPrefix: string
  serializer: Serializer
  defaultTtlMs: number
  defaultGraceMs: number
  jitter: number
  softTimeoutMs: number
  hardTimeoutMs: number
  l1MaxItems: number
  l1MaxBytes: number
  l1MaxTtlMs: number
  maxEntryBytes: number
  loaderTimeoutMs: number
  lockTtlMs: number
  lockWaitMs: number
  refreshBackoffMinMs: number
  refreshBackoffMaxMs: number
  breakerThreshold: number
  breakerCooldownMs: number
  tagVersionTtlMs: number
  bus: boolean
  recordStats: boolean
}

/**
 * The shared engine behind every namespace view: L1 (W-TinyLFU, in process), L2
 * (Redis), the bus, tags and the counters; running loaders is the LoadCoordinator's.
 * Keys here are already validated and relative to `<keyPrefix>cache:`.
 */
export class CacheCore {
  readonly l1: TinyLfuCache
  readonly l2: RedisLevel | null
  readonly bus: InvalidationBus | null
  readonly tags: TagVersions
  readonly counters: CacheCounters = newCounters()
  readonly levelMisses: LevelMisses = { l1: 0, l2: 0 }
  readonly namespaces = new Map<string, NamespaceTally>()
  readonly loaderLatency = new LatencyHistogram()
  readonly recordStats: boolean
  readonly redisPrefix: string
  private readonly loads: LoadCoordinator
  /** Open reads and loads, voided by writes and invalidations (fill-claims.ts). */
  private readonly claims = new FillClaims()

  constructor(readonly options: CoreOptions) {
    this.redisPrefix = `${options.keyPrefix}cache:`
    this.recordStats = options.recordStats
    this.l1 = new TinyLfuCache({ maxItems: options.l1MaxItems, maxBytes: options.l1MaxBytes, maxLocalTtlMs: options.l1MaxTtlMs })
    this.l2 = options.redis
      ? new RedisLevel({
          redis: options.redis,
          softTimeoutMs: options.softTimeoutMs,
          hardTimeoutMs: options.hardTimeoutMs,
          breakerThreshold: options.breakerThreshold,
          breakerCooldownMs: options.breakerCooldownMs,
        })
      : null
    this.tags = new TagVersions(this.l2, (tag) => `${options.keyPrefix}cache-tag:${tag}`, options.tagVersionTtlMs)
    const l2 = this.l2
    this.bus =
      options.redis && options.bus && l2
        ? new InvalidationBus({
            redis: options.redis,
            channel: `${options.keyPrefix}cache-bus`,
            senderId: randomUUID(),
            publish: (channel, message) => l2.publish(channel, message),
            onMessage: (message) => this.applyRemote(message),
            onResubscribed: () => this.flushLocal(),
          })
        : null
    this.loads = new LoadCoordinator({
      target: {
        stampTags: (tags) => this.tags.stamp(tags),
        store: (lk, value, spec, stamp, ns, origin) => this.store(lk, value, spec, stamp, ns, origin),
        readL2: (lk, origin, claim) => this.readL2(lk, origin, claim),
      },
      claims: this.claims,
      locks: this.l2,
      lockKey: (lk) => `${options.keyPrefix}cache-lock:${lk}`,
      lockTtlMs: options.lockTtlMs,
      lockWaitMs: options.lockWaitMs,
      refreshBackoffMinMs: options.refreshBackoffMinMs,
      refreshBackoffMaxMs: options.refreshBackoffMaxMs,
      counters: this.counters,
      latency: options.recordStats ? this.loaderLatency : undefined,
    })
  }

  namespaceCounters(name: string): NamespaceTally {
    let c = this.namespaces.get(name)
    if (!c) {
      c = newTally()
      this.namespaces.set(name, c)
    }
    return c
  }

  /** The rest of a plain get once L1 had no fresh untagged copy: a stale entry is a miss, since get has no loader. */
  async getAfterL1(lk: string, node: L1Node | undefined, ns: NamespaceTally): Promise<unknown> {
    if (node !== undefined && Date.now() < node.freshUntil && (await this.tagsValid(node))) {
      if (this.recordStats) ns.l1Hits++
      return node.value
    }
    if (this.recordStats) this.levelMisses.l1++
    const entry = await this.readL2(lk)
    if (entry !== undefined && Date.now() < entry.freshUntil) {
      if (this.recordStats) ns.l2Hits++
      return entry.value
    }
    this.miss(ns)
    return undefined
  }

  /** Recomputes an entry through the loader that last filled it (re-warming popular keys). */
  async reload(lk: string, origin: EntryOrigin): Promise<void> {
    const ns = this.namespaceCounters('(warming)')
    await this.loads.loadAndStore(lk, origin.loader, origin.spec, ns)
  }

  /** Reads without counting, filling L1 or touching recency and frequency. */
  async peek(lk: string): Promise<unknown> {
    const node = this.l1.peek(lk, Date.now())
    if (node !== undefined && Date.now() < node.freshUntil && (await this.tagsValid(node))) return node.value
    if (!this.l2) return undefined
    const decoded = await this.readL2Raw(lk)
    if (decoded === undefined || Date.now() >= decoded.freshUntil) return undefined
    try {
      return this.options.serializer.deserialize(decoded.payload)
    } catch {
      return undefined
    }
  }

  async has(lk: string): Promise<boolean> {
    const node = this.l1.peek(lk, Date.now())
    if (node !== undefined && Date.now() < node.freshUntil && (await this.tagsValid(node))) return true
    const decoded = await this.readL2Raw(lk)
    return decoded !== undefined && !(Date.now() >= decoded.freshUntil)
  }

  async getMany(lks: readonly string[], ns: NamespaceTally): Promise<unknown[]> {
    const now = Date.now()
    const out: unknown[] = new Array(lks.length)
    const missing: number[] = []
    for (let i = 0; i < lks.length; i++) {
      const node = this.l1.get(lks[i] as string, now)
      if (node !== undefined && now < node.freshUntil && (await this.tagsValid(node))) {
        out[i] = node.value
        if (this.recordStats) ns.l1Hits++
      } else {
        if (this.recordStats) this.levelMisses.l1++
        missing.push(i)
      }
    }
    if (missing.length === 0) return out
    const claims = missing.map((i) => this.claims.take(lks[i] as string))
    try {
      let raws: (string | null)[] = missing.map(() => null)
      if (this.l2) {
        try {
          raws = await this.l2.mget(missing.map((i) => this.redisPrefix + (lks[i] as string)))
        } catch {
          this.counters.errors++
        }
      }
      for (let j = 0; j < missing.length; j++) {
        const i = missing[j] as number
        const raw = raws[j]
        const entry = raw == null ? undefined : await this.acceptL2(lks[i] as string, raw, claims[j] as Claim)
        if (entry !== undefined && Date.now() < entry.freshUntil) {
          out[i] = entry.value
          if (this.recordStats) ns.l2Hits++
        } else {
          this.miss(ns)
        }
      }
      return out
    } finally {
      missing.forEach((i, j) => this.claims.release(lks[i] as string, claims[j] as Claim))
    }
  }

  async set(lk: string, value: unknown, spec: WriteSpec, ns: NamespaceTally, origin?: EntryOrigin): Promise<void> {
    this.claims.voidKey(lk)
    let stamp: TagStamp | undefined
    if (spec.tags && spec.tags.length > 0) {
      try {
        stamp = await this.tags.stamp(spec.tags)
      } catch (err) {
        // Without its tag versions an entry could outlive an invalidation: as loads do, cache nothing.
        this.counters.errors++
        await this.dropUnstamped([lk], err)
        return
      }
    }
    await this.store(lk, value, spec, stamp, ns, origin)
  }

  /**
   * Tagged entries that could not be stamped are not written, and their older values must not be
   * served in their place: deleted here, in Redis and (through the bus) on every instance, or the
   * write fails with ServiceUnavailableError when Redis cannot take the delete either.
   */
  private async dropUnstamped(lks: readonly string[], cause: unknown): Promise<void> {
    this.forgetLocal(lks)
    if (!this.l2 || lks.length === 0) return
    try {
      await this.l2.unlink(lks.map((lk) => this.redisPrefix + lk))
    } catch (err) {
      this.counters.errors++
      throw new ServiceUnavailableError('The cache could not store the tagged entries: their tag versions are out of reach, and so is the older value', { cause: err ?? cause })
    }
    void this.bus?.publish({ keys: [...lks] })
  }

  /** One pipeline for L2 and one bus message for the lot. */
  async setMany(
    entries: readonly { lk: string; value: unknown; spec: WriteSpec }[],
    ns: NamespaceTally,
    timeoutMs?: number,
  ): Promise<{ stored: number; rejected: number }> {
    for (const { lk } of entries) this.claims.voidKey(lk)
    const now = Date.now()
    const writes: { key: string; raw: string; ttlMs: number }[] = []
    const allTags = [...new Set(entries.flatMap((e) => e.spec.tags ?? []))]
    let stamps: TagStamp | undefined
    if (allTags.length > 0) {
      try {
        stamps = await this.tags.stamp(allTags)
      } catch (err) {
        // As set: the tagged entries are not cached (and their older values dropped everywhere); the others are.
        this.counters.errors++
        await this.dropUnstamped(entries.filter((e) => e.spec.tags && e.spec.tags.length > 0).map((e) => e.lk), err)
        return this.setMany(entries.filter((e) => !e.spec.tags || e.spec.tags.length === 0), ns, timeoutMs)
      }
    }
    const stored: string[] = []
    let rejected = 0
    for (const { lk, value, spec } of entries) {
      const stamp = stamps && spec.tags && spec.tags.length > 0 ? pick(stamps, spec.tags) : undefined
      let prepared: ReturnType<CacheCore['prepare']>
      try {
        prepared = this.prepare(value, spec, stamp, now)
      } catch (err) {
        if (!(err instanceof EntryTooLargeError)) throw err
        rejected++
        continue
      }
      stored.push(lk)
      this.claims.voidKey(lk)
      this.l1.set(lk, value, { bytes: prepared.bytes, freshUntil: prepared.freshUntil, staleUntil: prepared.staleUntil, tags: stamp }, now)
      if (prepared.raw !== undefined) writes.push({ key: this.redisPrefix + lk, raw: prepared.raw, ttlMs: prepared.staleUntil - now })
    }
    if (this.l2 && writes.length > 0) {
      try {
        await this.l2.setMany(writes, timeoutMs)
      } catch {
        this.counters.errors++
        return { stored: 0, rejected }
      }
      void this.bus?.publish({ keys: stored })
    }
    this.counters.sets += stored.length
    ns.sets += stored.length
    return { stored: stored.length, rejected }
  }

  async del(lks: readonly string[]): Promise<number> {
    for (const lk of lks) this.claims.voidKey(lk)
    const now = Date.now()
    let local = 0
    for (const lk of lks) {
      const node = this.l1.peek(lk, now)
      if (node !== undefined && now < node.staleUntil) local++
      this.l1.delete(lk)
    }
    if (!this.l2) {
      this.counters.deletes += local
      return local
    }
    let deleted = 0
    try {
      deleted = await this.l2.unlink(lks.map((lk) => this.redisPrefix + lk))
      this.counters.deletes += deleted
    } catch {
      this.counters.errors++
    }
    // Again once Redis has the delete: a read that began while it was on its way may have found the old value.
    this.forgetLocal(lks)
    await this.bus?.publish({ keys: [...lks] })
    return deleted
  }

  /** `glob` is relative to the cache prefix and already validated. */
  async invalidatePattern(glob: string): Promise<number> {
    const matches = globMatcher(glob)
    const local = this.forgetLocalWhere(matches)
    if (!this.l2) {
      this.counters.deletes += local
      return local
    }
    try {
      const deleted = await this.l2.deleteMatching(escapeGlob(this.redisPrefix) + glob)
      this.counters.deletes += deleted
      return deleted
    } catch (err) {
      this.counters.errors++
      throw new ServiceUnavailableError('The cache could not be invalidated', { cause: err })
    } finally {
      // Again once Redis is done: a read that began during the scan may have found a value since deleted.
      this.forgetLocalWhere(matches)
      await this.bus?.publish({ pattern: glob })
    }
  }

  async invalidateTags(tags: readonly string[]): Promise<void> {
    this.claims.voidTags(tags)
    try {
      await this.tags.invalidate(tags)
    } catch (err) {
      this.counters.errors++
      throw new ServiceUnavailableError('The cache tags could not be invalidated', { cause: err })
    }
    await this.bus?.publish({ tags: [...tags] })
  }

  /**
   * L1, then L2, then the loader, filling the levels above on the way back. Past
   * its fresh TTL an entry within grace is served while one background refresh runs.
   */
  async getMultiLevel(lk: string, loader: Loader, spec: LoadSpec, ns: NamespaceTally): Promise<unknown> {
    const now = Date.now()
    let node = this.l1.get(lk, now)
    if (node !== undefined && node.tags !== undefined && !(await this.tagsValid(node))) {
      this.l1.delete(lk)
      node = undefined
    }
    if (node !== undefined) {
      const stale = now >= node.freshUntil
      if (this.recordStats) this.hitL1(ns, stale)
      if (stale) this.loads.refresh(lk, loader, spec, ns)
      return node.value
    }
    if (this.recordStats) this.levelMisses.l1++
    return this.loads.singleFlight(lk, spec.tags, (claim) => this.loadThrough(lk, loader, spec, ns, claim))
  }

  popularKeys(limit: number): { key: string; frequency: number; origin: EntryOrigin | undefined }[] {
    return this.l1.topK(limit).map(({ key, frequency, node }) => ({ key, frequency, origin: node.origin as EntryOrigin | undefined }))
  }

  async close(): Promise<void> {
    await this.bus?.close()
    this.l2?.close()
  }

  private async loadThrough(lk: string, loader: Loader, spec: LoadSpec, ns: NamespaceTally, claim: Claim): Promise<unknown> {
    const entry = await this.readL2(lk, { loader, spec }, claim)
    if (entry !== undefined) {
      const stale = Date.now() >= entry.freshUntil
      if (this.recordStats) this.hitL2(ns, stale)
      if (stale) this.loads.refresh(lk, loader, spec, ns, true)
      return entry.value
    }
    this.miss(ns)
    return this.loads.load(lk, loader, spec, ns, claim)
  }

  private async store(lk: string, value: unknown, spec: WriteSpec, stamp: TagStamp | undefined, ns: NamespaceTally, origin?: EntryOrigin): Promise<void> {
    const now = Date.now()
    const prepared = this.prepare(value, spec, stamp, now)
    // Again at the write itself: a read that began while this write waited (for tag versions) must not fill after it.
    this.claims.voidKey(lk)
    this.l1.set(lk, value, { bytes: prepared.bytes, freshUntil: prepared.freshUntil, staleUntil: prepared.staleUntil, tags: stamp, origin }, now)
    this.counters.sets++
    ns.sets++
    if (!this.l2 || prepared.raw === undefined) return
    try {
      await this.l2.set(this.redisPrefix + lk, prepared.raw, prepared.staleUntil - now)
    } catch {
      this.counters.errors++
      return
    }
    // Not awaited: delivery to other instances is asynchronous either way, and a set should cost one round trip.
    void this.bus?.publish({ keys: [lk] })
  }

  /** Serialises for L2 (whose size is the entry's size) or estimates the size for L1 alone; applies jitter. */
  private prepare(value: unknown, spec: WriteSpec, stamp: TagStamp | undefined, now: number) {
    const jitter = this.options.jitter
    const ttlMs = jitter > 0 ? Math.max(1, Math.round(spec.ttlMs * (1 + (Math.random() * 2 - 1) * jitter))) : spec.ttlMs
    const freshUntil = now + ttlMs
    const staleUntil = freshUntil + spec.graceMs
    let raw: string | undefined
    let bytes: number
    if (this.l2) {
      // Serializer errors (a circular value) are the caller's bug, so they propagate.
      raw = encodeEntry(this.options.serializer.serialize(value), freshUntil, staleUntil, stamp)
      // What Redis stores and the limit means: UTF-8 bytes, not UTF-16 units ('€' is 3 bytes, 1 unit).
      bytes = Buffer.byteLength(raw, 'utf8')
    } else {
      bytes = estimateBytes(value)
    }
    if (bytes > this.options.maxEntryBytes) {
      this.counters.oversized++
      throw new EntryTooLargeError(bytes, this.options.maxEntryBytes)
    }
    return { raw, bytes, freshUntil, staleUntil }
  }

  private async readL2Raw(lk: string): Promise<DecodedEntry | undefined> {
    if (!this.l2) return undefined
    let raw: string | null
    try {
      raw = await this.l2.get(this.redisPrefix + lk)
    } catch {
      this.counters.errors++
      return undefined
    }
    if (raw === null) return undefined
    try {
      const decoded = decodeEntry(raw)
      if (decoded.tags !== undefined && !(await this.tags.check(decoded.tags))) return undefined
      return decoded
    } catch {
      this.counters.errors++
      return undefined
    }
  }

  /** An L2 entry, fresh or within grace, with L1 filled from it while `claim` holds (else one of its own); undefined on a miss or any failure. */
  private async readL2(lk: string, origin?: EntryOrigin, claim?: Claim): Promise<{ value: unknown; freshUntil: number } | undefined> {
    if (!this.l2) return undefined
    if (claim === undefined) return this.claims.holding(lk, undefined, (own) => this.readL2(lk, origin, own))
    let raw: string | null
    try {
      raw = await this.l2.get(this.redisPrefix + lk)
    } catch {
      this.counters.errors++
      if (this.recordStats) this.levelMisses.l2++
      return undefined
    }
    const entry = raw === null ? undefined : await this.acceptL2(lk, raw, claim, origin)
    if (entry === undefined && this.recordStats) this.levelMisses.l2++
    return entry
  }

  private async acceptL2(lk: string, raw: string, claim: Claim, origin?: EntryOrigin): Promise<{ value: unknown; freshUntil: number } | undefined> {
    let decoded: DecodedEntry
    let value: unknown
    try {
      decoded = decodeEntry(raw)
      if (decoded.tags !== undefined && !(await this.tags.check(decoded.tags))) return undefined
      value = this.options.serializer.deserialize(decoded.payload)
    } catch {
      // An entry written by an incompatible serializer is as good as absent.
      this.counters.errors++
      return undefined
    }
    // A headerless value has no lifetime we could copy: Redis's TTL alone governs it.
    if (Number.isNaN(decoded.freshUntil)) return { value, freshUntil: Number.POSITIVE_INFINITY }
    const { freshUntil, staleUntil, tags } = decoded
    // Read before a write or delete of the key (here or, through the bus, elsewhere): the caller's, not L1's.
    if (!claim.voided) this.l1.set(lk, value, { bytes: Buffer.byteLength(raw, 'utf8'), freshUntil, staleUntil, tags, origin }, Date.now())
    return { value, freshUntil }
  }

  private async tagsValid(node: L1Node): Promise<boolean> {
    if (node.tags === undefined) return true
    const quick = this.tags.checkSync(node.tags, Date.now())
    if (quick !== undefined) return quick
    try {
      return await this.tags.check(node.tags)
    } catch {
      this.counters.errors++
      return false
    }
  }

  private hitL1(ns: NamespaceTally, stale: boolean): void {
    ns.l1Hits++
    if (stale) ns.l1StaleHits++
  }

  private hitL2(ns: NamespaceTally, stale: boolean): void {
    ns.l2Hits++
    if (stale) ns.l2StaleHits++
  }

  private miss(ns: NamespaceTally): void {
    if (!this.recordStats) return
    this.counters.misses++
    ns.misses++
  }

  private applyRemote(message: BusMessage): void {
    if (message.clear) this.flushLocal()
    if (Array.isArray(message.keys)) this.forgetLocal(message.keys)
    if (typeof message.pattern === 'string') this.forgetLocalWhere(globMatcher(message.pattern))
    if (Array.isArray(message.tags)) {
      this.claims.voidTags(message.tags)
      this.tags.forget(message.tags)
    }
  }

  /** Drops this instance's copies of the keys, and voids the reads and loads of them in flight. */
  private forgetLocal(lks: readonly string[]): void {
    for (const lk of lks) {
      this.claims.voidKey(lk)
      this.l1.delete(lk)
    }
  }

  /** forgetLocal for the keys `matches` selects; says how many live copies it dropped. */
  private forgetLocalWhere(matches: (lk: string) => boolean): number {
    this.claims.voidKeys(matches)
    return this.l1.deleteWhere(matches, Date.now())
  }

  private flushLocal(): void {
    this.claims.voidAll()
    this.l1.clear()
    this.tags.clear()
  }
}

function pick(stamp: TagStamp, tags: readonly string[]): TagStamp {
  const out: TagStamp = Object.create(null) as TagStamp
  for (const tag of tags) out[tag] = stamp[tag] as number
  return out
}
