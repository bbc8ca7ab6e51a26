/**
 * Turns a verified Resend event into the compact row the processing needs, or says why there is
 * nothing to store. Only `email.*` events about delivery and engagement are kept.
 */
import { normalizeText } from '../../lib/escape'
import { isStorableText, replaceUnstorable } from '../../lib/storable-text'
import { isUuid } from '../../lib/uuid'
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

const DETAIL_MAX = 500
/**
 * Event times outside [2000-01-01, receipt + 1 day] are not believed: JavaScript parses years 0 and
 * -1 (which PostgreSQL refuses, so the row could never be stored) and years up to 275760 (which would
 * sit in the rollups and outlive retention). Resend signs its webhooks within minutes of sending them,
 * so a time a day ahead is already a wrong clock; the receipt time stands in for it.
 */
const EARLIEST_EVENT = Date.UTC(2000, 0, 1)
const LATEST_EVENT_AHEAD_MS = 24 * 60 * 60 * 1000

type Json = Record<string, unknown>

export function parseResendEvent(payload: unknown, isMachine: MachineDetector): ParsedWebhook {
  if (!isObject(payload) || typeof payload.type !== 'string') return { kind: 'malformed', reason: 'The event has no type' }
  const name = payload.type
  if (!name.startsWith('email.')) return { kind: 'ignored', reason: `${name} events are not used` }
  const data = payload.data
  if (!isObject(data) || typeof data.email_id !== 'string' || data.email_id === '') return { kind: 'malformed', reason: 'The event has no data.email_id' }

  const receivedAt = new Date()
  const dateOf = (value: unknown) => eventDate(value, receivedAt)
  const tags = readTags(data.tags)
  const base = {
    // Replaced, not removed: "id\u0000" must not turn into another message's "id".
    providerId: replaceUnstorable(data.email_id),
    campaignId: tags.campaign_id && isUuid(tags.campaign_id) ? tags.campaign_id.toLowerCase() : null,
    recipientId: tags.recipient_id && /^\d{1,18}$/.test(tags.recipient_id) ? Number(tags.recipient_id) : null,
    email: null as string | null,
    occurredAt: dateOf(payload.created_at) ?? dateOf(data.created_at) ?? receivedAt,
    detail: null as string | null,
    machine: false,
  }
  const to = Array.isArray(data.to) && typeof data.to[0] === 'string' ? address(data.to[0]) : null
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

function eventDate(value: unknown, receivedAt: Date): Date | null {
  if (typeof value !== 'string') return null
  const time = new Date(value).getTime()
  return time >= EARLIEST_EVENT && time <= receivedAt.getTime() + LATEST_EVENT_AHEAD_MS ? new Date(time) : null
}

/** Lower-cased; null when it holds a control character or a lone surrogate, which no real address has (it is not suppressed). */
function address(value: string): string | null {
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u001f\u007f]/.test(value) || !isStorableText(value) ? null : value.toLowerCase()
}

/** Free text from the provider (a bounce message, a URL): control characters and lone surrogates removed, cut to DETAIL_MAX code points. */
function clip(value: string): string | null {
  const text = normalizeText(value, { maxLength: DETAIL_MAX })
  return text === '' ? null : text
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
