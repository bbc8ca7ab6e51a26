import type { Cluster, Redis } from 'ioredis'
import { CircuitBreaker } from './circuit-breaker'

/** A single Redis, or an ioredis Cluster (keys spread over the masters by hash slot). */
export type RedisClient = Redis | Cluster

export interface RedisLevelOptions {
  redis: RedisClient
  /** A caller never waits longer than this for Redis: past it the read is a miss, the write is skipped. */
  softTimeoutMs: number
  /** A call still unanswered after this counts as a failure for the circuit breaker. */
  hardTimeoutMs: number
  breakerThreshold: number
  breakerCooldownMs: number
}

export interface RedisMemory {
  usedBytes: number | null
  peakBytes: number | null
  maxBytes: number | null
  /** Keys under the prefix: exact when SCAN finished within the sample budget, else extrapolated. */
  keys: number
  /** Average MEMORY USAGE of the sampled keys times `keys`. */
  estimatedBytes: number
  sampledKeys: number
}

export class CacheUnavailableError extends Error {}

const SCAN_COUNT = 1000
const UNLINK_CHUNK = 500
// A SCAN or UNLINK batch is an admin path, not a request path: a tight request timeout would abort it half-way.
const MIN_BULK_STEP_TIMEOUT_MS = 1000
const RELEASE_LOCK = 'if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end'

/** L2: every Redis call of the cache, each bounded by the soft timeout and gated by the breaker. */
export class RedisLevel {
  readonly breaker: CircuitBreaker
  softTimeouts = 0
  private readonly redis: RedisClient
  /** A Cluster refuses multi-key commands and pipelines across slots: those go key by key (one round trip per node, concurrently). */
  private readonly cluster: Cluster | null
  private readonly softMs: number
  private readonly hardMs: number
  private readonly onReady = (): void => this.breaker.reset()

  constructor(options: RedisLevelOptions) {
    this.redis = options.redis
    this.cluster = options.redis.isCluster ? (options.redis as Cluster) : null
    this.softMs = options.softTimeoutMs
    this.hardMs = Math.max(options.hardTimeoutMs, options.softTimeoutMs)
    this.breaker = new CircuitBreaker({ threshold: options.breakerThreshold, cooldownMs: options.breakerCooldownMs })
    // A fresh connection is the best evidence that Redis is back: close the breaker without waiting out the cooldown.
    this.redis.on('ready', this.onReady)
  }

  get client(): RedisClient {
    return this.redis
  }

  get(key: string): Promise<string | null> {
    return this.run(() => this.redis.get(key))
  }

  mget(keys: string[]): Promise<(string | null)[]> {
    const cluster = this.cluster
    if (cluster) return this.run(() => Promise.all(keys.map((key) => cluster.get(key))))
    return this.run(() => this.redis.mget(keys))
  }

  async set(key: string, raw: string, ttlMs: number): Promise<void> {
    await this.run(() => this.redis.set(key, raw, 'PX', ttlMs))
  }

  /** One pipeline, one round trip. */
  async setMany(entries: readonly { key: string; raw: string; ttlMs: number }[], timeoutMs = this.softMs): Promise<void> {
    if (entries.length === 0) return
    const cluster = this.cluster
    await this.run(async () => {
      if (cluster) {
        await Promise.all(entries.map((e) => cluster.set(e.key, e.raw, 'PX', e.ttlMs)))
        return
      }
      const pipeline = this.redis.pipeline()
      for (const e of entries) pipeline.set(e.key, e.raw, 'PX', e.ttlMs)
      throwFirstError(await pipeline.exec())
    }, timeoutMs)
  }

  async exists(key: string): Promise<boolean> {
    return (await this.run(() => this.redis.exists(key))) > 0
  }

  unlink(keys: string[]): Promise<number> {
    const cluster = this.cluster
    if (cluster) return this.run(async () => (await Promise.all(keys.map((key) => cluster.unlink(key)))).reduce((sum, n) => sum + n, 0))
    return this.run(() => this.redis.unlink(...keys))
  }

  /** The nodes that own keys: every master of a Cluster, or the one server. */
  private masters(): Redis[] {
    return this.cluster ? this.cluster.nodes('master') : [this.redis as Redis]
  }

  /**
   * SCAN MATCH with COUNT, then UNLINK in pipelined chunks: Redis is never blocked for more than one
   * small step. On a Cluster every master is walked (concurrently, one cursor each); the keys one
   * node's SCAN returns live on that node, so its UNLINK pipeline goes to that node directly.
   */
  async deleteMatching(glob: string): Promise<number> {
    const counts = await Promise.all(this.masters().map((node) => this.deleteMatchingOn(node, glob)))
    return counts.reduce((sum, n) => sum + n, 0)
  }

  private async deleteMatchingOn(node: Redis, glob: string): Promise<number> {
    const stepMs = Math.max(this.softMs, MIN_BULK_STEP_TIMEOUT_MS)
    let cursor = '0'
    let deleted = 0
    do {
      const [next, keys] = await this.run(() => node.scan(cursor, 'MATCH', glob, 'COUNT', SCAN_COUNT), stepMs)
      cursor = next
      if (keys.length === 0) continue
      deleted += await this.run(async () => {
        const pipeline = node.pipeline()
        // One key per UNLINK on a Cluster node: keys of one node may still hash to different slots.
        const chunk = this.cluster ? 1 : UNLINK_CHUNK
        for (let i = 0; i < keys.length; i += chunk) pipeline.unlink(...keys.slice(i, i + chunk))
        return throwFirstError(await pipeline.exec()).reduce<number>((sum, n) => sum + Number(n), 0)
      }, stepMs)
    } while (cursor !== '0')
    return deleted
  }

  async readCounters(keys: string[]): Promise<number[]> {
    const values = await this.mget(keys)
    return values.map((v) => (v === null ? 0 : Number(v)))
  }

  async incrementCounters(keys: string[]): Promise<number[]> {
    const cluster = this.cluster
    if (cluster) return this.run(() => Promise.all(keys.map((key) => cluster.incr(key))))
    return this.run(async () => {
      const pipeline = this.redis.pipeline()
      for (const key of keys) pipeline.incr(key)
      return throwFirstError(await pipeline.exec()).map(Number)
    })
  }

  async acquireLock(key: string, token: string, ttlMs: number): Promise<boolean> {
    return (await this.run(() => this.redis.set(key, token, 'PX', ttlMs, 'NX'))) === 'OK'
  }

  /** Compare-and-delete, so a holder whose lock expired never frees the next holder's lock. */
  async releaseLock(key: string, token: string): Promise<void> {
    await this.run(() => this.redis.eval(RELEASE_LOCK, 1, key, token))
  }

  async publish(channel: string, message: string): Promise<void> {
    await this.run(() => this.redis.publish(channel, message))
  }

  /** INFO memory, plus MEMORY USAGE over a SCAN sample of the prefix's keys; summed over every master of a Cluster. */
  async memory(glob: string, sampleSize: number): Promise<RedisMemory> {
    const nodes = this.masters()
    const perNode = Math.max(1, Math.ceil(sampleSize / nodes.length))
    const parts = await Promise.all(nodes.map((node) => this.memoryOn(node, glob, perNode)))
    const sum = (pick: (p: NodeMemory) => number | undefined): number | null =>
      parts.every((p) => pick(p) === undefined) ? null : parts.reduce((total, p) => total + (pick(p) ?? 0), 0)
    const keys = parts.reduce((total, p) => total + p.keys, 0)
    const sampled = parts.reduce((total, p) => total + p.sampled, 0)
    const sampledBytes = parts.reduce((total, p) => total + p.sampledBytes, 0)
    const average = sampled === 0 ? 0 : sampledBytes / sampled
    return {
      usedBytes: sum((p) => p.info.used_memory),
      peakBytes: sum((p) => p.info.used_memory_peak),
      maxBytes: sum((p) => p.info.maxmemory),
      keys,
      estimatedBytes: Math.round(average * keys),
      sampledKeys: sampled,
    }
  }

  private async memoryOn(node: Redis, glob: string, sampleSize: number): Promise<NodeMemory> {
    const stepMs = Math.max(this.softMs, MIN_BULK_STEP_TIMEOUT_MS)
    const info = parseInfo(await this.run(() => node.info('memory'), stepMs))
    const dbSize = await this.run(() => node.dbsize(), stepMs)
    const sample: string[] = []
    let cursor = '0'
    let scanned = 0
    let matched = 0
    do {
      const [next, keys] = await this.run(() => node.scan(cursor, 'MATCH', glob, 'COUNT', SCAN_COUNT), stepMs)
      cursor = next
      scanned += SCAN_COUNT
      matched += keys.length
      for (const key of keys) if (sample.length < sampleSize) sample.push(key)
    } while (cursor !== '0' && sample.length < sampleSize)
    const keys = cursor === '0' ? matched : Math.round(matched * Math.max(1, dbSize / scanned))
    let sampledBytes = 0
    if (sample.length > 0) {
      // MEMORY USAGE takes one key: a pipeline to the node that SCAN found them on.
      const pipeline = node.pipeline()
      for (const key of sample) pipeline.memory('USAGE', key)
      const sizes = throwFirstError(await this.run(() => pipeline.exec(), stepMs))
      for (const size of sizes) sampledBytes += Number(size ?? 0)
    }
    return { info, keys, sampled: sample.length, sampledBytes }
  }

  close(): void {
    this.redis.off('ready', this.onReady)
  }

  private run<T>(op: () => Promise<T>, softMs = this.softMs): Promise<T> {
    if (!this.breaker.allow()) return Promise.reject(new CacheUnavailableError('Redis circuit breaker is open'))
    const hardMs = Math.max(this.hardMs, softMs)
    return new Promise<T>((resolve, reject) => {
      let answered = false
      let judged = false
      const judge = (ok: boolean): void => {
        if (judged) return
        judged = true
        if (ok) this.breaker.success()
        else this.breaker.failure()
      }
      const soft = setTimeout(() => {
        answered = true
        this.softTimeouts++
        reject(new CacheUnavailableError(`Redis did not answer within ${softMs} ms`))
      }, softMs)
      const hard = setTimeout(() => judge(false), hardMs)
      op().then(
        (value) => {
          clearTimeout(soft)
          clearTimeout(hard)
          judge(true)
          if (!answered) resolve(value)
        },
        (err: unknown) => {
          clearTimeout(soft)
          clearTimeout(hard)
          judge(false)
          if (!answered) reject(err)
        },
      )
    })
  }
}

interface NodeMemory {
  info: Record<string, number>
  keys: number
  sampled: number
  sampledBytes: number
}

function throwFirstError(results: [Error | null, unknown][] | null): unknown[] {
  if (!results) throw new Error('Redis pipeline was discarded')
  return results.map(([err, value]) => {
    if (err) throw err
    return value
  })
}

function parseInfo(text: string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':')
    if (colon === -1) continue
    const n = Number(line.slice(colon + 1))
    if (Number.isFinite(n)) out[line.slice(0, colon)] = n
  }
  return out
}
