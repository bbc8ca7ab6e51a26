import { createRequire } from 'node:module'
import { Redis } from 'ioredis'
import mqemitter, { type MQEmitter } from 'mqemitter'
import { whenReady } from './redis'

/**
 * The pub/sub behind GraphQL subscriptions. Mercurius consumes `emitter` directly; services
 * publish through `publish`, so they never see mercurius. With Redis, events fan out to every
 * instance (mqemitter-redis), so a subscriber on instance A sees progress produced on B.
 */
export interface EventBus {
  emitter: MQEmitter
  /** Resolves once the bus can carry events (at once in process; bounded wait on Redis). */
  ready(timeoutMs: number): Promise<boolean>
  publish<T>(topic: string, payload: T): Promise<void>
  close(): Promise<void>
}

const require = createRequire(import.meta.url)
const PUBLISH_TIMEOUT_MS = 1_000
const CLOSE_GRACE_MS = 1_000

export function createEventBus(options: { redisUrl?: string; prefix: string }): EventBus {
  const redisEmitter = options.redisUrl ? createRedisEmitter(options.redisUrl, `${options.prefix}events:`) : undefined
  const emitter: MQEmitter = redisEmitter ?? mqemitter({ concurrency: 1000 })
  let closed = false
  return {
    emitter,
    // A SUBSCRIBE sent while ioredis is still running its ready check puts the connection in
    // subscriber mode, the check fails and the subscription is lost: wait for both connections.
    ready: async (timeoutMs) => {
      if (!redisEmitter) return true
      const results = await Promise.all([whenReady(redisEmitter.subConn, timeoutMs), whenReady(redisEmitter.pubConn, timeoutMs)])
      return results.every(Boolean)
    },
    publish(topic, payload) {
      if (closed) return Promise.resolve()
      return new Promise((resolve) => {
        // A publish that fails or stalls (Redis down) must neither fail nor hold up the operation that produced the event.
        const timer = setTimeout(resolve, PUBLISH_TIMEOUT_MS)
        emitter.emit({ topic, payload }, () => {
          clearTimeout(timer)
          resolve()
        })
      })
    },
    close() {
      if (closed) return Promise.resolve()
      closed = true
      // Mercurius never closes a custom emitter; without this the Redis connections keep the process alive.
      return new Promise((resolve) => {
        // QUIT waits for a connection that is down; past a short grace, drop the sockets instead.
        const timer = setTimeout(() => {
          redisEmitter?.subConn.disconnect()
          redisEmitter?.pubConn.disconnect()
          resolve()
        }, redisEmitter && redisEmitter.subConn.status === 'ready' ? CLOSE_GRACE_MS : 0)
        emitter.close(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    },
  }
}

type RedisEmitter = MQEmitter & { subConn: Redis; pubConn: Redis }

function createRedisEmitter(url: string, prefix: string): RedisEmitter {
  const { MQEmitterRedisPrefix } = require('mqemitter-redis') as { MQEmitterRedisPrefix: new (prefix: string, opts: object) => MQEmitter }
  // mqemitter-redis ignores client options next to a connectionString, which left ioredis's
  // defaults (20 retries per queued command): pass our own connections instead.
  const connection = () => new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: (times: number) => Math.min(times * 200, 2_000) })
  const emitter = new MQEmitterRedisPrefix(prefix, { subConn: connection(), pubConn: connection() }) as RedisEmitter & { state: { on(e: string, f: () => void): void } }
  // mqemitter-redis re-emits every connection error on `state`; with no listener a dead Redis would crash the process.
  emitter.state.on('error', () => {})
  return emitter
}
