/**
 * Seed helpers for the campaign tests: a published marketing template, an audience with contacts,
 * and campaigns, all through the real GraphQL API.
 */
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, beforeEach } from 'vitest'
import type { Env } from '../src/config'
import { buildTestApp, type TestApp } from './helpers/app'
import { startFakeResend, type FakeResend } from './helpers/fake-resend'

export const TEMPLATE_FIELDS = `
  id name kind subject html text latestVersion
  variables { name required fallback }
  versions { version subject html text textGenerated }
`

export const CAMPAIGN_FIELDS = `
  id name status pauseReason from replyTo sendAt startedAt completedAt
  templateVersion { version }
  stats { total queued sent delivered bounced complained failed suppressed unsubscribed deliveryRate bounceRate status }
`

export const MARKETING_HTML = '<p>Hi {{name}}, news for {{company}}.</p><p><a href="{{unsubscribeUrl}}">Unsubscribe</a></p>'

export interface GqlError {
  __typename: string
  message: string
  problems?: { part: string; line: number | null; column: number | null; message: string }[]
  fieldErrors?: { path: string[]; message: string }[]
  variables?: string[]
}

export function expectData<T>(res: { data: T; errors?: unknown[] }): T {
  if (res.errors) throw new Error(`GraphQL errors: ${JSON.stringify(res.errors)}`)
  return res.data
}

export async function createPublishedTemplate(
  t: TestApp,
  admin: string,
  overrides: Partial<{ html: string; subject: string; text: string; variables: { name: string; required?: boolean; fallback?: string }[] }> = {},
): Promise<string> {
  const created = expectData(
    await t.gql<{ createEmailTemplate: { emailTemplate?: { id: string } } & GqlError }>(
      `mutation($input: CreateEmailTemplateInput!) { createEmailTemplate(input: $input) {
        __typename ... on EmailTemplateSuccess { emailTemplate { id } } ... on Error { message } } }`,
      {
        input: {
          name: 'Newsletter',
          kind: 'MARKETING',
          subject: overrides.subject ?? 'News for {{name}}',
          html: overrides.html ?? MARKETING_HTML,
          text: overrides.text,
          variables: overrides.variables ?? [{ name: 'company', required: false, fallback: 'your team' }],
        },
      },
      admin,
    ),
  )
  const id = created.createEmailTemplate.emailTemplate?.id
  if (!id) throw new Error(`createEmailTemplate failed: ${JSON.stringify(created)}`)
  const published = expectData(
    await t.gql<{ publishEmailTemplate: { __typename: string } }>(
      'mutation($id: ID!) { publishEmailTemplate(id: $id) { __typename ... on Error { message } } }',
      { id },
      admin,
    ),
  )
  if (published.publishEmailTemplate.__typename !== 'EmailTemplateSuccess') throw new Error(`publish failed: ${JSON.stringify(published)}`)
  return id
}

export async function createAudience(t: TestApp, admin: string, name = 'Customers'): Promise<string> {
  const res = expectData(
    await t.gql<{ createAudience: { audience: { id: string } } }>(
      'mutation($input: CreateAudienceInput!) { createAudience(input: $input) { ... on AudienceSuccess { audience { id } } } }',
      { input: { name } },
      admin,
    ),
  )
  return res.createAudience.audience.id
}

export async function addContacts(
  t: TestApp,
  admin: string,
  audienceId: string,
  contacts: { email: string; name?: string; attributes?: Record<string, unknown> }[],
) {
  const res = expectData(
    await t.gql<{ addContacts: { __typename: string; report?: { added: number; problems: { index: number; email: string; code: string; message: string }[] } } }>(
      `mutation($id: ID!, $contacts: [ContactInput!]!) { addContacts(audienceId: $id, contacts: $contacts) {
        __typename ... on AddContactsSuccess { report { added problems { index email code message } } } ... on Error { message } } }`,
      { id: audienceId, contacts },
      admin,
    ),
  )
  return res.addContacts
}

export async function createCampaign(t: TestApp, admin: string, input: Record<string, unknown>): Promise<string> {
  const res = expectData(
    await t.gql<{ createCampaign: { __typename: string; campaign?: { id: string }; message?: string } }>(
      'mutation($input: CreateCampaignInput!) { createCampaign(input: $input) { __typename ... on CampaignSuccess { campaign { id } } ... on Error { message } } }',
      { input: { name: 'Spring news', ...input } },
      admin,
    ),
  )
  if (!res.createCampaign.campaign) throw new Error(`createCampaign failed: ${JSON.stringify(res)}`)
  return res.createCampaign.campaign.id
}

export async function campaignAction(t: TestApp, admin: string, action: string, id: string) {
  const res = expectData(
    await t.gql<Record<string, { __typename: string; message?: string; campaign?: Record<string, unknown> & { status: string } }>>(
      `mutation($id: ID!) { ${action}(id: $id) { __typename ... on CampaignSuccess { campaign { ${CAMPAIGN_FIELDS} } } ... on Error { message } } }`,
      { id },
      admin,
    ),
  )
  return res[action]!
}

export async function getCampaign(t: TestApp, admin: string, id: string) {
  const res = expectData(await t.gql<{ campaign: Record<string, unknown> & { status: string; stats: Record<string, number | string> } }>(`query($id: ID!) { campaign(id: $id) { ${CAMPAIGN_FIELDS} } }`, { id }, admin))
  return res.campaign
}

/** The unsubscribe URL in the List-Unsubscribe header of the mail the fake provider got for the address. */
export function unsubscribeUrlOf(fake: FakeResend, email: string): string {
  const message = fake.sent.find((s) => (Array.isArray(s.to) ? s.to[0] : s.to) === email)
  if (!message) throw new Error(`no mail was sent to ${email}`)
  return /^<([^>]+)>/.exec(message.headers!['List-Unsubscribe']!)![1]!
}

/** The RFC 8058 one-click POST a mailbox provider sends. */
export function oneClickUnsubscribe(t: TestApp, url: string) {
  return t.app.inject({ method: 'POST', url: new URL(url).pathname, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'List-Unsubscribe=One-Click' })
}

export interface CampaignApp {
  fake: FakeResend
  t: TestApp
  admin: string
  templateId: string
}

/**
 * The lifecycle most campaign test files share: a fake Resend, an app sending through it with no rate
 * limit of its own, an admin token and a published template. Before each test the fake forgets its
 * requests and unfinished campaigns are cancelled, so a test dispatches its own campaign only.
 */
export function useCampaignApp(env: Env, ready: (app: CampaignApp) => void): void {
  let app: CampaignApp
  beforeAll(async () => {
    const fake = await startFakeResend()
    // The resend SDK reads this in its constructor, which runs while the app is built.
    process.env.RESEND_BASE_URL = fake.url
    const t = await buildTestApp({ env: { RESEND_API_KEY: 're_test_key', CAMPAIGN_RATE_LIMIT_PER_SECOND: '0', ...env } })
    const admin = t.token('admin')
    app = { fake, t, admin, templateId: await createPublishedTemplate(t, admin) }
    ready(app)
  })
  afterAll(async () => {
    await app?.t.close()
    await app?.fake.close()
  })
  beforeEach(async () => {
    app.fake.reset()
    await app.t.app.db.db.execute(sql`update campaigns set status = 'cancelled' where status in ('sending', 'paused', 'scheduled')`)
  })
}
