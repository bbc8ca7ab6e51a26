/**
 * Rollup increments gathered in memory and written as one upsert per table, in key order, so
 * concurrent writers lock rollup rows in the same order and never deadlock on them.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { minuteOf, utcDayOf, type EventTypeCode } from './event-types'

export interface RollupDelta {
  count?: number
  machine?: number
  uniques?: number
  humanUniques?: number
}

interface Row {
  campaignId: string
  bucket: number
  type: number
  count: number
  machine: number
  uniques: number
  humanUniques: number
}

const DAY_MS = 86_400_000

export class RollupTally {
  private readonly rows = new Map<string, Row>()
  /** Per UTC day number (days since the epoch) and type. */
  private readonly daily = new Map<number, { day: number; type: number; count: number }>()

  add(campaignId: string, atMs: number, type: EventTypeCode, delta: RollupDelta): void {
    const bucket = minuteOf(atMs)
    // Any unique key will do: rows are put in key order when written (byKey).
    const key = `${campaignId}|${bucket}|${type}`
    let row = this.rows.get(key)
    if (!row) this.rows.set(key, (row = { campaignId, bucket, type, count: 0, machine: 0, uniques: 0, humanUniques: 0 }))
    row.count += delta.count ?? 0
    row.machine += delta.machine ?? 0
    row.uniques += delta.uniques ?? 0
    row.humanUniques += delta.humanUniques ?? 0
    if (delta.count) {
      const day = Math.floor(atMs / DAY_MS)
      // Type codes are below 100 (event-types.ts).
      const dayKey = day * 100 + type
      const d = this.daily.get(dayKey)
      if (d) d.count += delta.count
      else this.daily.set(dayKey, { day, type, count: delta.count })
    }
  }

  get size(): number {
    return this.rows.size
  }

  async writeRollups(db: Database): Promise<void> {
    const rows = [...this.rows.values()].sort(byKey)
    if (rows.length === 0) return
    await db.execute(sql`
      insert into campaign_event_rollups (campaign_id, bucket, type, count, machine, uniques, human_uniques)
      select * from unnest(
        ${sql.param(rows.map((r) => r.campaignId))}::uuid[], ${sql.param(rows.map((r) => new Date(r.bucket).toISOString()))}::timestamptz[],
        ${sql.param(rows.map((r) => r.type))}::smallint[], ${sql.param(rows.map((r) => r.count))}::int[], ${sql.param(rows.map((r) => r.machine))}::int[],
        ${sql.param(rows.map((r) => r.uniques))}::int[], ${sql.param(rows.map((r) => r.humanUniques))}::int[])
      on conflict (campaign_id, bucket, type) do update set
        count = campaign_event_rollups.count + excluded.count,
        machine = campaign_event_rollups.machine + excluded.machine,
        uniques = campaign_event_rollups.uniques + excluded.uniques,
        human_uniques = campaign_event_rollups.human_uniques + excluded.human_uniques`)
  }

  /** Last in a transaction: these few rows are shared by every campaign, so their locks are held shortest there. */
  async writeDaily(db: Database): Promise<void> {
    const days = [...this.daily.entries()].sort(([a], [b]) => a - b).map(([, d]) => d)
    if (days.length === 0) return
    await db.execute(sql`
      insert into email_daily_rollups (day, type, count)
      select * from unnest(${sql.param(days.map((d) => utcDayOf(d.day * DAY_MS)))}::date[], ${sql.param(days.map((d) => d.type))}::smallint[], ${sql.param(days.map((d) => d.count))}::bigint[])
      on conflict (day, type) do update set count = email_daily_rollups.count + excluded.count`)
  }
}

/** Campaign, then minute, then type: the order every writer locks rollup rows in. */
function byKey(a: Row, b: Row): number {
  if (a.campaignId !== b.campaignId) return a.campaignId < b.campaignId ? -1 : 1
  return a.bucket - b.bucket || a.type - b.type
}
