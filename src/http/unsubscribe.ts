/**
 * GET/POST /t/u/:token: one-click unsubscribe (RFC 8058). GET only shows a confirmation page with a
 * button, because mail scanners and link previews follow GET links; POST unsubscribes, which is
 * also what a mailbox provider sends (`List-Unsubscribe=One-Click`) when the user clicks its own
 * unsubscribe button. The token is verified before anything is shown or changed. What POST
 * applies to (every list, or the campaign's audiences) is TRACKING_UNSUBSCRIBE_SCOPE, and the page says which.
 */
import type { FastifyInstance, FastifyReply } from 'fastify'
import { escapeHtml } from '../lib/escape'

const PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  // The page runs no script and posts only to itself.
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
}

export async function unsubscribeRoutes(app: FastifyInstance): Promise<void> {
  // RFC 8058 bodies are form-encoded; the value is irrelevant, the signed token decides.
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 4096 }, (_req, body, done) => done(null, body))

  app.get<{ Params: { token: string } }>('/t/u/:token', async (request, reply) => {
    const found = await app.services.recipientFeedback.describeUnsubscribe(request.params.token)
    if (!found.ok) return invalid(reply, found.reason)
    return page(
      reply,
      200,
      'Unsubscribe',
      `<p>Stop sending campaign email to <strong>${escapeHtml(found.email ?? '')}</strong>?</p>
       <form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>`,
    )
  })

  app.post<{ Params: { token: string } }>('/t/u/:token', async (request, reply) => {
    const result = await app.services.recipientFeedback.unsubscribe(request.params.token)
    if (!result.ok) return invalid(reply, result.reason)
    const what = result.scope === 'audience' ? 'email from the lists this message was sent to' : 'campaign email from us'
    return page(reply, 200, 'Unsubscribed', `<p><strong>${escapeHtml(result.email ?? '')}</strong> will get no more ${what}.</p>`)
  })
}

function invalid(reply: FastifyReply, reason: string | undefined) {
  if (reason === 'expired') return page(reply, 410, 'Link expired', '<p>This unsubscribe link has expired. Use the link in a more recent email, or reply to it.</p>')
  return page(reply, 404, 'Link not valid', '<p>This unsubscribe link is not valid.</p>')
}

function page(reply: FastifyReply, status: number, title: string, body: string) {
  return reply
    .code(status)
    .headers(PAGE_HEADERS)
    .send(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}button{font-size:1rem;padding:.5rem 1rem}</style></head>
<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`)
}
