/**
 * The Standard Webhooks signature (the scheme of Svix, and of Resend towards us): an HMAC-SHA256,
 * keyed with the base64-decoded part of the `whsec_` secret, over `${id}.${timestamp}.${body}`.
 * An app verifies it with the `standardwebhooks` or `svix` packages, or with a few lines of crypto.
 */
import { createHmac, randomBytes } from 'node:crypto'

const PREFIX = 'whsec_'

/** A new endpoint secret: `whsec_` and 32 random bytes in base64 (Svix's format). */
export function generateWebhookSecret(): string {
  return PREFIX + randomBytes(32).toString('base64')
}

export interface SignedHeaders {
  'webhook-id': string
  'webhook-timestamp': string
  'webhook-signature': string
}

/**
 * The three headers for one attempt; `timestamp` in seconds since the epoch. With several secrets
 * (the current one first, then one being rotated out), the signature header lists one signature per
 * secret, space-separated, as the spec allows: a receiver that knows either secret verifies it.
 */
export function signWebhook(secrets: string | readonly string[], messageId: string, timestamp: number, body: string): SignedHeaders {
  const content = `${messageId}.${timestamp}.${body}`
  const signatures = (typeof secrets === 'string' ? [secrets] : secrets).map((secret) => {
    const key = Buffer.from(secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret, 'base64')
    return `v1,${createHmac('sha256', key).update(content).digest('base64')}`
  })
  return { 'webhook-id': messageId, 'webhook-timestamp': String(timestamp), 'webhook-signature': signatures.join(' ') }
}
