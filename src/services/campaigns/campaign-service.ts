/**
 * Campaign definitions and their life cycle: draft -> scheduled -> sending <-> paused -> sent, or
 * cancelled. Every transition is one conditional UPDATE, so double clicks and concurrent instances
 * resolve to one winner and a ConflictError for the rest.
 */
import { and, asc, desc, eq, gt, inArray, lt, or, sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { audiences, campaignRecipients, campaigns, emailTemplates, emailTemplateVersions, type CampaignTag } from '../../infra/db/schema/campaigns'
import { parseAddress } from '../../lib/email-address'
import { ConflictError, NotFoundError, ValidationError, type FieldError } from '../../lib/errors'
import type { RecipientRow } from './campaign-batches'
import { completeCampaignIfDone, startCampaign, type CampaignRow } from './campaign-start'
import type { CampaignStatsPublisher, CampaignStatsSnapshot, CampaignStatus } from './campaign-stats'
import { isUuid } from '../../lib/uuid'
import { noLongerSendableReason } from './recipient-feedback'

export type { CampaignRow }
export type RecipientStatus = RecipientRow['status']
export type CampaignRecipientRow = typeof campaignRecipients.$inferSelect

export interface CreateCampaignInput {
  name: string
  templateId: string
  /** Default: the latest published version. */
  templateVersion?: number | null
  audienceIds: string[]
  from?: string | null
  replyTo?: string | null
  tags?: CampaignTag[] | null
  /** Given: the campaign is scheduled at once. */
  sendAt?: Date | null
}

export interface CampaignServiceDeps {
  db: Database
  defaultFrom: string
  stats: CampaignStatsPublisher
}

const MAX_AUDIENCES = 20
const MAX_TAGS = 10
const TAG_PART = /^[A-Za-z0-9_-]{1,256}$/
const MAX_SCHEDULE_AHEAD_MS = 365 * 24 * 60 * 60_000

export class CampaignService {
  constructor(private readonly deps: CampaignServiceDeps) {}

  async createCampaign(input: CreateCampaignInput, createdBy: string | null): Promise<CampaignRow> {
    const errors: FieldError[] = []
    const name = input.name.trim()
    if (name.length === 0 || name.length > 200) errors.push({ path: ['input', 'name'], message: 'The name must be 1-200 characters' })
    const from = (input.from ?? this.deps.defaultFrom).trim()
    if (!parseAddress(from)) errors.push({ path: ['input', 'from'], message: 'from must be an address like "Name <news@example.com>"' })
    const replyTo = input.replyTo?.trim() || null
    if (replyTo && !parseAddress(replyTo)) errors.push({ path: ['input', 'replyTo'], message: 'replyTo must be an email address' })
    const tags = input.tags ?? []
    if (tags.length > MAX_TAGS) errors.push({ path: ['input', 'tags'], message: `At most ${MAX_TAGS} tags` })
    tags.forEach((tag, i) => {
      if (!TAG_PART.test(tag.name) || !TAG_PART.test(tag.value)) errors.push({ path: ['input', 'tags', String(i)], message: 'Tag names and values use only A-Z a-z 0-9 _ -' })
      if (tag.name === 'campaign_id' || tag.name === 'template_version' || tag.name === 'recipient_id') errors.push({ path: ['input', 'tags', String(i)], message: `"${tag.name}" is set by the campaign itself` })
    })
    const audienceIds = [...new Set(input.audienceIds.map(String))]
    if (audienceIds.length === 0 || audienceIds.length > MAX_AUDIENCES) errors.push({ path: ['input', 'audienceIds'], message: `Between 1 and ${MAX_AUDIENCES} audiences` })
    if (input.sendAt) errors.push(...checkSendAt(input.sendAt, ['input', 'sendAt']))
    if (errors.length > 0) throw new ValidationError(errors.map((e) => e.message).join('; '), errors)

    const version = await this.resolveVersion(input.templateId, input.templateVersion ?? null)
    const found = audienceIds.every(isUuid) ? await this.deps.db.select({ id: audiences.id }).from(audiences).where(inArray(audiences.id, audienceIds)) : []
    const missing = audienceIds.filter((id) => !found.some((f) => f.id === id))
    if (missing.length > 0) throw ValidationError.field(['input', 'audienceIds'], `Unknown audience${missing.length > 1 ? 's' : ''}: ${missing.join(', ')}`)

    const [row] = await this.deps.db
      .insert(campaigns)
      .values({
        name,
        templateId: input.templateId,
        templateVersionId: version.id,
        audienceIds,
        from,
        replyTo,
        tags,
        sendAt: input.sendAt ?? null,
        status: input.sendAt ? 'scheduled' : 'draft',
        createdBy,
      })
      .returning()
    return row!
  }

  private async resolveVersion(templateId: string, version: number | null) {
    const [template] = isUuid(templateId) ? await this.deps.db.select().from(emailTemplates).where(eq(emailTemplates.id, templateId)) : []
    if (!template) throw ValidationError.field(['input', 'templateId'], 'Unknown email template')
    if (template.kind !== 'marketing') throw ValidationError.field(['input', 'templateId'], 'A campaign needs a marketing template: only those must carry the unsubscribe link')
    const wanted = version ?? template.latestVersion
    if (wanted < 1) throw ValidationError.field(['input', 'templateId'], 'The template has no published version yet: publish it first')
    const [row] = await this.deps.db
      .select()
      .from(emailTemplateVersions)
      .where(and(eq(emailTemplateVersions.templateId, templateId), eq(emailTemplateVersions.version, wanted)))
    if (!row) throw ValidationError.field(['input', 'templateVersion'], `The template has no version ${wanted}`)
    // The version's own kind: one published while the template was transactional was checked without the unsubscribe link.
    if (row.kind !== 'marketing') throw ValidationError.field(['input', 'templateVersion'], `Version ${wanted} was published as a transactional template, without the unsubscribe link: a campaign needs a marketing version`)
    return row
  }

  async getCampaign(id: string): Promise<CampaignRow> {
    const row = await this.findCampaign(id)
    if (!row) throw new NotFoundError('Campaign', id)
    return row
  }

  async findCampaign(id: string): Promise<CampaignRow | null> {
    const [row] = isUuid(id) ? await this.deps.db.select().from(campaigns).where(eq(campaigns.id, id)) : []
    return row ?? null
  }

  async listCampaigns(options: { limit: number; after?: { createdAt: Date; id: string }; status?: CampaignStatus | null }): Promise<CampaignRow[]> {
    const { after } = options
    return this.deps.db
      .select()
      .from(campaigns)
      .where(
        and(
          options.status ? eq(campaigns.status, options.status) : undefined,
          after ? or(lt(campaigns.createdAt, after.createdAt), and(eq(campaigns.createdAt, after.createdAt), lt(campaigns.id, after.id))) : undefined,
        ),
      )
      .orderBy(desc(campaigns.createdAt), desc(campaigns.id))
      .limit(options.limit)
  }

  async scheduleCampaign(id: string, sendAt: Date): Promise<CampaignRow> {
    const errors = checkSendAt(sendAt, ['sendAt'])
    if (errors.length > 0) throw new ValidationError(errors[0]!.message, errors)
    return this.transition(id, ['draft', 'scheduled'], { status: 'scheduled', sendAt }, (c) => `A ${c.status} campaign cannot be scheduled`)
  }

  /** Materialises the recipients and starts sending now. A second call finds the campaign already sending. */
  async sendCampaign(id: string): Promise<CampaignRow> {
    const started = await startCampaign(this.deps.db, id, { onlyIfDue: false })
    if (!started) {
      const current = await this.getCampaign(id)
      throw new ConflictError(current.status === 'sending' || current.status === 'paused' ? 'The campaign is already sending' : `A ${current.status} campaign cannot be sent`)
    }
    await completeCampaignIfDone(this.deps.db, id)
    await this.deps.stats.stateChanged(id)
    return this.getCampaign(id)
  }

  async pauseCampaign(id: string, reason = 'Paused by an administrator'): Promise<CampaignRow> {
    const current = await this.getCampaign(id)
    if (current.status === 'paused') return current
    return this.transition(id, ['sending'], { status: 'paused', pauseReason: reason }, (c) => `A ${c.status} campaign cannot be paused`)
  }

  async resumeCampaign(id: string): Promise<CampaignRow> {
    const current = await this.getCampaign(id)
    if (current.status === 'sending') return current
    const resumed = await this.transition(id, ['paused'], { status: 'sending', pauseReason: null }, (c) =>
      c.status === 'cancelled' ? 'A cancelled campaign cannot be resumed' : `A ${c.status} campaign cannot be resumed`,
    )
    // Everything may have been sent before the pause took effect.
    if (await completeCampaignIfDone(this.deps.db, id)) await this.deps.stats.stateChanged(id)
    return this.getCampaign(resumed.id)
  }

  /** Queued recipients are left as they are: nothing claims them once the campaign is cancelled. */
  async cancelCampaign(id: string): Promise<CampaignRow> {
    const current = await this.getCampaign(id)
    if (current.status === 'cancelled') return current
    return this.transition(id, ['draft', 'scheduled', 'sending', 'paused'], { status: 'cancelled', completedAt: sql`now()` }, (c) => `A ${c.status} campaign cannot be cancelled`)
  }

  /**
   * Re-queues only the recipients that failed (a permanent provider refusal or a render error, for
   * instance after fixing the data), under a new retry round so they get idempotency keys of their
   * own. Their name and attributes are refreshed from the contact, so a fixed contact renders this
   * time. A failed row whose address was suppressed since, or whose contact is no longer subscribed
   * (noLongerSendableReason), becomes `suppressed` instead: a suppression only takes queued rows,
   * so it never reached it. A sent campaign goes back to sending when anything was re-queued.
   */
  async retryFailedRecipients(id: string): Promise<CampaignRow> {
    const { db } = this.deps
    const result = await db.transaction(async (tx) => {
      // `no key update`, as an update takes: it still serialises retries and status changes, but not the rows
      // that reference the campaign (a new rollup or link row takes a key share lock on it after its counters).
      const [current] = isUuid(id) ? await tx.select().from(campaigns).where(eq(campaigns.id, id)).for('no key update') : []
      if (!current) throw new NotFoundError('Campaign', id)
      if (!['sending', 'paused', 'sent'].includes(current.status)) throw new ConflictError(`A ${current.status} campaign has no failed recipients to retry`)
      // In id order, as a batch of delivery events locks them (a failed row may get a late event): the update alone locks them in scan order.
      await tx.execute(sql`select 1 from campaign_recipients where campaign_id = ${id} and status = 'failed' order by id for no key update`)
      // Suppressions and contacts are only read: the counters are the last lock taken, as lockCampaignStats orders them.
      const moved = await tx.execute<{ requeued: number; suppressed: number }>(sql`
        with failed as (
          select r.id, r.contact_id, ${noLongerSendableReason()} as blocked
          from campaign_recipients r join campaigns c on c.id = r.campaign_id
          where r.campaign_id = ${id} and r.status = 'failed'
        ), requeued as (
          update campaign_recipients r set status = 'queued', batch_id = null, reason = null, provider_id = null, updated_at = now(),
                 name = coalesce(k.name, r.name), attributes = coalesce(k.attributes, r.attributes)
          from failed f
          left join contacts k on k.id = f.contact_id
          where r.id = f.id and f.blocked is null
          returning 1
        ), suppressed as (
          update campaign_recipients r set status = 'suppressed', reason = f.blocked, updated_at = now()
          from failed f
          where r.id = f.id and f.blocked is not null
          returning 1
        ), counted as (
          update campaign_stats set
            failed = failed - (select count(*) from requeued) - (select count(*) from suppressed),
            queued = queued + (select count(*) from requeued),
            suppressed = suppressed + (select count(*) from suppressed),
            updated_at = now()
          where campaign_id = ${id}
          returning 1
        )
        select (select count(*) from requeued)::int as requeued, (select count(*) from suppressed)::int as suppressed, (select count(*) from counted) as c`)
      const requeued = Number(moved.rows[0]?.requeued ?? 0)
      const suppressed = Number(moved.rows[0]?.suppressed ?? 0)
      if (requeued === 0) return { campaign: current, changed: false, countersMoved: suppressed > 0 }
      const [updated] = await tx
        .update(campaigns)
        .set({
          retryRound: sql`${campaigns.retryRound} + 1`,
          status: current.status === 'sent' ? 'sending' : current.status,
          completedAt: current.status === 'sent' ? null : current.completedAt,
          updatedAt: sql`now()`,
        })
        .where(eq(campaigns.id, id))
        .returning()
      return { campaign: updated!, changed: true, countersMoved: true }
    })
    if (result.changed) await this.deps.stats.stateChanged(id)
    else if (result.countersMoved) await this.deps.stats.changed(id)
    return result.campaign
  }

  async getStats(id: string): Promise<CampaignStatsSnapshot> {
    const stats = isUuid(id) ? await this.deps.stats.snapshot(id) : null
    if (!stats) throw new NotFoundError('Campaign', id)
    return stats
  }

  async listRecipients(campaignId: string, options: { limit: number; afterId?: number; status?: RecipientStatus | null }): Promise<CampaignRecipientRow[]> {
    return this.deps.db
      .select()
      .from(campaignRecipients)
      .where(
        and(
          eq(campaignRecipients.campaignId, campaignId),
          options.status ? eq(campaignRecipients.status, options.status) : undefined,
          options.afterId !== undefined ? gt(campaignRecipients.id, options.afterId) : undefined,
        ),
      )
      .orderBy(asc(campaignRecipients.id))
      .limit(options.limit)
  }

  private async transition(
    id: string,
    from: CampaignStatus[],
    set: Partial<Record<keyof CampaignRow, unknown>>,
    conflict: (current: CampaignRow) => string,
  ): Promise<CampaignRow> {
    const [row] = isUuid(id)
      ? await this.deps.db
          .update(campaigns)
          .set({ ...set, updatedAt: sql`now()` } as never)
          .where(and(eq(campaigns.id, id), inArray(campaigns.status, from)))
          .returning()
      : []
    if (row) {
      await this.deps.stats.stateChanged(id)
      return row
    }
    throw new ConflictError(conflict(await this.getCampaign(id)))
  }
}

function checkSendAt(sendAt: Date, path: string[]): FieldError[] {
  if (!(sendAt instanceof Date) || Number.isNaN(sendAt.getTime())) return [{ path, message: 'sendAt is not a valid date' }]
  const now = Date.now()
  if (sendAt.getTime() <= now) return [{ path, message: 'sendAt must be in the future; use sendCampaign to send now' }]
  if (sendAt.getTime() > now + MAX_SCHEDULE_AHEAD_MS) return [{ path, message: 'sendAt must be within a year' }]
  return []
}
