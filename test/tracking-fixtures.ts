/**
 * Seed helpers for the tracking tests: an app with the fake Resend and a webhook secret, a campaign
 * sent to a few addresses with tracked links, and webhooks signed the Standard Webhooks way.
 */
import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import { Webhook } from 'standardwebhooks'
import { afterAll, beforeAll } from 'vitest'
import { buildTestApp, type TestApp, type TestAppOptions } from './helpers/app'
import { startFakeResend, type FakeResend, type FakeResendEmail } from './helpers/fake-resend'
import { addContacts, campaignAction, createAudience, createCampaign, createPublishedTemplate } from './campaign-fixtures'

export const WEBHOOK_SECRET = `whsec_${Buffer.from('groundwork-tracking-test-webhook-key').toString('base64')}`

export const TRACKED_HTML = `<html><body><p>Hi {{name}}</p>
<p><a href="https://shop.example.com/sale?x=1&amp;y=2">Sale</a></p>
<p><a class="btn" href='https://blog.example.com/post#top'>Blog</a> <a href="mailto:help@example.com">Write to us</a></p>
<p><a href="https://docs.example.com/" data-notrack>Docs</a></p>
<p><a href="{{unsubscribeUrl}}">Unsubscribe</a></p>
</body></html>`

export interface TrackingContext {
  fake: FakeResend
  t: TestApp
  admin: string
  templateId: string
}

/** Flushing and polling are left to the tests (explicit flush()/drain()), so nothing depends on timing. */
export async function startTrackingApp(env: Record<string, string> = {}, options: TestAppOptions = {}): Promise<TrackingContext> {
  const fake = await startFakeResend()
  process.env.RESEND_BASE_URL = fake.url
  const t = await buildTestApp({
    ...options,
    env: {
      RESEND_API_KEY: 're_test_key',
      RESEND_WEBHOOK_SECRET: WEBHOOK_SECRET,
      CAMPAIGN_RATE_LIMIT_PER_SECOND: '0',
      TRACKING_FLUSH_MS: '600000',
      ...env,
    },
  })
  const admin = t.token('admin')
  const templateId = await createPublishedTemplate(t, admin, { html: TRACKED_HTML, text: 'Hi {{name}}, see https://shop.example.com/sale\nUnsubscribe: {{unsubscribeUrl}}', variables: [] })
  return { fake, t, admin, templateId }
}

/** One tracking app for the test file: started before its tests, closed after them; `ready` receives it. */
export function useTrackingApp(ready: (ctx: TrackingContext) => void, env: Record<string, string> = {}): void {
  let ctx: TrackingContext | undefined
  beforeAll(async () => {
    ctx = await startTrackingApp(env)
    ready(ctx)
  })
  afterAll(async () => {
    await ctx?.t.close()
    await ctx?.fake.close()
  })
}

export const HUMAN_UA = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36'

/** Moves the campaign's send back an hour, so a click is no longer "seconds after delivery" (a scanner's). */
export async function sentLongAgo(t: TestApp, campaignId: string): Promise<void> {
  await t.app.db.db.execute(sql`update campaign_recipients set sent_at = now() - interval '1 hour' where campaign_id = ${campaignId}`)
}

export interface SentRecipient {
  id: number
  email: string
  providerId: string
  message: FakeResendEmail
}

/** Sends a campaign to the addresses (lower case, distinct) and returns its recipients, in that order, with what the provider received. */
export async function sendTrackedCampaign(ctx: TrackingContext, emails: string[]): Promise<{ campaignId: string; recipients: SentRecipient[] }> {
  const { t, admin, fake } = ctx
  const audienceId = await createAudience(ctx.t, admin)
  await addContacts(t, admin, audienceId, emails.map((email) => ({ email, name: email.split('@')[0] })))
  const campaignId = await createCampaign(t, admin, { templateId: ctx.templateId, audienceIds: [audienceId] })
  await campaignAction(t, admin, 'sendCampaign', campaignId)
  await t.app.campaignDispatcher.drain()
  const rows = await t.app.db.db.execute<{ id: string; email: string; provider_id: string }>(
    sql`select id, email, provider_id from campaign_recipients where campaign_id = ${campaignId} order by id`,
  )
  const byEmail = new Map(rows.rows.map((r) => [r.email, r]))
  // In the order the addresses were given (the rows are in address order).
  const recipients = emails.map((email) => byEmail.get(email)!).map((r) => ({
    id: Number(r.id),
    email: r.email,
    providerId: r.provider_id,
    message: fake.sent.find((m) => m.id === r.provider_id)!,
  }))
  return { campaignId, recipients }
}

export function trackedLinks(html: string): string[] {
  return [...html.matchAll(/href="(http:\/\/groundwork\.test\/t\/c\/[^"]+)"/g)].map((m) => m[1]!)
}

export function pixelPath(html: string): string {
  return new URL(/<img src="([^"]+\/t\/o\/[^"]+)"/.exec(html)![1]!).pathname
}

export function pathOf(url: string): string {
  const u = new URL(url)
  return u.pathname + u.search
}

export interface WebhookOptions {
  svixId?: string
  /** Seconds since the epoch; default now. */
  timestamp?: number
  secret?: string
}

export function signedWebhook(payload: unknown, options: WebhookOptions = {}) {
  const id = options.svixId ?? `msg_${randomUUID()}`
  const timestamp = options.timestamp ?? Math.floor(Date.now() / 1000)
  const body = typeof payload === 'string' ? payload : JSON.stringify(payload)
  const signature = new Webhook(options.secret ?? WEBHOOK_SECRET).sign(id, new Date(timestamp * 1000), body)
  return { body, headers: { 'content-type': 'application/json', 'svix-id': id, 'svix-timestamp': String(timestamp), 'svix-signature': signature } }
}

export async function postWebhook(t: TestApp, payload: unknown, options: WebhookOptions = {}) {
  const { body, headers } = signedWebhook(payload, options)
  const res = await t.app.inject({ method: 'POST', url: '/webhooks/resend', headers, payload: body })
  return { statusCode: res.statusCode, body: res.json() as Record<string, unknown> & { status?: string; error?: { code: string } }, svixId: headers['svix-id'] }
}

/** A Resend `email.*` event about one recipient, tagged the way the dispatcher tags campaign mail (no tags without a campaign). */
export function resendEvent(
  type: string,
  recipient: { id?: number; providerId: string; email: string },
  campaignId: string | null,
  data: Record<string, unknown> = {},
  createdAt = new Date(),
) {
  const tags: Record<string, string> = campaignId ? { campaign_id: campaignId, ...(recipient.id !== undefined ? { recipient_id: String(recipient.id) } : {}) } : {}
  return {
    type,
    created_at: createdAt.toISOString(),
    data: { email_id: recipient.providerId, created_at: createdAt.toISOString(), from: 'Groundwork <news@example.com>', to: [recipient.email], subject: 'News', tags, ...data },
  }
}

export async function recipientStatus(t: TestApp, recipientId: number): Promise<string> {
  const rows = await t.app.db.db.execute<{ status: string }>(sql`select status from campaign_recipients where id = ${recipientId}`)
  return rows.rows[0]!.status
}

export async function countEvents(t: TestApp, campaignId: string, type: number): Promise<number> {
  const rows = await t.app.db.db.execute<{ n: string }>(sql`select count(*) as n from email_events where campaign_id = ${campaignId} and type = ${type}`)
  return Number(rows.rows[0]!.n)
}

export const STATS_FIELDS = `
  total sent delivered bounced complained failed suppressed unsubscribed uniqueOpens uniqueClicks conversions
  deliveryRate bounceRate complaintRate openRate clickRate conversionRate clickToOpenRate softBounces deliveryDelays
  opens { total human machine unique uniqueHuman } clicks { total human machine unique uniqueHuman }
  conversionValue conversionCurrency conversionValues { currency conversions value }
`

export async function campaignStats(ctx: TrackingContext, campaignId: string) {
  const res = await ctx.t.gql<{ campaign: { stats: Record<string, unknown> & { opens: Record<string, number>; clicks: Record<string, number> } } }>(
    `query($id: ID!) { campaign(id: $id) { stats { ${STATS_FIELDS} } } }`,
    { id: campaignId },
    ctx.admin,
  )
  if (res.errors) throw new Error(JSON.stringify(res.errors))
  return res.data.campaign.stats
}
