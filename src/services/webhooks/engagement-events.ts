/**
 * The outgoing events of a stored batch of hits, decided with the same engagement bits the writer
 * counts with, so the webhooks agree with the stats:
 * - `email.opened` on a recipient's first open, and once more on the first human open when the
 *   first was a machine's (Apple Mail Privacy Protection); a human click before any open counts as
 *   the open, as in uniqueOpens, and `email.clicked` then stands for both;
 * - `email.clicked` on every click, scanner clicks included (`machine: true`);
 * - `email.unsubscribed` once; `email.failed` when the provider refused the send.
 */
import type { WrittenHits } from '../tracking/engagement-writer'
import { Flag, markFirst } from '../tracking/engagement-flags'
import { EventType } from '../tracking/event-types'
import type { OutgoingEvent } from './webhook-event-types'

export function engagementEvents(written: WrittenHits): OutgoingEvent[] {
  const flags = new Map(written.flagsBefore)
  const events: OutgoingEvent[] = []
  for (const hit of written.hits) {
    const machine = written.machine.get(hit) ?? hit.machine
    const before = flags.get(hit.recipientId) ?? 0
    const event = (type: OutgoingEvent['type'], data?: OutgoingEvent['data']) => events.push({ type, recipientId: hit.recipientId, at: hit.at, data })
    if (hit.type === EventType.open) {
      const marked = markFirst(before, Flag.anyOpen, Flag.humanOpen, machine)
      flags.set(hit.recipientId, marked.flags)
      if (marked.first.unique || marked.first.humanUnique) event('email.opened', { machine })
    } else if (hit.type === EventType.click) {
      flags.set(hit.recipientId, before | Flag.anyClick | (machine ? 0 : Flag.humanClick | Flag.anyOpen | Flag.humanOpen))
      event('email.clicked', { machine, link_url: hit.url ?? null, link_index: hit.linkIndex ?? null })
    } else if (hit.type === EventType.unsubscribe) {
      flags.set(hit.recipientId, before | Flag.unsubscribed)
      if ((before & Flag.unsubscribed) === 0) event('email.unsubscribed')
    } else if (hit.type === EventType.failed) {
      event('email.failed')
    }
  }
  return events
}
