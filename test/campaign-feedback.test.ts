import { sql } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { type TestApp } from './helpers/app'
import { type FakeResend } from './helpers/fake-resend'
import { addContacts, campaignAction, createAudience, createCampaign, getCampaign, useCampaignApp } from './campaign-fixtures'

let fake: FakeResend
let t: TestApp
let admin: string
let templateId: string
useCampaignApp({ CAMPAIGN_PAUSE_MIN_SENT: '10', CAMPAIGN_PAUSE_BOUNCE_RATE: '0.02', CAMPAIGN_PAUSE_COMPLAINT_RATE: '0.0005' }, (app) => ({ fake, t, admin, templateId } = app))

async function sendTo(emails: string[]): Promise<string> {
  const audienceId = await createAudience(t, admin)
  await addContacts(t, admin, audienceId, emails.map((email) => ({ email })))
  const id = await createCampaign(t, admin, { templateId, audienceIds: [audienceId] })
  await campaignAction(t, admin, 'sendCampaign', id)
  await t.app.campaignDispatcher.drain()
  return id
}

function unsubscribeUrlOf(email: string): string {
  const message = fake.sent.find((s) => (Array.isArray(s.to) ? s.to[0] : s.to) === email)!
  return /^<([^>]+)>/.exec(message.headers!['List-Unsubscribe']!)![1]!
}

async function providerIdOf(campaignId: string, email: string): Promise<string> {
  const rows = await t.app.db.db.execute<{ provider_id: string }>(sql`select provider_id from campaign_recipients where campaign_id = ${campaignId} and email = ${email}`)
  return rows.rows[0]!.provider_id
}

describe('one-click unsubscribe', () => {
  it('shows a confirmation page on GET without unsubscribing, and unsubscribes on the RFC 8058 POST', async () => {
    const id = await sendTo(['leaver@example.com', 'stayer@example.com'])
    const path = new URL(unsubscribeUrlOf('leaver@example.com')).pathname

    const page = await t.app.inject({ method: 'GET', url: path })
    expect(page.statusCode).toBe(200)
    expect(page.headers['content-type']).toContain('text/html')
    expect(page.body).toContain('leaver@example.com')
    expect(page.body).toContain('<form method="post">')
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ unsubscribed: 0 })

    const post = await t.app.inject({ method: 'POST', url: path, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'List-Unsubscribe=One-Click' })
    expect(post.statusCode).toBe(200)
    expect(post.body).toContain('will get no more campaign email')
    const again = await t.app.inject({ method: 'POST', url: path, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'List-Unsubscribe=One-Click' })
    expect(again.statusCode).toBe(200)

    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ unsubscribed: 1 })
    const contact = await t.app.db.db.execute<{ status: string }>(sql`select status from contacts where email = 'leaver@example.com'`)
    expect(contact.rows.every((r) => r.status === 'unsubscribed')).toBe(true)
    const suppression = await t.app.db.db.execute<{ reason: string; source: string }>(sql`select reason, source from suppressions where email = 'leaver@example.com'`)
    expect(suppression.rows).toEqual([{ reason: 'unsubscribed', source: `campaign:${id}` }])

    // The next campaign to the same audience leaves the address out.
    fake.reset()
    await sendTo(['leaver@example.com', 'new@example.com'])
    expect(fake.sent.map((s) => s.to)).toEqual([['new@example.com']])
  })

  it('refuses a tampered token, a token signed for another purpose and an expired one', async () => {
    await sendTo(['tamper@example.com'])
    const url = new URL(unsubscribeUrlOf('tamper@example.com'))
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
    const audienceId = await createAudience(t, admin)
    await addContacts(t, admin, audienceId, [{ email: 'both@example.com' }, { email: 'other@example.com' }])
    const second = await createCampaign(t, admin, { templateId, audienceIds: [audienceId] })
    await campaignAction(t, admin, 'sendCampaign', second)
    const path = new URL(unsubscribeUrlOf('both@example.com')).pathname
    expect((await t.app.inject({ method: 'POST', url: path })).statusCode).toBe(200)
    expect((await getCampaign(t, admin, second)).stats).toMatchObject({ total: 2, queued: 1, suppressed: 1 })
    fake.reset()
    await t.app.campaignDispatcher.drain()
    expect(fake.sent.map((s) => s.to)).toEqual([['other@example.com']])
    expect((await getCampaign(t, admin, first)).stats).toMatchObject({ unsubscribed: 1 })
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
