/**
 * Tracking endpoints of campaign mail:
 * - GET /t/o/<token>.gif: the open pixel. Always the same 1×1 GIF, at once; the hit goes into the
 *   in-memory buffer (only when the token is genuine), never to the database on this path.
 * - GET /t/c/<token>: the click redirect, only ever to the URL signed into the token; anything
 *   forged, altered or expired gets a 400 page, never a redirect.
 * - POST /t/conv: a conversion, with the click token the redirect handed to the landing page.
 * Each is rate limited per IP (TRACKING_RATE_LIMIT_MAX), well above what a mail proxy sends.
 */
import type { FastifyContextConfig, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ValidationError } from '../lib/errors'
import { escapeHtml } from '../lib/escape'

/** The smallest transparent GIF. */
export const GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7', 'base64')
export const PIXEL_HEADERS = {
  'content-type': 'image/gif',
  'content-length': String(GIF.length),
  // Every open must reach us: no browser, proxy or CDN may answer from a cache. (HTTP/1.0's Pragma
  // and Expires are left out: every cache since HTTP/1.1 obeys Cache-Control, and each header costs every hit.)
  'cache-control': 'no-store, no-cache, must-revalidate, private',
}
export const REDIRECT_HEADERS = {
  'cache-control': 'no-store',
  // The token is in our URL: the destination need not see it in Referer.
  'referrer-policy': 'no-referrer',
}
const PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}
const CORS_HEADERS = {
  // Token-authenticated, never cookies: any origin (the app's landing pages) may call it.
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'POST',
  'access-control-allow-headers': 'content-type',
  'access-control-max-age': '86400',
}

interface ConversionBody {
  token?: unknown
  value?: unknown
  currency?: unknown
}

/** Route options of the tracking endpoints (exported for bench/tracking, which measures the hot routes' fixed cost). */
export function trackingRouteOptions(app: FastifyInstance) {
  // Each endpoint's own per-IP limit (no x-ratelimit-* headers, only Retry-After on a 429), not the mutation limiter's.
  const limited = (endpoint: string, config: FastifyContextConfig = {}) => ({ onRequest: app.trackingRateLimit(endpoint), config: { ...config, rateLimit: false as const } })
  // The hot paths: counted rather than timed in the metrics, and no log line per hit (a mail proxy sends thousands).
  // Nor an x-request-id header: a mail client never reads it, and every byte of the answer counts at this rate.
  const hot = (endpoint: string) => ({ ...limited(endpoint, { metrics: 'count', requestIdHeader: false }), logLevel: 'warn' as const })
  return { limited, hot }
}

export async function trackingRoutes(app: FastifyInstance): Promise<void> {
  const { recorder, conversions } = app.services.tracking
  const { limited, hot } = trackingRouteOptions(app)
  // navigator.sendBeacon posts JSON as text/plain, which also spares the browser a preflight.
  app.addContentTypeParser('text/plain', { parseAs: 'string', bodyLimit: 4096 }, (_req, body, done) => {
    try {
      done(null, JSON.parse(body as string))
    } catch {
      done(new ValidationError('The body must be JSON: { "token": "...", "value": 12.5, "currency": "EUR" }'), undefined)
    }
  })

  app.get<{ Params: { file: string } }>('/t/o/:file', hot('open'), (request, reply) => {
    const { file } = request.params
    if (file.endsWith('.gif')) recorder.open(file.slice(0, -4), traitsOf(request))
    void reply.code(200).headers(PIXEL_HEADERS).send(GIF)
  })

  // A wildcard, not a parameter: tokens carry the destination and outgrow the router's parameter length limit.
  app.get<{ Params: { '*': string } }>('/t/c/*', hot('click'), (request, reply) => {
    const click = recorder.click(request.params['*'], traitsOf(request))
    if (!click.ok) {
      void page(reply, 400, click.reason === 'expired' ? 'Link expired' : 'Link not valid', click.reason === 'expired'
        ? '<p>This link has expired. The newest email from us has links that work.</p>'
        : '<p>This link is not valid. It may have been changed or cut short; try the link in the email again.</p>')
      return
    }
    void reply.code(302).headers(REDIRECT_HEADERS).header('location', click.location).send()
  })

  app.options('/t/conv', (_request, reply) => reply.code(204).headers(CORS_HEADERS).send())
  app.post<{ Body: ConversionBody }>('/t/conv', { ...limited('conversion'), bodyLimit: 4096 }, async (request, reply) => {
    void reply.headers(CORS_HEADERS)
    const body = (request.body ?? {}) as ConversionBody
    if (typeof body.token !== 'string' || body.token === '') throw ValidationError.field(['token'], 'token is required: the click token from the landing page URL')
    if (body.value !== undefined && body.value !== null && typeof body.value !== 'number') throw ValidationError.field(['value'], 'value must be a number')
    if (body.currency !== undefined && body.currency !== null && typeof body.currency !== 'string') throw ValidationError.field(['currency'], 'currency must be a string')
    const receipt = await conversions.record(body.token, body.value as number | null | undefined, body.currency as string | null | undefined)
    return { counted: receipt.counted, campaignId: receipt.campaignId }
  })
}

function traitsOf(request: FastifyRequest) {
  return { method: request.method, userAgent: request.headers['user-agent'], ip: request.ip }
}

function page(reply: FastifyReply, status: number, title: string, body: string) {
  return reply
    .code(status)
    .headers(PAGE_HEADERS)
    .send(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}</style></head>
<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`)
}
