/**
 * Resend signs webhooks the Svix / Standard Webhooks way: an HMAC over `id.timestamp.body`. The SDK
 * checks it on the raw body (re-serialised JSON would not match) and refuses timestamps more than
 * five minutes off, which bounds how long a captured request can be replayed.
 */
import { Resend } from 'resend'

export interface WebhookHeaders {
  id: string
  timestamp: string
  signature: string
}

export type VerifiedWebhook = { ok: true; payload: unknown } | { ok: false; reason: 'signature' | 'timestamp' | 'malformed' }

export type WebhookVerifier = (rawBody: string, headers: WebhookHeaders) => VerifiedWebhook

export function createWebhookVerifier(secret: string): WebhookVerifier {
  // Verification makes no API call; the client only needs some key to be constructed.
  const resend = new Resend('re_webhook_verification_only')
  return (rawBody, headers) => {
    try {
      return { ok: true, payload: resend.webhooks.verify({ payload: rawBody, headers, webhookSecret: secret }) }
    } catch (err) {
      // The signature is checked before the JSON is parsed: a parse error means a signed but broken body.
      if (err instanceof SyntaxError) return { ok: false, reason: 'malformed' }
      const message = err instanceof Error ? err.message : ''
      if (/timestamp|Invalid Signature Headers/i.test(message)) return { ok: false, reason: 'timestamp' }
      return { ok: false, reason: 'signature' }
    }
  }
}
