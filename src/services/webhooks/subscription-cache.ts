/**
 * Which event types any enabled endpoint wants, remembered in process so that an event nobody
 * subscribed to costs no query: most installations have no endpoint at all, and delivery events
 * are applied one transaction each.
 *
 * A stale "yes" is harmless (the enqueue statement finds no endpoint and inserts nothing); a stale
 * "no" would lose events. So every endpoint change clears the snapshot here at once and, through
 * the event bus (Redis pub/sub with several instances), on the other instances; the TTL bounds the
 * damage of a lost bus message.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'

interface Snapshot {
  /** Some enabled endpoint has an empty type list, i.e. wants every type. */
  all: boolean
  types: ReadonlySet<string>
  loadedAt: number
}

export class SubscriptionCache {
  private snapshot: Snapshot | null = null
  /** Bumped by every invalidation: a load that started before one must not store its answer. */
  private generation = 0

  constructor(private readonly ttlMs = 30_000) {}

  /** The types among `types` that some enabled endpoint wants; read through `db`, which may be the caller's transaction. */
  async wanted(db: Database, types: readonly string[]): Promise<Set<string>> {
    let snapshot = this.snapshot
    if (!snapshot || Date.now() - snapshot.loadedAt > this.ttlMs) snapshot = await this.load(db)
    return new Set(types.filter((t) => snapshot.all || snapshot.types.has(t)))
  }

  invalidate(): void {
    this.generation++
    this.snapshot = null
  }

  private async load(db: Database): Promise<Snapshot> {
    const generation = this.generation
    const result = await db.execute<{ type: string }>(sql`
      select distinct coalesce(t.type, '*') as type
      from webhook_endpoints e left join lateral unnest(e.event_types) as t(type) on true
      where e.enabled`)
    const types = new Set(result.rows.map((r) => r.type))
    const snapshot: Snapshot = { all: types.has('*'), types, loadedAt: Date.now() }
    if (generation === this.generation) this.snapshot = snapshot
    return snapshot
  }
}
