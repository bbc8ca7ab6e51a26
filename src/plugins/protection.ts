import { createHash } from 'node:crypto'
import rateLimit from '@fastify/rate-limit'
import underPressure from '@fastify/under-pressure'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { RateLimitedError } from '../lib/errors'

const MUTATION = /^\s*(?:#[^\n]*\n\s*)*mutation\b/m

/**
 * Overload and abuse protection. Under pressure (event-loop lag past the limit) requests get a
 * 503 with Retry-After before the loop stalls; health probes are exempt. Mutations are rate
 * limited per token (or per IP when anonymous), counted in Redis when present so the limit holds
 * across instances; if Redis fails, requests pass rather than fail.
 */
export const protectionPlugin = fp(
  async (app: FastifyInstance) => {
    const { protection } = app.config
    if (protection.maxEventLoopDelayMs > 0) {
      await app.register(underPressure, {
        maxEventLoopDelay: protection.maxEventLoopDelayMs,
        retryAfter: 5,
        pressureHandler: (request, reply, type) => {
          if (request.url === '/healthz' || request.url === '/readyz') return
          void reply
            .code(503)
            .header('retry-after', '5')
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
      keyGenerator: (request) => {
        const auth = request.headers.authorization
        return auth ? `t:${createHash('sha256').update(auth).digest('base64url').slice(0, 22)}` : `ip:${request.ip}`
      },
      // Thrown by the plugin and answered by the one error handler, in the usual `{ error }` shape.
      errorResponseBuilder: (_request, context) => new RateLimitedError(`Too many mutations: at most ${context.max} per ${context.after}, retry later`),
    })
  },
  { name: 'protection', dependencies: ['redis'] },
)

function isMutation(request: FastifyRequest): boolean {
  if (request.method !== 'POST' || request.routeOptions.url !== '/graphql') return false
  // Uploads are mutations by construction; their body is parsed later, so count them here.
  if (request.isMultipart) return true
  const query = (request.body as { query?: unknown } | undefined)?.query
  return typeof query === 'string' && MUTATION.test(query)
}
