/**
 * Receiving a provider webhook: verify the signature on the raw body, keep only the events we use,
 * and store the row before answering (so a 2xx means it is durable). Processing is kicked after
 * the answer. A database failure is thrown, so the route answers 5xx and the provider retries.
 */
import type { Database } from '../../infra/db/client'
import type { ParsedWebhook } from './webhook-payload'
import { storeWebhookEvent } from './webhook-inbox'
import type { WebhookHeaders, WebhookVerifier } from './webhook-verifier'

export type IntakeResult =
  | { status: 'unconfigured' }
  | { status: 'rejected'; reason: 'headers' | 'signature' | 'timestamp' }
  | { status: 'malformed'; reason: string }
  | { status: 'ignored'; reason: string }
  | { status: 'duplicate' }
  | { status: 'accepted'; id: number }

export interface WebhookIntakeDeps {
  db: Database
  verify: WebhookVerifier | null
  parse: (payload: unknown) => ParsedWebhook
  /** Called once a row is stored; processing must not delay the answer. */
  stored: () => void
}

export type WebhookIntake = (rawBody: string, headers: Partial<WebhookHeaders>) => Promise<IntakeResult>

export function createWebhookIntake(deps: WebhookIntakeDeps): WebhookIntake {
  return async (rawBody, headers) => {
    if (!deps.verify) return { status: 'unconfigured' }
    const { id, timestamp, signature } = headers
    if (!id || !timestamp || !signature || id.length > 200) return { status: 'rejected', reason: 'headers' }
    const verified = deps.verify(rawBody, { id, timestamp, signature })
    if (!verified.ok) return verified.reason === 'malformed' ? { status: 'malformed', reason: 'The body is not JSON' } : { status: 'rejected', reason: verified.reason }
    const parsed = deps.parse(verified.payload)
    if (parsed.kind !== 'event') return { status: parsed.kind, reason: parsed.reason }
    const stored = await storeWebhookEvent(deps.db, id, parsed.event)
    if (!stored) return { status: 'duplicate' }
    deps.stored()
    return { status: 'accepted', id: stored.id }
  }
}
