import { eq, sql } from 'drizzle-orm'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createDatabase, type Database, type DatabaseHandle } from '../src/infra/db/client'
import { emailTokens } from '../src/infra/db/schema/auth'
import { consumeEmailToken, issueEmailToken, PASSWORD_RESET_TTL_MS } from '../src/services/auth/email-tokens'
import { emails } from '../src/infra/db/schema/email'
import { ConflictError, InvalidTokenError, NotFoundError, ValidationError } from '../src/lib/errors'
import { EmailDispatcher } from '../src/services/email/email-dispatcher'
import { EmailService, MAX_ATTEMPTS, retryDelayMs } from '../src/services/email/email-service'
import { formatDate } from '../src/services/email/format-date'
import { bundledTemplates, loadTransactionalTemplates, TemplateFilesError } from '../src/services/email/templates'
import { RecordingTransport } from './helpers/recording-transport'
import { createTestDatabase } from './helpers/services'
import { copyBundledTemplates, type TemplateDir } from './helpers/template-dir'

const FROM = 'Groundwork <no-reply@groundwork.test>'
const LINKS = { verifyEmailUrl: 'https://app.example.com/verify-email', resetPasswordUrl: 'https://app.example.com/reset-password' }
const alice = { id: 'user-alice', email: 'alice@example.com', name: 'Alice' }
const renderTemplate = (name: string, data: unknown) => bundledTemplates().render(name, data)

let t: Awaited<ReturnType<typeof createTestDatabase>>
let db: Database
let transport: RecordingTransport
let service: EmailService
let dispatcher: EmailDispatcher

beforeAll(async () => {
  t = await createTestDatabase()
  db = t.handle.db
})
afterAll(() => t.drop())

beforeEach(async () => {
  await db.execute(sql`truncate emails, email_tokens`)
  transport = new RecordingTransport()
  service = new EmailService({ db, transport, from: FROM, links: LINKS })
  dispatcher = new EmailDispatcher({ db, transport, from: FROM, batchSize: 10 })
})

function linkIn(text: string, base: string): URL {
  const match = new RegExp(`${base.replace(/[.?]/g, '\\$&')}\\?token=[A-Za-z0-9_-]+`).exec(text)
  if (!match) throw new Error(`no link to ${base} in:\n${text}`)
  return new URL(match[0])
}

function tokenOf(call = transport.delivered.at(-1)!, base = LINKS.verifyEmailUrl): string {
  return linkIn(call.message.text, base).searchParams.get('token')!
}

async function makeDue(id: string): Promise<void> {
  await db.update(emails).set({ sendAt: sql`now() - interval '1 second'` }).where(eq(emails.id, id))
}

async function emailCount(): Promise<number> {
  const [row] = await db.select({ n: sql<number>`count(*)::int` }).from(emails)
  return row!.n
}

async function catchError(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection')
    },
    (err: unknown) => err,
  )
}

describe('email verification tokens', () => {
  it('sends a welcome email whose link verifies the address once and then is refused', async () => {
    const email = await service.sendWelcomeEmail(alice)

    expect(email).toMatchObject({ status: 'SENT', to: 'alice@example.com', template: 'welcome', attempts: 1 })
    expect(email.providerId).toBe('rec_1')
    const [call] = transport.delivered
    expect(call!.idempotencyKey).toBe(`email/${email.id}`)
    expect(call!.message).toMatchObject({ from: FROM, to: ['alice@example.com'], subject: 'Welcome to Groundwork, Alice' })
    const token = tokenOf(call)
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/)
    // The HTML carries the same link, attribute-escaped.
    expect(call!.message.html).toContain(`href="${LINKS.verifyEmailUrl}?token&#x3D;${token}"`)

    await expect(service.verifyEmail(token)).resolves.toEqual({ userId: alice.id, email: alice.email })
    await expect(service.verifyEmail(token)).rejects.toBeInstanceOf(InvalidTokenError)
  })

  it('stores only a hash of the token', async () => {
    await service.sendWelcomeEmail(alice)
    const token = tokenOf()
    const rows = await db.select().from(emailTokens)
    expect(rows).toHaveLength(1)
    expect(rows[0]!.tokenHash).not.toContain(token)
    expect(rows[0]!.tokenHash).toMatch(/^[0-9a-f]{64}$/)
  })

  it('lets exactly one of several concurrent consumes of a token succeed', async () => {
    await service.sendWelcomeEmail(alice)
    const token = tokenOf()
    // A second pool, so the consumes really run on different connections at once.
    const other: DatabaseHandle = await createDatabase({ databaseUrl: t.url, pgliteDir: 'memory://' })
    try {
      const otherService = new EmailService({ db: other.db, transport, from: FROM, links: LINKS })
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => (i % 2 ? otherService : service).verifyEmail(token)),
      )
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
      for (const r of results.filter((r) => r.status === 'rejected')) expect(r.reason).toBeInstanceOf(InvalidTokenError)
    } finally {
      await other.close()
    }
  })

  it('refuses an expired token', async () => {
    await service.sendWelcomeEmail(alice)
    await db.update(emailTokens).set({ expiresAt: sql`now() - interval '1 second'` })
    await expect(service.verifyEmail(tokenOf())).rejects.toBeInstanceOf(InvalidTokenError)
  })

  it('refuses unknown and malformed tokens with the same error', async () => {
    const unknown = (await catchError(service.verifyEmail('A'.repeat(43)))) as InvalidTokenError
    const malformed = (await catchError(service.verifyEmail("' or 1=1 --"))) as InvalidTokenError
    expect(unknown).toBeInstanceOf(InvalidTokenError)
    expect(malformed).toBeInstanceOf(InvalidTokenError)
    expect(malformed.message).toBe(unknown.message)
  })

  it('does not accept a verification token as a password reset token', async () => {
    await service.sendWelcomeEmail(alice)
    await expect(service.consumePasswordResetToken(tokenOf())).rejects.toBeInstanceOf(InvalidTokenError)
  })

  it('invalidates earlier unused reset tokens when a new reset is requested', async () => {
    await service.requestPasswordReset(alice)
    const first = tokenOf(transport.delivered.at(-1), LINKS.resetPasswordUrl)
    await service.requestPasswordReset(alice)
    const second = tokenOf(transport.delivered.at(-1), LINKS.resetPasswordUrl)

    await expect(service.consumePasswordResetToken(first)).rejects.toBeInstanceOf(InvalidTokenError)
    await expect(service.consumePasswordResetToken(second)).resolves.toEqual({ userId: alice.id, email: alice.email })
    expect(transport.delivered.at(-1)!.message.text).toContain('expires in 60 minutes')
  })

  it('leaves exactly one live reset link when resets for one user race on different connections', async () => {
    // A second pool, so the two issues really run in concurrent transactions.
    const other: DatabaseHandle = await createDatabase({ databaseUrl: t.url, pgliteDir: 'memory://' })
    try {
      for (let round = 0; round < 10; round++) {
        const input = { kind: 'password_reset' as const, userId: `racer-${round}`, email: 'racer@example.com', ttlMs: PASSWORD_RESET_TTL_MS }
        const issued = await Promise.all([issueEmailToken(db, input), issueEmailToken(other.db, input), issueEmailToken(db, input)])
        const consumed = await Promise.all(
          issued.map(({ token }) => consumeEmailToken(db, 'password_reset', token).then(() => true, (err: unknown) => {
            expect(err).toBeInstanceOf(InvalidTokenError)
            return false
          })),
        )
        expect(consumed.filter(Boolean), `round ${round}`).toHaveLength(1)
      }
    } finally {
      await other.close()
    }
  })
})

describe('templates', () => {
  it('escapes HTML in user data in the html part but not in the text part', async () => {
    await service.sendWelcomeEmail({ ...alice, name: '<script>alert("x")</script>' })
    const { html, text } = transport.delivered[0]!.message
    expect(html).not.toContain('<script>')
    expect(html).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;')
    expect(text).toContain('Welcome, <script>alert("x")</script>!')
  })

  it('uses the fallback for a missing optional name', () => {
    const { subject, text } = renderTemplate('welcome', { verificationLink: 'https://app.example.com/v?token=x' })
    expect(subject).toBe('Welcome to Groundwork, there')
    expect(text).toContain('Welcome, there!')
  })

  it('renders event dates in UTC with the zone shown', () => {
    expect(formatDate('2030-06-03T16:30:00+02:00')).toBe('Monday, 3 June 2030 at 14:30 UTC')
    const { subject, html } = renderTemplate('event-reminder', {
      name: 'Alice',
      event: { title: 'Launch', date: '2030-06-03T14:30:00Z', location: 'Room 1' },
    })
    expect(subject).toBe('Reminder: Launch on Monday, 3 June 2030 at 14:30 UTC')
    expect(html).not.toContain('View the event')
  })

  it('reports every missing or mistyped variable with its path', () => {
    const err = (() => {
      try {
        renderTemplate('event-reminder', { name: 5, event: { date: 'next tuesday', url: 'javascript:alert(1)' } })
      } catch (e) {
        return e as ValidationError
      }
    })()
    expect(err).toBeInstanceOf(ValidationError)
    expect(err!.fieldErrors.map((e) => e.path)).toEqual([
      ['data', 'name'],
      ['data', 'event', 'title'],
      ['data', 'event', 'date'],
      ['data', 'event', 'location'],
      ['data', 'event', 'url'],
    ])
  })

  it('throws NotFoundError for an unknown template', () => {
    expect(() => renderTemplate('../../etc/passwd', {})).toThrow(NotFoundError)
  })
})

describe('sending with a template set of its own', () => {
  let dir: TemplateDir
  beforeEach(async () => {
    dir = await copyBundledTemplates()
  })
  afterEach(() => dir.close())

  async function withCodeTemplate() {
    await dir.copy('welcome', 'login-code')
    await dir.write('login-code/meta.json', JSON.stringify({ variables: [{ name: 'code', required: true }, { name: 'name', required: false, fallback: 'there' }] }))
    await dir.write('login-code/subject.hbs', 'Your code')
    await dir.write('login-code/html.hbs', '<p>Hi {{name}}, your code is {{code}}</p>')
    await dir.write('login-code/text.hbs', 'Hi {{name}}, your code is {{code}}')
    return loadTransactionalTemplates(dir.path)
  }

  it('sends with the templates it is given', async () => {
    await dir.write('welcome/subject.hbs', 'Confirm your address, {{name}}')
    const custom = new EmailService({ db, transport, from: FROM, links: LINKS, templates: loadTransactionalTemplates(dir.path) })
    await custom.sendWelcomeEmail(alice)
    expect(transport.delivered.map((c) => c.message.subject)).toEqual(['Confirm your address, Alice'])
  })

  it('refuses a missing required variable at send time with a field error, and queues and sends nothing', async () => {
    const custom = new EmailService({ db, transport, from: FROM, links: LINKS, templates: await withCodeTemplate() })
    const err = (await catchError(custom.sendEmail('ann@example.com', 'login-code', { name: 'Ann', code: '  ' }))) as ValidationError
    expect(err).toBeInstanceOf(ValidationError)
    expect(err.fieldErrors).toEqual([{ path: ['data', 'code'], message: 'is required' }])
    expect(err.message).toBe('Invalid data for email template login-code: data.code is required')
    await expect(custom.sendEmail('ann@example.com', 'no-such-template', {})).rejects.toBeInstanceOf(NotFoundError)
    expect(await emailCount()).toBe(0)
    expect(transport.calls).toHaveLength(0)
  })

  it('fails a queued email whose data no longer satisfies the template, without sending it', async () => {
    const templates = await withCodeTemplate()
    // Queued before a deploy made `code` required, say: the stored data lacks it.
    const [row] = await db.insert(emails).values({ template: 'login-code', to: 'ann@example.com', data: { name: 'Ann' } }).returning()
    expect(await new EmailDispatcher({ db, transport, from: FROM, templates }).runOnce()).toBe(1)
    const [after] = await db.select().from(emails)
    expect(after).toMatchObject({ id: row!.id, status: 'failed', lastError: 'Invalid data for email template login-code: data.code is required' })
    expect(transport.calls).toHaveLength(0)
  })

  it('refuses, when the service is built, a set that lacks a template it sends or requires data it never provides', async () => {
    await dir.editMeta('welcome', (meta) => {
      meta.variables.push({ name: 'company', required: true })
      meta.sampleData = { company: 'ACME' }
    })
    await dir.remove('password-reset')
    const templates = loadTransactionalTemplates(dir.path)
    const err = (() => {
      try {
        return new EmailService({ db, transport, from: FROM, links: LINKS, templates })
      } catch (e) {
        return e as TemplateFilesError
      }
    })() as TemplateFilesError
    expect(err).toBeInstanceOf(TemplateFilesError)
    expect(err.problems).toEqual([
      { file: 'welcome/meta.json', message: '"company" is required, but the email service only provides name, verificationLink' },
      { file: 'password-reset/', message: 'The template is missing, and the email service sends it' },
    ])
  })
})

describe('sendEmail validation', () => {
  it('rejects an invalid address with a field error on to, before issuing a token or queueing', async () => {
    const err = (await catchError(service.sendWelcomeEmail({ ...alice, email: 'alice at example' }))) as ValidationError
    expect(err).toBeInstanceOf(ValidationError)
    expect(err.fieldErrors[0]!.path).toEqual(['to'])
    expect(await emailCount()).toBe(0)
    expect(await db.select().from(emailTokens)).toHaveLength(0)
  })

  it('rejects missing template data with field paths and queues nothing', async () => {
    const err = (await catchError(
      service.sendEmail('bob@example.com', 'event-reminder', { name: 'Bob', event: { date: '2030-01-01T10:00:00Z' } }),
    )) as ValidationError
    expect(err).toBeInstanceOf(ValidationError)
    expect(err.fieldErrors).toEqual([
      { path: ['data', 'event', 'title'], message: 'is required' },
      { path: ['data', 'event', 'location'], message: 'is required' },
    ])
    expect(await emailCount()).toBe(0)
    expect(transport.calls).toHaveLength(0)
  })
})

describe('delivery and retries', () => {
  it('keeps an email queued after a 429 and lets the dispatcher send it once with the same idempotency key', async () => {
    transport.failNext(RecordingTransport.error(429, 120_000))
    const before = Date.now()
    const queued = await service.sendWelcomeEmail(alice)

    expect(queued).toMatchObject({ status: 'QUEUED', attempts: 1, lastError: 'Provider answered 429', providerId: null })
    // Pushed back by the provider's retry-after.
    expect(queued.sendAt.getTime()).toBeGreaterThanOrEqual(before + 110_000)
    expect(await dispatcher.runOnce()).toBe(0)

    await makeDue(queued.id)
    expect(await dispatcher.runOnce()).toBe(1)
    const sent = await service.getEmail(queued.id)
    expect(sent).toMatchObject({ status: 'SENT', attempts: 2, lastError: null, providerId: 'rec_1' })
    expect(sent.sentAt).toBeInstanceOf(Date)
    expect(transport.calls.map((c) => [c.outcome, c.idempotencyKey])).toEqual([
      ['failed', `email/${queued.id}`],
      ['delivered', `email/${queued.id}`],
    ])
    expect(await dispatcher.runOnce()).toBe(0)
    await expect(service.verifyEmail(tokenOf())).resolves.toMatchObject({ userId: alice.id })
  })

  it('delivers once after a 500 followed by a success, backing off exponentially', async () => {
    transport.failNext(RecordingTransport.error(500))
    const before = Date.now()
    const queued = await service.sendEmail('bob@example.com', 'welcome', { name: 'Bob', verificationLink: 'https://app.example.com/v' })
    expect(queued.status).toBe('QUEUED')
    const delay = queued.sendAt.getTime() - before
    expect(delay).toBeGreaterThanOrEqual(14_000)
    expect(delay).toBeLessThanOrEqual(31_000)

    await makeDue(queued.id)
    await dispatcher.runOnce()
    expect(await service.getEmail(queued.id)).toMatchObject({ status: 'SENT' })
    expect(transport.delivered).toHaveLength(1)
  })

  it('marks an email failed with the reason when the provider rejects it with a 422', async () => {
    transport.failNext(RecordingTransport.error(422))
    const email = await service.sendEmail('bob@example.com', 'welcome', { name: 'Bob', verificationLink: 'https://app.example.com/v' })
    expect(email).toMatchObject({ status: 'FAILED', attempts: 1, lastError: 'Provider answered 422' })
    // Never to be sent: the link (with a raw token, for a verification or reset) is not kept.
    expect((await db.select({ data: emails.data }).from(emails).where(eq(emails.id, email.id)))[0]!.data).toEqual({})
    await makeDue(email.id)
    expect(await dispatcher.runOnce()).toBe(0)
    expect(transport.delivered).toHaveLength(0)
  })

  it(`marks an email failed when the last of ${MAX_ATTEMPTS} attempts is still rate limited`, async () => {
    transport.failNext(RecordingTransport.error(429, 0))
    const queued = await service.sendEmail('bob@example.com', 'welcome', { name: 'Bob', verificationLink: 'https://app.example.com/v' })
    await db.update(emails).set({ attempts: MAX_ATTEMPTS - 1 }).where(eq(emails.id, queued.id))
    await makeDue(queued.id)
    transport.failNext(RecordingTransport.error(429, 0))
    await dispatcher.runOnce()
    const email = await service.getEmail(queued.id)
    expect(email).toMatchObject({ status: 'FAILED', attempts: MAX_ATTEMPTS })
    expect(email.lastError).toContain(`gave up after ${MAX_ATTEMPTS} attempts`)
  })

  it('grows the backoff with each attempt and caps it at an hour', () => {
    const half = () => 0.5
    expect(retryDelayMs(1, undefined, half)).toBe(22_500)
    expect(retryDelayMs(2, undefined, half)).toBe(45_000)
    expect(retryDelayMs(20, undefined, half)).toBe(45 * 60_000)
    expect(retryDelayMs(3, 5_000, half)).toBe(5_000)
    // The provider's word is bounded by the same hour.
    expect(retryDelayMs(1, 30 * 86_400_000, half)).toBe(60 * 60_000)
  })

  it('announces each delivered email once through onSent, from the immediate path and the dispatcher', async () => {
    const announced: string[] = []
    const onSent = (email: { id: string; status: string }) => announced.push(`${email.id}:${email.status}`)
    const watched = new EmailService({ db, transport, from: FROM, links: LINKS, onSent })
    const now = await watched.sendWelcomeEmail(alice)
    transport.failNext(RecordingTransport.error(503))
    const later = await watched.sendWelcomeEmail({ ...alice, id: 'user-alice-2' })
    await makeDue(later.id)
    await new EmailDispatcher({ db, transport, from: FROM, onSent }).runOnce()
    expect(announced).toEqual([`${now.id}:SENT`, `${later.id}:SENT`])
  })

  it('returns the first email for a repeated dedupe key instead of sending twice', async () => {
    const data = { name: 'Bob', verificationLink: 'https://app.example.com/v' }
    const first = await service.sendEmail('bob@example.com', 'welcome', data, { dedupeKey: 'signup/bob' })
    const second = await service.sendEmail('bob@example.com', 'welcome', data, { dedupeKey: 'signup/bob' })
    expect(second.id).toBe(first.id)
    expect(await emailCount()).toBe(1)
    expect(transport.delivered).toHaveLength(1)
  })

  it('reclaims a row stuck in sending after its lease expired and resends it with the same idempotency key', async () => {
    const email = await service.sendEmail('bob@example.com', 'welcome', { name: 'Bob', verificationLink: 'https://app.example.com/v' }, { sendAt: new Date(Date.now() + 60_000) })
    // A worker claimed it, reached the provider, and died before recording the result.
    await db.update(emails).set({ status: 'sending', attempts: 1, lockedUntil: sql`now() + interval '1 minute'`, sendAt: sql`now()` }).where(eq(emails.id, email.id))
    await transport.send({ from: FROM, to: ['bob@example.com'], subject: 's', html: 'h', text: 't' }, { idempotencyKey: `email/${email.id}` })
    expect(await dispatcher.runOnce()).toBe(0)

    await db.update(emails).set({ lockedUntil: sql`now() - interval '1 second'` }).where(eq(emails.id, email.id))
    expect(await dispatcher.runOnce()).toBe(1)

    expect(await service.getEmail(email.id)).toMatchObject({ status: 'SENT', attempts: 2, providerId: 'rec_1' })
    expect(transport.calls.map((c) => [c.outcome, c.idempotencyKey])).toEqual([
      ['delivered', `email/${email.id}`],
      ['deduplicated', `email/${email.id}`],
    ])
  })

  it('has two dispatchers on separate connections send each of 50 due emails exactly once', async () => {
    await db.insert(emails).values(
      Array.from({ length: 50 }, (_, i) => ({
        template: 'welcome',
        to: `user${i}@example.com`,
        data: { name: `User ${i}`, verificationLink: `https://app.example.com/v?n=${i}` },
      })),
    )
    const slow = new RecordingTransport(5)
    const other: DatabaseHandle = await createDatabase({ databaseUrl: t.url, pgliteDir: 'memory://' })
    try {
      const a = new EmailDispatcher({ db, transport: slow, from: FROM, batchSize: 7 })
      const b = new EmailDispatcher({ db: other.db, transport: slow, from: FROM, batchSize: 7 })
      const drain = async (d: EmailDispatcher) => {
        let total = 0
        for (let n = await d.runOnce(); n > 0; n = await d.runOnce()) total += n
        return total
      }
      const [fromA, fromB] = await Promise.all([drain(a), drain(b)])
      expect(fromA + fromB).toBe(50)
      expect(fromA).toBeGreaterThan(0)
      expect(fromB).toBeGreaterThan(0)
    } finally {
      await other.close()
    }
    // Every call delivered: no row was claimed twice, not even one the provider would have deduplicated.
    expect(slow.calls).toHaveLength(50)
    expect(slow.calls.every((c) => c.outcome === 'delivered')).toBe(true)
    expect(new Set(slow.calls.map((c) => c.idempotencyKey)).size).toBe(50)
    const [row] = await db.select({ n: sql<number>`count(*)::int` }).from(emails).where(eq(emails.status, 'sent'))
    expect(row!.n).toBe(50)
  })

  it('delivers due emails in the background after start and finishes the batch in flight on stop', async () => {
    const email = await service.sendEmail('bob@example.com', 'welcome', { name: 'Bob', verificationLink: 'https://app.example.com/v' }, { sendAt: new Date(Date.now() + 60_000) })
    await makeDue(email.id)
    const background = new EmailDispatcher({ db, transport, from: FROM, pollMs: 20 })
    background.start()
    await expect.poll(async () => (await service.getEmail(email.id)).status, { timeout: 5_000 }).toBe('SENT')
    await background.stop()
    expect(transport.delivered).toHaveLength(1)
  })
})

describe('scheduled event reminders', () => {
  const event = { id: 'evt-1', title: 'Launch party', date: '2030-06-03T18:00:00Z', location: 'Room 1', url: 'https://app.example.com/e/1' }

  it('stores a future reminder that the dispatcher leaves alone until it is due, then sends once', async () => {
    const sendAt = new Date(Date.now() + 2_000)
    const reminder = await service.scheduleEventReminder({ user: alice, event, sendAt })
    expect(reminder).toMatchObject({ status: 'QUEUED', attempts: 0, template: 'event-reminder' })
    expect(reminder.sendAt.getTime()).toBe(sendAt.getTime())
    expect(await dispatcher.runOnce()).toBe(0)
    expect(transport.calls).toHaveLength(0)

    await makeDue(reminder.id)
    expect(await dispatcher.runOnce()).toBe(1)
    expect(await dispatcher.runOnce()).toBe(0)
    expect(transport.delivered).toHaveLength(1)
    const { message, idempotencyKey } = transport.delivered[0]!
    expect(idempotencyKey).toBe(`email/${reminder.id}`)
    expect(message.subject).toBe('Reminder: Launch party on Monday, 3 June 2030 at 18:00 UTC')
    expect(message.html).toContain('href="https://app.example.com/e/1"')
  })

  it('schedules one reminder for the same event, user and time however often it is asked', async () => {
    const sendAt = new Date(Date.now() + 60_000)
    const first = await service.scheduleEventReminder({ user: alice, event, sendAt })
    const again = await service.scheduleEventReminder({ user: alice, event, sendAt })
    expect(again.id).toBe(first.id)
    expect(await emailCount()).toBe(1)
  })

  it('rejects a sendAt in the past or more than a year ahead', async () => {
    for (const sendAt of [new Date(Date.now() - 1_000), new Date(Date.now() + 366 * 24 * 3600_000)]) {
      const err = (await catchError(service.scheduleEventReminder({ user: alice, event, sendAt }))) as ValidationError
      expect(err).toBeInstanceOf(ValidationError)
      expect(err.fieldErrors[0]!.path).toEqual(['sendAt'])
    }
    expect(await emailCount()).toBe(0)
  })

  it('cancels a queued reminder so it is never sent, and refuses to cancel it twice', async () => {
    const reminder = await service.scheduleEventReminder({ user: alice, event, sendAt: new Date(Date.now() + 60_000) })
    expect(await service.cancelScheduledEmail(reminder.id)).toMatchObject({ status: 'CANCELLED' })
    expect((await db.select({ data: emails.data }).from(emails).where(eq(emails.id, reminder.id)))[0]!.data).toEqual({})
    await makeDue(reminder.id)
    expect(await dispatcher.runOnce()).toBe(0)
    await expect(service.cancelScheduledEmail(reminder.id)).rejects.toBeInstanceOf(ConflictError)
    await expect(service.cancelScheduledEmail('not-a-uuid')).rejects.toBeInstanceOf(NotFoundError)
  })
})
