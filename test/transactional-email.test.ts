import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'
import { startFakeResend, type FakeResend } from './helpers/fake-resend'
import { createEmptyDatabase, type TestDatabase } from './helpers/services'
import { copyBundledTemplates } from './helpers/template-dir'

const WELCOME = `mutation($input: WelcomeEmailInput!) {
  sendWelcomeEmail(input: $input) {
    __typename
    ... on SendEmailSuccess { email { id to template status attempts providerId } }
    ... on ValidationError { message fieldErrors { path message } }
  }
}`
const VERIFY = 'mutation($token: String!) { verifyEmail(token: $token) { __typename ... on VerifyEmailSuccess { owner { userId email } } ... on Error { message } } }'
const RESET = `mutation($input: PasswordResetInput!) { requestPasswordReset(input: $input) { __typename ... on SendEmailSuccess { email { id status } } } }`
const CONSUME = 'mutation($token: String!) { consumePasswordResetToken(token: $token) { __typename ... on ConsumePasswordResetTokenSuccess { owner { userId } } } }'
const REMIND = `mutation($input: EventReminderInput!) {
  scheduleEventReminder(input: $input) { __typename ... on ScheduleEventReminderSuccess { email { id status sendAt } } ... on ValidationError { fieldErrors { path } } }
}`

const user = { id: 'u-42', email: 'grace@example.com', name: 'Grace <Hopper>' }
type WelcomeResult = { sendWelcomeEmail: { __typename: string; email: { id: string; status: string; providerId: string | null; attempts: number } } }

describe('transactional email through Resend', () => {
  let resend: FakeResend
  let database: TestDatabase
  let t: TestApp
  let service: string

  beforeAll(async () => {
    resend = await startFakeResend()
    // The resend SDK reads RESEND_BASE_URL from the environment when the client is constructed.
    process.env.RESEND_BASE_URL = resend.url
    database = await createEmptyDatabase()
    t = await buildTestApp({ database, env: { RESEND_API_KEY: 're_test_key', EMAIL_FROM: 'Acme <hello@acme.dev>' } })
    service = t.token('service', 'backend')
  })
  afterAll(async () => {
    await t.close()
    await database.drop()
    await resend.close()
    delete process.env.RESEND_BASE_URL
  })
  beforeEach(() => resend.reset())

  it('sends a welcome email whose verification link works exactly once', async () => {
    const res = await t.gql<WelcomeResult>(WELCOME, { input: { user } }, service)
    const email = res.data.sendWelcomeEmail.email
    expect(email).toMatchObject({ status: 'SENT', attempts: 1 })
    expect(resend.sent).toHaveLength(1)
    const sent = resend.sent[0]!
    expect(sent).toMatchObject({ from: 'Acme <hello@acme.dev>', idempotencyKey: `email/${email.id}` })
    expect(email.providerId).toBe(sent.id)
    // User data is escaped in HTML and kept readable in text.
    expect(sent.html).toContain('Grace &lt;Hopper&gt;')
    expect(sent.text).toContain('Grace <Hopper>')

    const token = /verify-email\?token=([A-Za-z0-9_-]+)/.exec(sent.text ?? '')![1]!
    const first = await t.gql(VERIFY, { token }, service)
    expect(first.data).toEqual({ verifyEmail: { __typename: 'VerifyEmailSuccess', owner: { userId: 'u-42', email: 'grace@example.com' } } })
    const replay = await t.gql<{ verifyEmail: { __typename: string } }>(VERIFY, { token }, service)
    expect(replay.data.verifyEmail.__typename).toBe('InvalidTokenError')
  })

  it('consumes a password reset token once even when two requests race', async () => {
    await t.gql(RESET, { input: { user } }, service)
    const token = /reset-password\?token=([A-Za-z0-9_-]+)/.exec(resend.sent.at(-1)!.text ?? '')![1]!
    const results = await Promise.all([1, 2, 3, 4].map(() => t.gql<{ consumePasswordResetToken: { __typename: string } }>(CONSUME, { token }, service)))
    const kinds = results.map((r) => r.data.consumePasswordResetToken.__typename).sort()
    expect(kinds).toEqual(['ConsumePasswordResetTokenSuccess', 'InvalidTokenError', 'InvalidTokenError', 'InvalidTokenError'])
  })

  it('rejects an invalid address as a ValidationError and sends nothing', async () => {
    const res = await t.gql<{ sendWelcomeEmail: { __typename: string; fieldErrors: { path: string[] }[] } }>(WELCOME, { input: { user: { ...user, email: 'grace..hopper@example.com' } } }, service)
    expect(res.data.sendWelcomeEmail.__typename).toBe('ValidationError')
    expect(res.data.sendWelcomeEmail.fieldErrors[0]!.path).toContain('to')
    expect(resend.requests).toHaveLength(0)
  })

  it('keeps an email queued when Resend answers 500, then delivers it once', async () => {
    resend.failNext(500)
    const res = await t.gql<WelcomeResult>(WELCOME, { input: { user } }, service)
    const { id } = res.data.sendWelcomeEmail.email
    expect(res.data.sendWelcomeEmail.email.status).toBe('QUEUED')
    await makeDue(t, id)
    expect(await t.app.emailDispatcher.runOnce()).toBe(1)
    const after = await t.gql<{ email: { status: string; attempts: number } }>('query($id: ID!) { email(id: $id) { status attempts } }', { id }, service)
    expect(after.data.email).toEqual({ status: 'SENT', attempts: 2 })
    const accepted = resend.sent.filter((s) => s.idempotencyKey === `email/${id}`)
    expect(accepted).toHaveLength(1)
  })

  it('treats a 429 as "later", never as a failure', async () => {
    resend.failNext(429, 1, { 'retry-after': '1' })
    const res = await t.gql<WelcomeResult>(WELCOME, { input: { user } }, service)
    expect(res.data.sendWelcomeEmail.email.status).toBe('QUEUED')
    await makeDue(t, res.data.sendWelcomeEmail.email.id)
    await t.app.emailDispatcher.runOnce()
    expect(resend.sent.filter((s) => s.idempotencyKey === `email/${res.data.sendWelcomeEmail.email.id}`)).toHaveLength(1)
  })

  it("never takes one user's reminder for another's, whatever their ids hold", async () => {
    const sendAt = new Date(Date.now() + 2 * 60 * 60_000).toISOString()
    const event = (id: string) => ({ id, title: 'Board meeting', date: '2030-06-03T18:00:00Z', location: 'Room 1' })
    const remind = (userId: string, email: string, eventId: string) =>
      t.gql<{ scheduleEventReminder: { email: { id: string; to: string } } }>(REMIND, { input: { user: { id: userId, email, name: userId }, event: event(eventId), sendAt } }, service)
    // "42/team/7" either way, were the ids joined as they are.
    const alice = await remind('team/7', 'alice@example.com', '42')
    const bob = await remind('7', 'bob@example.com', '42/team')
    expect(bob.data.scheduleEventReminder.email.id).not.toBe(alice.data.scheduleEventReminder.email.id)
    const ids = [alice.data.scheduleEventReminder.email.id, bob.data.scheduleEventReminder.email.id]
    const rows = await t.app.db.db.execute<{ to: string }>(sql`select "to" from emails where id in (${ids[0]}, ${ids[1]}) order by "to"`)
    expect(rows.rows.map((r) => r.to)).toEqual(['alice@example.com', 'bob@example.com'])
  })

  it('keeps a scheduled reminder across a restart and sends it when due', async () => {
    const sendAt = new Date(Date.now() + 60 * 60_000).toISOString()
    const input = { user, event: { id: 'ev-1', title: 'Launch party', date: '2030-06-03T18:00:00Z', location: 'Dock 4' }, sendAt }
    const res = await t.gql<{ scheduleEventReminder: { email: { id: string; status: string; sendAt: string } } }>(REMIND, { input }, service)
    const { id, status } = res.data.scheduleEventReminder.email
    expect(status).toBe('QUEUED')
    // Scheduling the same reminder again does not queue a second email.
    const again = await t.gql<{ scheduleEventReminder: { email: { id: string } } }>(REMIND, { input }, service)
    expect(again.data.scheduleEventReminder.email.id).toBe(id)

    expect(await t.app.emailDispatcher.runOnce()).toBe(0)
    const second = await buildTestApp({ database, env: { RESEND_API_KEY: 're_test_key' } })
    try {
      await makeDue(second, id)
      expect(await second.app.emailDispatcher.runOnce()).toBe(1)
      const sent = resend.sent.find((s) => s.idempotencyKey === `email/${id}`)
      expect(sent?.subject).toContain('Launch party')
      expect(sent?.text).toContain('Dock 4')
    } finally {
      await second.close()
    }
  })

  it('sends with the templates of EMAIL_TEMPLATES_DIR, on the immediate path and through the dispatcher', async () => {
    const dir = await copyBundledTemplates()
    await dir.write('welcome/subject.hbs', 'Please confirm your address, {{name}}')
    const custom = await buildTestApp({ database, env: { RESEND_API_KEY: 're_test_key', EMAIL_TEMPLATES_DIR: dir.path } })
    try {
      const token = custom.token('service', 'backend')
      await custom.gql(WELCOME, { input: { user } }, token)
      resend.failNext(500)
      const queued = await custom.gql<WelcomeResult>(WELCOME, { input: { user } }, token)
      await makeDue(custom, queued.data.sendWelcomeEmail.email.id)
      expect(await custom.app.emailDispatcher.runOnce()).toBe(1)
      expect(resend.sent.map((s) => s.subject)).toEqual(['Please confirm your address, Grace <Hopper>', 'Please confirm your address, Grace <Hopper>'])
    } finally {
      await custom.close()
      await dir.close()
    }
  })

  it('rejects a reminder in the past', async () => {
    const input = { user, event: { id: 'ev-2', title: 'Gone', date: '2020-01-01T00:00:00Z', location: 'x' }, sendAt: '2020-01-01T00:00:00Z' }
    const res = await t.gql<{ scheduleEventReminder: { __typename: string; fieldErrors: { path: string[] }[] } }>(REMIND, { input }, service)
    expect(res.data.scheduleEventReminder.__typename).toBe('ValidationError')
  })

  it('rejects a DateTime without a time zone at the GraphQL boundary', async () => {
    const input = { user, event: { id: 'ev-3', title: 'T', date: '2030-01-01T00:00:00', location: 'x' }, sendAt: '2030-01-01T00:00:00Z' }
    const res = await t.gql(REMIND, { input }, service)
    expect(res.errors?.[0]?.message).toMatch(/time zone/)
  })
})

async function makeDue(t: TestApp, id: string) {
  await t.app.db.db.execute(sql`update emails set send_at = now() - interval '1 second' where id = ${id}`)
}
