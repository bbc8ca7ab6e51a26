import { sql } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../src/config'
import { type TestApp } from './helpers/app'
import { type FakeResend } from './helpers/fake-resend'
import { addContacts, campaignAction, createAudience, createCampaign, getCampaign, oneClickUnsubscribe, unsubscribeUrlOf, useCampaignApp, type CampaignApp } from './campaign-fixtures'

let fake: FakeResend
let t: TestApp
let admin: string
let templateId: string
let main: CampaignApp
useCampaignApp({ CAMPAIGN_PAUSE_MIN_SENT: '10', CAMPAIGN_PAUSE_BOUNCE_RATE: '0.02', CAMPAIGN_PAUSE_COMPLAINT_RATE: '0.0005' }, (app) => ({ fake, t, admin, templateId } = main = app))

/** A campaign to these addresses, started; without `audienceId` to a new audience of them. */
async function startTo(emails: string[], app: CampaignApp = main, audienceId?: string): Promise<string> {
  const audience = audienceId ?? (await createAudience(app.t, app.admin))
  if (!audienceId) await addContacts(app.t, app.admin, audience, emails.map((email) => ({ email })))
  const id = await createCampaign(app.t, app.admin, { templateId: app.templateId, audienceIds: [audience] })
  await campaignAction(app.t, app.admin, 'sendCampaign', id)
  return id
}

async function sendTo(emails: string[], app: CampaignApp = main, audienceId?: string): Promise<string> {
  const id = await startTo(emails, app, audienceId)
  await app.t.app.campaignDispatcher.drain()
  return id
}

async function contactStatuses(app: CampaignApp, email: string): Promise<Record<string, string>> {
  const rows = await app.t.app.db.db.execute<{ audience_id: string; status: string }>(sql`select audience_id, status from contacts where lower(email) = ${email}`)
  return Object.fromEntries(rows.rows.map((r) => [r.audience_id, r.status]))
}

async function recipientRow(app: CampaignApp, campaignId: string, email: string): Promise<{ status: string; reason: string | null } | undefined> {
  const rows = await app.t.app.db.db.execute<{ status: string; reason: string | null }>(sql`select status, reason from campaign_recipients where campaign_id = ${campaignId} and email = ${email}`)
  return rows.rows[0]
}

async function suppressionsOf(app: CampaignApp, email: string) {
  return (await app.t.app.db.db.execute<{ reason: string; source: string }>(sql`select reason, source from suppressions where email = ${email}`)).rows
}

async function providerIdOf(campaignId: string, email: string): Promise<string> {
  const rows = await t.app.db.db.execute<{ provider_id: string }>(sql`select provider_id from campaign_recipients where campaign_id = ${campaignId} and email = ${email}`)
  return rows.rows[0]!.provider_id
}

describe('one-click unsubscribe', () => {
  it('shows a confirmation page on GET without unsubscribing, and unsubscribes on the RFC 8058 POST', async () => {
    const elsewhere = await createAudience(t, admin, 'Elsewhere')
    await addContacts(t, admin, elsewhere, [{ email: 'LEAVER@example.com' }])
    const id = await sendTo(['leaver@example.com', 'stayer@example.com'])
    const url = unsubscribeUrlOf(fake, 'leaver@example.com')
    const path = new URL(url).pathname

    const page = await t.app.inject({ method: 'GET', url: path })
    expect(page.statusCode).toBe(200)
    expect(page.headers['content-type']).toContain('text/html')
    expect(page.body).toContain('leaver@example.com')
    expect(page.body).toContain('<form method="post">')
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ unsubscribed: 0 })

    const post = await oneClickUnsubscribe(t, url)
    expect(post.statusCode).toBe(200)
    expect(post.body).toContain('will get no more campaign email')
    expect((await oneClickUnsubscribe(t, url)).statusCode).toBe(200)

    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ unsubscribed: 1 })
    // The default scope is global: every contact with the address, in any audience, and the suppression list.
    const statuses = await contactStatuses(main, 'leaver@example.com')
    expect(Object.keys(statuses)).toHaveLength(2)
    expect(Object.values(statuses)).toEqual(['unsubscribed', 'unsubscribed'])
    expect(await suppressionsOf(main, 'leaver@example.com')).toEqual([{ reason: 'unsubscribed', source: `campaign:${id}` }])

    // The next campaign, to any audience, leaves the address out.
    fake.reset()
    await sendTo(['leaver@example.com', 'new@example.com'])
    expect(fake.sent.map((s) => s.to)).toEqual([['new@example.com']])
  })

  it('refuses a tampered token, a token signed for another purpose and an expired one', async () => {
    await sendTo(['tamper@example.com'])
    const url = new URL(unsubscribeUrlOf(fake, 'tamper@example.com'))
    const [recipient, exp, sig] = url.pathname.slice('/t/u/'.length).split('.')
    const other = `${Number(recipient) + 1}.${exp}.${sig}`
    expect((await t.app.inject({ method: 'POST', url: `/t/u/${other}` })).statusCode).toBe(404)
    expect((await t.app.inject({ method: 'GET', url: '/t/u/garbage' })).statusCode).toBe(404)
    const download = t.app.signer.sign({ r: recipient! }, Number(exp))
    expect((await t.app.inject({ method: 'POST', url: `/t/u/${recipient}.${exp}.${download.get('sig')}` })).statusCode).toBe(404)
    const expired = t.app.signer.sign({ purpose: 'campaign-unsubscribe', r: recipient! }, Math.floor(Date.now() / 1000) - 10)
    expect((await t.app.inject({ method: 'GET', url: `/t/u/${recipient}.${expired.get('exp')}.${expired.get('sig')}` })).statusCode).toBe(410)
  })

  it('drops a queued recipient of a sending campaign when the address unsubscribes elsewhere', async () => {
    const first = await sendTo(['both@example.com'])
    const second = await startTo(['both@example.com', 'other@example.com'])
    expect((await getCampaign(t, admin, second)).stats).toMatchObject({ total: 2, queued: 2, suppressed: 0 })
    expect((await oneClickUnsubscribe(t, unsubscribeUrlOf(fake, 'both@example.com'))).statusCode).toBe(200)
    expect((await getCampaign(t, admin, second)).stats).toMatchObject({ total: 2, queued: 1, suppressed: 1 })
    fake.reset()
    await t.app.campaignDispatcher.drain()
    expect(fake.sent.map((s) => s.to)).toEqual([['other@example.com']])
    expect((await getCampaign(t, admin, first)).stats).toMatchObject({ unsubscribed: 1 })
  })
})

describe('unsubscribe scope "audience" (TRACKING_UNSUBSCRIBE_SCOPE=audience)', () => {
  let scoped: CampaignApp
  useCampaignApp({ TRACKING_UNSUBSCRIBE_SCOPE: 'audience' }, (app) => (scoped = app))

  /** "News" and "Offers", reader@ in both (spelt differently), one other address in each. */
  async function twoLists(tag: string): Promise<{ news: string; offers: string; reader: string }> {
    const { t: app, admin: token } = scoped
    const reader = `reader-${tag}@example.com`
    const news = await createAudience(app, token, 'News')
    const offers = await createAudience(app, token, 'Offers')
    await addContacts(app, token, news, [{ email: reader }, { email: `friend-${tag}@example.com` }])
    await addContacts(app, token, offers, [{ email: reader.toUpperCase() }, { email: `buyer-${tag}@example.com` }])
    return { news, offers, reader }
  }

  it('unsubscribes the contact in the campaign’s audiences only, with no suppression row', async () => {
    const { news, offers, reader } = await twoLists('a')
    const id = await sendTo([], scoped, news)
    const url = unsubscribeUrlOf(scoped.fake, reader)

    const post = await oneClickUnsubscribe(scoped.t, url)
    expect(post.statusCode).toBe(200)
    expect(post.body).toContain('will get no more email from the lists this message was sent to')
    expect((await oneClickUnsubscribe(scoped.t, url)).statusCode).toBe(200)

    expect(await contactStatuses(scoped, reader)).toEqual({ [news]: 'unsubscribed', [offers]: 'subscribed' })
    expect(await suppressionsOf(scoped, reader)).toEqual([])
    expect((await getCampaign(scoped.t, scoped.admin, id)).stats).toMatchObject({ unsubscribed: 1, suppressed: 0 })

    // The next campaign to News leaves the address out; one to Offers still reaches it.
    scoped.fake.reset()
    await sendTo([], scoped, news)
    expect(scoped.fake.sent.map((s) => s.to)).toEqual([['friend-a@example.com']])
    scoped.fake.reset()
    await sendTo([], scoped, offers)
    expect(scoped.fake.sent.map((s) => s.to).flat().sort()).toEqual(['READER-A@example.com', 'buyer-a@example.com'])
  })

  it('drops a queued recipient only where no subscribed contact of the address is left in the campaign’s audiences', async () => {
    const { news, offers, reader } = await twoLists('b')
    await sendTo([], scoped, news)
    const url = unsubscribeUrlOf(scoped.fake, reader)
    const sameList = await startTo([], scoped, news)
    const otherList = await startTo([], scoped, offers)
    const bothLists = await createCampaign(scoped.t, scoped.admin, { templateId: scoped.templateId, audienceIds: [news, offers] })
    await campaignAction(scoped.t, scoped.admin, 'sendCampaign', bothLists)

    expect((await oneClickUnsubscribe(scoped.t, url)).statusCode).toBe(200)
    expect(await recipientRow(scoped, sameList, reader)).toEqual({ status: 'suppressed', reason: 'unsubscribed' })
    expect((await getCampaign(scoped.t, scoped.admin, sameList)).stats).toMatchObject({ total: 2, queued: 1, suppressed: 1 })
    expect((await getCampaign(scoped.t, scoped.admin, otherList)).stats).toMatchObject({ total: 2, queued: 2, suppressed: 0 })
    expect((await getCampaign(scoped.t, scoped.admin, bothLists)).stats).toMatchObject({ total: 3, queued: 3, suppressed: 0 })

    await scoped.t.app.campaignDispatcher.drain()
    expect(await recipientRow(scoped, sameList, reader)).toMatchObject({ status: 'suppressed' })
    expect((await getCampaign(scoped.t, scoped.admin, otherList)).stats).toMatchObject({ sent: 2, suppressed: 0 })
    expect((await getCampaign(scoped.t, scoped.admin, bothLists)).stats).toMatchObject({ sent: 3, suppressed: 0 })
  })
})

describe('TRACKING_UNSUBSCRIBE_SCOPE', () => {
  it('defaults to global, takes audience in any case, and refuses any other value at boot', () => {
    expect(loadConfig({}).tracking.unsubscribeScope).toBe('global')
    expect(loadConfig({ TRACKING_UNSUBSCRIBE_SCOPE: ' Audience ' }).tracking.unsubscribeScope).toBe('audience')
    expect(() => loadConfig({ TRACKING_UNSUBSCRIBE_SCOPE: 'contact' })).toThrow(ConfigError)
    expect(() => loadConfig({ TRACKING_UNSUBSCRIBE_SCOPE: 'contact' })).toThrow(/TRACKING_UNSUBSCRIBE_SCOPE must be one of global, audience \(got "contact"\)/)
  })
})

describe('delivery events and auto-pause', () => {
  it('counts delivered and bounced monotonically and suppresses a bounced address', async () => {
    const id = await sendTo(['d1@example.com', 'b1@example.com'])
    const feedback = t.app.services.recipientFeedback
    const delivered = await providerIdOf(id, 'd1@example.com')
    const bounced = await providerIdOf(id, 'b1@example.com')
    expect(await feedback.recordDeliveryEvent(delivered, 'delivered')).toBe(true)
    expect(await feedback.recordDeliveryEvent(delivered, 'delivered')).toBe(false)
    expect(await feedback.recordDeliveryEvent(bounced, 'bounced')).toBe(true)
    // A late "delivered" after the bounce changes nothing.
    expect(await feedback.recordDeliveryEvent(bounced, 'delivered')).toBe(false)
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ sent: 2, delivered: 1, bounced: 1, deliveryRate: 0.5, bounceRate: 0.5 })
    const suppressed = await t.app.db.db.execute<{ reason: string }>(sql`select reason from suppressions where email = 'b1@example.com'`)
    expect(suppressed.rows).toEqual([{ reason: 'bounced' }])
  })

  it('pauses a sending campaign whose bounce rate passes the threshold, with the reason, and not before the minimum sample', async () => {
    const audienceId = await createAudience(t, admin)
    await addContacts(t, admin, audienceId, Array.from({ length: 30 }, (_, i) => ({ email: `ap${i}@example.com` })))
    const id = await createCampaign(t, admin, { templateId, audienceIds: [audienceId] })
    await campaignAction(t, admin, 'sendCampaign', id)
    // Ten accepted so far: the minimum sample is reached while the campaign is still sending.
    await t.app.db.db.execute(sql`update campaign_recipients set status = 'accepted', provider_id = 'p-' || id, batch_id = null where campaign_id = ${id} and id in (select id from campaign_recipients where campaign_id = ${id} order by id limit 10)`)
    await t.app.db.db.execute(sql`update campaign_stats set sent = 10, queued = 20 where campaign_id = ${id}`)
    const rows = await t.app.db.db.execute<{ provider_id: string }>(sql`select provider_id from campaign_recipients where campaign_id = ${id} and provider_id is not null order by id`)

    expect(await t.app.services.recipientFeedback.recordDeliveryEvent(rows.rows[0]!.provider_id, 'bounced')).toBe(true)
    const paused = await getCampaign(t, admin, id)
    expect(paused.status).toBe('PAUSED')
    expect(paused.pauseReason).toBe('Auto-paused: Bounce rate 10% is above the 2% limit (1 of 10)')
    await t.app.campaignDispatcher.drain()
    expect(fake.sent).toHaveLength(0)
  })

  it('pauses on a complaint rate over 0.05%', async () => {
    const audienceId = await createAudience(t, admin)
    await addContacts(t, admin, audienceId, Array.from({ length: 12 }, (_, i) => ({ email: `cp${i}@example.com` })))
    const id = await createCampaign(t, admin, { templateId, audienceIds: [audienceId] })
    await campaignAction(t, admin, 'sendCampaign', id)
    await t.app.db.db.execute(sql`update campaign_recipients set status = 'accepted', provider_id = 'c-' || id where campaign_id = ${id} and id in (select id from campaign_recipients where campaign_id = ${id} order by id limit 11)`)
    await t.app.db.db.execute(sql`update campaign_stats set sent = 11, queued = 1 where campaign_id = ${id}`)
    const rows = await t.app.db.db.execute<{ provider_id: string }>(sql`select provider_id from campaign_recipients where campaign_id = ${id} and provider_id is not null order by id limit 1`)
    await t.app.services.recipientFeedback.recordDeliveryEvent(rows.rows[0]!.provider_id, 'complained')
    const paused = await getCampaign(t, admin, id)
    expect(paused).toMatchObject({ status: 'PAUSED', stats: { complained: 1, delivered: 1 } })
    expect(paused.pauseReason).toContain('Complaint rate 9.09% is above the 0.05% limit')
  })
})
