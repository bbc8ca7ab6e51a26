import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'
import { addContacts, campaignAction, createAudience, createCampaign, createPublishedTemplate } from './campaign-fixtures'
import { postWebhook, resendEvent, TRACKED_HTML, WEBHOOK_SECRET } from './tracking-fixtures'

let t: TestApp

beforeAll(async () => {
  // Embedded mode: PGlite, no Redis, the .eml outbox; the same tracking code paths.
  t = await buildTestApp({ postgres: false, redis: false, env: { CAMPAIGN_RATE_LIMIT_PER_SECOND: '0', RESEND_WEBHOOK_SECRET: WEBHOOK_SECRET } })
}, 120_000)
afterAll(() => t.close())

it('tracks opens, clicks, conversions and webhook events on PGlite', async () => {
  const admin = t.token('admin')
  const templateId = await createPublishedTemplate(t, admin, { html: TRACKED_HTML, variables: [] })
  const audienceId = await createAudience(t, admin)
  await addContacts(t, admin, audienceId, [{ email: 'embedded@example.com', name: 'E' }])
  const campaignId = await createCampaign(t, admin, { templateId, audienceIds: [audienceId] })
  await campaignAction(t, admin, 'sendCampaign', campaignId)
  await t.app.campaignDispatcher.drain()
  const row = await t.app.db.db.execute<{ id: string; provider_id: string }>(sql`select id, provider_id from campaign_recipients where campaign_id = ${campaignId}`)
  const recipientId = Number(row.rows[0]!.id)
  await t.app.db.db.execute(sql`update campaign_recipients set sent_at = now() - interval '1 hour'`)

  const { tokens } = t.app.services.tracking
  const exp = Math.floor(Date.now() / 1000) + 3600
  const ua = { 'user-agent': 'Mozilla/5.0 (X11; Linux) Firefox/128.0' }
  expect((await t.app.inject({ method: 'GET', url: `/t/o/${tokens.openToken(recipientId, exp)}.gif`, headers: ua })).statusCode).toBe(200)
  const click = await t.app.inject({ method: 'GET', url: `/t/c/${tokens.clickToken(recipientId, 0, 'https://shop.example.com/', exp)}`, headers: ua })
  expect(click.statusCode).toBe(302)
  await t.app.services.tracking.flush()
  const conversion = await t.gql<{ recordConversion: { conversion: { counted: boolean } } }>(
    'mutation($token: String!) { recordConversion(token: $token, value: 5) { ... on RecordConversionSuccess { conversion { counted } } } }',
    { token: new URL(click.headers.location as string).searchParams.get('gw_click') },
  )
  expect(conversion.data.recordConversion.conversion.counted).toBe(true)
  const hook = await postWebhook(t, resendEvent('email.delivered', { id: recipientId, providerId: row.rows[0]!.provider_id, email: 'embedded@example.com' }, campaignId))
  expect(hook.body.status).toBe('accepted')
  await t.app.services.tracking.webhooks.processor.drain()

  const stats = await t.gql<{ campaign: { stats: Record<string, unknown> } }>(
    'query($id: ID!) { campaign(id: $id) { stats { sent delivered uniqueOpens uniqueClicks conversions conversionValue opens { total } } } }',
    { id: campaignId },
    admin,
  )
  expect(stats.data.campaign.stats).toEqual({ sent: 1, delivered: 1, uniqueOpens: 1, uniqueClicks: 1, conversions: 1, conversionValue: 5, opens: { total: 1 } })
})
