/**
 * The per-IP limit of the public tracking endpoints (pixel, click redirect, conversions): at most
 * `max` requests per key in a fixed window of `windowMs`, across every instance when Redis is there.
 *
 * Asking Redis on every pixel would cost a round trip per hit (most of a pixel's cost), so quota is
 * leased: an instance reserves units from the key's Redis counter in chunks (1 unit first, then
 * doubling up to `chunk` while the key keeps coming back) and spends them locally with no I/O. A
 * lease is asked for ahead of need, when half of the last one is spent, so a steady client never
 * waits; only the first request of a key in a window waits for Redis.
 *
 * Bounds, with N instances sharing Redis:
 * - Never more than `max` admitted per key per Redis window: every admitted request spent a unit the
 *   Redis counter granted, and units left over when a window ends are dropped, not carried over.
 * - Stricter by at most what instances hold unspent: each holds at most 1.5 × `chunk` units of a key,
 *   so a key is refused somewhere once the fleet has admitted at least `max` − N × 1.5 × `chunk`.
 *   The chunk is also capped at a tenth of `max`, so a small limit stays nearly exact.
 * - As with any fixed window, a client can spend `max` at the end of one window and `max` again at
 *   the start of the next.
 * Without Redis, or while it fails, each instance counts on its own (a fixed window per instance,
 * exact locally), so N instances admit at most N × `max`: degraded to per-instance, never open and
 * never closed. A request waits for Redis at most its command timeout, and after a failure none waits
 * for `redisRetryMs`.
 */
import type { Cluster, Redis } from 'ioredis'
import { BoundedMap } from '../../lib/bounded-map'

/**
 * KEYS[1] the key's counter in its current window. ARGV[1] units wanted, ARGV[2] max, ARGV[3] window ms.
 * Grants what is left of the max, up to the units wanted, and counts only what it granted, so the
 * counter is exactly what instances hold or spent. Returns {granted, ms left in the window, 1 when
 * this call opened the window}.
 */
const LEASE = `
local used = redis.call('GET', KEYS[1])
local want = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
if not used then
  local granted = math.min(want, max)
  redis.call('SET', KEYS[1], granted, 'PX', window)
  return {granted, window, 1}
end
local granted = math.max(0, math.min(want, max - tonumber(used)))
if granted > 0 then redis.call('INCRBY', KEYS[1], granted) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], window)
  ttl = window
end
return {granted, ttl, 0}
`

/** Keys tracked at once by default; past it the oldest is forgotten (with Redis that only costs a lease). */
const MAX_KEYS = 100_000
const FALLBACK_LOG_EVERY_MS = 60_000

export interface HitRateLimiterOptions {
  max: number
  windowMs: number
  /** Most units one instance leases from Redis at once. */
  chunk: number
  redis?: Redis | Cluster | null
  keyPrefix?: string
  /** After a Redis failure, new windows are counted locally for this long before Redis is tried again. */
  redisRetryMs?: number
  logger?: { warn(obj: Record<string, unknown>, msg?: string): void }
  /** Keys tracked at once (default 100,000); past it the oldest is forgotten, in O(1), however many addresses a flood uses. */
  maxKeys?: number
}

export interface HitRateLimiterStats {
  /** Keys tracked now. */
  keys: number
  leases: number
  /** Requests refused. */
  limited: number
  /** Leases that failed, so the key was counted locally for the rest of its window. */
  fallbacks: number
}

export interface HitRateLimiter {
  /**
   * Counts one request of `key`: 0 when it may go on, else the milliseconds until its window
   * ends. Synchronous unless the key has no quota at hand and Redis must be asked; never rejects.
   */
  take(key: string): number | Promise<number>
  stats(): HitRateLimiterStats
  close(): void
}

/** One key's state on this instance, in its current window. */
class Entry {
  /** Units at hand (leased from Redis, or the local max). */
  tokens = 0
  /** Requests admitted here in this window (what a local fallback counts against). */
  admitted = 0
  windowEnds = 0
  /** Units the next lease asks for. */
  nextLease = 1
  /** A lease is asked for again once no more than this many units are left. */
  lowWater = 0
  /** Redis granted less than asked: the key is done for this window. */
  exhausted = false
  /** Counted on this instance alone for this window (no Redis, or Redis failed). */
  local = false
  pending: Promise<void> | null = null
}

export function createHitRateLimiter(options: HitRateLimiterOptions): HitRateLimiter {
  const { max, windowMs } = options
  const redis = options.redis ?? null
  const chunk = Math.max(1, Math.min(options.chunk, Math.floor(max / 10)))
  const prefix = `${options.keyPrefix ?? ''}tracking-limit:`
  const redisRetryMs = options.redisRetryMs ?? 2_000
  // Expired keys are swept on a timer; a flood of new addresses evicts the oldest, never a scan per request.
  const entries = new BoundedMap<string, Entry>(options.maxKeys ?? MAX_KEYS)
  const counters = { leases: 0, limited: 0, fallbacks: 0 }
  let redisRetryAt = 0
  let lastFallbackLog = 0

  const countLocally = (e: Entry, now: number) => {
    e.local = true
    if (now >= e.windowEnds) {
      e.windowEnds = now + windowMs
      e.admitted = 0
    }
    e.tokens = Math.max(0, max - e.admitted)
  }

  const startWindow = (e: Entry, now: number) => {
    e.tokens = 0
    e.admitted = 0
    e.exhausted = false
    e.local = false
    if (!redis || now < redisRetryAt) countLocally(e, now)
  }

  const lease = (key: string, e: Entry): Promise<void> => {
    const want = e.nextLease
    counters.leases++
    const asked = redis!.eval(LEASE, 1, prefix + key, String(want), String(max), String(windowMs)) as Promise<[number, number, number]>
    e.pending = asked.then(
      ([granted, ttl, fresh]) => {
        e.pending = null
        const now = Date.now()
        // Units left from a window Redis already closed were counted there: spending them now would overshoot the new one.
        if (fresh === 1 || now >= e.windowEnds) {
          e.tokens = 0
          e.admitted = 0
          e.exhausted = false
        }
        e.local = false
        e.windowEnds = now + ttl
        e.tokens += granted
        e.lowWater = granted >> 1
        if (granted < want) e.exhausted = true
        e.nextLease = Math.min(chunk, want * 2)
      },
      (err: unknown) => {
        e.pending = null
        counters.fallbacks++
        const now = Date.now()
        redisRetryAt = now + redisRetryMs
        if (now - lastFallbackLog > FALLBACK_LOG_EVERY_MS) {
          lastFallbackLog = now
          options.logger?.warn({ err }, 'tracking rate limit: Redis unavailable, counting per instance')
        }
        countLocally(e, now)
      },
    )
    return e.pending
  }

  const entryOf = (key: string, now: number): Entry => {
    let e = entries.get(key)
    if (e === undefined) {
      e = new Entry()
      entries.set(key, e)
      startWindow(e, now)
    } else if (now >= e.windowEnds && e.pending === null) {
      startWindow(e, now)
    }
    return e
  }

  const sweep = (now: number) => {
    for (const [key, e] of entries) if (now >= e.windowEnds && e.pending === null) entries.delete(key)
  }
  const sweeper = setInterval(() => sweep(Date.now()), Math.max(1_000, windowMs))
  sweeper.unref()

  const take = (key: string): number | Promise<number> => {
    const now = Date.now()
    const e = entryOf(key, now)
    // Past its window only while a lease is in flight: its answer opens the next one.
    if (now < e.windowEnds) {
      if (e.tokens > 0) {
        e.tokens--
        e.admitted++
        if (e.tokens <= e.lowWater && !e.local && !e.exhausted && e.pending === null) void lease(key, e)
        return 0
      }
      if (e.local || e.exhausted) {
        counters.limited++
        return e.windowEnds - now
      }
    }
    return (e.pending ?? lease(key, e)).then(() => take(key))
  }

  return {
    take,
    stats: () => ({ keys: entries.size, ...counters }),
    close: () => clearInterval(sweeper),
  }
}
