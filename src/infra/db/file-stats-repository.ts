import { sql } from 'drizzle-orm'
import type { Database } from './client'

export interface MimeStatusTotal {
  mimeType: string
  status: string
  versions: number
  bytes: number
}

export interface OwnerUsageRow {
  ownerId: string
  versions: number
  bytes: number
  /** Declared sizes of the owner's open upload sessions (the quota reserves them). */
  reservedBytes: number
}

export interface PipelineRunsRow {
  outcome: string
  code: string
  step: string
  runs: number
}

export interface OpenSessions {
  sessions: number
  declaredBytes: number
  receivedBytes: number
}

/** Serialises compactions across instances (arbitrary constant, like the migration lock). */
const COMPACT_LOCK_ID = 727_002
/** Hourly pipeline rows older than this are dropped: the widest window read is 30 days. */
const PIPELINE_KEEP_DAYS = 31

/**
 * The file figures: totals kept by triggers (see schema/file-stats.ts), never an aggregate over
 * files or versions. Every read here touches a handful of rows or an index range.
 */
export class FileStatsRepository {
  constructor(private readonly db: Database) {}

  /**
   * Folds the appended deltas into the totals, one compaction at a time. Its cost is the number of
   * changes since the last one, not the number of files.
   */
  async compact(): Promise<number> {
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${COMPACT_LOCK_ID})`)
      const result = await tx.execute<{ moved: string }>(sql`
        with moved as (delete from file_stat_deltas returning *),
        totals as (
          insert into file_stat_totals as t (mime_type, status, versions, bytes)
          select mime_type, status, sum(versions), sum(bytes) from moved where mime_type is not null group by 1, 2
          on conflict (mime_type, status) do update set versions = t.versions + excluded.versions, bytes = t.bytes + excluded.bytes
        ),
        statuses as (
          insert into file_status_totals as t (status, files)
          select status, sum(files) from moved where files <> 0 group by 1
          on conflict (status) do update set files = t.files + excluded.files
        ),
        owners as (
          insert into file_owner_usage as t (owner_id, versions, bytes)
          select owner_id, sum(versions), sum(bytes) from moved where owner_id is not null and status is distinct from 'failed' group by 1
          on conflict (owner_id) do update set versions = t.versions + excluded.versions, bytes = t.bytes + excluded.bytes
        ),
        runs as (
          insert into file_pipeline_hourly as t (hour, outcome, code, step, runs)
          select date_trunc('hour', at, 'UTC'), outcome, coalesce(code, ''), coalesce(step, ''), count(*) from moved where outcome is not null group by 1, 2, 3, 4
          on conflict (hour, outcome, code, step) do update set runs = t.runs + excluded.runs
        )
        select count(*) as moved from moved`)
      // Owners who no longer store anything leave the table (an index range on bytes = 0), so it stays
      // as small as the set of owners with files.
      await tx.execute(sql`delete from file_owner_usage where bytes = 0 and versions = 0`)
      await tx.execute(sql`delete from file_pipeline_hourly where hour < now() - make_interval(days => ${PIPELINE_KEEP_DAYS})`)
      return Number(result.rows[0]?.moved ?? 0)
    })
  }

  async totals(): Promise<{ versions: MimeStatusTotal[]; files: { status: string; files: number }[] }> {
    const [versions, files] = await Promise.all([
      this.db.execute<{ mime_type: string; status: string; versions: string; bytes: string }>(sql`select mime_type, status, versions, bytes from file_stat_totals where versions <> 0 or bytes <> 0`),
      this.db.execute<{ status: string; files: string }>(sql`select status, files from file_status_totals where files <> 0`),
    ])
    return {
      versions: versions.rows.map((r) => ({ mimeType: r.mime_type, status: r.status, versions: Number(r.versions), bytes: Number(r.bytes) })),
      files: files.rows.map((r) => ({ status: r.status, files: Number(r.files) })),
    }
  }

  /** Runs that finished in the last `hours` hourly buckets (UTC), the current one included. */
  async pipelineRuns(hours: number): Promise<PipelineRunsRow[]> {
    const result = await this.db.execute<{ outcome: string; code: string; step: string; runs: string }>(sql`
      select outcome, code, step, sum(runs) as runs from file_pipeline_hourly
      where hour >= date_trunc('hour', now(), 'UTC') - make_interval(hours => ${hours - 1})
      group by 1, 2, 3`)
    return result.rows.map((r) => ({ outcome: r.outcome, code: r.code, step: r.step, runs: Number(r.runs) }))
  }

  /** The owners storing the most, from the usage index, with their open sessions' reservations. */
  async topOwners(limit: number): Promise<OwnerUsageRow[]> {
    const result = await this.db.execute<{ owner_id: string; versions: string; bytes: string; reserved: string }>(sql`
      select u.owner_id, u.versions, u.bytes,
        (select coalesce(sum(s.size), 0) from upload_sessions s
         where s.owner_id = u.owner_id and s.status in ('uploading', 'completing') and s.expires_at > now()) as reserved
      from (select owner_id, versions, bytes from file_owner_usage order by bytes desc, owner_id limit ${limit}) u
      order by u.bytes desc, u.owner_id`)
    return result.rows.map((r) => ({ ownerId: r.owner_id, versions: Number(r.versions), bytes: Number(r.bytes), reservedBytes: Number(r.reserved) }))
  }

  /** Chunked sessions still receiving parts (upload_sessions_status_expires_idx), and the parts they hold. */
  async openSessions(): Promise<OpenSessions> {
    const result = await this.db.execute<{ sessions: string; declared: string; received: string }>(sql`
      with open as (
        select id, size from upload_sessions where status in ('uploading', 'completing') and expires_at > now()
      )
      select (select count(*) from open) as sessions,
             (select coalesce(sum(size), 0) from open) as declared,
             (select coalesce(sum(p.size), 0) from upload_session_parts p join open o on o.id = p.session_id) as received`)
    const row = result.rows[0]
    return { sessions: Number(row?.sessions ?? 0), declaredBytes: Number(row?.declared ?? 0), receivedBytes: Number(row?.received ?? 0) }
  }
}
