/**
 * Managing the endpoints an app subscribes, and looking at (and re-sending) their deliveries. The
 * secret is returned only by create and rotate; every other read leaves it out. Any change that
 * can add a subscription tells `changed`, which clears the subscription cache on every instance.
 */
import { and, desc, eq, getTableColumns, lt, or, sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { webhookDeliveries, webhookEndpoints } from '../../infra/db/schema/outgoing-webhooks'
import { ConflictError, NotFoundError, ValidationError, type FieldError } from '../../lib/errors'
import { isUuid } from '../../lib/uuid'
import { checkEndpointUrl, type UrlPolicy } from './endpoint-url'
import { isWebhookEventType, WEBHOOK_EVENT_TYPES } from './webhook-event-types'
import { generateWebhookSecret } from './webhook-signature'

export type WebhookEndpointRow = Omit<typeof webhookEndpoints.$inferSelect, 'secret' | 'previousSecret'>
export type WebhookDeliveryRow = typeof webhookDeliveries.$inferSelect
export type WebhookDeliveryStatus = WebhookDeliveryRow['status']

export interface EndpointInput {
  url?: string | null
  /** Empty or absent on create: every event type. */
  eventTypes?: string[] | null
  description?: string | null
  enabled?: boolean | null
}

/** Only what was given; `description: null` clears it. */
interface CheckedInput {
  url?: string
  eventTypes?: string[]
  description?: string | null
  enabled?: boolean
}

export interface EndpointWithSecret {
  endpoint: WebhookEndpointRow
  /** `whsec_...`: shown this once. */
  secret: string
}

export interface EndpointServiceDeps {
  db: Database
  urlPolicy: UrlPolicy
  /** Endpoints or their subscriptions changed (after the commit). */
  changed: () => void
}

/** Every event is sent to every subscribed endpoint: the number of endpoints bounds that fan-out. */
const MAX_ENDPOINTS = 50
const MAX_DESCRIPTION = 500

/** How long a rotated-out secret may keep signing, at most (Svix keeps one for 24 hours, Stripe up to 7 days). */
export const MAX_SECRET_OVERLAP_SECONDS = 7 * 24 * 3600

/** Every column but the secrets. */
const { secret: _secret, previousSecret: _previousSecret, ...visible } = getTableColumns(webhookEndpoints)

/** Erases the secrets rotated out whose overlap ended before `now`: one is not kept past its use. */
export async function forgetExpiredSecrets(db: Database, now: Date): Promise<void> {
  await db.execute(sql`
    update webhook_endpoints set previous_secret = null, previous_secret_expires_at = null
    where previous_secret_expires_at < ${now.toISOString()}::timestamptz`)
}

export class WebhookEndpointService {
  constructor(private readonly deps: EndpointServiceDeps) {}

  async createEndpoint(input: EndpointInput, createdBy: string | null): Promise<EndpointWithSecret> {
    const fields = await this.checkInput(input, true)
    const secret = generateWebhookSecret()
    const endpoint = await this.deps.db.transaction(async (tx) => {
      // Serialises concurrent creates, so the limit holds across instances.
      await tx.execute(sql`lock table webhook_endpoints in share row exclusive mode`)
      const count = await tx.execute<{ n: string }>(sql`select count(*) as n from webhook_endpoints`)
      if (Number(count.rows[0]!.n) >= MAX_ENDPOINTS) throw new ConflictError(`At most ${MAX_ENDPOINTS} webhook endpoints; delete one first`)
      const [row] = await tx
        .insert(webhookEndpoints)
        .values({ url: fields.url!, eventTypes: fields.eventTypes ?? [], description: fields.description ?? null, enabled: fields.enabled ?? true, secret, createdBy })
        .returning(visible)
      return row!
    })
    this.deps.changed()
    return { endpoint, secret }
  }

  /** Changes what is given. Enabling an endpoint clears its failure streak and the reason it was disabled. */
  async updateEndpoint(id: string, input: EndpointInput): Promise<WebhookEndpointRow> {
    const fields = await this.checkInput(input, false)
    const [row] = await this.deps.db
      .update(webhookEndpoints)
      .set({
        ...(fields.url !== undefined ? { url: fields.url } : {}),
        ...(fields.eventTypes !== undefined ? { eventTypes: fields.eventTypes } : {}),
        ...(fields.description !== undefined ? { description: fields.description } : {}),
        ...(fields.enabled === true ? { enabled: true, consecutiveFailures: 0, disabledReason: null } : {}),
        ...(fields.enabled === false ? { enabled: false, disabledReason: null } : {}),
        updatedAt: sql`now()`,
      })
      .where(this.byId(id))
      .returning(visible)
    if (!row) throw new NotFoundError('WebhookEndpoint', id)
    this.deps.changed()
    return row
  }

  /**
   * A new secret. For `overlapSeconds` the old one keeps signing too (each attempt carries both
   * signatures), so receivers can switch over without rejecting a delivery; 0 retires it at once.
   * A rotation during an overlap replaces the older secret: at most two sign at any time.
   */
  async rotateSecret(id: string, overlapSeconds = 0): Promise<EndpointWithSecret> {
    if (!Number.isInteger(overlapSeconds) || overlapSeconds < 0 || overlapSeconds > MAX_SECRET_OVERLAP_SECONDS) {
      throw ValidationError.field(['overlapHours'], `The overlap must be between 0 and ${MAX_SECRET_OVERLAP_SECONDS / 3600} hours`)
    }
    const secret = generateWebhookSecret()
    const keep = overlapSeconds > 0
    const [row] = await this.deps.db
      .update(webhookEndpoints)
      .set({
        secret,
        previousSecret: keep ? sql`${webhookEndpoints.secret}` : null,
        previousSecretExpiresAt: keep ? sql`now() + make_interval(secs => ${overlapSeconds})` : null,
        updatedAt: sql`now()`,
      })
      .where(this.byId(id))
      .returning(visible)
    if (!row) throw new NotFoundError('WebhookEndpoint', id)
    return { endpoint: row, secret }
  }

  /** Deletes the endpoint with its deliveries, pending ones included. */
  async deleteEndpoint(id: string): Promise<string> {
    const [row] = await this.deps.db.delete(webhookEndpoints).where(this.byId(id)).returning({ id: webhookEndpoints.id })
    if (!row) throw new NotFoundError('WebhookEndpoint', id)
    this.deps.changed()
    return row.id
  }

  async findEndpoint(id: string): Promise<WebhookEndpointRow | null> {
    const [row] = await this.deps.db.select(visible).from(webhookEndpoints).where(this.byId(id))
    return row ?? null
  }

  /** Newest first. */
  async listEndpoints(options: { limit: number; after?: { createdAt: Date; id: string } }): Promise<WebhookEndpointRow[]> {
    const { after } = options
    return this.deps.db
      .select(visible)
      .from(webhookEndpoints)
      .where(after ? or(lt(webhookEndpoints.createdAt, after.createdAt), and(eq(webhookEndpoints.createdAt, after.createdAt), lt(webhookEndpoints.id, after.id))) : undefined)
      .orderBy(desc(webhookEndpoints.createdAt), desc(webhookEndpoints.id))
      .limit(options.limit)
  }

  /** An endpoint's deliveries, newest first. */
  async listDeliveries(endpointId: string, options: { limit: number; afterId?: number; status?: WebhookDeliveryStatus | null }): Promise<WebhookDeliveryRow[]> {
    return this.deps.db
      .select()
      .from(webhookDeliveries)
      .where(
        and(
          eq(webhookDeliveries.endpointId, endpointId),
          options.afterId !== undefined ? lt(webhookDeliveries.id, options.afterId) : undefined,
          options.status ? eq(webhookDeliveries.status, options.status) : undefined,
        ),
      )
      .orderBy(desc(webhookDeliveries.id))
      .limit(options.limit)
  }

  /**
   * Queues a failed delivery again, due now, with a fresh set of attempts and the same
   * `webhook-id` (a receiver that de-duplicates on it still sees one message).
   */
  async redeliver(deliveryId: string): Promise<WebhookDeliveryRow> {
    const id = /^\d{1,15}$/.test(deliveryId) ? Number(deliveryId) : null
    const found = id === null ? [] : await this.deps.db
      .select({ status: webhookDeliveries.status, enabled: webhookEndpoints.enabled })
      .from(webhookDeliveries)
      .innerJoin(webhookEndpoints, eq(webhookEndpoints.id, webhookDeliveries.endpointId))
      .where(eq(webhookDeliveries.id, id))
    const current = found[0]
    if (id === null || !current) throw new NotFoundError('WebhookDelivery', deliveryId)
    if (current.status !== 'failed') throw new ConflictError(`Only a failed delivery can be redelivered; this one is ${current.status}`)
    if (!current.enabled) throw new ConflictError('The endpoint is disabled; enable it first')
    const [row] = await this.deps.db
      .update(webhookDeliveries)
      .set({ status: 'pending', attempts: 0, nextAttemptAt: sql`now()`, lockedUntil: null })
      .where(and(eq(webhookDeliveries.id, id), eq(webhookDeliveries.status, 'failed')))
      .returning()
    if (!row) throw new ConflictError('The delivery changed meanwhile; look again')
    return row
  }

  private byId(id: string) {
    // A malformed id is simply not found (PostgreSQL would reject it as a uuid).
    return isUuid(id) ? eq(webhookEndpoints.id, id) : sql`false`
  }

  private async checkInput(input: EndpointInput, creating: boolean): Promise<CheckedInput> {
    const errors: FieldError[] = []
    const out: CheckedInput = {}
    if (input.eventTypes != null) {
      const types = [...new Set(input.eventTypes.map((t) => t.trim()))]
      types.forEach((type, i) => {
        if (!isWebhookEventType(type)) errors.push({ path: ['input', 'eventTypes', String(i)], message: `Unknown event type "${type}"; the types are ${WEBHOOK_EVENT_TYPES.join(', ')}` })
      })
      out.eventTypes = types
    }
    if (input.description !== undefined) {
      const description = input.description?.trim() || null
      if (description && description.length > MAX_DESCRIPTION) errors.push({ path: ['input', 'description'], message: `The description is longer than ${MAX_DESCRIPTION} characters` })
      out.description = description
    }
    if (input.enabled != null) out.enabled = input.enabled
    if (input.url != null) {
      // The URL check may resolve DNS: only once the cheap checks passed.
      if (errors.length === 0) out.url = await checkEndpointUrl(input.url, this.deps.urlPolicy)
    } else if (creating) {
      errors.push({ path: ['input', 'url'], message: 'The URL is required' })
    }
    if (errors.length > 0) throw new ValidationError(errors.map((e) => e.message).join('; '), errors)
    return out
  }
}
