/**
 * POST /webhooks/resend. The signature covers the exact bytes sent, so this scope keeps the body
 * raw instead of parsing JSON (the parser change applies to this route only). A 2xx is sent only
 * once the event is stored; the database being unreachable answers 503 so Resend retries it later.
 * Any other failure is not an outage and is not answered as one.
 *
 *   401: missing Svix headers, a bad signature, or a timestamp more than 5 minutes off
 *   400: a signed body that is not JSON or not an email event
 *   422: a signed event with a value the database refuses (retrying the same bytes cannot help)
 *   503: the database is unavailable (with retry-after)
 *   500: anything else (a bug); logged in full
 *   200: accepted, duplicate (svix-id seen before) or ignored (an event type we do not use)
 *   404: RESEND_WEBHOOK_SECRET is not set
 */
import type { FastifyInstance } from 'fastify'
import { isDatabaseUnavailable } from '../lib/database-unavailable'

const MAX_BODY_BYTES = 256 * 1024

export async function webhookRoutes(app: FastifyInstance): Promise<void> {
  const { receive } = app.services.tracking.webhooks
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'buffer', bodyLimit: MAX_BODY_BYTES }, (_req, body, done) => done(null, body))

  app.post('/webhooks/resend', async (request, reply) => {
    const header = (name: string) => {
      const value = request.headers[name]
      return typeof value === 'string' ? value : undefined
    }
    const raw = Buffer.isBuffer(request.body) ? request.body.toString('utf8') : ''
    let result
    try {
      result = await receive(raw, {
        // Svix names; Standard Webhooks names the same headers webhook-*.
        id: header('svix-id') ?? header('webhook-id'),
        timestamp: header('svix-timestamp') ?? header('webhook-timestamp'),
        signature: header('svix-signature') ?? header('webhook-signature'),
      })
    } catch (err) {
      if (isDatabaseUnavailable(err)) {
        request.log.error({ err }, 'webhook event could not be stored, the database is unavailable; the provider will retry')
        return reply.code(503).header('retry-after', '30').send(error(request.id, 'SERVICE_UNAVAILABLE', 'The event could not be stored; retry later'))
      }
      request.log.error({ err, svixId: header('svix-id') ?? header('webhook-id') }, 'webhook event could not be stored')
      return reply.code(500).send(error(request.id, 'INTERNAL_SERVER_ERROR', 'Internal server error'))
    }
    switch (result.status) {
      case 'unconfigured':
        return reply.code(404).send(error(request.id, 'NOT_FOUND', 'Webhooks are not configured (RESEND_WEBHOOK_SECRET)'))
      case 'rejected':
        request.log.warn({ reason: result.reason }, 'webhook refused')
        return reply.code(401).send(error(request.id, 'WEBHOOK_REJECTED', rejection[result.reason]))
      case 'malformed':
        return reply.code(400).send(error(request.id, 'WEBHOOK_MALFORMED', result.reason))
      case 'unstorable':
        // Logged as an error with its svix-id: the event is not stored, and the provider's log keeps it for a replay.
        request.log.error({ err: result.error, svixId: header('svix-id') ?? header('webhook-id') }, 'signed webhook event refused by the database')
        return reply.code(422).send(error(request.id, 'WEBHOOK_UNSTORABLE', result.reason))
      case 'ignored':
        return { status: 'ignored', reason: result.reason }
      case 'duplicate':
        return { status: 'duplicate' }
      case 'accepted':
        return { status: 'accepted' }
    }
  })
}

const rejection = {
  headers: 'The svix-id, svix-timestamp and svix-signature headers are required',
  signature: 'The signature does not match',
  timestamp: 'The timestamp is more than 5 minutes off',
}

function error(requestId: string, code: string, message: string) {
  return { error: { message, code, requestId } }
}
