import { sql } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'
import { type FakeResend } from './helpers/fake-resend'
import { addContacts, campaignAction, createAudience, createCampaign, createPublishedTemplate, expectData, getCampaign, useCampaignApp } from './campaign-fixtures'

let fake: FakeResend
let t: TestApp
let admin: string
let templateId: string
useCampaignApp({}, (app) => ({ fake, t, admin, templateId } = app))

async function recipients(campaignId: string) {
  const res = expectData(
    await t.gql<{ campaign: { recipients: { edges: { node: { id: string; email: string; status: string; providerId: string | null; reason: string | null } }[] } } }>(
      'query($id: ID!) { campaign(id: $id) { recipients(first: 100) { edges { node { id email status providerId reason } } } } }',
      { id: campaignId },
      admin,
    ),
  )
  return res.campaign.recipients.edges.map((e) => e.node)
}

async function audienceWith(emails: (string | { email: string; name?: string; attributes?: Record<string, unknown> })[]): Promise<string> {
  const id = await createAudience(t, admin)
  await addContacts(t, admin, id, emails.map((e) => (typeof e === 'string' ? { email: e } : e)))
  return id
}

describe('createCampaign', () => {
  it('refuses a transactional template, an unpublished one and unknown audiences', async () => {
    const audienceId = await audienceWith(['a@example.com'])
    const transactional = expectData(
      await t.gql<{ createEmailTemplate: { emailTemplate: { id: string } } }>(
        'mutation { createEmailTemplate(input: { name: "Code", kind: TRANSACTIONAL, subject: "Code", html: "<p>Code</p>" }) { ... on EmailTemplateSuccess { emailTemplate { id } } } }',
        {},
        admin,
      ),
    ).createEmailTemplate.emailTemplate.id
    const create = (input: Record<string, unknown>) =>
      t.gql<{ createCampaign: { __typename: string; message: string } }>(
        'mutation($input: CreateCampaignInput!) { createCampaign(input: $input) { __typename ... on Error { message } } }',
        { input: { name: 'x', audienceIds: [audienceId], templateId, ...input } },
        admin,
      )
    expect(expectData(await create({ templateId: transactional })).createCampaign.message).toContain('needs a marketing template')
    const unpublished = expectData(
      await t.gql<{ createEmailTemplate: { emailTemplate: { id: string } } }>(
        `mutation { createEmailTemplate(input: { name: "Draft", kind: MARKETING, subject: "S", html: "<a href='{{unsubscribeUrl}}'>u</a>" }) { ... on EmailTemplateSuccess { emailTemplate { id } } } }`,
        {},
        admin,
      ),
    ).createEmailTemplate.emailTemplate.id
    expect(expectData(await create({ templateId: unpublished })).createCampaign.message).toContain('publish it first')
    const unknown = expectData(await create({ audienceIds: ['00000000-0000-0000-0000-000000000000'] })).createCampaign
    expect(unknown).toMatchObject({ __typename: 'ValidationError', message: expect.stringContaining('Unknown audience') })
    expect(expectData(await create({ from: 'not an address' })).createCampaign.__typename).toBe('ValidationError')
  })

  it('refuses a version published while the template was transactional, though the template is marketing now', async () => {
    const audienceId = await audienceWith(['b@example.com'])
    const id = expectData(
      await t.gql<{ createEmailTemplate: { emailTemplate: { id: string } } }>(
        'mutation { createEmailTemplate(input: { name: "Was code", kind: TRANSACTIONAL, subject: "Hi", html: "<p>Buy now, no way out</p>" }) { ... on EmailTemplateSuccess { emailTemplate { id } } } }',
        {},
        admin,
      ),
    ).createEmailTemplate.emailTemplate.id
    const publish = () => t.gql('mutation($id: ID!) { publishEmailTemplate(id: $id) { __typename } }', { id }, admin)
    await publish()
    await t.gql(`mutation($id: ID!) { updateEmailTemplate(id: $id, input: { kind: MARKETING, html: "<a href='{{unsubscribeUrl}}'>u</a>" }) { __typename } }`, { id }, admin)
    await publish()
    const create = (templateVersion: number) =>
      t.gql<{ createCampaign: { __typename: string; message?: string } }>(
        'mutation($input: CreateCampaignInput!) { createCampaign(input: $input) { __typename ... on Error { message } } }',
        { input: { name: 'x', audienceIds: [audienceId], templateId: id, templateVersion } },
        admin,
      )
    expect(expectData(await create(1)).createCampaign).toMatchObject({ __typename: 'ValidationError', message: expect.stringContaining('published as a transactional template') })
    expect(expectData(await create(2)).createCampaign.__typename).toBe('CampaignSuccess')
  })
})

describe('sendCampaign', () => {
  it('materialises one row per address across audiences, without unsubscribed contacts, suppressed ones marked', async () => {
    const first = await audienceWith(['ann@example.com', 'bo@example.com', 'gone@example.com', 'spam@example.com'])
    const second = await audienceWith(['ANN@example.com', 'cy@example.com'])
    await t.app.db.db.execute(sql`update contacts set status = 'unsubscribed' where email = 'gone@example.com'`)
    await t.gql('mutation { suppressEmails(emails: ["SPAM@example.com"]) { __typename } }', {}, admin)
    const id = await createCampaign(t, admin, { templateId, audienceIds: [first, second] })

    const sent = await campaignAction(t, admin, 'sendCampaign', id)
    expect(sent.campaign).toMatchObject({ status: 'SENDING', stats: { total: 4, queued: 3, suppressed: 1, sent: 0 } })
    const rows = await recipients(id)
    expect(rows.map((r) => [r.email.toLowerCase(), r.status]).sort()).toEqual([
      ['ann@example.com', 'QUEUED'],
      ['bo@example.com', 'QUEUED'],
      ['cy@example.com', 'QUEUED'],
      ['spam@example.com', 'SUPPRESSED'],
    ])
  })

  it('refuses to send a campaign twice and keeps one set of recipients', async () => {
    const id = await createCampaign(t, admin, { templateId, audienceIds: [await audienceWith(['a@example.com', 'b@example.com'])] })
    const [one, two] = await Promise.all([campaignAction(t, admin, 'sendCampaign', id), campaignAction(t, admin, 'sendCampaign', id)])
    expect([one.__typename, two.__typename].sort()).toEqual(['CampaignSuccess', 'ConflictError'])
    const again = await campaignAction(t, admin, 'sendCampaign', id)
    expect(again).toMatchObject({ __typename: 'ConflictError', message: 'The campaign is already sending' })
    expect(await recipients(id)).toHaveLength(2)
  })

  it('sends every queued recipient in batches keyed by the first row id and ends SENT', async () => {
    const emails = Array.from({ length: 5 }, (_, i) => ({ email: `p${i}@example.com`, name: `P${i}`, attributes: { company: `Co${i}` } }))
    const id = await createCampaign(t, admin, {
      templateId,
      audienceIds: [await audienceWith(emails)],
      replyTo: 'support@example.com',
      tags: [{ name: 'season', value: 'spring' }],
    })
    await campaignAction(t, admin, 'sendCampaign', id)
    await t.app.campaignDispatcher.drain()

    const campaign = await getCampaign(t, admin, id)
    expect(campaign).toMatchObject({ status: 'SENT', stats: { total: 5, queued: 0, sent: 5, failed: 0 } })
    expect(campaign.completedAt).toBeTruthy()
    const rows = await recipients(id)
    expect(rows.every((r) => r.status === 'ACCEPTED' && r.providerId)).toBe(true)
    expect(new Set(rows.map((r) => r.providerId))).toEqual(new Set(fake.sent.map((s) => s.id)))

    const batch = fake.requests.find((r) => r.path === '/emails/batch')!
    expect(batch.headers['idempotency-key']).toBe(`campaign/${id}/batch/${rows[0]!.id}`)
    const email = fake.sent.find((s) => s.to === 'p0@example.com' || (Array.isArray(s.to) && s.to[0] === 'p0@example.com'))!
    expect(email).toMatchObject({ subject: 'News for P0', reply_to: 'support@example.com' })
    expect(email.html).toContain('news for Co0.')
    expect(email.headers!['List-Unsubscribe-Post']).toBe('List-Unsubscribe=One-Click')
    expect(email.headers!['List-Unsubscribe']).toMatch(/^<http:\/\/groundwork\.test\/t\/u\/\d+\.\d+\.[\w-]{43}>, <mailto:unsubscribe@groundwork\.localhost\?subject=unsubscribe%20\d+\.\d+\.[\w-]{43}>$/)
    expect(email.html).toContain(email.headers!['List-Unsubscribe']!.slice(1, email.headers!['List-Unsubscribe']!.indexOf('>')))
    expect(email.tags).toEqual([
      { name: 'campaign_id', value: id },
      { name: 'recipient_id', value: String(rows.find((r) => r.email === 'p0@example.com')!.id) },
      { name: 'template_version', value: expect.stringMatching(/_v1$/) },
      { name: 'season', value: 'spring' },
    ])
  })

  it('goes straight to SENT when every address is suppressed', async () => {
    await t.gql('mutation { suppressEmails(emails: ["only@example.com"]) { __typename } }', {}, admin)
    const id = await createCampaign(t, admin, { templateId, audienceIds: [await audienceWith(['only@example.com'])] })
    const result = await campaignAction(t, admin, 'sendCampaign', id)
    expect(result.campaign).toMatchObject({ status: 'SENT', stats: { total: 1, suppressed: 1, queued: 0 } })
  })
})

describe('missing variables and retryFailedRecipients', () => {
  it('fails only the recipient missing a required variable, and re-sends only it once its contact is fixed', async () => {
    const strict = await createPublishedTemplate(t, admin, {
      html: '<p>{{coupon}}</p><a href="{{unsubscribeUrl}}">u</a>',
      variables: [{ name: 'coupon', required: true }],
    })
    const audienceId = await audienceWith([
      { email: 'has@example.com', attributes: { coupon: 'A1' } },
      { email: 'lacks@example.com', attributes: {} },
    ])
    const id = await createCampaign(t, admin, { templateId: strict, audienceIds: [audienceId] })
    await campaignAction(t, admin, 'sendCampaign', id)
    await t.app.campaignDispatcher.drain()

    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ sent: 1, failed: 1, queued: 0 })
    const failed = (await recipients(id)).find((r) => r.status === 'FAILED')!
    expect(failed).toMatchObject({ email: 'lacks@example.com', reason: 'Missing required template variable: coupon' })
    expect(fake.sent.map((s) => s.to)).toEqual([['has@example.com']])

    await t.app.db.db.execute(sql`update contacts set attributes = '{"coupon":"B2"}' where email = 'lacks@example.com'`)
    const retried = await campaignAction(t, admin, 'retryFailedRecipients', id)
    expect(retried.campaign).toMatchObject({ status: 'SENDING', stats: { failed: 0, queued: 1, sent: 1 } })
    await t.app.campaignDispatcher.drain()

    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 2, failed: 0 } })
    expect(fake.sent.map((s) => s.to)).toEqual([['has@example.com'], ['lacks@example.com']])
    expect(fake.requests.at(-1)!.headers['idempotency-key']).toBe(`campaign/${id}/batch/${failed.id}/retry-1`)
    expect(fake.sent.at(-1)!.html).toContain('B2')
  })

  it('refuses to retry a draft and leaves a campaign without failures unchanged', async () => {
    const id = await createCampaign(t, admin, { templateId, audienceIds: [await audienceWith(['r@example.com'])] })
    expect((await campaignAction(t, admin, 'retryFailedRecipients', id)).__typename).toBe('ConflictError')
    await campaignAction(t, admin, 'sendCampaign', id)
    await t.app.campaignDispatcher.drain()
    expect((await campaignAction(t, admin, 'retryFailedRecipients', id)).campaign).toMatchObject({ status: 'SENT' })
  })
})

describe('pause, resume and cancel', () => {
  it('sends nothing while paused and finishes after resume', async () => {
    const id = await createCampaign(t, admin, { templateId, audienceIds: [await audienceWith(['x1@example.com', 'x2@example.com'])] })
    await campaignAction(t, admin, 'sendCampaign', id)
    const paused = await campaignAction(t, admin, 'pauseCampaign', id)
    expect(paused.campaign).toMatchObject({ status: 'PAUSED', pauseReason: 'Paused by an administrator' })
    expect(await t.app.campaignDispatcher.drain()).toBe(0)
    expect(fake.sent).toHaveLength(0)

    const resumed = await campaignAction(t, admin, 'resumeCampaign', id)
    expect(resumed.campaign).toMatchObject({ status: 'SENDING', pauseReason: null })
    await t.app.campaignDispatcher.drain()
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 2 } })
  })

  it('refuses to resume a cancelled campaign and never sends it', async () => {
    const id = await createCampaign(t, admin, { templateId, audienceIds: [await audienceWith(['c1@example.com'])] })
    await campaignAction(t, admin, 'sendCampaign', id)
    expect((await campaignAction(t, admin, 'cancelCampaign', id)).campaign).toMatchObject({ status: 'CANCELLED' })
    expect(await campaignAction(t, admin, 'resumeCampaign', id)).toMatchObject({ __typename: 'ConflictError', message: 'A cancelled campaign cannot be resumed' })
    expect((await campaignAction(t, admin, 'sendCampaign', id)).__typename).toBe('ConflictError')
    await t.app.campaignDispatcher.drain()
    expect(fake.sent).toHaveLength(0)
  })

  it('refuses to cancel or pause a sent campaign', async () => {
    const id = await createCampaign(t, admin, { templateId, audienceIds: [await audienceWith(['s1@example.com'])] })
    await campaignAction(t, admin, 'sendCampaign', id)
    await t.app.campaignDispatcher.drain()
    expect(await campaignAction(t, admin, 'cancelCampaign', id)).toMatchObject({ __typename: 'ConflictError', message: 'A sent campaign cannot be cancelled' })
    expect((await campaignAction(t, admin, 'pauseCampaign', id)).__typename).toBe('ConflictError')
  })
})

describe('scheduleCampaign', () => {
  it('is durable: another instance starts a due scheduled campaign from the database alone', async () => {
    const id = await createCampaign(t, admin, { templateId, audienceIds: [await audienceWith(['later@example.com'])] })
    const past = await t.gql<{ scheduleCampaign: { __typename: string; message: string } }>(
      'mutation($id: ID!, $at: DateTime!) { scheduleCampaign(id: $id, sendAt: $at) { __typename ... on Error { message } } }',
      { id, at: new Date(Date.now() - 60_000).toISOString() },
      admin,
    )
    expect(expectData(past).scheduleCampaign.__typename).toBe('ValidationError')
    const scheduled = await t.gql<{ scheduleCampaign: { campaign: { status: string } } }>(
      'mutation($id: ID!, $at: DateTime!) { scheduleCampaign(id: $id, sendAt: $at) { ... on CampaignSuccess { campaign { status } } } }',
      { id, at: new Date(Date.now() + 3_600_000).toISOString() },
      admin,
    )
    expect(expectData(scheduled).scheduleCampaign.campaign.status).toBe('SCHEDULED')
    expect(await t.app.campaignDispatcher.drain()).toBe(0)

    // Time passes while this instance is gone; a fresh instance on the same database takes over.
    await t.app.db.db.execute(sql`update campaigns set send_at = now() - interval '1 second' where id = ${id}`)
    const other = await buildTestApp({ database: t.database, env: { RESEND_API_KEY: 're_test_key', CAMPAIGN_RATE_LIMIT_PER_SECOND: '0' } })
    try {
      await other.app.campaignDispatcher.drain()
    } finally {
      await other.close()
    }
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { sent: 1 } })
    expect(fake.sent.map((s) => s.to)).toEqual([['later@example.com']])
  })

  it('schedules at creation when sendAt is given', async () => {
    const id = await createCampaign(t, admin, { templateId, audienceIds: [await audienceWith(['soon@example.com'])], sendAt: new Date(Date.now() + 60_000).toISOString() })
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SCHEDULED' })
    expect((await campaignAction(t, admin, 'cancelCampaign', id)).campaign).toMatchObject({ status: 'CANCELLED' })
  })
})
