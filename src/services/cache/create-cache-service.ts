import type { Config } from '../../config'
import { CacheService } from './cache-service'
import type { RedisClient } from './redis-level'

/** Maps the validated CACHE_* configuration onto the service's options. */
export function createCacheService(config: Config, redis: RedisClient | null): CacheService {
  const c = config.cache
  return new CacheService({
    redis,
    keyPrefix: config.redisKeyPrefix,
    defaultTtlSeconds: c.defaultTtlSeconds,
    timeoutMs: c.softTimeoutMs,
    hardTimeoutMs: c.hardTimeoutMs,
    memory: { maxItems: c.l1MaxItems, maxBytes: c.l1MaxBytes },
    maxEntryBytes: c.maxEntryBytes,
    l1MaxTtlSeconds: c.l1MaxTtlSeconds,
    jitter: c.jitterPercent / 100,
    graceSeconds: c.graceSeconds,
    loaderTimeoutMs: c.loaderTimeoutMs,
    lock: { waitMs: c.lockWaitMs },
    breaker: { threshold: c.breakerThreshold, cooldownMs: c.breakerCooldownMs },
    bus: c.bus,
    warm: { concurrency: c.warmConcurrency },
  })
}
