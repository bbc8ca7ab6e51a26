/**
 * Turns a verified Resend event into the compact row the processing needs, or says why there is
 * nothing to store. Only `email.*` events about delivery and engagement are kept.
 */
import { EventType, type EventTypeCode } from './event-types'
import type { MachineDetector } from './machine-detection'

export interface InboxEvent {
  type: EventTypeCode
  providerId: string
  campaignId: string | null
  recipientId: number | null
  /** Only for events that suppress the address. */
  email: string | null
  occurredAt: Date
  detail: string | null
  machine: boolean
}

export type ParsedWebhook = { kind: 'event'; event: InboxEvent } | { kind: 'ignored'; reason: string } | { kind: 'malformed'; reason: string }

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const DETAIL_MAX = 500

type Json = Record<string, unknown>

export function parseResendEvent(payload: unknown, isMachine: MachineDetector): ParsedWebhook {
  if (!isObject(payload) || typeof payload.type !== 'string') return { kind: 'malformed', reason: 'The event has no type' }
  const name = payload.type
  if (!name.startsWith('email.')) return { kind: 'ignored', reason: `${name} events are not used` }
  const data = payload.data
  if (!isObject(data) || typeof data.email_id !== 'string' || data.email_id === '') return { kind: 'malformed', reason: 'The event has no data.email_id' }

  const tags = readTags(data.tags)
  const base = {
    providerId: data.email_id,
    campaignId: tags.campaign_id && UUID.test(tags.campaign_id) ? tags.campaign_id.toLowerCase() : null,
    recipientId: tags.recipient_id && /^\d{1,18}$/.test(tags.recipient_id) ? Number(tags.recipient_id) : null,
    email: null as string | null,
    occurredAt: dateOf(payload.created_at) ?? dateOf(data.created_at) ?? new Date(),
    detail: null as string | null,
    machine: false,
  }
  const to = Array.isArray(data.to) && typeof data.to[0] === 'string' ? data.to[0].toLowerCase() : null
  const event = (type: EventTypeCode, extra: Partial<InboxEvent> = {}): ParsedWebhook => ({ kind: 'event', event: { ...base, type, ...extra } })

  switch (name) {
    case 'email.delivered':
      return event(EventType.delivered)
    case 'email.delivery_delayed':
      return event(EventType.deliveryDelayed)
    case 'email.bounced': {
      const bounce = isObject(data.bounce) ? data.bounce : {}
      const kind = typeof bounce.type === 'string' ? bounce.type : ''
      const detail = clip([kind, bounce.subType, bounce.message].filter((s) => typeof s === 'string' && s !== '').join(': '))
      // Only a permanent bounce says the address is dead; transient and undetermined ones may deliver next time.
      return /^(permanent|hard)$/i.test(kind) ? event(EventType.bounced, { email: to, detail }) : event(EventType.softBounced, { detail })
    }
    case 'email.complained':
      return event(EventType.complained, { email: to })
    case 'email.opened':
      return event(EventType.open)
    case 'email.clicked': {
      const click = isObject(data.click) ? data.click : {}
      return event(EventType.click, {
        detail: typeof click.link === 'string' ? clip(click.link) : null,
        occurredAt: dateOf(click.timestamp) ?? base.occurredAt,
        machine: isMachine({ method: 'GET', userAgent: typeof click.userAgent === 'string' ? click.userAgent : undefined, ip: typeof click.ipAddress === 'string' ? click.ipAddress : '' }),
      })
    }
    case 'email.failed': {
      const failed = isObject(data.failed) ? data.failed : {}
      return event(EventType.failed, { detail: typeof failed.reason === 'string' ? clip(failed.reason) : null })
    }
    case 'email.suppressed': {
      const suppressed = isObject(data.suppressed) ? data.suppressed : {}
      const detail = clip([suppressed.type, suppressed.message].filter((s) => typeof s === 'string' && s !== '').join(': '))
      return event(EventType.suppressed, { email: to, detail })
    }
    case 'email.sent':
      return { kind: 'ignored', reason: 'Acceptance is recorded when the campaign sends' }
    default:
      return { kind: 'ignored', reason: `${name} events are not used` }
  }
}

/** Resend documents tags as an object; the sending API takes a list of {name, value}. Both are read. */
function readTags(tags: unknown): Record<string, string> {
  const out: Record<string, string> = {}
  if (Array.isArray(tags)) {
    for (const t of tags) if (isObject(t) && typeof t.name === 'string' && typeof t.value === 'string') out[t.name] = t.value
  } else if (isObject(tags)) {
    for (const [k, v] of Object.entries(tags)) if (typeof v === 'string') out[k] = v
  }
  return out
}

function dateOf(value: unknown): Date | null {
  if (typeof value !== 'string') return null
  const d = new Date(value)
  return Number.isNaN(d.getTime()) ? null : d
}

function clip(value: string): string | null {
  return value === '' ? null : value.slice(0, DETAIL_MAX)
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
