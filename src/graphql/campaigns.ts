import type { CampaignTag } from '../infra/db/schema/campaigns'
import { ConflictError, NotFoundError, ValidationError } from '../lib/errors'
import type { CampaignRecipientRow, CampaignRow } from '../services/campaigns/campaign-service'
import { campaignStatsTopic, type CampaignStatsSnapshot } from '../services/campaigns/campaign-stats'
import { AudienceRef } from './audiences'
import { builder } from './builder'
import { asResult, CAMPAIGN_ERRORS, resultTypeResolver } from './campaign-errors'
import { connectionOf, decodeCursor, encodeCursor, paginate, timeCursor, timeCursorOf } from './connection'
import type { GraphQLContext } from './context'
import { EmailTemplateRef, EmailTemplateVersionRef } from './email-templates'

const CampaignStatusEnum = builder.enumType('CampaignStatus', {
  description: 'Where a campaign is in its life cycle.',
  values: {
    DRAFT: { value: 'draft', description: 'Being prepared.' },
    SCHEDULED: { value: 'scheduled', description: 'Starts at sendAt (after a restart too).' },
    SENDING: { value: 'sending', description: 'Recipients are being sent to.' },
    PAUSED: { value: 'paused', description: 'Stopped for now; see pauseReason. resumeCampaign continues.' },
    SENT: { value: 'sent', description: 'Every recipient was sent to, failed or was suppressed.' },
    CANCELLED: { value: 'cancelled', description: 'Stopped for good.' },
  } as const,
})

const RecipientStatusEnum = builder.enumType('CampaignRecipientStatus', {
  description: 'Where one recipient of a campaign is.',
  values: {
    QUEUED: { value: 'queued', description: 'Waiting to be sent (also between retries after a 429 or 5xx).' },
    SENDING: { value: 'sending', description: 'In a batch being sent.' },
    ACCEPTED: { value: 'accepted', description: 'Accepted by the provider; providerId is set.' },
    DELIVERED: { value: 'delivered', description: 'Delivered to the mailbox.' },
    BOUNCED: { value: 'bounced', description: 'Bounced.' },
    COMPLAINED: { value: 'complained', description: 'Marked as spam.' },
    FAILED: { value: 'failed', description: 'Refused by the provider or not renderable; see reason. retryFailedRecipients re-queues these.' },
    SUPPRESSED: { value: 'suppressed', description: 'On the suppression list: not sent.' },
  } as const,
})

export const CampaignStatsRef = builder.objectRef<CampaignStatsSnapshot>('CampaignStats').implement({
  description: 'Counters of one campaign, kept incrementally. Rates are fractions (0-1) of the emails sent.',
  fields: (t) => ({
    campaignId: t.exposeID('campaignId', { description: 'The campaign.' }),
    status: t.field({ type: CampaignStatusEnum, description: 'Its status.', resolve: (s) => s.status }),
    pauseReason: t.exposeString('pauseReason', { nullable: true, description: 'Why it is paused, when it is.' }),
    total: t.exposeInt('total', { description: 'Recipients after de-duplication, suppressed ones included.' }),
    queued: t.exposeInt('queued', { description: 'Not yet sent (queued or in flight).' }),
    sent: t.exposeInt('sent', { description: 'Accepted by the provider.' }),
    delivered: t.exposeInt('delivered', { description: 'Delivered (from provider events).' }),
    bounced: t.exposeInt('bounced', { description: 'Bounced (from provider events).' }),
    complained: t.exposeInt('complained', { description: 'Marked as spam (from provider events).' }),
    failed: t.exposeInt('failed', { description: 'Refused by the provider or not renderable.' }),
    suppressed: t.exposeInt('suppressed', { description: 'Left out because of the suppression list.' }),
    unsubscribed: t.exposeInt('unsubscribed', { description: 'Unsubscribed through this campaign\'s link.' }),
    uniqueOpens: t.exposeInt('uniqueOpens', { description: 'Recipients who opened, by a human: machine opens (Apple Mail Privacy Protection, scanners) left out, a human click counted as an open. All opens: `opens`.' }),
    uniqueClicks: t.exposeInt('uniqueClicks', { description: 'Recipients who clicked, by a human: scanner clicks left out. All clicks: `clicks`.' }),
    conversions: t.exposeInt('conversions', { description: 'Conversions counted (by default one per recipient; see TRACKING_CONVERSION_ONCE).' }),
    deliveryRate: t.exposeFloat('deliveryRate', { description: 'delivered / sent: delivered over accepted by the provider.' }),
    bounceRate: t.exposeFloat('bounceRate', { description: 'bounced / sent.' }),
    complaintRate: t.exposeFloat('complaintRate', { description: 'complained / sent.' }),
    openRate: t.exposeFloat('openRate', { description: 'uniqueOpens / sent (human opens).' }),
    clickRate: t.exposeFloat('clickRate', { description: 'uniqueClicks / sent (human clicks).' }),
    conversionRate: t.exposeFloat('conversionRate', { description: 'conversions / sent.' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'When a counter or the status last changed.' }),
  }),
})

const CampaignRecipientRef = builder.objectRef<CampaignRecipientRow>('CampaignRecipient').implement({
  description: 'One recipient of a campaign and its delivery state.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Recipient id.' }),
    email: t.exposeString('email', { description: 'The address.' }),
    name: t.exposeString('name', { nullable: true, description: 'The name at the time the campaign started.' }),
    contactId: t.exposeID('contactId', { nullable: true, description: 'The contact it came from.' }),
    status: t.field({ type: RecipientStatusEnum, description: 'Delivery state.', resolve: (r) => r.status }),
    providerId: t.exposeString('providerId', { nullable: true, description: 'The provider\'s email id once accepted.' }),
    reason: t.exposeString('reason', { nullable: true, description: 'Why it failed or was suppressed.' }),
    attempts: t.exposeInt('attempts', { description: 'Send attempts of its batch.' }),
    sentAt: t.expose('sentAt', { type: 'DateTime', nullable: true, description: 'When the provider accepted it.' }),
    unsubscribedAt: t.expose('unsubscribedAt', { type: 'DateTime', nullable: true, description: 'When it used the unsubscribe link.' }),
  }),
})

const CampaignRecipientConnection = connectionOf('CampaignRecipient', CampaignRecipientRef)

const CampaignTagRef = builder.objectRef<CampaignTag>('CampaignTag').implement({
  description: 'A tag sent to the provider with every email of the campaign.',
  fields: (t) => ({
    name: t.exposeString('name', { description: 'Tag name.' }),
    value: t.exposeString('value', { description: 'Tag value.' }),
  }),
})

export const CampaignRef = builder.objectRef<CampaignRow>('Campaign').implement({
  description: 'A campaign: a template version sent to one or more audiences.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Campaign id.' }),
    name: t.exposeString('name', { description: 'Name for humans.' }),
    status: t.field({ type: CampaignStatusEnum, description: 'Life-cycle state.', resolve: (c) => c.status }),
    pauseReason: t.exposeString('pauseReason', { nullable: true, description: 'Why it is paused (auto-pause gives the rate that tripped it).' }),
    template: t.field({ type: EmailTemplateRef, description: 'The template.', resolve: (c, _a, ctx) => ctx.services.emailTemplates.getTemplate(c.templateId) }),
    templateVersion: t.field({
      type: EmailTemplateVersionRef,
      description: 'The exact version every email of this campaign is rendered from.',
      resolve: (c, _a, ctx) => ctx.services.emailTemplates.getVersionById(c.templateVersionId),
    }),
    audiences: t.field({
      type: [AudienceRef],
      description: 'The audiences it is sent to.',
      resolve: async (c, _a, ctx) => (await Promise.all(c.audienceIds.map((id) => ctx.services.audiences.findAudience(id)))).filter((a) => a !== null),
    }),
    from: t.exposeString('from', { description: 'From address.' }),
    replyTo: t.exposeString('replyTo', { nullable: true, description: 'Reply-To address.' }),
    tags: t.field({ type: [CampaignTagRef], description: 'Provider tags.', resolve: (c) => c.tags }),
    sendAt: t.expose('sendAt', { type: 'DateTime', nullable: true, description: 'When a scheduled campaign starts.' }),
    stats: t.field({ type: CampaignStatsRef, description: 'Live counters.', resolve: (c, _a, ctx) => ctx.services.campaigns.getStats(c.id) }),
    recipients: t.field({
      type: CampaignRecipientConnection,
      description: 'Recipients in the order they are sent.',
      args: {
        first: t.arg.int({ required: false, description: 'Page size, 1-100 (default 20).' }),
        after: t.arg.string({ required: false, description: 'endCursor of the previous page.' }),
        status: t.arg({ type: RecipientStatusEnum, required: false, description: 'Only this state, e.g. FAILED.' }),
      },
      resolve: async (c, args, ctx) => {
        return paginate(args.first, (limit) => ctx.services.campaigns.listRecipients(c.id, { limit, afterId: idCursor(args.after), status: args.status ?? undefined }), (r) => encodeCursor([r.id]))
      },
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was created.' }),
    startedAt: t.expose('startedAt', { type: 'DateTime', nullable: true, description: 'When sending started.' }),
    completedAt: t.expose('completedAt', { type: 'DateTime', nullable: true, description: 'When it was sent or cancelled.' }),
  }),
})

const CampaignConnection = connectionOf('Campaign', CampaignRef)

const CampaignTagInput = builder.inputType('CampaignTagInput', {
  description: 'A provider tag: name and value use only A-Z a-z 0-9 _ -.',
  fields: (t) => ({
    name: t.string({ required: true, description: 'Tag name.' }),
    value: t.string({ required: true, description: 'Tag value.' }),
  }),
})

const CreateCampaignInput = builder.inputType('CreateCampaignInput', {
  description: 'A new campaign. With sendAt it is scheduled at once; otherwise it is a draft.',
  fields: (t) => ({
    name: t.string({ required: true, description: 'Name for humans.' }),
    templateId: t.id({ required: true, description: 'A MARKETING template with a published version.' }),
    templateVersion: t.int({ required: false, description: 'Version number; default the latest published.' }),
    audienceIds: t.idList({ required: true, description: '1-20 audiences; an address in several gets one email.' }),
    from: t.string({ required: false, description: 'From address; default EMAIL_FROM.' }),
    replyTo: t.string({ required: false, description: 'Reply-To address.' }),
    tags: t.field({ type: [CampaignTagInput], required: false, description: 'Up to 10 provider tags.' }),
    sendAt: t.field({ type: 'DateTime', required: false, description: 'When to start; within a year.' }),
  }),
})

const CampaignSuccess = builder.objectRef<{ campaign: CampaignRow }>('CampaignSuccess').implement({
  description: 'The campaign after the change.',
  isTypeOf: (v) => typeof v === 'object' && v !== null && 'campaign' in v,
  fields: (t) => ({ campaign: t.field({ type: CampaignRef, description: 'The campaign.', resolve: (r) => r.campaign }) }),
})

const CampaignResult = builder.unionType('CampaignResult', {
  description: 'CampaignSuccess, or why the change was refused (ConflictError: not allowed in the current state).',
  types: [CampaignSuccess, ValidationError, NotFoundError, ConflictError],
  resolveType: resultTypeResolver('CampaignSuccess'),
})

builder.queryFields((t) => ({
  campaign: t.field({
    type: CampaignRef,
    nullable: true,
    description: 'A campaign (admin).',
    authScopes: { admin: true },
    args: { id: t.arg.id({ required: true, description: 'Campaign id.' }) },
    resolve: (_root, args, ctx) => ctx.services.campaigns.findCampaign(String(args.id)),
  }),
  campaigns: t.field({
    type: CampaignConnection,
    description: 'Campaigns, newest first (admin).',
    authScopes: { admin: true },
    args: {
      first: t.arg.int({ required: false, description: 'Page size, 1-100 (default 20).' }),
      after: t.arg.string({ required: false, description: 'endCursor of the previous page.' }),
      status: t.arg({ type: CampaignStatusEnum, required: false, description: 'Only this status.' }),
    },
    resolve: async (_root, args, ctx) => {
      return paginate(args.first, (limit) => ctx.services.campaigns.listCampaigns({ limit, after: timeCursor(args.after), status: args.status }), timeCursorOf)
    },
  }),
}))

builder.mutationFields((t) => {
  const byId = (description: string, run: (ctx: GraphQLContext, id: string) => Promise<CampaignRow>) =>
    t.field({
      type: CampaignResult,
      description,
      authScopes: { admin: true },
      args: { id: t.arg.id({ required: true, description: 'Campaign id.' }) },
      resolve: (_root, args, ctx) => asResult(CAMPAIGN_ERRORS, async () => ({ campaign: await run(ctx, String(args.id)) })),
    })
  return {
    createCampaign: t.field({
      type: CampaignResult,
      description: 'Creates a campaign from a published template version and audiences (admin).',
      authScopes: { admin: true },
      args: { input: t.arg({ type: CreateCampaignInput, required: true, description: 'The campaign.' }) },
      resolve: (_root, { input }, ctx) =>
        asResult(CAMPAIGN_ERRORS, async () => ({
          campaign: await ctx.services.campaigns.createCampaign(
            {
              name: input.name,
              templateId: String(input.templateId),
              templateVersion: input.templateVersion,
              audienceIds: input.audienceIds.map(String),
              from: input.from,
              replyTo: input.replyTo,
              tags: input.tags,
              sendAt: input.sendAt,
            },
            ctx.viewer!.id,
          ),
        })),
    }),
    scheduleCampaign: t.field({
      type: CampaignResult,
      description: 'Schedules a draft (or reschedules) for sendAt. Durable: it starts after a restart too (admin).',
      authScopes: { admin: true },
      args: {
        id: t.arg.id({ required: true, description: 'Campaign id.' }),
        sendAt: t.arg({ type: 'DateTime', required: true, description: 'When to start; in the future, within a year.' }),
      },
      resolve: (_root, args, ctx) => asResult(CAMPAIGN_ERRORS, async () => ({ campaign: await ctx.services.campaigns.scheduleCampaign(String(args.id), args.sendAt) })),
    }),
    sendCampaign: byId('Materialises the recipients (de-duplicated, suppressions left out) and starts sending now. Sending twice is a ConflictError (admin).', (ctx, id) =>
      ctx.services.campaigns.sendCampaign(id),
    ),
    pauseCampaign: byId('Pauses a sending campaign; batches already with the provider finish (admin).', (ctx, id) => ctx.services.campaigns.pauseCampaign(id)),
    resumeCampaign: byId('Resumes a paused campaign. A cancelled one cannot be resumed (admin).', (ctx, id) => ctx.services.campaigns.resumeCampaign(id)),
    cancelCampaign: byId('Cancels a campaign for good; queued recipients are not sent (admin).', (ctx, id) => ctx.services.campaigns.cancelCampaign(id)),
    retryFailedRecipients: byId('Re-queues only the FAILED recipients, with fresh idempotency keys (admin).', (ctx, id) => ctx.services.campaigns.retryFailedRecipients(id)),
  }
})

builder.subscriptionField('campaignStats', (t) =>
  t.field({
    type: CampaignStatsRef,
    description: 'Live stats of a campaign (admin): the current snapshot first, then merged snapshots at most once a second and at once on a status change, from every instance.',
    authScopes: { admin: true },
    args: { campaignId: t.arg.id({ required: true, description: 'Campaign id.' }) },
    subscribe: (_root, args, ctx: GraphQLContext) => withCurrent(ctx, String(args.campaignId)) as never,
    resolve: (snapshot: CampaignStatsSnapshot) => snapshot,
  }),
)

/** Subscribes first, then yields the current snapshot, so no change between the two is lost. */
async function* withCurrent(ctx: GraphQLContext, campaignId: string): AsyncGenerator<CampaignStatsSnapshot> {
  const events = (await ctx.pubsub.subscribe(campaignStatsTopic(campaignId))) as AsyncIterable<CampaignStatsSnapshot>
  yield await ctx.services.campaigns.getStats(campaignId)
  yield* events
}

function idCursor(after: string | null | undefined): number | undefined {
  const parts = decodeCursor(after)
  if (!parts) return undefined
  if (typeof parts[0] !== 'number' || !Number.isSafeInteger(parts[0])) throw ValidationError.field(['after'], 'The cursor is invalid')
  return parts[0]
}
