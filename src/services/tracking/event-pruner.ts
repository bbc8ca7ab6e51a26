/**
 * Retention: raw events older than the configured days are deleted while the rollups stay, and
 * webhook rows are deleted once they are too old to be replayed (the svix-id de-duplication only
 * needs the provider's retry horizon). Deletes go in small batches so they never hold long locks
 * or bloat one transaction.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'

export interface PrunerOptions {
  /** 0 keeps raw events forever. */
  eventRetentionDays: number
  webhookRetentionDays: number
  intervalMs: number
  batchSize?: number
  logger?: { info(obj: Record<string, unknown>, msg?: string): void; warn(obj: Record<string, unknown>, msg?: string): void }
}

export interface PruneResult {
  events: number
  webhooks: number
}

export class EventPruner {
  private timer: NodeJS.Timeout | null = null
  private running: Promise<PruneResult> | null = null

  constructor(private readonly db: Database, private readonly options: PrunerOptions) {}

  start(): void {
    if (this.timer) return
    this.timer = setInterval(() => {
      this.pruneOnce().catch((err: unknown) => this.options.logger?.warn({ err }, 'pruning tracking events failed'))
    }, this.options.intervalMs)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    await this.running?.catch(() => undefined)
  }

  /** Deletes what is past retention, as of `now`. */
  pruneOnce(now: Date = new Date()): Promise<PruneResult> {
    this.running ??= this.prune(now).finally(() => {
      this.running = null
    })
    return this.running
  }

  private async prune(now: Date): Promise<PruneResult> {
    const batch = this.options.batchSize ?? 10_000
    const result: PruneResult = { events: 0, webhooks: 0 }
    if (this.options.eventRetentionDays > 0) {
      const cutoff = new Date(now.getTime() - this.options.eventRetentionDays * 86_400_000).toISOString()
      result.events = await this.deleteInBatches(
        (limit) => sql`delete from email_events where ctid = any(array(select ctid from email_events where occurred_at < ${cutoff} limit ${limit})) returning 1`,
        batch,
      )
    }
    const webhookCutoff = new Date(now.getTime() - this.options.webhookRetentionDays * 86_400_000).toISOString()
    result.webhooks = await this.deleteInBatches(
      (limit) => sql`delete from webhook_events where id = any(array(
        select id from webhook_events where received_at < ${webhookCutoff} and status <> 'pending' limit ${limit})) returning 1`,
      batch,
    )
    if (result.events + result.webhooks > 0) this.options.logger?.info({ ...result }, 'pruned tracking events past retention')
    return result
  }

  private async deleteInBatches(statement: (limit: number) => ReturnType<typeof sql>, limit: number): Promise<number> {
    let total = 0
    for (;;) {
      const deleted = await this.db.execute(statement(limit))
      // rows, not rowCount: PGlite reports the count under another name.
      const n = deleted.rows.length
      total += n
      if (n < limit) return total
    }
  }
}
