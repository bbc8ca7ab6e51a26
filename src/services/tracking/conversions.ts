/**
 * Conversions: the app reports a purchase (or sign-up...) with the click token the redirect handed
 * it. The token says who clicked which link and when, so attribution needs no lookup: a click older
 * than the window attributes nothing. By default a recipient converts once per campaign.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { InvalidTokenError, ValidationError } from '../../lib/errors'
import type { WebhookEnqueuer } from '../webhooks/webhook-event-types'
import type { Instrumentation } from '../instrumentation'
import { Flag } from './engagement-flags'
import { EventType } from './event-types'
import { RollupTally } from './rollup-tally'
import type { TrackingTokens } from './tracking-tokens'

export interface ConversionReceipt {
  campaignId: string
  /** False when the recipient had converted already and only the first conversion counts. */
  counted: boolean
}

export interface ConversionDeps {
  db: Database
  tokens: TrackingTokens
  windowSeconds: number
  /** Count only a recipient's first conversion per campaign. */
  once: boolean
  defaultCurrency: string
  notify: (campaignId: string) => void
  /** Outgoing webhooks: `email.converted`, queued with the conversion. */
  outgoing?: WebhookEnqueuer
  instrumentation?: Pick<Instrumentation, 'conversionRecorded'>
}

const MAX_VALUE = 1e12
/** Clocks of the app and of this server may disagree a little. */
const CLOCK_SKEW_SECONDS = 300

export class ConversionService {
  constructor(private readonly deps: ConversionDeps) {}

  async record(token: string, value?: number | null, currency?: string | null): Promise<ConversionReceipt> {
    const click = this.deps.tokens.verifyConversion(token.trim())
    if (!click.ok) throw new InvalidTokenError('The click token is invalid')
    const now = Math.floor(Date.now() / 1000)
    if (click.clickedAt > now + CLOCK_SKEW_SECONDS) throw new InvalidTokenError('The click token is invalid')
    if (now - click.clickedAt > this.deps.windowSeconds) {
      throw new InvalidTokenError(`The click is older than the ${Math.round(this.deps.windowSeconds / 3600)}-hour attribution window`)
    }
    const amount = this.checkValue(value, currency)

    const receipt = await this.deps.db.transaction(async (txn) => {
      const tx = txn as unknown as Database
      const found = await tx.execute<{ campaign_id: string }>(sql`select campaign_id from campaign_recipients where id = ${click.recipientId}`)
      const campaignId = found.rows[0]?.campaign_id
      if (!campaignId) throw new InvalidTokenError('The click token is invalid')
      await tx.execute(sql`insert into recipient_engagement (recipient_id, campaign_id) values (${click.recipientId}, ${campaignId}) on conflict (recipient_id) do nothing`)
      const locked = await tx.execute<{ flags: number }>(sql`select flags from recipient_engagement where recipient_id = ${click.recipientId} for update`)
      const flags = Number(locked.rows[0]!.flags)
      const first = (flags & Flag.converted) === 0
      if (!first && this.deps.once) return { campaignId, counted: false }

      const at = Date.now()
      await tx.execute(sql`
        insert into email_events (campaign_id, recipient_id, occurred_at, type, link_index, value, currency)
        values (${campaignId}, ${click.recipientId}, ${new Date(at).toISOString()}, ${EventType.conversion}, ${click.linkIndex}, ${amount?.value ?? null}, ${amount?.currency ?? null})`)
      if (first) await tx.execute(sql`update recipient_engagement set flags = flags | ${Flag.converted} where recipient_id = ${click.recipientId}`)
      await tx.execute(sql`update campaign_stats set conversions = conversions + 1, updated_at = now() where campaign_id = ${campaignId}`)
      const tally = new RollupTally()
      tally.add(campaignId, at, EventType.conversion, { count: 1, uniques: +first, humanUniques: +first })
      await tally.writeRollups(tx)
      if (amount) {
        await tx.execute(sql`
          insert into campaign_conversion_values (campaign_id, currency, conversions, value) values (${campaignId}, ${amount.currency}, 1, ${amount.value})
          on conflict (campaign_id, currency) do update set
            conversions = campaign_conversion_values.conversions + 1, value = campaign_conversion_values.value + excluded.value`)
      }
      await tally.writeDaily(tx)
      await this.deps.outgoing?.enqueue(tx, [
        { type: 'email.converted', recipientId: click.recipientId, at, data: { value: amount ? Number(amount.value) : null, currency: amount?.currency ?? null, link_index: click.linkIndex, first } },
      ])
      return { campaignId, counted: true }
    })
    if (receipt.counted) {
      this.deps.notify(receipt.campaignId)
      this.deps.instrumentation?.conversionRecorded()
    }
    return receipt
  }

  private checkValue(value: number | null | undefined, currency: string | null | undefined): { value: string; currency: string } | null {
    if (value === null || value === undefined) {
      if (currency != null && currency.trim() !== '') throw ValidationError.field(['value'], 'A currency needs a value')
      return null
    }
    if (!Number.isFinite(value) || value < 0 || value > MAX_VALUE) throw ValidationError.field(['value'], `The value must be between 0 and ${MAX_VALUE}`)
    const code = (currency?.trim() || this.deps.defaultCurrency).toUpperCase()
    if (!/^[A-Z]{3}$/.test(code)) throw ValidationError.field(['currency'], 'The currency must be a three-letter ISO 4217 code, e.g. EUR')
    return { value: value.toFixed(2), currency: code }
  }
}
