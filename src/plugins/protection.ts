import rateLimit from '@fastify/rate-limit'
import underPressure from '@fastify/under-pressure'
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { operationKinds } from '../graphql/operation-kinds'
import { bearerToken } from '../lib/bearer-token'
import { RateLimitedError } from '../lib/errors'
import { createHitRateLimiter, type HitRateLimiter } from '../services/tracking/hit-rate-limiter'
import { mirroredCounter } from './metrics'

declare module 'fastify' {
  interface FastifyInstance {
    /** The onRequest hook of a public tracking endpoint: TRACKING_RATE_LIMIT_MAX per IP per RATE_LIMIT_WINDOW_MS, counted per `endpoint`. */
    trackingRateLimit(endpoint: string): onRequestHookHandler
  }
}

/** Routes answered under load shedding: the health probes, and the metrics that show the overload. */
const UNSHED_ROUTES = new Set(['/healthz', '/readyz', '/metrics'])

/**
 * Overload and abuse protection. Under pressure (event-loop lag past the limit) requests get a
 * 503 with Retry-After before the loop stalls; health probes and /metrics are exempt. Mutations are rate
 * limited per token (or per IP when anonymous), counted in Redis when present so the limit holds
 * across instances; if Redis fails, requests pass rather than fail. The public tracking endpoints
 * have a per-IP limit of their own (`trackingRateLimit`), leased from Redis in chunks so that a
 * pixel costs no Redis round trip (bounds in hit-rate-limiter.ts).
 */
export const protectionPlugin = fp(
  async (app: FastifyInstance) => {
    const { protection } = app.config
    if (protection.maxEventLoopDelayMs > 0) {
      await app.register(underPressure, {
        maxEventLoopDelay: protection.maxEventLoopDelayMs,
        retryAfter: 5,
        pressureHandler: (request, reply, type) => {
          // By route, so a query string does not lose the exemption; /metrics so the overload can be watched.
          if (UNSHED_ROUTES.has(request.routeOptions.url ?? '')) return
          void reply
            .code(503)
            .header('retry-after', '5')
            // Set here: an unmatched URL has no route, so the per-route hook that echoes it (src/app.ts) does not run.
            .header('x-request-id', request.id)
            .send({ error: { message: `The server is overloaded (${type}), retry shortly`, code: 'OVERLOADED', requestId: request.id } })
        },
      })
    }
    await app.register(rateLimit, {
      global: true,
      // After body parsing, so a mutation can be told from a query.
      hook: 'preHandler',
      max: protection.rateLimitMax,
      timeWindow: protection.rateLimitWindowMs,
      redis: app.redis ?? undefined,
      nameSpace: `${app.config.redisKeyPrefix}ratelimit:`,
      skipOnError: true,
      allowList: (request) => !isMutation(request),
      // The verified token's subject, else the address: a header spelled another way, or a token made up
      // for each request, gets no budget of its own. (Only mutations are counted: the rest skip the check.)
      keyGenerator: (request) => {
        if (!isMutation(request)) return 'uncounted'
        const token = bearerToken(request.headers.authorization)
        if (token) {
          try {
            return `t:${app.tokens.verify(token).id}`
          } catch {
            // Refused by the GraphQL layer anyway; until then it counts against its address.
          }
        }
        return `ip:${request.ip}`
      },
      // Thrown by the plugin and answered by the one error handler, in the usual `{ error }` shape.
      errorResponseBuilder: (_request, context) => new RateLimitedError(`Too many mutations: at most ${context.max} per ${context.after}, retry later`),
    })

    const { tracking } = app.config
    const limiter = createHitRateLimiter({
      max: tracking.rateLimitMax,
      windowMs: protection.rateLimitWindowMs,
      chunk: tracking.rateLimitChunk,
      redis: app.redis,
      keyPrefix: app.config.redisKeyPrefix,
      logger: app.log,
    })
    app.addHook('onClose', async () => limiter.close())
    const limit = `at most ${tracking.rateLimitMax} per ${protection.rateLimitWindowMs / 1000} s`
    app.decorate('trackingRateLimit', (endpoint: string) => trackingLimitHook(limiter, `${endpoint}:`, limit))
    const limited = mirroredCounter(app.metrics.registry, 'groundwork_tracking_rate_limited_total', 'Tracking requests (pixel, redirect, conversion) refused by the per-IP limit.')
    const leases = mirroredCounter(app.metrics.registry, 'groundwork_tracking_rate_limit_leases_total', 'Quota leases asked of Redis by the tracking per-IP limit.')
    const fallbacks = mirroredCounter(app.metrics.registry, 'groundwork_tracking_rate_limit_fallbacks_total', 'Leases that failed, so the IP was counted on this instance alone for its window.')
    app.metrics.addCollector(() => {
      const stats = limiter.stats()
      limited(stats.limited)
      leases(stats.leases)
      fallbacks(stats.fallbacks)
    })
  },
  { name: 'protection', dependencies: ['redis', 'metrics'] },
)

/** A callback hook, so an admitted request (nearly all) costs no promise. */
function trackingLimitHook(limiter: HitRateLimiter, prefix: string, limit: string): onRequestHookHandler {
  const refuse = (reply: FastifyReply, retryMs: number, done: HookHandlerDoneFunction) => {
    void reply.header('retry-after', String(Math.ceil(retryMs / 1000)))
    done(new RateLimitedError(`Too many requests from this address: ${limit}, retry later`))
  }
  return function trackingRateLimit(request, reply, done) {
    const verdict = limiter.take(prefix + request.ip)
    if (verdict === 0) return done()
    if (typeof verdict === 'number') return refuse(reply, verdict, done)
    verdict.then((ms) => (ms === 0 ? done() : refuse(reply, ms, done)), done)
  }
}

/**
 * Whether the request may run a mutation, and so counts against the limit: any document holding one
 * (operation-kinds.ts says why operationName does not decide). Most requests are queries without the
 * word `mutation` and are told apart without a parse (mercurius parses them anyway, once).
 */
function isMutation(request: FastifyRequest): boolean {
  let verdict = judged.get(request)
  if (verdict === undefined) judged.set(request, (verdict = judgeMutation(request)))
  return verdict
}

/** isMutation's verdicts: the rate limiter asks twice per request (its key, then whether to count). */
const judged = new WeakMap<FastifyRequest, boolean>()

function judgeMutation(request: FastifyRequest): boolean {
  if (request.method !== 'POST' || request.routeOptions.url !== '/graphql') return false
  const query = (request.body as { query?: unknown } | undefined)?.query
  if (typeof query !== 'string') return request.isMultipart === true
  const kinds = operationKinds(query)
  // Unparsable: GraphQL refuses it, and counting it costs an honest client nothing.
  if (kinds === undefined) return true
  // A 10 GiB chunked upload is 1280 uploadChunk calls: parts are bounded by their session (owner,
  // part count, quota) instead, so a request made only of uploadChunk is not counted.
  if (kinds.onlyUploadChunk) return false
  return kinds.mutation || request.isMultipart === true
}
