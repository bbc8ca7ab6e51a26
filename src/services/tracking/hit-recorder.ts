/**
 * What the tracking endpoints call: verify the token, note the hit in the buffer, answer. Nothing
 * here waits for the database; the buffer's writer stores hits in batches.
 */
import type { EventBuffer } from './event-buffer'
import { EventType } from './event-types'
import type { Hit } from './engagement-writer'
import type { MachineDetector, RequestTraits } from './machine-detection'
import type { TrackingTokens } from './tracking-tokens'

export type ClickOutcome = { ok: true; location: string } | { ok: false; reason: 'invalid' | 'expired' }

export interface HitRecorderDeps {
  tokens: TrackingTokens
  buffer: EventBuffer<Hit>
  isMachine: MachineDetector
  /** Query parameter that carries the conversion token to the destination; empty: none. */
  conversionParam: string
}

export class HitRecorder {
  constructor(private readonly deps: HitRecorderDeps) {}

  /** Records an open when the token is genuine; says whether it was. */
  open(token: string, traits: RequestTraits): boolean {
    const verified = this.deps.tokens.verifyOpen(token)
    if (!verified.ok) return false
    this.deps.buffer.push({ type: EventType.open, recipientId: verified.recipientId, at: Date.now(), machine: this.deps.isMachine(traits) })
    return true
  }

  /** The destination bound in a genuine token, with the conversion token added; nothing else is ever a redirect target. */
  click(token: string, traits: RequestTraits): ClickOutcome {
    const verified = this.deps.tokens.verifyClick(token)
    if (!verified.ok) return verified
    const now = Date.now()
    this.deps.buffer.push({
      type: EventType.click,
      recipientId: verified.recipientId,
      at: now,
      machine: this.deps.isMachine(traits),
      linkIndex: verified.linkIndex,
      url: verified.url,
    })
    const { conversionParam } = this.deps
    if (!conversionParam) return { ok: true, location: verified.url }
    const conversion = this.deps.tokens.conversionToken(verified.recipientId, verified.linkIndex, Math.floor(now / 1000))
    return { ok: true, location: withParam(verified.url, conversionParam, conversion) }
  }

  /** A send outcome from the dispatcher, counted in the rollups (never a blocking write on the send path). */
  sendOutcome(recipientIds: number[], type: typeof EventType.sent | typeof EventType.failed): void {
    const at = Date.now()
    for (const recipientId of recipientIds) this.deps.buffer.push({ type, recipientId, at, machine: false })
  }

  unsubscribed(recipientId: number): void {
    this.deps.buffer.push({ type: EventType.unsubscribe, recipientId, at: Date.now(), machine: false })
  }
}

/**
 * Appends one parameter without re-serialising the URL (URLSearchParams would re-encode the
 * existing query), before any fragment, so the destination is the signed URL plus our parameter.
 */
export function withParam(url: string, name: string, value: string): string {
  const hash = url.indexOf('#')
  const head = hash >= 0 ? url.slice(0, hash) : url
  const tail = hash >= 0 ? url.slice(hash) : ''
  const sep = head.includes('?') ? (head.endsWith('?') || head.endsWith('&') ? '' : '&') : '?'
  return `${head}${sep}${name}=${value}${tail}`
}
