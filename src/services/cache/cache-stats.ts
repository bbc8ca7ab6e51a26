import type { BreakerState } from './circuit-breaker'
import type { LatencyHistogram } from './latency-histogram'

/** Raw counters: sum them across instances and derive rates from the sums, never average rates. */
export interface ReadCounters {
  /** Reads that found a value, stale ones included. */
  hits: number
  /** The subset of hits served past the fresh TTL, within grace. */
  staleHits: number
  misses: number
}

export interface NamespaceCounters extends ReadCounters {
  sets: number
}

/**
 * The raw read counters of one namespace, split by level. A hit is counted here and nowhere else:
 * level and cache-wide hits are sums over the namespaces, added up when stats are read, so an L1 hit
 * costs one increment.
 */
export interface NamespaceTally {
  l1Hits: number
  l1StaleHits: number
  l2Hits: number
  l2StaleHits: number
  misses: number
  sets: number
}

export function newTally(): NamespaceTally {
  return { l1Hits: 0, l1StaleHits: 0, l2Hits: 0, l2StaleHits: 0, misses: 0, sets: 0 }
}

/** Misses per level: a read that L1 cannot answer is an L1 miss, whatever L2 then says. */
export interface LevelMisses {
  l1: number
  l2: number
}

/** Level and cache-wide read figures, from the namespace tallies. */
export function readFigures(
  tallies: ReadonlyMap<string, NamespaceTally>,
  levelMisses: LevelMisses,
  misses: number,
): { hits: number; staleHits: number; hitRate: number; levels: LevelStats[]; namespaces: NamespaceStats[] } {
  const l1: ReadCounters = { hits: 0, staleHits: 0, misses: levelMisses.l1 }
  const l2: ReadCounters = { hits: 0, staleHits: 0, misses: levelMisses.l2 }
  const namespaces: NamespaceStats[] = []
  for (const [namespace, t] of tallies) {
    l1.hits += t.l1Hits
    l1.staleHits += t.l1StaleHits
    l2.hits += t.l2Hits
    l2.staleHits += t.l2StaleHits
    const ns = { hits: t.l1Hits + t.l2Hits, staleHits: t.l1StaleHits + t.l2StaleHits, misses: t.misses, sets: t.sets }
    namespaces.push({ namespace, ...ns, hitRate: rate(ns) })
  }
  const total = { hits: l1.hits + l2.hits, staleHits: l1.staleHits + l2.staleHits, misses }
  return {
    ...total,
    hitRate: rate(total),
    levels: [
      { level: 'l1', ...l1, hitRate: rate(l1) },
      { level: 'l2', ...l2, hitRate: rate(l2) },
    ],
    namespaces,
  }
}

export interface CacheCounters {
  misses: number
  errors: number
  sets: number
  deletes: number
  /** getOrSet callers served by a loader another caller had already started. */
  dedupes: number
  loads: number
  loadErrors: number
  loaderTimeouts: number
  refreshes: number
  refreshErrors: number
  /** Values not cached because they exceed the maximum entry size. */
  oversized: number
  lockWaits: number
  lockTimeouts: number
}

export function newCounters(): CacheCounters {
  return {
    misses: 0, errors: 0, sets: 0, deletes: 0, dedupes: 0, loads: 0, loadErrors: 0,
    loaderTimeouts: 0, refreshes: 0, refreshErrors: 0, oversized: 0, lockWaits: 0, lockTimeouts: 0,
  }
}

export interface LevelStats extends ReadCounters {
  level: 'l1' | 'l2'
  hitRate: number
}

export interface NamespaceStats extends NamespaceCounters {
  namespace: string
  hitRate: number
}

export interface LatencyStats {
  count: number
  p50Ms: number
  p95Ms: number
  p99Ms: number
}

export interface WarmProgress {
  running: boolean
  warmers: string[]
  current: string | null
  entries: number
  failed: number
  popularKeys: number
  startedAt: Date | null
  finishedAt: Date | null
  error: string | null
}

export interface CacheStats extends CacheCounters, ReadCounters {
  backend: 'redis' | 'memory'
  hitRate: number
  /** Entries held in this process (L1). */
  items: number
  l1Bytes: number
  l1MaxItems: number
  l1MaxBytes: number
  evictions: number
  expirations: number
  l2Timeouts: number
  breaker: BreakerState | null
  breakerOpened: number
  busConnected: boolean | null
  busReceived: number
  busPublished: number
  busResubscribes: number
  levels: LevelStats[]
  namespaces: NamespaceStats[]
  loaderLatency: LatencyStats
  warming: WarmProgress
}

export function rate(c: ReadCounters): number {
  const total = c.hits + c.misses
  return total === 0 ? 0 : c.hits / total
}

export function latencyStats(h: LatencyHistogram): LatencyStats {
  return { count: h.count, p50Ms: h.percentile(0.5), p95Ms: h.percentile(0.95), p99Ms: h.percentile(0.99) }
}
