import { Cluster, Redis } from 'ioredis'

export interface RedisConnectionOptions {
  url: string
  connectTimeoutMs?: number
  commandTimeoutMs?: number
  /** With the offline queue off, a lazy client rejects commands until `await redis.connect()`. */
  lazyConnect?: boolean
  /**
   * Receives connection errors. ioredis emits one per failed reconnect attempt,
   * so a caller that logs should rate-limit.
   */
  onError?: (err: Error) => void
  /**
   * Redis Cluster: the URL's host:port is the seed node (credentials and rediss: TLS apply to every
   * node); the other masters are discovered from it. A Cluster has only database 0.
   */
  cluster?: boolean
}

const DEFAULT_CONNECT_TIMEOUT_MS = 2_000
const DEFAULT_COMMAND_TIMEOUT_MS = 1_000
const MAX_RECONNECT_DELAY_MS = 2_000
const CLOSE_TIMEOUT_MS = 1_000

/**
 * A client that fails fast while Redis is unreachable: every caller here has a
 * fallback (cache miss, in-process limiter), so waiting for Redis is worse than
 * an error. Commands are also rejected until the first connection is ready; a
 * caller that needs Redis at boot waits for the 'ready' event.
 */
export function createRedis(opts: RedisConnectionOptions & { cluster: true }): Cluster
export function createRedis(opts: RedisConnectionOptions & { cluster?: false }): Redis
export function createRedis(opts: RedisConnectionOptions): Redis | Cluster
export function createRedis(opts: RedisConnectionOptions): Redis | Cluster {
  if (opts.cluster) return createCluster(opts)
  const redis = new Redis(opts.url, {
    lazyConnect: opts.lazyConnect ?? false,
    connectTimeout: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    // Bounds a command on a connection that is up but unresponsive.
    commandTimeout: opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
    // Commands issued while disconnected are rejected at once instead of queued until reconnect.
    enableOfflineQueue: false,
    // Commands in flight on a dropped connection fail after two reconnect attempts instead of waiting for Redis.
    maxRetriesPerRequest: 1,
    // Always a number, so ioredis never gives up: Redis coming back later must be picked up without a restart.
    retryStrategy: reconnectDelay,
  })
  // Without a listener, an 'error' event (ECONNREFUSED at boot, a reset later) crashes the process.
  const onError = opts.onError ?? (() => {})
  redis.on('error', onError)
  return redis
}

function reconnectDelay(attempt: number): number {
  const backoff = Math.min(50 * 2 ** Math.min(attempt, 10), MAX_RECONNECT_DELAY_MS)
  // Jitter spreads the reconnect storm when many instances lose Redis at once.
  return Math.round(backoff / 2 + Math.random() * (backoff / 2))
}

/** The same fail-fast behaviour as a single client, per node and for the cluster as a whole. */
function createCluster(opts: RedisConnectionOptions): Cluster {
  const url = new URL(opts.url)
  const db = url.pathname.replace(/^\//, '')
  if (db !== '' && db !== '0') throw new Error('REDIS_URL must not select a database with REDIS_CLUSTER=true: a cluster has only database 0')
  const cluster = new Cluster([{ host: url.hostname, port: url.port ? Number(url.port) : 6379 }], {
    lazyConnect: opts.lazyConnect ?? false,
    enableOfflineQueue: false,
    // Never gives up on the cluster either: it coming back later must be picked up without a restart.
    clusterRetryStrategy: reconnectDelay,
    redisOptions: {
      connectTimeout: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      commandTimeout: opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
      maxRetriesPerRequest: 1,
      username: url.username ? decodeURIComponent(url.username) : undefined,
      password: url.password ? decodeURIComponent(url.password) : undefined,
      tls: url.protocol === 'rediss:' ? {} : undefined,
    },
  })
  cluster.on('error', opts.onError ?? (() => {}))
  return cluster
}

/**
 * Whether the connection is ready within `timeoutMs`. Gives up at its first failed attempt (refused,
 * timed out): the caller then goes on degraded, and ioredis keeps reconnecting in the background.
 */
export function whenReady(redis: Redis | Cluster, timeoutMs: number): Promise<boolean> {
  if (redis.status === 'ready') return Promise.resolve(true)
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer)
      redis.off('ready', onReady)
      redis.off('error', onError)
      resolve(ok)
    }
    const onReady = () => done(true)
    const onError = () => done(false)
    const timer = setTimeout(() => done(false), timeoutMs)
    redis.once('ready', onReady)
    redis.once('error', onError)
  })
}

/** Waits for pending replies when connected, but never longer than `timeoutMs`. */
export async function closeRedis(redis: Redis | Cluster, timeoutMs = CLOSE_TIMEOUT_MS): Promise<void> {
  if (redis.status === 'end') return
  // QUIT is rejected at once without a live connection, since the offline queue is off.
  if (redis.status !== 'ready') {
    redis.disconnect()
    return
  }
  let timer: NodeJS.Timeout | undefined
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs)
  })
  try {
    const outcome = await Promise.race([redis.quit().catch(() => 'failed' as const), timedOut])
    if (outcome !== 'OK') redis.disconnect()
  } finally {
    clearTimeout(timer)
  }
}
