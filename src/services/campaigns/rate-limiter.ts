/**
 * The global limit on provider requests: a token bucket in Redis, shared by every instance, or in
 * process without Redis. A 429's retry-after blocks every instance at once through `backOff`, so the
 * fleet slows down together instead of each worker finding the limit on its own.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Cluster, Redis } from 'ioredis'

export interface RateLimiter {
  /** Resolves when a request may be made; rejects when the signal aborts. */
  acquire(signal?: AbortSignal): Promise<void>
  /** No request from anyone for `ms` (the provider said so), at most MAX_BACK_OFF_MS. */
  backOff(ms: number): Promise<void>
}

/**
 * The longest pause one 429 imposes on every sender. The batch that met it waits its whole
 * retry-after; the others try again after this and, if the provider still refuses, pause again.
 */
export const MAX_BACK_OFF_MS = 60_000

export interface RateLimiterOptions {
  /** Requests per second; 0 means unlimited (back-offs still apply). */
  ratePerSecond: number
  /** Requests that may go out back to back after a quiet spell. */
  burst?: number
  redis?: Redis | Cluster | null
  keyPrefix?: string
  logger?: { warn(obj: Record<string, unknown>, msg?: string): void }
  /** An acquire that had to wait, with how long it waited (aborted waits included). */
  onWait?: (seconds: number) => void
}

/**
 * KEYS[1] the bucket (tokens, ts), KEYS[2] the back-off marker. ARGV[1] rate per second, ARGV[2] burst.
 * Returns 0 when a token was taken, else the milliseconds to wait before asking again.
 * The clock is Redis's own, so instances with skewed clocks still share one bucket fairly.
 */
const TAKE_TOKEN = `
local blocked = redis.call('PTTL', KEYS[2])
if blocked > 0 then return blocked end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1]) or burst
local ts = tonumber(data[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
`

const FALLBACK_LOG_EVERY_MS = 60_000

export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const rate = options.ratePerSecond
  const burst = Math.max(1, options.burst ?? 1)
  const local = createLocalBucket(rate, burst)
  const redis = options.redis ?? null
  // Hash-tagged so both keys live in one Redis Cluster slot, as a script's keys must.
  const bucketKey = `${options.keyPrefix ?? ''}campaign-rate:{global}:bucket`
  const blockKey = `${options.keyPrefix ?? ''}campaign-rate:{global}:block`
  let lastFallbackLog = 0

  const fallback = (err: unknown) => {
    const now = Date.now()
    if (now - lastFallbackLog > FALLBACK_LOG_EVERY_MS) {
      lastFallbackLog = now
      options.logger?.warn({ err }, 'campaign rate limiter: Redis unavailable, limiting in process only')
    }
  }

  const tryTake = async (): Promise<number> => {
    if (redis && rate > 0) {
      try {
        return Number(await redis.eval(TAKE_TOKEN, 2, bucketKey, blockKey, String(rate), String(burst)))
      } catch (err) {
        fallback(err)
      }
    } else if (redis) {
      try {
        const blocked = await redis.pttl(blockKey)
        const localWait = local.tryTake()
        return Math.max(blocked > 0 ? blocked : 0, localWait)
      } catch (err) {
        fallback(err)
      }
    }
    return local.tryTake()
  }

  return {
    async acquire(signal) {
      let waitedSince: number | undefined
      try {
        for (;;) {
          signal?.throwIfAborted()
          const wait = await tryTake()
          if (wait <= 0) return
          waitedSince ??= performance.now()
          // Bounded: a block set elsewhere might say more, and a timer past 2^31 ms fires at once.
          await sleep(Math.min(wait, MAX_BACK_OFF_MS), undefined, { signal })
        }
      } finally {
        if (waitedSince !== undefined) options.onWait?.((performance.now() - waitedSince) / 1000)
      }
    },
    async backOff(requested) {
      if (!(requested > 0)) return
      const ms = Math.min(requested, MAX_BACK_OFF_MS)
      local.block(ms)
      if (!redis) return
      try {
        await redis.set(blockKey, '1', 'PX', Math.ceil(ms))
      } catch (err) {
        fallback(err)
      }
    },
  }
}

function createLocalBucket(rate: number, burst: number) {
  let tokens = burst
  let last = Date.now()
  let blockedUntil = 0
  return {
    tryTake(): number {
      const now = Date.now()
      if (blockedUntil > now) return blockedUntil - now
      if (rate <= 0) return 0
      tokens = Math.min(burst, tokens + ((now - last) * rate) / 1000)
      last = now
      if (tokens >= 1) {
        tokens -= 1
        return 0
      }
      return Math.ceil(((1 - tokens) * 1000) / rate)
    },
    block(ms: number) {
      blockedUntil = Math.max(blockedUntil, Date.now() + ms)
    },
  }
}
