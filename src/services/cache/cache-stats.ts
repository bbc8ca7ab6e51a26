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

export interface CacheCounters extends ReadCounters {
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
    hits: 0, staleHits: 0, misses: 0, errors: 0, sets: 0, deletes: 0, dedupes: 0, loads: 0, loadErrors: 0,
    loaderTimeouts: 0, refreshes: 0, refreshErrors: 0, oversized: 0, lockWaits: 0, lockTimeouts: 0,
  }
}

export function newReadCounters(): ReadCounters {
  return { hits: 0, staleHits: 0, misses: 0 }
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

export interface CacheStats extends CacheCounters {
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
