import { desc, eq, gt, lt } from 'drizzle-orm'
import type { Database } from './client'
import { instances } from './schema/system'

export type InstanceRow = typeof instances.$inferSelect

export class InstanceRepository {
  constructor(private readonly db: Database) {}

  async heartbeat(row: Omit<InstanceRow, 'lastSeenAt'>): Promise<void> {
    const now = new Date()
    await this.db
      .insert(instances)
      .values({ ...row, lastSeenAt: now })
      .onConflictDoUpdate({ target: instances.id, set: { lastSeenAt: now } })
  }

  seenSince(since: Date): Promise<InstanceRow[]> {
    return this.db.select().from(instances).where(gt(instances.lastSeenAt, since)).orderBy(desc(instances.startedAt))
  }

  async remove(id: string): Promise<void> {
    await this.db.delete(instances).where(eq(instances.id, id))
  }

  /** Rows of instances that stopped without saying goodbye, after a long silence. */
  async prune(olderThan: Date): Promise<void> {
    await this.db.delete(instances).where(lt(instances.lastSeenAt, olderThan))
  }
}
