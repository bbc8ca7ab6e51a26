/**
 * How much background work is waiting, for metrics. One round trip of five index-backed lookups
 * (or counters kept anyway), answered from memory for `ttlMs`: a scrape every few seconds, or
 * several scrapers, cost one query per interval, and concurrent reads share the query in flight.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { TtlMemo } from './ttl-memo'

export interface QueueDepthSnapshot {
  /** Recipients of sending or paused campaigns not sent yet: the sum of the campaigns' `queued` counters. */
  campaignRecipients: number
  /** Transactional emails queued whose send time has come (emails_due_idx). */
  scheduledEmailsDue: number
  /** Stored provider webhook events not applied yet (the partial webhook_events_due_idx). */
  webhookEvents: number
  /** Processing steps waiting to run, retries included (file_processing_steps_due_idx). */
  fileSteps: number
  /** Outgoing webhook deliveries waiting to be sent or retried (the partial webhook_deliveries_due_idx). */
  webhookDeliveries: number
}

const DEFAULT_TTL_MS = 5_000

export class QueueDepths {
  private readonly memo: TtlMemo

  constructor(
    private readonly db: Database,
    ttlMs = DEFAULT_TTL_MS,
  ) {
    this.memo = new TtlMemo(ttlMs)
  }

  read(): Promise<QueueDepthSnapshot> {
    return this.memo.get('depths', () => this.query())
  }

  private async query(): Promise<QueueDepthSnapshot> {
    const result = await this.db.execute<{ campaign_recipients: string; emails_due: string; webhook_events: string; file_steps: string; webhook_deliveries: string }>(sql`
      select
        (select coalesce(sum(s.queued), 0) from campaigns c join campaign_stats s on s.campaign_id = c.id where c.status in ('sending', 'paused')) as campaign_recipients,
        (select count(*) from emails where status = 'queued' and send_at <= now()) as emails_due,
        (select count(*) from webhook_events where status = 'pending') as webhook_events,
        (select count(*) from file_processing_steps where status = 'pending') as file_steps,
        (select count(*) from webhook_deliveries where status = 'pending') as webhook_deliveries`)
    const row = result.rows[0]
    return {
      campaignRecipients: Number(row?.campaign_recipients ?? 0),
      scheduledEmailsDue: Number(row?.emails_due ?? 0),
      webhookEvents: Number(row?.webhook_events ?? 0),
      fileSteps: Number(row?.file_steps ?? 0),
      webhookDeliveries: Number(row?.webhook_deliveries ?? 0),
    }
  }
}
