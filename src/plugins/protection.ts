import { createHash } from 'node:crypto'
import rateLimit from '@fastify/rate-limit'
import underPressure from '@fastify/under-pressure'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { Kind, parse, type OperationDefinitionNode } from 'graphql'
import { RateLimitedError } from '../lib/errors'

const MUTATION = /^\s*(?:#[^\n]*\n\s*)*mutation\b/m
/** Public tracking endpoints (pixel, click redirect, conversions): limited per IP, with their own max per route. */
const TRACKING = /^\/t\/(?:o|c)\/|^\/t\/conv$/

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
      allowList: (request) => !isMutation(request) && !TRACKING.test(request.routeOptions.url ?? ''),
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
  const query = (request.body as { query?: unknown } | undefined)?.query
  if (typeof query !== 'string') return request.isMultipart === true
  // A 10 GiB chunked upload is 1280 uploadChunk calls: parts are bounded by their session (owner,
  // part count, quota) instead, so a request made only of uploadChunk is not counted.
  if (isOnlyUploadChunk(query)) return false
  return request.isMultipart === true || MUTATION.test(query)
}

function isOnlyUploadChunk(query: string): boolean {
  try {
    const operations = parse(query).definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION)
    return (
      operations.length === 1 &&
      operations[0]!.operation === 'mutation' &&
      operations[0]!.selectionSet.selections.every((s) => s.kind === Kind.FIELD && s.name.value === 'uploadChunk')
    )
  } catch {
    return false
  }
}
