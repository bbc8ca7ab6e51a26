/**
 * Moving a campaign to `sending`: the state change and the materialisation of its recipients in
 * one transaction, so a campaign is either sending with all its rows or not sending at all, and a
 * second sendCampaign (or a second instance starting the same scheduled campaign) finds nothing to do.
 */
import { and, eq, inArray, lte, sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { campaigns } from '../../infra/db/schema/campaigns'

export type CampaignRow = typeof campaigns.$inferSelect

/** Generous: a million-row INSERT ... SELECT must not hit the pool's default statement timeout. */
const MATERIALISE_TIMEOUT = '10min'

export interface StartResult {
  campaign: CampaignRow
  total: number
  queued: number
}

export async function startCampaign(db: Database, id: string, options: { onlyIfDue: boolean }): Promise<StartResult | null> {
  return db.transaction(async (tx) => {
    await tx.execute(sql.raw(`set local statement_timeout = '${MATERIALISE_TIMEOUT}'`))
    const [campaign] = await tx
      .update(campaigns)
      .set({ status: 'sending', startedAt: sql`now()`, updatedAt: sql`now()`, pauseReason: null })
      .where(
        and(
          eq(campaigns.id, id),
          options.onlyIfDue ? and(eq(campaigns.status, 'scheduled'), lte(campaigns.sendAt, sql`now()`)) : inArray(campaigns.status, ['draft', 'scheduled']),
        ),
      )
      .returning()
    if (!campaign) return null
    const counts = await materialiseRecipients(tx as unknown as Database, campaign)
    return { campaign, ...counts }
  })
}

/**
 * One statement: the subscribed contacts of every audience, one row per address (lower-cased, the
 * oldest contact wins), suppressed addresses kept as `suppressed` rows so the report can say why
 * someone got nothing, and the campaign's counters initialised from the same rows.
 */
async function materialiseRecipients(db: Database, campaign: CampaignRow): Promise<{ total: number; queued: number }> {
  const result = await db.execute<{ total: number; queued: number }>(sql`
    with inserted as (
      insert into campaign_recipients (campaign_id, contact_id, email, name, attributes, status, reason)
      select ${campaign.id}::uuid, d.id, d.email, d.name, d.attributes,
             case when s.email is null then 'queued' else 'suppressed' end::campaign_recipient_status,
             s.reason::text
      from (
        select distinct on (lower(c.email)) c.id, c.email, c.name, c.attributes
        from contacts c
        where c.audience_id = any(${sql.param(campaign.audienceIds)}::uuid[]) and c.status = 'subscribed'
        order by lower(c.email), c.created_at, c.id
      ) d
      left join suppressions s on s.email = lower(d.email)
      returning status
    ), counted as (
      insert into campaign_stats (campaign_id, total, queued, suppressed)
      select ${campaign.id}::uuid, count(*), count(*) filter (where status = 'queued'), count(*) filter (where status = 'suppressed')
      from inserted
      returning total, queued
    )
    select total, queued from counted`)
  const row = result.rows[0]
  return { total: Number(row?.total ?? 0), queued: Number(row?.queued ?? 0) }
}

/** Scheduled campaigns whose time has come; the conditional update in startCampaign makes a race harmless. */
export async function dueScheduledCampaignIds(db: Database, limit = 10): Promise<string[]> {
  const rows = await db
    .select({ id: campaigns.id })
    .from(campaigns)
    .where(and(eq(campaigns.status, 'scheduled'), lte(campaigns.sendAt, sql`now()`)))
    .orderBy(campaigns.sendAt)
    .limit(limit)
  return rows.map((r) => r.id)
}

/** `sent` once nothing is queued or in flight. Returns true when this call made the change. */
export async function completeCampaignIfDone(db: Database, campaignId: string): Promise<boolean> {
  const result = await db.execute(sql`
    update campaigns set status = 'sent', completed_at = now(), updated_at = now()
    where id = ${campaignId} and status = 'sending'
      and not exists (select 1 from campaign_recipients r where r.campaign_id = ${campaignId} and r.status in ('queued', 'sending'))
    returning id`)
  return result.rows.length > 0
}
