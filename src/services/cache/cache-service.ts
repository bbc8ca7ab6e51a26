import { ValidationError } from '../../lib/errors'
import { CacheCore, type EntryOrigin, type LoadSpec, type WriteSpec } from './cache-core'
import { toGraceMs, toTtlMs, validateInvalidation, validateKey, validateNamespace, validatePattern, validateTags, type InvalidateOptions, type InvalidateRequest } from './cache-input'
import { latencyStats, readFigures, type CacheStats, type NamespaceTally, type WarmProgress } from './cache-stats'
import { WarmingRegistry, type CacheWarmer, type WarmEntry, type WarmResult } from './cache-warmer'
import { escapeGlob } from './glob'
import type { RedisClient, RedisMemory } from './redis-level'
import { typedJsonSerializer, type Serializer } from './serializer'

export type { CacheStats } from './cache-stats'
export type { InvalidateOptions } from './cache-input'
export type { CacheWarmer, WarmEntry, WarmResult } from './cache-warmer'

export interface CacheServiceOptions {
  /** Without a client there is no L2: entries live in this process only. */
  redis?: RedisClient | null
  /** Namespaces every key, e.g. 'groundwork:'. */
  keyPrefix: string
  defaultTtlSeconds?: number
  /** Soft timeout: no caller waits longer for Redis; past it a read is a miss and a write is skipped. */
  timeoutMs?: number
  /** A Redis call unanswered after this counts against the circuit breaker. */
  hardTimeoutMs?: number
  serializer?: Serializer
  /** L1 bounds (the name is the seed's: L1 was its memory backend). */
  memory?: { maxItems?: number; maxBytes?: number }
  /** A value whose serialised (or, without Redis, estimated) size exceeds this is refused. */
  maxEntryBytes?: number
  /** How long a copy may stay in this process when Redis is the source of truth: bounds a lost bus message. */
  l1MaxTtlSeconds?: number
  /** Spread of TTLs, 0.1 for ±10%, so keys written together do not expire together. */
  jitter?: number
  /** Default stale-while-revalidate grace for getMultiLevel/getOrSet. */
  graceSeconds?: number
  /** Bounds for the optional distributed lock (getMultiLevel's `lock: true`). */
  lock?: { ttlMs?: number; waitMs?: number }
  loaderTimeoutMs?: number
  refreshBackoff?: { minMs?: number; maxMs?: number }
  breaker?: { threshold?: number; cooldownMs?: number }
  /** Cross-instance L1 invalidation over Redis pub/sub; opens one subscriber connection. */
  bus?: boolean
  /** How long a tag version read from Redis is trusted in process (the bus drops it early). */
  tagVersionTtlMs?: number
  /** Off only to measure what counting costs. */
  stats?: boolean
  warm?: { batchSize?: number; concurrency?: number; popularLimit?: number }
}

export interface SetOptions {
  ttlSeconds?: number
  /** Past the TTL, getMultiLevel serves the value for this long while one refresh runs. */
  graceSeconds?: number
  tags?: string[]
}

export interface GetMultiLevelOptions extends SetOptions {
  /** Once per cluster instead of once per process: a Redis lock (SET NX PX) around the loader. */
  lock?: boolean
  loaderTimeoutMs?: number
}

export interface SetManyEntry extends SetOptions {
  key: string
  value: unknown
}

export interface PopularKey {
  key: string
  /** Count-min estimate, 0-15, halved periodically. */
  frequency: number
}

export interface CacheMemory {
  l1Items: number
  l1Bytes: number
  l1MaxItems: number
  l1MaxBytes: number
  redis: RedisMemory | null
}

const MiB = 1024 * 1024
const ROOT = '(root)'
// Warming writes thousands of entries per pipeline: the request-path soft timeout would drop them.
const BULK_TIMEOUT_MS = 5_000

/**
 * The cache: L1 in process (W-TinyLFU), L2 in Redis, L3 the caller's loader.
 * `undefined` is a miss; every other value, 0, '', false and null included, is a hit.
 * Values read from L1 are the stored objects themselves: treat them as immutable.
 */
export class CacheService {
  private readonly core: CacheCore
  private readonly warming: WarmingRegistry
  /** '' at the root, 'users:' for namespace('users'). */
  private readonly ns: string
  private readonly nsCounters: NamespaceTally
  private readonly defaultLoad: LoadSpec

  constructor(options: CacheServiceOptions, view?: { parent: CacheService; name: string }) {
    if (view) {
      this.core = view.parent.core
      this.warming = view.parent.warming
      this.ns = `${view.parent.ns}${view.name}:`
      this.nsCounters = this.core.namespaceCounters(this.ns.slice(0, -1))
      this.defaultLoad = view.parent.defaultLoad
      return
    }
    this.core = new CacheCore(resolveOptions(options))
    this.ns = ''
    this.nsCounters = this.core.namespaceCounters(ROOT)
    const o = this.core.options
    this.defaultLoad = { ttlMs: o.defaultTtlMs, graceMs: o.defaultGraceMs, tags: undefined, lock: false, loaderTimeoutMs: o.loaderTimeoutMs }
    this.warming = new WarmingRegistry(
      {
        list: (limit) =>
          this.core.popularKeys(limit).flatMap(({ key, origin }) => (origin ? [{ key, rewarm: () => this.rewarm(key, origin) }] : [])),
      },
      { batchSize: options.warm?.batchSize ?? 500, concurrency: options.warm?.concurrency ?? 4, popularLimit: options.warm?.popularLimit ?? 100 },
    )
  }

  /** A view whose keys are prefixed with `name:`; it shares L1, L2, the bus and the counters. */
  namespace(name: string): CacheService {
    validateNamespace(name)
    return new CacheService({ keyPrefix: '' }, { parent: this, name })
  }

  /** Fresh values only; `undefined` is a miss. */
  async get<T>(key: string): Promise<T | undefined> {
    const core = this.core
    const now = Date.now()
    const node = core.l1.get(this.ns + key, now)
    // A key found in L1 was validated on its way in, so the hit path skips validation.
    if (node !== undefined && node.tags === undefined && now < node.freshUntil) {
      if (core.recordStats) this.nsCounters.l1Hits++
      return node.value as T
    }
    validateKey(key)
    return (await core.getAfterL1(this.ns + key, node, this.nsCounters)) as T | undefined
  }

  /** Like get, without counting, filling L1, or touching recency and frequency. */
  async peek<T>(key: string): Promise<T | undefined> {
    validateKey(key)
    return (await this.core.peek(this.ns + key)) as T | undefined
  }

  async has(key: string): Promise<boolean> {
    validateKey(key)
    return this.core.has(this.ns + key)
  }

  /** Misses come from L2 in one MGET. */
  async getMany<T>(keys: readonly string[]): Promise<(T | undefined)[]> {
    for (const key of keys) validateKey(key)
    return (await this.core.getMany(keys.map((k) => this.ns + k), this.nsCounters)) as (T | undefined)[]
  }

  /**
   * Storing `undefined` removes the key. A value over the maximum entry size is
   * refused with a ValidationError; serializer errors (a circular value) propagate.
   */
  async set(key: string, value: unknown, ttlOrOptions?: number | SetOptions): Promise<void> {
    validateKey(key)
    const spec = this.writeSpec(typeof ttlOrOptions === 'number' ? { ttlSeconds: ttlOrOptions } : (ttlOrOptions ?? {}))
    if (value === undefined) {
      await this.core.del([this.ns + key])
      return
    }
    await this.core.set(this.ns + key, value, spec, this.nsCounters)
  }

  /** One L2 pipeline; resolves to how many were stored (oversized values are skipped). */
  async setMany(entries: readonly SetManyEntry[]): Promise<number> {
    return this.setManyWithin(entries)
  }

  /** Resolves to the number of keys removed (from Redis, or from L1 without it); 0 when Redis is unreachable. */
  async del(keys: string | readonly string[]): Promise<number> {
    const list = typeof keys === 'string' ? [keys] : keys
    for (const key of list) validateKey(key)
    if (list.length === 0) return 0
    return this.core.del(list.map((k) => this.ns + k))
  }

  /**
   * Deletes every key matching a Redis glob (`*`, `?`, `[a-z]`, `\` escapes) in this
   * namespace, here and in every instance's L1. SCAN COUNT 1000 + pipelined UNLINK:
   * the cost grows with the whole keyspace, not the matches. Throws when Redis is
   * unreachable, because the caller relies on the stale entries being gone.
   */
  async invalidatePattern(pattern: string, options: InvalidateOptions = {}): Promise<number> {
    validatePattern(pattern, options)
    return this.core.invalidatePattern(escapeGlob(this.ns) + pattern)
  }

  /** O(1) per tag: bumps its version, so every entry written under the old one is dead everywhere. */
  async invalidateTags(tags: readonly string[]): Promise<number> {
    validateTags(tags, 'invalidation')
    if (tags.length === 0) throw ValidationError.field('tags', 'Give at least one tag')
    await this.core.invalidateTags(tags)
    return tags.length
  }

  /**
   * Keys, a pattern and tags in one call (the invalidateCache mutation; `at` prefixes the paths of
   * its field errors, `['input']` there). Every part is validated before any runs, so an invalid one (a pattern without confirm, too many tags) deletes nothing.
   * Once valid, the parts run in order (keys, pattern, tags); if Redis fails part-way the error is
   * thrown and the parts before it stay applied, which a retry of the whole call repeats harmlessly.
   */
  async invalidate(request: InvalidateRequest, at: readonly string[] = []): Promise<{ deleted: number; tags: number }> {
    validateInvalidation(request, at)
    const keys = request.keys ?? []
    const tags = request.tags ?? []
    let deleted = keys.length > 0 ? await this.del(keys) : 0
    if (request.pattern != null) deleted += await this.invalidatePattern(request.pattern, { confirm: request.confirm === true })
    return { deleted, tags: tags.length > 0 ? await this.invalidateTags(tags) : 0 }
  }

  /** Single flight per process: concurrent callers share one loader call. */
  async getOrSet<T>(key: string, loader: () => Promise<T>, ttlOrOptions?: number | GetMultiLevelOptions): Promise<T> {
    return this.getMultiLevel(key, loader, typeof ttlOrOptions === 'number' ? { ttlSeconds: ttlOrOptions } : ttlOrOptions)
  }

  /**
   * L1, then L2, then the loader, filling the levels above on the way back. A loader
   * error reaches every waiter and is not cached; an `undefined` result is not cached;
   * a value over the maximum entry size is returned but not cached.
   */
  async getMultiLevel<T>(key: string, loader: () => Promise<T>, options?: GetMultiLevelOptions): Promise<T> {
    const spec = options === undefined ? this.defaultLoad : this.loadSpec(options)
    validateKey(key)
    return (await this.core.getMultiLevel(this.ns + key, loader, spec, this.nsCounters)) as T
  }

  registerWarmer(warmer: CacheWarmer): void {
    this.warming.register(warmer, { setMany: (entries) => this.setManyWithin(entries, BULK_TIMEOUT_MS), keyPrefix: this.ns })
  }

  /** Runs the matching warmers (all without patterns), then recomputes popular keys; one run at a time. */
  warmCache(patterns?: readonly string[], options?: { popular?: boolean }): Promise<WarmResult> {
    return this.warming.warm(patterns, options)
  }

  warmProgress(): WarmProgress {
    return this.warming.progress()
  }

  warmerNames(): string[] {
    return this.warming.names()
  }

  /** Top-k resident keys by the admission sketch's estimate, not a count of every key. */
  popularKeys(limit = 10): PopularKey[] {
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw ValidationError.field('limit', 'limit must be between 1 and 1000')
    return this.core.popularKeys(limit).map(({ key, frequency }) => ({ key, frequency }))
  }

  async memory(sampleSize = 200): Promise<CacheMemory> {
    const { l1, l2, redisPrefix, options } = this.core
    const redis = l2 ? await l2.memory(`${escapeGlob(redisPrefix)}*`, sampleSize).catch(() => null) : null
    return { l1Items: l1.size, l1Bytes: l1.bytes, l1MaxItems: options.l1MaxItems, l1MaxBytes: options.l1MaxBytes, redis }
  }

  stats(): CacheStats {
    const { core } = this
    const { l1, l2, bus, counters } = core
    const reads = readFigures(core.namespaces, core.levelMisses, counters.misses)
    return {
      backend: l2 ? 'redis' : 'memory',
      ...counters,
      hits: reads.hits,
      staleHits: reads.staleHits,
      hitRate: reads.hitRate,
      items: l1.size,
      l1Bytes: l1.bytes,
      l1MaxItems: core.options.l1MaxItems,
      l1MaxBytes: core.options.l1MaxBytes,
      evictions: l1.evictions,
      expirations: l1.expirations,
      l2Timeouts: l2?.softTimeouts ?? 0,
      breaker: l2?.breaker.state ?? null,
      breakerOpened: l2?.breaker.opened ?? 0,
      busConnected: bus ? bus.connected : null,
      busReceived: bus?.received ?? 0,
      busPublished: bus?.published ?? 0,
      busResubscribes: bus?.resubscribes ?? 0,
      levels: reads.levels,
      namespaces: reads.namespaces,
      loaderLatency: latencyStats(core.loaderLatency),
      warming: this.warming.progress(),
    }
  }

  /** Closes the bus subscriber; the Redis client belongs to the caller. */
  async close(): Promise<void> {
    await this.core.close()
  }

  private async setManyWithin(entries: readonly SetManyEntry[] | readonly WarmEntry[], timeoutMs?: number): Promise<number> {
    const prepared = entries.map((e) => {
      validateKey(e.key)
      return { lk: this.ns + e.key, value: e.value, spec: this.writeSpec(e) }
    })
    const { stored } = await this.core.setMany(prepared.filter((e) => e.value !== undefined), this.nsCounters, timeoutMs)
    return stored
  }

  private rewarm(lk: string, origin: EntryOrigin): Promise<void> {
    return this.core.reload(lk, origin)
  }

  private writeSpec(options: SetOptions): WriteSpec {
    if (options.tags !== undefined) validateTags(options.tags)
    return {
      ttlMs: options.ttlSeconds === undefined ? this.defaultLoad.ttlMs : toTtlMs(options.ttlSeconds),
      graceMs: options.graceSeconds === undefined ? 0 : toGraceMs(options.graceSeconds),
      tags: options.tags,
    }
  }

  private loadSpec(options: GetMultiLevelOptions): LoadSpec {
    const write = this.writeSpec(options)
    const loaderTimeoutMs = options.loaderTimeoutMs ?? this.defaultLoad.loaderTimeoutMs
    if (!Number.isFinite(loaderTimeoutMs) || loaderTimeoutMs <= 0) throw ValidationError.field('loaderTimeoutMs', 'loaderTimeoutMs must be positive')
    return {
      ...write,
      graceMs: options.graceSeconds === undefined ? this.defaultLoad.graceMs : write.graceMs,
      lock: options.lock ?? false,
      loaderTimeoutMs,
    }
  }
}

function resolveOptions(o: CacheServiceOptions): ConstructorParameters<typeof CacheCore>[0] {
  const maxItems = o.memory?.maxItems ?? 100_000
  if (!Number.isInteger(maxItems) || maxItems < 1) throw ValidationError.field('memory.maxItems', 'maxItems must be a positive integer')
  const maxBytes = o.memory?.maxBytes ?? 64 * MiB
  const maxEntryBytes = o.maxEntryBytes ?? Math.min(MiB, maxBytes)
  if (!(maxBytes > 0) || !(maxEntryBytes > 0) || maxEntryBytes > maxBytes) {
    throw ValidationError.field('maxEntryBytes', 'maxEntryBytes must be positive and at most memory.maxBytes')
  }
  const jitter = o.jitter ?? 0.1
  if (!(jitter >= 0 && jitter <= 0.5)) throw ValidationError.field('jitter', 'jitter must be between 0 and 0.5')
  const hasRedis = Boolean(o.redis)
  return {
    redis: o.redis ?? null,
    keyPrefix: o.keyPrefix,
    serializer: o.serializer ?? typedJsonSerializer,
    defaultTtlMs: toTtlMs(o.defaultTtlSeconds ?? 3600, 'defaultTtlSeconds'),
    defaultGraceMs: toGraceMs(o.graceSeconds),
    jitter,
    softTimeoutMs: o.timeoutMs ?? 75,
    hardTimeoutMs: o.hardTimeoutMs ?? 1_000,
    l1MaxItems: maxItems,
    l1MaxBytes: maxBytes,
    // Without Redis, L1 is the only copy: nothing to re-read it from.
    l1MaxTtlMs: hasRedis ? toTtlMs(o.l1MaxTtlSeconds ?? 300, 'l1MaxTtlSeconds') : Number.POSITIVE_INFINITY,
    maxEntryBytes,
    loaderTimeoutMs: o.loaderTimeoutMs ?? 10_000,
    lockTtlMs: o.lock?.ttlMs ?? 10_000,
    lockWaitMs: o.lock?.waitMs ?? 1_000,
    refreshBackoffMinMs: o.refreshBackoff?.minMs ?? 1_000,
    refreshBackoffMaxMs: o.refreshBackoff?.maxMs ?? 30_000,
    breakerThreshold: o.breaker?.threshold ?? 5,
    breakerCooldownMs: o.breaker?.cooldownMs ?? 2_000,
    tagVersionTtlMs: o.tagVersionTtlMs ?? 1_000,
    bus: o.bus ?? false,
    recordStats: o.stats ?? true,
  }
}
