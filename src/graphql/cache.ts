import { setTimeout as sleep } from 'node:timers/promises'
import { ValidationError } from '../lib/errors'
import type { CacheStats } from '../services/cache/cache-service'
import { builder } from './builder'

const CacheStatsRef = builder.objectRef<CacheStats>('CacheStats').implement({
  description: 'Raw counters of this instance since it started: sum them across instances, never average rates.',
  fields: (t) => ({
    backend: t.exposeString('backend', { description: '"redis" or "memory".' }),
    hits: t.exposeFloat('hits', { description: 'Reads that found a value (a cached 0, "", false or null counts).' }),
    misses: t.exposeFloat('misses', { description: 'Reads that found nothing.' }),
    hitRate: t.exposeFloat('hitRate', { description: 'hits / (hits + misses), 0 before the first read.' }),
    errors: t.exposeFloat('errors', { description: 'Backend calls that failed or timed out (served as misses).' }),
    sets: t.exposeFloat('sets', { description: 'Writes.' }),
    deletes: t.exposeFloat('deletes', { description: 'Keys deleted.' }),
    dedupes: t.exposeFloat('dedupes', { description: 'getOrSet callers served by a load another caller had started.' }),
    items: t.exposeFloat('items', { nullable: true, description: 'Entries held in process memory (memory backend).' }),
  }),
})

const InvalidateCacheInput = builder.inputType('InvalidateCacheInput', {
  description: 'What to invalidate: keys, a glob pattern, or both.',
  fields: (t) => ({
    keys: t.stringList({ required: false, description: 'Exact keys (at most 1000).' }),
    pattern: t.string({ required: false, description: 'A Redis glob such as "user:*". Runs SCAN + UNLINK in batches; cost grows with the keyspace, not the matches.' }),
    confirm: t.boolean({ required: false, description: 'Required for a pattern that matches everything, such as "*".' }),
  }),
})

const InvalidateCacheSuccess = builder.objectRef<{ deleted: number }>('InvalidateCacheSuccessData').implement({
  description: 'How many entries went.',
  fields: (t) => ({ deleted: t.exposeInt('deleted', { description: 'Entries deleted.' }) }),
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
    description: 'Deletes cache entries by key or pattern (admin).',
    authScopes: { admin: true },
    errors: { types: [ValidationError], dataField: { name: 'result' } },
    args: { input: t.arg({ type: InvalidateCacheInput, required: true, description: 'What to delete.' }) },
    resolve: async (_root, { input }, ctx) => {
      const keys = input.keys ?? []
      if (keys.length === 0 && !input.pattern) throw ValidationError.field(['input'], 'Give keys, a pattern, or both')
      if (keys.length > 1000) throw ValidationError.field(['input', 'keys'], 'At most 1000 keys at once')
      let deleted = keys.length > 0 ? await ctx.services.cache.del(keys) : 0
      if (input.pattern != null) deleted += await ctx.services.cache.invalidatePattern(input.pattern, { confirm: input.confirm ?? false })
      return { deleted }
    },
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
      return (async function* () {
        for (;;) {
          yield ctx.services.cache.stats()
          await sleep(interval)
        }
      })()
    },
    resolve: (stats: CacheStats) => stats,
  }),
)
