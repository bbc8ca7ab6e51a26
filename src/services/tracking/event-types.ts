/**
 * Event type codes as stored in email_events.type and the rollups (a smallint, not a name, to keep
 * rows narrow). Codes are persisted: never renumber one, only add.
 */
export const EventType = {
  sent: 1,
  delivered: 2,
  deliveryDelayed: 3,
  bounced: 4,
  softBounced: 5,
  complained: 6,
  failed: 7,
  suppressed: 8,
  open: 9,
  click: 10,
  conversion: 11,
  unsubscribe: 12,
} as const

export type EventTypeName = keyof typeof EventType
export type EventTypeCode = (typeof EventType)[EventTypeName]

export const EVENT_TYPE_NAMES = Object.fromEntries(Object.entries(EventType).map(([name, code]) => [code, name])) as Record<EventTypeCode, EventTypeName>

/** Milliseconds to the start of the minute (the rollup bucket) and the UTC day (the daily rollup). */
export function minuteOf(ms: number): number {
  return ms - (ms % 60_000)
}

export function utcDayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10)
}
