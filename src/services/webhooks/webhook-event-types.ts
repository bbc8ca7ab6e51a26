/**
 * The events an app can subscribe to, named like Resend's so an app that already consumes Resend's
 * webhooks reads ours the same way. `email.sent` is left out on purpose: it fires for every
 * recipient of every campaign and says little that `email.delivered` does not.
 */
import type { Database } from '../../infra/db/client'
import { EventType, type EventTypeCode } from '../tracking/event-types'

export const WEBHOOK_EVENT_TYPES = [
  'email.delivered',
  'email.bounced',
  'email.complained',
  'email.failed',
  'email.opened',
  'email.clicked',
  'email.unsubscribed',
  'email.converted',
] as const

export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number]

export function isWebhookEventType(name: string): name is WebhookEventType {
  return (WEBHOOK_EVENT_TYPES as readonly string[]).includes(name)
}

/** The stored event codes that become an outgoing event when they are applied. */
export const WEBHOOK_EVENT_OF: Partial<Record<EventTypeCode, WebhookEventType>> = {
  [EventType.delivered]: 'email.delivered',
  [EventType.bounced]: 'email.bounced',
  [EventType.complained]: 'email.complained',
  [EventType.failed]: 'email.failed',
  [EventType.open]: 'email.opened',
  [EventType.click]: 'email.clicked',
  [EventType.unsubscribe]: 'email.unsubscribed',
  [EventType.conversion]: 'email.converted',
}

/**
 * One event about one campaign recipient. The payload's `data` gets the recipient's campaign id,
 * recipient id, address and provider email id from its row; `data` here adds the event's own fields
 * (snake_case: they go out as they are).
 */
export interface OutgoingEvent {
  type: WebhookEventType
  recipientId: number
  /** When it happened, epoch milliseconds. */
  at: number
  data?: Record<string, string | number | boolean | null>
}

/** Stores outgoing events inside the caller's transaction, so they commit (or roll back) with what they report. */
export interface WebhookEnqueuer {
  enqueue(tx: Database, events: readonly OutgoingEvent[]): Promise<void>
}

/** The outgoing event for a stored event code, if it has one. */
export function outgoingEvents(code: EventTypeCode, recipientId: number, at: number, data?: OutgoingEvent['data']): OutgoingEvent[] {
  const type = WEBHOOK_EVENT_OF[code]
  return type ? [{ type, recipientId, at, data }] : []
}
