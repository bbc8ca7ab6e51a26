import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { ServiceUnavailableError } from '../../lib/errors'
import type { CacheCounters, NamespaceTally } from './cache-stats'
import { EntryTooLargeError, type EntryOrigin, type LoadSpec, type Loader, type WriteSpec } from './entry-spec'
import type { LatencyHistogram } from './latency-histogram'
import type { RedisLevel } from './redis-level'
import type { Claim, FillClaims } from './fill-claims'
import type { TagStamp } from './tiny-lfu-cache'

/** What loading needs from the levels; how they are read and written stays theirs. */
export interface LoadTarget {
  /** The current versions of `tags`, for an entry about to be loaded; rejects when they cannot be read. */
  stampTags(tags: readonly string[]): Promise<TagStamp>
  /** Writes L1 and L2; throws EntryTooLargeError for a value over the maximum entry size. */
  store(lk: string, value: unknown, spec: WriteSpec, stamp: TagStamp | undefined, ns: NamespaceTally, origin: EntryOrigin): Promise<void>
  /** An L2 entry, fresh or within grace, with L1 filled from it while `claim` holds; undefined on a miss or any failure. */
  readL2(lk: string, origin: EntryOrigin, claim: Claim): Promise<{ value: unknown } | undefined>
}

export type LoadCounters = Pick<
  CacheCounters,
  'errors' | 'dedupes' | 'loads' | 'loadErrors' | 'loaderTimeouts' | 'refreshes' | 'refreshErrors' | 'lockWaits' | 'lockTimeouts'
>

export interface LoadCoordinatorOptions {
  target: LoadTarget
  /** Shared with the reads and writes of the cache, which void them (fill-claims.ts). */
  claims: FillClaims
  /** The cluster-wide lock; null without Redis. */
  locks: Pick<RedisLevel, 'acquireLock' | 'releaseLock'> | null
  lockKey: (lk: string) => string
  lockTtlMs: number
  lockWaitMs: number
  refreshBackoffMinMs: number
  refreshBackoffMaxMs: number
  /** Shared with the rest of the cache, so its stats add up. */
  counters: LoadCounters
  /** Undefined when stats are off. */
  latency: LatencyHistogram | undefined
}

const LOCK_POLL_MS = 20
const MAX_BACKOFF_KEYS = 10_000

/**
 * Everything about running loaders once a key missed: single flight per process,
 * the optional cluster-wide lock, stale-while-revalidate refreshes with backoff,
 * and the loader timeout.
 */
export class LoadCoordinator {
  private readonly inflight = new Map<string, { promise: Promise<unknown>; claim: Claim }>()
  private readonly refreshing = new Set<string>()
  private readonly backoff = new Map<string, { until: number; delayMs: number }>()
  private readonly target: LoadTarget
  private readonly counters: LoadCounters

  constructor(private readonly options: LoadCoordinatorOptions) {
    this.target = options.target
    this.counters = options.counters
  }

  /**
   * Callers of a key that is already loading share that load instead of starting another, unless the
   * key was written or invalidated since it began: they start one of their own.
   */
  async singleFlight(lk: string, tags: readonly string[] | undefined, start: (claim: Claim) => Promise<unknown>): Promise<unknown> {
    const pending = this.inflight.get(lk)
    if (pending !== undefined && !pending.claim.voided) {
      this.counters.dedupes++
      return pending.promise
    }
    const claim = this.options.claims.take(lk, tags)
    const flight = { promise: start(claim), claim }
    this.inflight.set(lk, flight)
    try {
      return await flight.promise
    } finally {
      if (this.inflight.get(lk) === flight) this.inflight.delete(lk)
      this.options.claims.release(lk, claim)
    }
  }

  /** For a key missing from every level: under the cluster-wide lock when the spec asks for it and Redis is there. */
  load(lk: string, loader: Loader, spec: LoadSpec, ns: NamespaceTally, claim: Claim): Promise<unknown> {
    if (spec.lock && this.options.locks) return this.loadWithLock(this.options.locks, lk, loader, spec, ns, claim)
    return this.loadAndStore(lk, loader, spec, ns, claim)
  }

  /** Loads and stores the value, unless the key changed meanwhile (`claim`, else one of its own). */
  async loadAndStore(lk: string, loader: Loader, spec: LoadSpec, ns: NamespaceTally, claim?: Claim): Promise<unknown> {
    if (claim === undefined) return this.options.claims.holding(lk, spec.tags, (own) => this.loadAndStore(lk, loader, spec, ns, own))
    let stamp: TagStamp | undefined
    let cacheable = true
    if (spec.tags && spec.tags.length > 0) {
      try {
        stamp = await this.target.stampTags(spec.tags)
      } catch {
        // Without the tag versions an entry could outlive an invalidation: serve the value, cache nothing.
        this.counters.errors++
        cacheable = false
      }
    }
    const value = await this.runLoader(loader, spec.loaderTimeoutMs)
    // A value read before a write, delete or invalidation of the key is the caller's, never the cache's.
    if (value === undefined || !cacheable || claim.voided) return value
    try {
      await this.target.store(lk, value, spec, stamp, ns, { loader, spec })
    } catch (err) {
      if (!(err instanceof EntryTooLargeError)) throw err
    }
    return value
  }

  /**
   * Serving a stale entry: at most one refresh per key at a time, none while a key's refreshes keep
   * failing. `withinFlight`: the caller is the key's own single-flight read (a stale L2 entry found
   * on an L1 miss), so its in-flight entry is not a load that makes the refresh redundant.
   */
  refresh(lk: string, loader: Loader, spec: LoadSpec, ns: NamespaceTally, withinFlight = false): void {
    if (this.refreshing.has(lk) || (!withinFlight && this.inflight.has(lk))) return
    const backoff = this.backoff.get(lk)
    if (backoff !== undefined && Date.now() < backoff.until) return
    this.refreshing.add(lk)
    this.counters.refreshes++
    this.loadAndStore(lk, loader, spec, ns).then(
      () => this.backoff.delete(lk),
      () => {
        this.counters.refreshErrors++
        const { refreshBackoffMinMs: min, refreshBackoffMaxMs: max } = this.options
        const delayMs = Math.min(max, backoff === undefined ? min : backoff.delayMs * 2)
        if (this.backoff.size >= MAX_BACKOFF_KEYS) this.backoff.clear()
        this.backoff.set(lk, { until: Date.now() + delayMs, delayMs })
      },
    ).finally(() => this.refreshing.delete(lk))
  }

  /** Once per cluster: the lock holder loads; others wait a bounded time for its value, then load anyway. */
  private async loadWithLock(
    locks: NonNullable<LoadCoordinatorOptions['locks']>,
    lk: string,
    loader: Loader,
    spec: LoadSpec,
    ns: NamespaceTally,
    claim: Claim,
  ): Promise<unknown> {
    const lockKey = this.options.lockKey(lk)
    const token = randomUUID()
    let held = false
    try {
      held = await locks.acquireLock(lockKey, token, this.options.lockTtlMs)
    } catch {
      // Redis is unavailable, so the lock is too: per-process single flight still holds.
      return this.loadAndStore(lk, loader, spec, ns, claim)
    }
    if (held) {
      try {
        return await this.loadAndStore(lk, loader, spec, ns, claim)
      } finally {
        await locks.releaseLock(lockKey, token).catch(() => {})
      }
    }
    this.counters.lockWaits++
    const deadline = Date.now() + this.options.lockWaitMs
    while (Date.now() < deadline) {
      await sleep(Math.min(LOCK_POLL_MS, Math.max(1, deadline - Date.now())))
      const entry = await this.target.readL2(lk, { loader, spec }, claim)
      if (entry !== undefined) return entry.value
    }
    this.counters.lockTimeouts++
    return this.loadAndStore(lk, loader, spec, ns, claim)
  }

  private async runLoader(loader: Loader, timeoutMs: number): Promise<unknown> {
    const started = performance.now()
    this.counters.loads++
    let timer: NodeJS.Timeout | undefined
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          this.counters.loaderTimeouts++
          reject(new ServiceUnavailableError(`The cache loader did not finish within ${timeoutMs} ms`))
        }, timeoutMs)
      })
      return await Promise.race([loader(), timeout])
    } catch (err) {
      this.counters.loadErrors++
      throw err
    } finally {
      clearTimeout(timer)
      this.options.latency?.record(performance.now() - started)
    }
  }
}
