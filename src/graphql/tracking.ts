import { InvalidTokenError, ValidationError } from '../lib/errors'
import type { CampaignStatsSnapshot } from '../services/campaigns/campaign-stats'
import type { CampaignEngagement, CampaignLink, ConversionValue, EmailInfrastructureStats, EventFigures, PeriodCounts, TimelinePoint } from '../services/tracking/email-analytics'
import type { ConversionReceipt } from '../services/tracking/conversions'
import type { InboxBacklog } from '../services/tracking/webhook-inbox'
import { MAX_TIMELINE_POINTS, timelinePoints } from '../services/tracking/email-analytics'
import { builder } from './builder'
import { CampaignRef, CampaignStatsRef } from './campaigns'
import type { GraphQLContext } from './context'

/** Timeline points one request may build over all its timelines: five full ones. */
const REQUEST_TIMELINE_POINTS = 5 * MAX_TIMELINE_POINTS

const EventFiguresRef = builder.objectRef<EventFigures>('EventFigures').implement({
  description: 'Opens or clicks of a campaign, human and machine (Apple Mail Privacy Protection, proxies, link scanners, HEAD requests) apart.',
  fields: (t) => ({
    total: t.exposeInt('total', { description: 'Every event, human and machine.' }),
    human: t.exposeInt('human', { description: 'Events by people.' }),
    machine: t.exposeInt('machine', { description: 'Events by software.' }),
    unique: t.exposeInt('unique', { description: 'Recipients with at least one event.' }),
    uniqueHuman: t.exposeInt('uniqueHuman', { description: 'Recipients with at least one human event (for opens, a human click counts as one).' }),
  }),
})

const ConversionValueRef = builder.objectRef<ConversionValue>('ConversionValue').implement({
  description: 'Conversion value of a campaign in one currency.',
  fields: (t) => ({
    currency: t.exposeString('currency', { description: 'ISO 4217 code.' }),
    conversions: t.exposeInt('conversions', { description: 'Counted conversions that carried a value in this currency.' }),
    value: t.exposeFloat('value', { description: 'Their values added up.' }),
  }),
})

/** One query per snapshot, however many of its fields are selected. */
const engagementBySnapshot = new WeakMap<CampaignStatsSnapshot, Promise<CampaignEngagement>>()
function engagementOf(ctx: GraphQLContext, snapshot: CampaignStatsSnapshot): Promise<CampaignEngagement> {
  let found = engagementBySnapshot.get(snapshot)
  if (!found) engagementBySnapshot.set(snapshot, (found = ctx.services.tracking.analytics.campaignEngagement(snapshot.campaignId)))
  return found
}

builder.objectFields(CampaignStatsRef, (t) => ({
  opens: t.field({ type: EventFiguresRef, description: 'Opens from the pixel (and from Resend when its tracking is used).', resolve: async (s, _a, ctx) => (await engagementOf(ctx, s)).opens }),
  clicks: t.field({ type: EventFiguresRef, description: 'Clicks through tracked links; scanner clicks (seconds after the send, HEAD, known agents) are machine.', resolve: async (s, _a, ctx) => (await engagementOf(ctx, s)).clicks }),
  clickToOpenRate: t.float({ description: 'uniqueClicks / uniqueOpens, human only.', resolve: async (s, _a, ctx) => (await engagementOf(ctx, s)).clickToOpenRate }),
  softBounces: t.int({ description: 'Transient bounces: counted, the address is not suppressed.', resolve: async (s, _a, ctx) => (await engagementOf(ctx, s)).softBounces }),
  deliveryDelays: t.int({ description: 'Delivery delayed events (the receiving server deferred the email).', resolve: async (s, _a, ctx) => (await engagementOf(ctx, s)).deliveryDelays }),
  conversionValue: t.float({
    nullable: true,
    description: 'Total conversion value when every value is in one currency (conversionCurrency); null otherwise: see conversionValues.',
    resolve: async (s, _a, ctx) => (await engagementOf(ctx, s)).conversionValue,
  }),
  conversionCurrency: t.string({ nullable: true, description: 'The currency of conversionValue.', resolve: async (s, _a, ctx) => (await engagementOf(ctx, s)).conversionCurrency }),
  conversionValues: t.field({ type: [ConversionValueRef], description: 'Conversion value per currency, most conversions first.', resolve: async (s, _a, ctx) => (await engagementOf(ctx, s)).conversionValues }),
}))

const CampaignLinkRef = builder.objectRef<CampaignLink>('CampaignLink').implement({
  description: 'A tracked link of a campaign and its clicks.',
  fields: (t) => ({
    index: t.exposeInt('index', { description: 'Position among the tracked links of the email, from 0.' }),
    url: t.exposeString('url', { description: 'Destination (of the first click; from the template while nobody clicked).' }),
    clicks: t.exposeInt('clicks', { description: 'Every click.' }),
    humanClicks: t.exposeInt('humanClicks', { description: 'Clicks by people.' }),
    uniqueClicks: t.exposeInt('uniqueClicks', {
      description: 'Recipients who clicked this link at least once, human or machine: one each, however often they or their mail scanner clicked.',
    }),
    humanUniqueClicks: t.exposeInt('humanUniqueClicks', { description: 'Recipients with at least one human click on this link.' }),
  }),
})

const TimelineBucketEnum = builder.enumType('TimelineBucket', {
  description: 'Width of a timeline point. Days are UTC days.',
  values: {
    MINUTE: { value: 'minute', description: 'One minute (the stored resolution).' },
    FIVE_MINUTES: { value: 'fiveMinutes', description: 'Five minutes.' },
    FIFTEEN_MINUTES: { value: 'fifteenMinutes', description: 'Fifteen minutes.' },
    HOUR: { value: 'hour', description: 'One hour.' },
    DAY: { value: 'day', description: 'One UTC day.' },
  } as const,
})

const TimelinePointRef = builder.objectRef<TimelinePoint>('CampaignTimelinePoint').implement({
  description: 'Event counts of a campaign in one bucket.',
  fields: (t) => ({
    at: t.expose('at', { type: 'DateTime', description: 'Start of the bucket.' }),
    sent: t.exposeInt('sent', { description: 'Accepted by the provider.' }),
    failed: t.exposeInt('failed', { description: 'Refused by the provider, at send time or later.' }),
    delivered: t.exposeInt('delivered', { description: 'Delivered (provider events).' }),
    deliveryDelayed: t.exposeInt('deliveryDelayed', { description: 'Delivery delayed (provider events).' }),
    bounced: t.exposeInt('bounced', { description: 'Hard bounces.' }),
    softBounced: t.exposeInt('softBounced', { description: 'Soft bounces.' }),
    complained: t.exposeInt('complained', { description: 'Spam complaints.' }),
    suppressed: t.exposeInt('suppressed', { description: 'Suppressed by the provider.' }),
    opens: t.exposeInt('open', { description: 'Opens, human and machine.' }),
    humanOpens: t.exposeInt('humanOpens', { description: 'Opens by people.' }),
    clicks: t.exposeInt('click', { description: 'Clicks, human and machine.' }),
    humanClicks: t.exposeInt('humanClicks', { description: 'Clicks by people.' }),
    conversions: t.exposeInt('conversion', { description: 'Conversions.' }),
    unsubscribes: t.exposeInt('unsubscribe', { description: 'Unsubscribes.' }),
  }),
})

builder.objectFields(CampaignRef, (t) => ({
  links: t.field({
    type: [CampaignLinkRef],
    description: 'Tracked links and their clicks, in the order they appear in the email.',
    resolve: (c, _a, ctx) => ctx.services.tracking.analytics.campaignLinks(c.id),
  }),
  timeline: t.field({
    type: [TimelinePointRef],
    description: 'Counts per bucket for a chart, from the per-minute rollups; empty buckets included. At most 2,000 points, and 10,000 over all the timelines of one request.',
    args: {
      from: t.arg({ type: 'DateTime', required: true, description: 'Start (inclusive; rounded down to the bucket).' }),
      to: t.arg({ type: 'DateTime', required: true, description: 'End (exclusive).' }),
      bucket: t.arg({ type: TimelineBucketEnum, required: false, defaultValue: 'minute', description: 'Point width; default MINUTE.' }),
    },
    resolve: (c, args, ctx) => {
      const bucket = args.bucket ?? 'minute'
      const points = timelinePoints(args.from, args.to, bucket)
      const left = ctx.timelinePointsLeft ?? REQUEST_TIMELINE_POINTS
      if (points > left) throw ValidationError.field(['timeline'], `At most ${REQUEST_TIMELINE_POINTS} timeline points per request: ask for fewer timelines, a larger bucket or a shorter range`)
      ctx.timelinePointsLeft = left - points
      return ctx.services.tracking.analytics.campaignTimeline(c.id, args.from, args.to, bucket)
    },
  }),
}))

const ConversionRef = builder.objectRef<ConversionReceipt>('Conversion').implement({
  description: 'A conversion as recorded.',
  fields: (t) => ({
    campaignId: t.exposeID('campaignId', { description: 'The campaign it is attributed to.' }),
    counted: t.exposeBoolean('counted', { description: 'False when the recipient had converted already and only the first conversion counts.' }),
  }),
})

builder.mutationField('recordConversion', (t) =>
  t.field({
    type: ConversionRef,
    description:
      'Records a conversion (public: the token authenticates it). The token is the click token the click redirect added to the landing page URL (gw_click by default); a click older than the attribution window is refused.',
    errors: { types: [InvalidTokenError, ValidationError], dataField: { name: 'conversion' } },
    args: {
      token: t.arg.string({ required: true, description: 'The click token.' }),
      value: t.arg.float({ required: false, description: 'What it was worth, e.g. 49.90.' }),
      currency: t.arg.string({ required: false, description: 'ISO 4217 code of value; default TRACKING_DEFAULT_CURRENCY.' }),
    },
    resolve: (_root, args, ctx) => ctx.services.tracking.conversions.record(args.token, args.value, args.currency),
  }),
)

const PeriodCountsRef = builder.objectRef<PeriodCounts>('EmailPeriodCounts').implement({
  description: 'A count for today, the last 7 and the last 30 days (UTC days, today included).',
  fields: (t) => ({
    today: t.exposeFloat('today', { description: 'Today.' }),
    last7Days: t.exposeFloat('last7Days', { description: 'The last 7 days.' }),
    last30Days: t.exposeFloat('last30Days', { description: 'The last 30 days.' }),
  }),
})

const WebhookBacklogRef = builder.objectRef<InboxBacklog>('WebhookBacklog').implement({
  description: 'Provider webhook events stored but not applied yet.',
  fields: (t) => ({
    pending: t.exposeInt('pending', { description: 'Events waiting (including retries of events that overtook the send).' }),
    oldestPendingSeconds: t.exposeFloat('oldestPendingSeconds', { nullable: true, description: 'Age of the oldest, in seconds.' }),
  }),
})

const TrackingBufferRef = builder.objectRef<EmailInfrastructureStats['buffer']>('TrackingBuffer').implement({
  description: 'Opens and clicks held in memory by the answering instance before they are stored in batches.',
  fields: (t) => ({
    buffered: t.exposeInt('buffered', { description: 'Held now.' }),
    dropped: t.exposeFloat('dropped', { description: 'Dropped since start because the buffer was full (the database was away too long).' }),
  }),
})

export const EmailInfrastructureStatsRef = builder.objectRef<EmailInfrastructureStats>('EmailInfrastructureStats').implement({
  description: 'Campaign email at a glance, from the daily rollups and the campaign counters.',
  fields: (t) => ({
    sent: t.field({ type: PeriodCountsRef, description: 'Emails accepted by the provider.', resolve: (s) => s.sent }),
    delivered: t.field({ type: PeriodCountsRef, description: 'Emails delivered.', resolve: (s) => s.delivered }),
    failed: t.field({ type: PeriodCountsRef, description: 'Emails the provider refused.', resolve: (s) => s.failed }),
    bounced: t.field({ type: PeriodCountsRef, description: 'Hard bounces.', resolve: (s) => s.bounced }),
    complained: t.field({ type: PeriodCountsRef, description: 'Spam complaints.', resolve: (s) => s.complained }),
    deliveryRate: t.exposeFloat('deliveryRate', { description: 'Delivered / sent over the last 30 days.' }),
    campaignRecipients: t.exposeFloat('campaignRecipients', { description: 'Recipients of campaigns started in the last 30 days.' }),
    campaignRecipientsFinal: t.exposeFloat('campaignRecipientsFinal', { description: 'Of those, how many reached a final state (delivered, bounced, complained, failed or suppressed).' }),
    campaignSuccessRate: t.exposeFloat('campaignSuccessRate', { description: 'campaignRecipientsFinal / campaignRecipients.' }),
    queueDepth: t.exposeFloat('queueDepth', { description: 'Campaign recipients and due transactional emails waiting to be sent.' }),
    oldestQueuedSeconds: t.exposeFloat('oldestQueuedSeconds', { nullable: true, description: 'How long the oldest waiting email has waited, in seconds.' }),
    webhooks: t.field({ type: WebhookBacklogRef, description: 'Provider events not applied yet.', resolve: (s) => s.webhooks }),
    trackingBuffer: t.field({ type: TrackingBufferRef, description: 'Tracking hits in memory on this instance.', resolve: (s) => s.buffer }),
  }),
})
