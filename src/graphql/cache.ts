import { ValidationError } from '../lib/errors'
import { MAX_INVALIDATE_KEYS, MAX_TAGS } from '../services/cache/cache-input'
import type { CacheMemory, CacheStats, PopularKey, WarmResult } from '../services/cache/cache-service'
import type { LatencyStats, LevelStats, NamespaceStats, WarmProgress } from '../services/cache/cache-stats'
import type { RedisMemory } from '../services/cache/redis-level'
import { builder } from './builder'
import { ticker } from './ticker'

export const CacheLevelStatsRef = builder.objectRef<LevelStats>('CacheLevelStats').implement({
  description: 'Raw read counters of one cache level on this instance.',
  fields: (t) => ({
    level: t.exposeString('level', { description: '"l1" (in process) or "l2" (Redis).' }),
    hits: t.exposeFloat('hits', { description: 'Reads this level answered, stale ones included.' }),
    staleHits: t.exposeFloat('staleHits', { description: 'Hits served past the fresh TTL, within grace, while a refresh ran.' }),
    misses: t.exposeFloat('misses', { description: 'Reads this level could not answer.' }),
    hitRate: t.exposeFloat('hitRate', { description: 'hits / (hits + misses) of this level, 0 before the first read.' }),
  }),
})

const CacheNamespaceStatsRef = builder.objectRef<NamespaceStats>('CacheNamespaceStats').implement({
  description: 'Raw counters of one namespace (cache.namespace(name)) on this instance.',
  fields: (t) => ({
    namespace: t.exposeString('namespace', { description: 'The namespace, "(root)" for keys outside any.' }),
    hits: t.exposeFloat('hits', { description: 'Reads that found a value.' }),
    staleHits: t.exposeFloat('staleHits', { description: 'Hits served stale within grace.' }),
    misses: t.exposeFloat('misses', { description: 'Reads that found nothing.' }),
    sets: t.exposeFloat('sets', { description: 'Writes.' }),
    hitRate: t.exposeFloat('hitRate', { description: 'hits / (hits + misses), 0 before the first read.' }),
  }),
})

const LatencyRef = builder.objectRef<LatencyStats>('CacheLoaderLatency').implement({
  description: 'Loader (L3) latency from a fixed-bucket histogram; a percentile is its bucket upper bound.',
  fields: (t) => ({
    count: t.exposeFloat('count', { description: 'Loader calls measured.' }),
    p50Ms: t.exposeFloat('p50Ms', { description: 'Median, in milliseconds.' }),
    p95Ms: t.exposeFloat('p95Ms', { description: '95th percentile, in milliseconds.' }),
    p99Ms: t.exposeFloat('p99Ms', { description: '99th percentile, in milliseconds.' }),
  }),
})

export const PopularKeyRef = builder.objectRef<PopularKey>('PopularKey').implement({
  description: 'A key the admission sketch rates popular (top-k of resident keys, not an exact count).',
  fields: (t) => ({
    key: t.exposeString('key', { description: 'The key, with its namespace prefix.' }),
    frequency: t.exposeInt('frequency', { description: 'Count-min estimate of recent accesses, 0-15, halved as it ages.' }),
  }),
})

const RedisMemoryRef = builder.objectRef<RedisMemory>('CacheRedisMemory').implement({
  description: 'Redis memory: INFO memory for the server, MEMORY USAGE sampled over this cache\'s keys for its share.',
  fields: (t) => ({
    usedBytes: t.exposeFloat('usedBytes', { nullable: true, description: 'used_memory of the whole server.' }),
    peakBytes: t.exposeFloat('peakBytes', { nullable: true, description: 'used_memory_peak of the whole server.' }),
    maxBytes: t.exposeFloat('maxBytes', { nullable: true, description: 'maxmemory; 0 means no limit.' }),
    keys: t.exposeFloat('keys', { description: 'Keys under this cache\'s prefix, extrapolated when the SCAN sample stopped early.' }),
    estimatedBytes: t.exposeFloat('estimatedBytes', { description: 'Average sampled MEMORY USAGE times keys.' }),
    sampledKeys: t.exposeInt('sampledKeys', { description: 'Keys measured with MEMORY USAGE.' }),
  }),
})

export const CacheMemoryRef = builder.objectRef<CacheMemory>('CacheMemory').implement({
  description: 'Memory held by the cache: L1 in this process, and Redis.',
  fields: (t) => ({
    l1Items: t.exposeFloat('l1Items', { description: 'Entries in this process.' }),
    l1Bytes: t.exposeFloat('l1Bytes', { description: 'Estimated bytes of those entries (their serialised size).' }),
    l1MaxItems: t.exposeFloat('l1MaxItems', { description: 'L1 entry bound.' }),
    l1MaxBytes: t.exposeFloat('l1MaxBytes', { description: 'L1 byte bound.' }),
    redis: t.expose('redis', { type: RedisMemoryRef, nullable: true, description: 'Null without Redis or when it did not answer.' }),
  }),
})

const CacheWarmProgressRef = builder.objectRef<WarmProgress>('CacheWarmProgress').implement({
  description: 'The current or last cache warming run.',
  fields: (t) => ({
    running: t.exposeBoolean('running', { description: 'Whether a run is in progress.' }),
    warmers: t.exposeStringList('warmers', { description: 'Warmers selected for the run.' }),
    current: t.exposeString('current', { nullable: true, description: 'The warmer running now, or "popular keys".' }),
    entries: t.exposeFloat('entries', { description: 'Entries written so far.' }),
    failed: t.exposeFloat('failed', { description: 'Entries that could not be written (too large, Redis refused).' }),
    popularKeys: t.exposeFloat('popularKeys', { description: 'Popular keys recomputed through their loaders.' }),
    startedAt: t.expose('startedAt', { type: 'DateTime', nullable: true, description: 'When the run started.' }),
    finishedAt: t.expose('finishedAt', { type: 'DateTime', nullable: true, description: 'When the run ended.' }),
    error: t.exposeString('error', { nullable: true, description: 'Why the run stopped early, if it did.' }),
  }),
})

const CacheStatsRef = builder.objectRef<CacheStats>('CacheStats').implement({
  description: 'Raw counters of this instance since it started: sum them across instances, never average rates.',
  fields: (t) => ({
    backend: t.exposeString('backend', { description: '"redis" or "memory".' }),
    hits: t.exposeFloat('hits', { description: 'Reads that found a value (a cached 0, "", false or null counts), stale ones included.' }),
    staleHits: t.exposeFloat('staleHits', { description: 'Hits served past the fresh TTL, within grace.' }),
    misses: t.exposeFloat('misses', { description: 'Reads that found nothing in any level.' }),
    hitRate: t.exposeFloat('hitRate', { description: 'hits / (hits + misses), 0 before the first read.' }),
    errors: t.exposeFloat('errors', { description: 'Backend calls that failed or timed out (served as misses).' }),
    sets: t.exposeFloat('sets', { description: 'Writes.' }),
    deletes: t.exposeFloat('deletes', { description: 'Keys deleted.' }),
    dedupes: t.exposeFloat('dedupes', { description: 'getOrSet callers served by a load another caller had started.' }),
    evictions: t.exposeFloat('evictions', { description: 'L1 entries evicted by the W-TinyLFU policy to stay within its bounds.' }),
    items: t.exposeFloat('items', { nullable: true, description: 'Entries held in process memory (L1).' }),
    loads: t.exposeFloat('loads', { description: 'Loader calls (L3).' }),
    loadErrors: t.exposeFloat('loadErrors', { description: 'Loader calls that threw or timed out.' }),
    refreshes: t.exposeFloat('refreshes', { description: 'Background refreshes started for stale entries.' }),
    oversized: t.exposeFloat('oversized', { description: 'Values refused for exceeding the maximum entry size.' }),
    breaker: t.exposeString('breaker', { nullable: true, description: 'Redis circuit breaker: "closed", "open" or "half-open"; null without Redis.' }),
    levels: t.expose('levels', { type: [CacheLevelStatsRef], description: 'Counters per level: L1 (process), L2 (Redis).' }),
    namespaces: t.expose('namespaces', { type: [CacheNamespaceStatsRef], description: 'Counters per namespace.' }),
    loaderLatency: t.expose('loaderLatency', { type: LatencyRef, description: 'Loader latency percentiles.' }),
    warming: t.expose('warming', { type: CacheWarmProgressRef, description: 'Progress of the current or last warming run.' }),
    popularKeys: t.field({
      type: [PopularKeyRef],
      description: 'The most popular resident keys by the frequency sketch.',
      args: { limit: t.arg.int({ required: false, description: 'How many, 1-100 (default 10).' }) },
      resolve: (_stats, args, ctx) => {
        const limit = args.limit ?? 10
        if (limit < 1 || limit > 100) throw ValidationError.field(['limit'], 'limit must be between 1 and 100')
        return ctx.services.cache.popularKeys(limit)
      },
    }),
    memory: t.field({
      type: CacheMemoryRef,
      description: 'L1 items and bytes, and Redis memory (INFO memory plus sampled MEMORY USAGE of this cache\'s keys).',
      resolve: (_stats, _args, ctx) => ctx.services.cache.memory(),
    }),
  }),
})

const InvalidateCacheInput = builder.inputType('InvalidateCacheInput', {
  description: 'What to invalidate: keys, a glob pattern, tags, or any mix.',
  fields: (t) => ({
    keys: t.stringList({ required: false, description: `Exact keys (at most ${MAX_INVALIDATE_KEYS}).` }),
    pattern: t.string({ required: false, description: 'A Redis glob such as "user:*". Runs SCAN + UNLINK in batches; cost grows with the keyspace, not the matches.' }),
    confirm: t.boolean({ required: false, description: 'Required for a pattern that does not start with a literal character (such as "*", "*:*" or "[a-z]*"), which can match every key.' }),
    tags: t.stringList({ required: false, description: `Tags whose entries all become invalid at once, in O(1) per tag (at most ${MAX_TAGS}).` }),
  }),
})

const InvalidateCacheSuccess = builder.objectRef<{ deleted: number; tags: number }>('InvalidateCacheSuccessData').implement({
  description: 'How many entries went.',
  fields: (t) => ({
    deleted: t.exposeInt('deleted', { description: 'Entries deleted by key or pattern.' }),
    tags: t.exposeInt('tags', { description: 'Tags invalidated (their entries are not counted: tag invalidation never scans).' }),
  }),
})

const WarmCacheInput = builder.inputType('WarmCacheInput', {
  description: 'Which warmers to run.',
  fields: (t) => ({
    patterns: t.stringList({ required: false, description: 'Warmer names, key patterns or globs over them; all warmers when absent.' }),
    popular: t.boolean({ required: false, description: 'Also recompute the currently popular keys through their loaders (default true).' }),
  }),
})

const WarmCacheSuccess = builder.objectRef<WarmResult>('WarmCacheSuccessData').implement({
  description: 'What a warming run did.',
  fields: (t) => ({
    warmers: t.exposeStringList('warmers', { description: 'Warmers that ran.' }),
    entries: t.exposeFloat('entries', { description: 'Entries written.' }),
    failed: t.exposeFloat('failed', { description: 'Entries that could not be written.' }),
    popularKeys: t.exposeFloat('popularKeys', { description: 'Popular keys recomputed.' }),
    durationMs: t.exposeFloat('durationMs', { description: 'Wall time of the run.' }),
  }),
})

builder.queryField('cacheStats', (t) =>
  t.field({
    type: CacheStatsRef,
    description: 'Cache counters of the instance that answers (admin).',
    authScopes: { admin: true },
    resolve: (_root, _args, ctx) => ctx.services.cache.stats(),
  }),
)

builder.mutationField('invalidateCache', (t) =>
  t.field({
    type: InvalidateCacheSuccess,
    description: 'Deletes cache entries by key or pattern, and invalidates tags, on every instance (admin). Nothing is deleted when any part of the input is invalid.',
    authScopes: { admin: true },
    errors: { types: [ValidationError], dataField: { name: 'result' } },
    args: { input: t.arg({ type: InvalidateCacheInput, required: true, description: 'What to delete.' }) },
    resolve: (_root, { input }, ctx) => ctx.services.cache.invalidate(input, ['input']),
  }),
)

builder.mutationField('warmCache', (t) =>
  t.field({
    type: WarmCacheSuccess,
    description: 'Runs cache warmers on this instance and waits for them; progress shows in cacheStats.warming (admin).',
    authScopes: { admin: true },
    errors: { types: [ValidationError], dataField: { name: 'result' } },
    args: { input: t.arg({ type: WarmCacheInput, required: false, description: 'Which warmers; all when absent.' }) },
    resolve: (_root, { input }, ctx) => ctx.services.cache.warmCache(input?.patterns ?? undefined, { popular: input?.popular ?? true }),
  }),
)

builder.subscriptionField('cacheStats', (t) =>
  t.field({
    type: CacheStatsRef,
    description: 'Cache counters of the instance holding the connection, every intervalMs (admin).',
    authScopes: { admin: true },
    args: { intervalMs: t.arg.int({ required: false, description: 'Milliseconds between snapshots, 250-60000 (default 1000).' }) },
    subscribe: (_root, args, ctx) => {
      const interval = args.intervalMs ?? 1000
      if (interval < 250 || interval > 60_000) throw ValidationError.field(['intervalMs'], 'intervalMs must be between 250 and 60000')
      return ticker(interval, () => ctx.services.cache.stats())
    },
    resolve: (stats: CacheStats) => stats,
  }),
)
