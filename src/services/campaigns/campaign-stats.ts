/**
 * Campaign stats: one row of counters per campaign, read by primary key, pushed to subscribers at
 * most once a second (and at once when the campaign changes state). The once-a-second gate is a
 * Redis key when Redis is configured, so all instances together respect it, and the event bus
 * carries each push to subscribers on every instance.
 */
import { eq, sql } from 'drizzle-orm'
import type { Cluster, Redis } from 'ioredis'
import type { Database } from '../../infra/db/client'
import { campaigns, campaignStats } from '../../infra/db/schema/campaigns'
import type { CacheService } from '../cache/cache-service'

export type CampaignStatus = (typeof campaigns.$inferSelect)['status']

export interface CampaignStatsSnapshot {
  campaignId: string
  status: CampaignStatus
  pauseReason: string | null
  total: number
  queued: number
  sent: number
  delivered: number
  bounced: number
  complained: number
  failed: number
  suppressed: number
  unsubscribed: number
  uniqueOpens: number
  uniqueClicks: number
  conversions: number
  deliveryRate: number
  bounceRate: number
  complaintRate: number
  openRate: number
  clickRate: number
  conversionRate: number
  updatedAt: Date | string
}

export function campaignStatsTopic(campaignId: string): string {
  return `campaign-stats/${encodeURIComponent(campaignId)}`
}

const ratio = (part: number, whole: number) => (whole > 0 ? Math.round((part / whole) * 10_000) / 10_000 : 0)

export async function loadCampaignStats(db: Database, campaignId: string): Promise<CampaignStatsSnapshot | null> {
  const [row] = await db
    .select({ campaign: { id: campaigns.id, status: campaigns.status, pauseReason: campaigns.pauseReason, updatedAt: campaigns.updatedAt }, stats: campaignStats })
    .from(campaigns)
    .leftJoin(campaignStats, eq(campaignStats.campaignId, campaigns.id))
    .where(eq(campaigns.id, campaignId))
  if (!row) return null
  const s = row.stats
  const n = (v: number | undefined) => v ?? 0
  const sent = n(s?.sent)
  const updatedAt = s && s.updatedAt > row.campaign.updatedAt ? s.updatedAt : row.campaign.updatedAt
  return {
    campaignId,
    status: row.campaign.status,
    pauseReason: row.campaign.pauseReason,
    total: n(s?.total),
    queued: n(s?.queued),
    sent,
    delivered: n(s?.delivered),
    bounced: n(s?.bounced),
    complained: n(s?.complained),
    failed: n(s?.failed),
    suppressed: n(s?.suppressed),
    unsubscribed: n(s?.unsubscribed),
    uniqueOpens: n(s?.uniqueOpens),
    uniqueClicks: n(s?.uniqueClicks),
    conversions: n(s?.conversions),
    // Every rate is over emails the provider accepted: the one denominator that never moves backwards.
    deliveryRate: ratio(n(s?.delivered), sent),
    bounceRate: ratio(n(s?.bounced), sent),
    complaintRate: ratio(n(s?.complained), sent),
    openRate: ratio(n(s?.uniqueOpens), sent),
    clickRate: ratio(n(s?.uniqueClicks), sent),
    conversionRate: ratio(n(s?.conversions), sent),
    updatedAt,
  }
}

/** Grants one push per key per window; returns 0 when granted, else the milliseconds left. */
export interface PushGate {
  tryAcquire(key: string, windowMs: number): Promise<number>
}

export function createPushGate(redis: Redis | Cluster | null, keyPrefix = ''): PushGate {
  const local = new Map<string, number>()
  const tryLocal = (key: string, windowMs: number) => {
    const now = Date.now()
    const until = local.get(key) ?? 0
    if (until > now) return until - now
    local.set(key, now + windowMs)
    if (local.size > 10_000) for (const [k, v] of local) if (v <= now) local.delete(k)
    return 0
  }
  return {
    async tryAcquire(key, windowMs) {
      if (!redis) return tryLocal(key, windowMs)
      try {
        const fullKey = `${keyPrefix}${key}`
        if ((await redis.set(fullKey, '1', 'PX', windowMs, 'NX')) === 'OK') return 0
        const left = await redis.pttl(fullKey)
        return left > 0 ? left : 1
      } catch {
        return tryLocal(key, windowMs)
      }
    },
  }
}

/**
 * Lock order of the counters. A transaction that moves several campaigns' rows takes them in
 * campaign id order, after the campaign row (when it takes it) and the recipient rows it locks (in
 * id order when several), and before contacts, so two such transactions never wait on each other
 * in a cycle. An `update ... from unnest(...)` locks rows in whatever order its plan visits them,
 * so it runs after this explicit lock.
 */
export async function lockCampaignStats(db: Database, campaignIds: Iterable<string>): Promise<void> {
  const ids = [...new Set(campaignIds)]
  // One row has no order to get wrong: its update locks it.
  if (ids.length < 2) return
  await db.execute(sql`select 1 from campaign_stats where campaign_id = any(${sql.param(ids)}::uuid[]) order by campaign_id for no key update`)
}

export interface StatsPublisherDeps {
  db: Database
  publish: (topic: string, payload: unknown) => Promise<void>
  gate: PushGate
  intervalMs?: number
  logger?: { warn(obj: Record<string, unknown>, msg?: string): void }
  /**
   * Snapshots read by resolvers (a namespace of the app cache), dropped on every change signalled
   * here. So every statement that moves a campaign_stats row, or a campaign's status, must end in
   * changed() or stateChanged() after its commit; writers that touch several campaigns at once
   * (suppressAddress) return the ids for that.
   */
  cache?: CacheService
}

/**
 * A safety net, not the freshness mechanism: every change signalled to the publisher drops the
 * snapshot at once. The TTL bounds what a missed signal can cost: an invalidation lost while Redis
 * was down or a bus message dropped, or a write made outside this code (a manual SQL fix).
 */
const STATS_CACHE_TTL = 5
const statsTag = (campaignId: string) => `campaign-stats:${campaignId}`

/** The cache view for StatsPublisherDeps.cache: a second publisher (a test's dispatcher, say) must share it, or its changes drop nothing the app reads. */
export function campaignStatsCache(cache: CacheService): CacheService {
  return cache.namespace('campaign-stats')
}

export class CampaignStatsPublisher {
  private readonly intervalMs: number
  /** Campaigns with a trailing push scheduled: later changes ride along with it. */
  private readonly pending = new Map<string, NodeJS.Timeout>()
  /** Invalidations still on their way to Redis: a read on this instance waits for them, so it sees its own writes. */
  private readonly forgetting = new Map<string, Promise<void>>()
  private closed = false

  constructor(private readonly deps: StatsPublisherDeps) {
    this.intervalMs = deps.intervalMs ?? 1_000
  }

  /** The current snapshot, through the cache when there is one. */
  async snapshot(campaignId: string): Promise<CampaignStatsSnapshot | null> {
    const cache = this.deps.cache
    if (!cache) return loadCampaignStats(this.deps.db, campaignId)
    const forgetting = this.forgetting.get(campaignId)
    if (forgetting) await forgetting
    const load = async () => (await loadCampaignStats(this.deps.db, campaignId)) ?? undefined
    // No grace: a stale snapshot must never outlive the TTL, whatever CACHE_GRACE says.
    return (await cache.getMultiLevel(campaignId, load, { ttlSeconds: STATS_CACHE_TTL, graceSeconds: 0, tags: [statsTag(campaignId)] })) ?? null
  }

  /**
   * A tag, not a delete: tag versions are read before a load, so a read racing this change is never
   * cached as fresh, and the bus carries the new version to every instance. When Redis refuses the
   * tag, the local copy is deleted at least, and the TTL bounds what other instances may still show.
   */
  private forget(campaignId: string): Promise<void> {
    const cache = this.deps.cache
    if (!cache) return Promise.resolve()
    const forgotten = cache
      .invalidateTags([statsTag(campaignId)])
      .then(
        () => {},
        async (err: unknown) => {
          this.deps.logger?.warn({ err, campaignId }, 'campaign stats snapshot not invalidated; it may be behind for up to its TTL')
          await cache.del(campaignId).catch(() => 0)
        },
      )
      .finally(() => {
        if (this.forgetting.get(campaignId) === forgotten) this.forgetting.delete(campaignId)
      })
    this.forgetting.set(campaignId, forgotten)
    return forgotten
  }

  /**
   * Counters moved: the cached snapshot is dropped (the promise settles once it is, and never
   * rejects), and subscribers hear now if this second's push is still free, otherwise once it is.
   */
  changed(campaignId: string): Promise<void> {
    const forgotten = this.forget(campaignId)
    this.schedulePush(campaignId)
    return forgotten
  }

  /** changed() for each campaign a statement touched. */
  async changedMany(campaignIds: Iterable<string>): Promise<void> {
    await Promise.all([...new Set(campaignIds)].map((id) => this.changed(id)))
  }

  /** The campaign changed state (sending, paused, sent...): subscribers hear at once. */
  stateChanged(campaignId: string): Promise<void> {
    const forgotten = this.forget(campaignId)
    if (this.closed) return forgotten
    return forgotten.then(() => this.push(campaignId))
  }

  private schedulePush(campaignId: string): void {
    if (this.closed || this.pending.has(campaignId)) return
    void this.deps.gate.tryAcquire(`campaign-stats:${campaignId}`, this.intervalMs).then((waitMs) => {
      if (waitMs <= 0) return this.push(campaignId)
      if (this.closed || this.pending.has(campaignId)) return
      const timer = setTimeout(() => {
        this.pending.delete(campaignId)
        this.schedulePush(campaignId)
      }, waitMs)
      timer.unref()
      this.pending.set(campaignId, timer)
    })
  }

  close(): void {
    this.closed = true
    for (const timer of this.pending.values()) clearTimeout(timer)
    this.pending.clear()
  }

  private async push(campaignId: string): Promise<void> {
    try {
      const snapshot = await loadCampaignStats(this.deps.db, campaignId)
      if (snapshot) await this.deps.publish(campaignStatsTopic(campaignId), snapshot)
    } catch (err) {
      // Stats are advisory: a failed push must never fail the send that triggered it.
      this.deps.logger?.warn({ err, campaignId }, 'campaign stats push failed')
    }
  }
}
