/**
 * The one place plain HTTP routes turn errors into responses. GraphQL is not affected:
 * mercurius installs its own handler in its encapsulated context and answers in GraphQL's
 * error format.
 */
import { STATUS_CODES } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { databaseUnavailable } from '../lib/database-unavailable'
import { isAppError } from '../lib/errors'

export interface ErrorResponseBody {
  error: { message: string; code: string; requestId: string }
}

const INTERNAL_MESSAGE = 'Internal server error'

export function registerErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: unknown, request, reply) => {
    const { status, code, message } = classify(err)
    if (status >= 500) {
      // The full error (stack, cause, internal message) goes to the log only; the client
      // gets the request id to quote to support.
      request.log.error({ err }, 'request failed')
    } else {
      // Client mistakes are routine: a line to correlate with, no stack.
      request.log.info({ statusCode: status, code, message }, 'request rejected')
    }
    return send(reply, request, status, code, message)
  })

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?', 1)[0]
    request.log.info({ statusCode: 404, code: 'NOT_FOUND' }, 'route not found')
    return send(reply, request, 404, 'NOT_FOUND', `Route ${request.method} ${path} not found`)
  })
}

interface Classified {
  status: number
  code: string
  message: string
}

function classify(err: unknown): Classified {
  if (isAppError(err)) {
    // ServiceUnavailableError is a 5xx whose message is written for users, so AppErrors
    // keep their message whatever the status.
    return { status: err.httpStatus, code: err.code, message: err.message }
  }
  if (!(err instanceof Error)) return internal()
  const outage = databaseUnavailable(err)
  if (outage) return { status: outage.httpStatus, code: outage.code, message: outage.message }

  const { statusCode, code, validation, expose } = err as Error & {
    statusCode?: unknown
    code?: unknown
    validation?: unknown
    expose?: unknown
  }
  if (Array.isArray(validation)) {
    return { status: 400, code: 'VALIDATION_FAILED', message: err.message }
  }
  if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500) {
    // Fastify's own errors and http-errors with `expose` are written for clients; a 4xx
    // from anywhere else may carry internals, so it gets the reason phrase instead.
    const isFastifyError = typeof code === 'string' && code.startsWith('FST_')
    const message = isFastifyError || expose === true ? err.message : (STATUS_CODES[statusCode] ?? 'Bad request')
    return { status: statusCode, code: typeof code === 'string' ? code : codeFromStatus(statusCode), message }
  }
  return internal()
}

function internal(): Classified {
  return { status: 500, code: 'INTERNAL_SERVER_ERROR', message: INTERNAL_MESSAGE }
}

/** 413 → PAYLOAD_TOO_LARGE, so errors without a code still get a stable one. */
function codeFromStatus(status: number): string {
  return (STATUS_CODES[status] ?? 'ERROR').toUpperCase().replace(/[^A-Z0-9]+/g, '_')
}

function send(reply: FastifyReply, request: FastifyRequest, status: number, code: string, message: string) {
  const body: ErrorResponseBody = { error: { message, code, requestId: request.id } }
  // Set here too: the 404 handler is not a route, so the per-route hook that echoes it (src/app.ts) never runs there.
  return reply.code(status).header('x-request-id', request.id).send(body)
}
