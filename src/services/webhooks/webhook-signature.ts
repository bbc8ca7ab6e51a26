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

/** The three headers for one attempt; `timestamp` in seconds since the epoch. */
export function signWebhook(secret: string, messageId: string, timestamp: number, body: string): SignedHeaders {
  const key = Buffer.from(secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret, 'base64')
  const signature = createHmac('sha256', key).update(`${messageId}.${timestamp}.${body}`).digest('base64')
  return { 'webhook-id': messageId, 'webhook-timestamp': String(timestamp), 'webhook-signature': `v1,${signature}` }
}
