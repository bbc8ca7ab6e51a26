/**
 * Receiving a provider webhook: verify the signature on the raw body, keep only the events we use,
 * and store the row before answering (so a 2xx means it is durable). Processing is kicked after
 * the answer. A database failure is thrown, so the route answers 5xx and the provider retries.
 * A row PostgreSQL refuses for its content (a data exception or constraint violation, SQLSTATE class
 * 22 or 23) is answered `unstorable` instead: retrying the same signed bytes can never succeed, and
 * a 503 for it would look like an outage. The payload parser cleans what it knows of (NUL, lone
 * surrogates, out-of-range dates), so this is the backstop for what it does not.
 */
import { errorCodes } from '../../lib/database-unavailable'
import type { Database } from '../../infra/db/client'
import type { ParsedWebhook } from './webhook-payload'
import { storeWebhookEvent } from './webhook-inbox'
import type { WebhookHeaders, WebhookVerifier } from './webhook-verifier'

export type IntakeResult =
  | { status: 'unconfigured' }
  | { status: 'rejected'; reason: 'headers' | 'signature' | 'timestamp' }
  | { status: 'malformed'; reason: string }
  | { status: 'ignored'; reason: string }
  | { status: 'unstorable'; reason: string; error: unknown }
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
    let stored
    try {
      stored = await storeWebhookEvent(deps.db, id, parsed.event)
    } catch (err) {
      if (!refusesData(err)) throw err
      return { status: 'unstorable', reason: 'The database refuses a value of this event', error: err }
    }
    if (!stored) return { status: 'duplicate' }
    deps.stored()
    return { status: 'accepted', id: stored.id }
  }
}

/** SQLSTATE class 22 (data exception) or 23 (integrity constraint violation), on the error or a cause. */
function refusesData(err: unknown): boolean {
  return errorCodes(err).some((code) => /^2[23][0-9A-Z]{3}$/.test(code))
}
