/**
 * Read side of tracking. Every figure comes from counters and rollups, never from a scan of the
 * raw events: a campaign's totals sum its rollup rows (a few per active minute), the timeline
 * groups the same rows into buckets, and the infrastructure figures read the per-day rollups.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { ValidationError } from '../../lib/errors'
import { EVENT_TYPE_NAMES, EventType, type EventTypeCode, type EventTypeName } from './event-types'
import { templateLinks } from './link-rewriter'
import { webhookBacklog, type InboxBacklog } from './webhook-inbox'

export interface EventFigures {
  /** Events, human and machine. */
  total: number
  machine: number
  human: number
  /** Recipients with at least one such event. */
  unique: number
  /** Recipients with at least one human one. */
  uniqueHuman: number
}

export interface ConversionValue {
  currency: string
  conversions: number
  value: number
}

export interface CampaignEngagement {
  opens: EventFigures
  clicks: EventFigures
  /** Recipients with a human click among those with a human open. */
  clickToOpenRate: number
  softBounces: number
  deliveryDelays: number
  /** Conversions that carried a value, per currency. */
  conversionValues: ConversionValue[]
  /** Every value, added up only when they share one currency (null otherwise, and when there are none). */
  conversionValue: number | null
  conversionCurrency: string | null
}

export interface CampaignLink {
  index: number
  url: string
  clicks: number
  humanClicks: number
  /** Recipients who clicked this link at least once. */
  uniqueClicks: number
  /** Recipients with at least one human click on it. */
  humanUniqueClicks: number
}

export type TimelineBucket = 'minute' | 'fiveMinutes' | 'fifteenMinutes' | 'hour' | 'day'
export const BUCKET_SECONDS: Record<TimelineBucket, number> = { minute: 60, fiveMinutes: 300, fifteenMinutes: 900, hour: 3600, day: 86_400 }
export const MAX_TIMELINE_POINTS = 2_000

/** The points of a timeline from `from` (rounded down to the bucket) to `to`; a ValidationError past MAX_TIMELINE_POINTS. */
export function timelinePoints(from: Date, to: Date, bucket: TimelineBucket): number {
  const step = BUCKET_SECONDS[bucket] * 1000
  if (!(from instanceof Date) || !(to instanceof Date) || Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) {
    throw ValidationError.field(['from'], 'from and to must be dates')
  }
  if (to <= from) throw ValidationError.field(['to'], 'to must be after from')
  const points = Math.ceil((to.getTime() - Math.floor(from.getTime() / step) * step) / step)
  if (points > MAX_TIMELINE_POINTS) throw ValidationError.field(['bucket'], `At most ${MAX_TIMELINE_POINTS} points: use a larger bucket or a shorter range`)
  return points
}

export type TimelinePoint = { at: Date } & Record<EventTypeName, number> & { humanOpens: number; humanClicks: number }

export interface PeriodCounts {
  today: number
  last7Days: number
  last30Days: number
}

export interface EmailInfrastructureStats {
  sent: PeriodCounts
  delivered: PeriodCounts
  failed: PeriodCounts
  bounced: PeriodCounts
  complained: PeriodCounts
  /** Delivered ÷ sent over the last 30 days. */
  deliveryRate: number
  /** Recipients of campaigns started in the last 30 days, and those in a final state (delivered, bounced, complained, failed, suppressed). */
  campaignRecipients: number
  campaignRecipientsFinal: number
  campaignSuccessRate: number
  /** Campaign recipients and transactional emails waiting to be sent. */
  queueDepth: number
  oldestQueuedSeconds: number | null
  webhooks: InboxBacklog
  buffer: { buffered: number; dropped: number }
}

const ratio = (part: number, whole: number) => (whole > 0 ? Math.round((part / whole) * 10_000) / 10_000 : 0)
const UNSUBSCRIBE_LINK = /unsubscribeUrl/

export class EmailAnalytics {
  constructor(
    private readonly db: Database,
    private readonly bufferStats: () => { buffered: number; dropped: number } = () => ({ buffered: 0, dropped: 0 }),
  ) {}

  async campaignEngagement(campaignId: string): Promise<CampaignEngagement> {
    const [totals, values] = await Promise.all([
      this.db.execute<{ type: number; count: string; machine: string; uniques: string; human_uniques: string }>(sql`
        select type, sum(count) as count, sum(machine) as machine, sum(uniques) as uniques, sum(human_uniques) as human_uniques
        from campaign_event_rollups where campaign_id = ${campaignId} group by type`),
      this.db.execute<{ currency: string; conversions: number; value: string }>(sql`
        select currency, conversions, value from campaign_conversion_values where campaign_id = ${campaignId} order by conversions desc, currency`),
    ])
    const byType = new Map(totals.rows.map((r) => [Number(r.type), r]))
    const figures = (type: EventTypeCode): EventFigures => {
      const r = byType.get(type)
      const total = Number(r?.count ?? 0)
      const machine = Number(r?.machine ?? 0)
      return { total, machine, human: total - machine, unique: Number(r?.uniques ?? 0), uniqueHuman: Number(r?.human_uniques ?? 0) }
    }
    const opens = figures(EventType.open)
    const clicks = figures(EventType.click)
    const conversionValues = values.rows.map((r) => ({ currency: r.currency, conversions: Number(r.conversions), value: Number(r.value) }))
    const single = conversionValues.length === 1 ? conversionValues[0]! : null
    return {
      opens,
      clicks,
      clickToOpenRate: ratio(clicks.uniqueHuman, opens.uniqueHuman),
      softBounces: figures(EventType.softBounced).total,
      deliveryDelays: figures(EventType.deliveryDelayed).total,
      conversionValues,
      conversionValue: single ? single.value : null,
      conversionCurrency: single ? single.currency : null,
    }
  }

  /** The tracked links of the campaign's template in order, with their clicks; links only seen in clicks come after. */
  async campaignLinks(campaignId: string): Promise<CampaignLink[]> {
    const [template, clicked] = await Promise.all([
      this.db.execute<{ html: string }>(sql`
        select v.html from campaigns c join email_template_versions v on v.id = c.template_version_id where c.id = ${campaignId}`),
      this.db.execute<{ link_index: number; url: string; clicks: number; human_clicks: number; unique_clicks: number; human_unique_clicks: number }>(sql`
        select link_index, url, clicks, human_clicks, unique_clicks, human_unique_clicks from campaign_link_clicks where campaign_id = ${campaignId} order by link_index`),
    ])
    const html = template.rows[0]?.html
    const links = new Map<number, CampaignLink>()
    if (html) {
      templateLinks(html, (url) => UNSUBSCRIBE_LINK.test(url)).forEach((url, index) => links.set(index, { index, url, clicks: 0, humanClicks: 0, uniqueClicks: 0, humanUniqueClicks: 0 }))
    }
    for (const r of clicked.rows) {
      const index = Number(r.link_index)
      links.set(index, {
        index,
        url: r.url,
        clicks: Number(r.clicks),
        humanClicks: Number(r.human_clicks),
        uniqueClicks: Number(r.unique_clicks),
        humanUniqueClicks: Number(r.human_unique_clicks),
      })
    }
    return [...links.values()].sort((a, b) => a.index - b.index)
  }

  /** Per-bucket counts between `from` (inclusive) and `to` (exclusive), empty buckets included, for a chart. */
  async campaignTimeline(campaignId: string, from: Date, to: Date, bucket: TimelineBucket): Promise<TimelinePoint[]> {
    const step = BUCKET_SECONDS[bucket] * 1000
    const points = timelinePoints(from, to, bucket)
    const start = Math.floor(from.getTime() / step) * step
    const rows = await this.db.execute<{ at: string | Date; type: number; count: string; machine: string }>(sql`
      select date_bin(make_interval(secs => ${step / 1000}::double precision), bucket, timestamptz 'epoch') as at, type, sum(count) as count, sum(machine) as machine
      from campaign_event_rollups
      where campaign_id = ${campaignId} and bucket >= ${new Date(start).toISOString()} and bucket < ${to.toISOString()}
      group by 1, 2`)
    const series: TimelinePoint[] = Array.from({ length: points }, (_, i) => emptyPoint(new Date(start + i * step)))
    for (const r of rows.rows) {
      const point = series[Math.floor((new Date(r.at).getTime() - start) / step)]
      const name = EVENT_TYPE_NAMES[Number(r.type) as EventTypeCode]
      if (!point || !name) continue
      point[name] += Number(r.count)
      if (name === 'open') point.humanOpens += Number(r.count) - Number(r.machine)
      if (name === 'click') point.humanClicks += Number(r.count) - Number(r.machine)
    }
    return series
  }

  /** Cheap figures for infrastructureStats.email: the daily rollups, the campaign counters and two index lookups. */
  async infrastructureStats(): Promise<EmailInfrastructureStats> {
    const [daily, campaigns, queue, webhooks] = await Promise.all([
      this.db.execute<{ type: number; today: string; d7: string; d30: string }>(sql`
        select type,
          sum(count) filter (where day = (now() at time zone 'utc')::date) as today,
          sum(count) filter (where day > (now() at time zone 'utc')::date - 7) as d7,
          sum(count) as d30
        from email_daily_rollups
        where day > (now() at time zone 'utc')::date - 30
        group by type`),
      this.db.execute<{ total: string; final: string }>(sql`
        select coalesce(sum(s.total), 0) as total,
               coalesce(sum(s.delivered + s.bounced + s.failed + s.suppressed), 0) as final
        from campaigns c join campaign_stats s on s.campaign_id = c.id
        where c.started_at > now() - interval '30 days'`),
      this.db.execute<{ campaign_queued: string; campaign_oldest: string | null; emails_queued: string; emails_oldest: string | null }>(sql`
        select
          (select coalesce(sum(s.queued), 0) from campaigns c join campaign_stats s on s.campaign_id = c.id where c.status in ('sending', 'paused')) as campaign_queued,
          (select extract(epoch from now() - min(c.started_at)) from campaigns c join campaign_stats s on s.campaign_id = c.id where c.status in ('sending', 'paused') and s.queued > 0) as campaign_oldest,
          (select count(*) from emails where status = 'queued' and send_at <= now()) as emails_queued,
          (select extract(epoch from now() - min(send_at)) from emails where status = 'queued' and send_at <= now()) as emails_oldest`),
      webhookBacklog(this.db),
    ])
    const period = (type: EventTypeCode): PeriodCounts => {
      const r = daily.rows.find((row) => Number(row.type) === type)
      return { today: Number(r?.today ?? 0), last7Days: Number(r?.d7 ?? 0), last30Days: Number(r?.d30 ?? 0) }
    }
    const sent = period(EventType.sent)
    const delivered = period(EventType.delivered)
    const total = Number(campaigns.rows[0]?.total ?? 0)
    const final = Number(campaigns.rows[0]?.final ?? 0)
    const q = queue.rows[0]
    const ages = [q?.campaign_oldest, q?.emails_oldest].filter((a): a is string => a != null).map(Number)
    return {
      sent,
      delivered,
      failed: period(EventType.failed),
      bounced: period(EventType.bounced),
      complained: period(EventType.complained),
      deliveryRate: ratio(delivered.last30Days, sent.last30Days),
      campaignRecipients: total,
      campaignRecipientsFinal: final,
      campaignSuccessRate: ratio(final, total),
      queueDepth: Number(q?.campaign_queued ?? 0) + Number(q?.emails_queued ?? 0),
      oldestQueuedSeconds: ages.length > 0 ? Math.max(...ages) : null,
      webhooks,
      buffer: this.bufferStats(),
    }
  }
}

function emptyPoint(at: Date): TimelinePoint {
  const point = { at, humanOpens: 0, humanClicks: 0 } as TimelinePoint
  for (const name of Object.keys(EventType) as EventTypeName[]) point[name] = 0
  return point
}
