import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { eq, like } from 'drizzle-orm'
import PostalMime from 'postal-mime'
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { outboxMessages } from '../src/infra/db/schema/email'
import { buildEml } from '../src/infra/mail/eml'
import { createOutboxTransport } from '../src/infra/mail/outbox'
import { createResendTransport } from '../src/infra/mail/resend'
import { MAX_RETRY_AFTER_MS, MailProviderError } from '../src/infra/mail/types'
import type { MailMessage } from '../src/infra/mail/types'
import { startFakeResend } from './helpers/fake-resend'
import type { FakeResend } from './helpers/fake-resend'
import { createTestDatabase } from './helpers/services'

const message = (overrides: Partial<MailMessage> = {}): MailMessage => ({
  from: 'Groundwork <hello@example.com>',
  to: ['ada@example.org'],
  subject: 'Welcome',
  text: 'Hello Ada',
  html: '<p>Hello Ada</p>',
  ...overrides,
})

async function providerError(promise: Promise<unknown>): Promise<MailProviderError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(MailProviderError)
  return err as MailProviderError
}

describe('resend transport', () => {
  let fake: FakeResend
  const transport = (timeoutMs?: number) => createResendTransport({ apiKey: 're_test_key', timeoutMs })

  beforeAll(async () => {
    fake = await startFakeResend()
    vi.stubEnv('RESEND_BASE_URL', fake.url)
  })
  afterAll(async () => {
    vi.unstubAllEnvs()
    await fake.close()
  })
  beforeEach(() => fake.reset())

  it('sends every field and the Idempotency-Key header, and returns the Resend id', async () => {
    const result = await transport().send(
      message({
        replyTo: 'support@example.com',
        headers: { 'X-Entity-Ref-ID': 'welcome/1' },
        tags: [{ name: 'kind', value: 'welcome' }],
      }),
      { idempotencyKey: 'email/1' },
    )

    expect(fake.requests).toHaveLength(1)
    const request = fake.requests[0]!
    expect(request).toMatchObject({ method: 'POST', path: '/emails' })
    expect(request.headers['idempotency-key']).toBe('email/1')
    expect(request.headers.authorization).toBe('Bearer re_test_key')
    expect(request.body).toEqual({
      from: 'Groundwork <hello@example.com>',
      to: ['ada@example.org'],
      subject: 'Welcome',
      text: 'Hello Ada',
      html: '<p>Hello Ada</p>',
      reply_to: 'support@example.com',
      headers: { 'X-Entity-Ref-ID': 'welcome/1' },
      tags: [{ name: 'kind', value: 'welcome' }],
    })
    expect(result.providerId).toBe(fake.sent[0]!.id)
    expect(fake.sent[0]!.idempotencyKey).toBe('email/1')
  })

  it('reads RESEND_BASE_URL when the transport is created, not when the module loads', async () => {
    const other = await startFakeResend()
    try {
      const before = transport()
      vi.stubEnv('RESEND_BASE_URL', other.url)
      const after = transport()
      vi.stubEnv('RESEND_BASE_URL', fake.url)

      await before.send(message())
      await after.send(message())
      expect(fake.sent).toHaveLength(1)
      expect(other.sent).toHaveLength(1)
    } finally {
      await other.close()
    }
  })

  it('returns batch ids in input order', async () => {
    const subjects = ['one', 'two', 'three']
    const results = await transport().sendBatch(
      subjects.map((subject) => message({ subject })),
      { idempotencyKey: 'campaign/1/batch/1' },
    )

    expect(fake.requests[0]).toMatchObject({ method: 'POST', path: '/emails/batch' })
    expect(fake.requests[0]!.headers['idempotency-key']).toBe('campaign/1/batch/1')
    expect(fake.sent.map((e) => e.subject)).toEqual(subjects)
    expect(results.map((r) => r.providerId)).toEqual(fake.sent.map((e) => e.id))
  })

  it('sends the valid messages of a permissive batch and reports the invalid one at its index', async () => {
    const results = await transport().sendBatch(
      [message({ subject: 'one' }), message({ to: ['not-an-address'] }), message({ subject: 'three' })],
      { idempotencyKey: 'campaign/1/batch/9', permissive: true },
    )
    expect(fake.requests[0]!.headers['x-batch-validation']).toBe('permissive')
    expect(fake.sent.map((e) => e.subject)).toEqual(['one', 'three'])
    expect(results[0]).toEqual({ providerId: fake.sent[0]!.id })
    expect(results[1]).toEqual({ error: expect.any(String) })
    expect(results[2]).toEqual({ providerId: fake.sent[1]!.id })
  })

  it('remembers the rate-limit window Resend reports', async () => {
    fake.successHeaders({ 'ratelimit-limit': '2', 'ratelimit-remaining': '1', 'ratelimit-reset': '1' })
    const t = transport()
    expect(t.rateLimit?.()).toBeUndefined()
    await t.send(message())
    const window = t.rateLimit?.()
    expect(window).toMatchObject({ limit: 2, remaining: 1 })
    expect(window!.resetAt).toBeGreaterThan(Date.now())
  })

  it('gets the same ids back for a repeated idempotency key without sending again', async () => {
    const t = transport()
    const first = await t.sendBatch([message({ subject: 'a' }), message({ subject: 'b' })], { idempotencyKey: 'batch/7' })
    const again = await t.sendBatch([message({ subject: 'a' }), message({ subject: 'b' })], { idempotencyKey: 'batch/7' })

    expect(again).toEqual(first)
    expect(fake.sent).toHaveLength(2)
  })

  it('refuses a batch over 100 messages without calling Resend', async () => {
    const err = await providerError(transport().sendBatch(Array.from({ length: 101 }, () => message())))
    expect(err.retryable).toBe(false)
    expect(fake.requests).toHaveLength(0)
  })

  it('maps a 429 to a retryable error that carries retry-after in milliseconds', async () => {
    fake.failNext(429, 1, { 'retry-after': '1' })
    const err = await providerError(transport().send(message()))
    expect(err).toMatchObject({ retryable: true, statusCode: 429, retryAfterMs: 1000 })
    expect(err.message).toContain('rate_limit_exceeded')
  })

  it('bounds a retry-after to an hour, in seconds or as an HTTP date', async () => {
    fake.failNext(429, 1, { 'retry-after': String(30 * 86_400) })
    expect(await providerError(transport().send(message()))).toMatchObject({ retryable: true, retryAfterMs: MAX_RETRY_AFTER_MS })
    fake.failNext(503, 1, { 'retry-after': new Date(Date.now() + 400 * 86_400_000).toUTCString() })
    expect(await providerError(transport().send(message()))).toMatchObject({ retryable: true, retryAfterMs: MAX_RETRY_AFTER_MS })
    expect(MAX_RETRY_AFTER_MS).toBe(3_600_000)
  })

  it('leaves retryAfterMs undefined when a 429 has no retry-after header', async () => {
    fake.failNext(429)
    const err = await providerError(transport().send(message()))
    expect(err).toMatchObject({ retryable: true, statusCode: 429, retryAfterMs: undefined })
  })

  it('maps a 500 to a retryable error', async () => {
    fake.failNext(500)
    const err = await providerError(transport().sendBatch([message()]))
    expect(err).toMatchObject({ retryable: true, statusCode: 500 })
  })

  it('maps a 422 validation error to a non-retryable error', async () => {
    const err = await providerError(transport().send(message({ to: ['not-an-address'] })))
    expect(err).toMatchObject({ retryable: false, statusCode: 422 })
    expect(err.message).toContain('validation_error')
    expect(fake.sent).toHaveLength(0)
  })

  it('retries a 409 for a key whose first request is still running', async () => {
    fake.failNext(409, 1, {}, { name: 'concurrent_idempotent_requests' })
    const err = await providerError(transport().send(message(), { idempotencyKey: 'email/2' }))
    expect(err).toMatchObject({ retryable: true, statusCode: 409 })
  })

  it('does not retry a 409 for a key reused with another payload', async () => {
    const t = transport()
    await t.send(message({ subject: 'first' }), { idempotencyKey: 'email/3' })
    const err = await providerError(t.send(message({ subject: 'second' }), { idempotencyKey: 'email/3' }))
    expect(err).toMatchObject({ retryable: false, statusCode: 409 })
  })

  it('maps a refused connection to a retryable error', async () => {
    const gone = await startFakeResend()
    await gone.close()
    vi.stubEnv('RESEND_BASE_URL', gone.url)
    const t = transport()
    vi.stubEnv('RESEND_BASE_URL', fake.url)

    const err = await providerError(t.send(message()))
    expect(err).toMatchObject({ retryable: true, statusCode: undefined })
  })

  it('gives up on a server that never answers with a retryable timeout error', async () => {
    fake.stallNext()
    const started = Date.now()
    const err = await providerError(transport(150).send(message()))
    expect(err.retryable).toBe(true)
    expect(err.message).toMatch(/did not answer within 150 ms/)
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(fake.requests).toHaveLength(1)
  })

  it('passes check() without calling the API', async () => {
    await expect(transport().check()).resolves.toBeUndefined()
    expect(fake.requests).toHaveLength(0)
  })
})

describe('buildEml', () => {
  const base = { ...message(), messageId: 'abc@example.com', date: new Date('2025-03-04T05:06:07Z') }

  it('folds a long non-ASCII subject into lines of at most 76 characters that decode back', async () => {
    const subject = 'Überweisung bestätigt — ' + 'ünïcödé '.repeat(20) + '✓ 🎉'
    const eml = buildEml({ ...base, subject })
    const head = eml.slice(0, eml.indexOf('\r\n\r\n'))
    expect(head.split('\r\n').every((line) => line.length <= 76)).toBe(true)
    expect((await PostalMime.parse(eml)).subject).toBe(subject)
  })

  it('keeps body lines within 76 characters and decodes long lines, trailing spaces and "=" exactly', async () => {
    const text = `${'ä=b '.repeat(60)}\ntrailing space \ntab\t\n.starts with a dot`
    const eml = buildEml({ ...base, text })
    expect(eml.split('\r\n').every((line) => line.length <= 76)).toBe(true)
    const parsed = await PostalMime.parse(eml)
    expect(parsed.text?.replace(/\r\n/g, '\n').replace(/\n$/, '')).toBe(text)
  })

  it('writes a numeric zone in the Date header', () => {
    expect(buildEml(base)).toContain('\r\nDate: Tue, 04 Mar 2025 05:06:07 +0000\r\n')
  })

  it.each([
    ['subject', { subject: 'Hi\r\nBcc: victim@example.net' }],
    ['subject with a bare LF', { subject: 'Hi\nBcc: victim@example.net' }],
    ['display name', { from: 'Eve\r\nBcc: victim@example.net <eve@example.com>' }],
    ['extra header value', { headers: { 'X-Note': 'a\r\nBcc: victim@example.net' } }],
    ['extra header name', { headers: { 'X-Note\r\nBcc': 'victim@example.net' } }],
  ])('refuses CR or LF in the %s', (_, overrides) => {
    expect(() => buildEml({ ...base, ...overrides })).toThrow(/CR, LF or NUL/)
  })

  it('refuses an extra header that would duplicate one it writes itself', () => {
    expect(() => buildEml({ ...base, headers: { 'content-type': 'text/plain' } })).toThrow(/cannot be overridden/)
  })
})

describe('outbox transport', () => {
  let t: Awaited<ReturnType<typeof createTestDatabase>>
  let root: string

  beforeAll(async () => {
    t = await createTestDatabase()
    root = await mkdtemp(path.join(tmpdir(), 'gw-outbox-'))
  })
  afterAll(async () => {
    await t?.drop()
    if (root) await rm(root, { recursive: true, force: true })
  })

  const newOutbox = async () => {
    const dir = await mkdtemp(path.join(root, 'box-'))
    return { dir, outbox: createOutboxTransport({ dir, db: t.handle.db }) }
  }

  it('writes an .eml with CRLF lines, MIME headers, both parts and an encoded non-ASCII subject', async () => {
    const { dir, outbox } = await newOutbox()
    const subject = 'Grüße aus Köln ✓'
    const text = 'Hallo Zoë,\nsee = you soon.'
    const html = '<p>Hallo Zoë,<br>see = you soon.</p>'
    const { providerId } = await outbox.send(
      message({ from: 'Zoë Müller <zoe@example.com>', to: ['ada@example.org', 'bob@example.net'], replyTo: 'help@example.com', subject, text, html, headers: { 'X-Campaign': 'spring' } }),
    )

    const files = await readdir(dir)
    expect(files).toHaveLength(1)
    expect(files[0]).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}Z-[A-Za-z0-9._-]+\.eml$/)
    const eml = await readFile(path.join(dir, files[0]!), 'utf8')

    expect(eml).not.toMatch(/[^\r]\n/)
    const head = eml.slice(0, eml.indexOf('\r\n\r\n'))
    expect(head).toMatch(/^MIME-Version: 1\.0$/m)
    expect(head).toMatch(/^Content-Type: multipart\/alternative;\r\n boundary="[^"]+"$/m)
    expect(head).toMatch(/^Subject: =\?UTF-8\?B\?[A-Za-z0-9+/=]+\?=/m)
    expect(head).not.toContain('ü')
    expect(eml).toContain('Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable')
    expect(eml).toContain('Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable')

    const parsed = await PostalMime.parse(eml)
    expect(parsed.subject).toBe(subject)
    expect(parsed.from).toEqual({ name: 'Zoë Müller', address: 'zoe@example.com' })
    expect(parsed.to?.map((a) => a.address)).toEqual(['ada@example.org', 'bob@example.net'])
    expect(parsed.replyTo?.[0]?.address).toBe('help@example.com')
    expect(parsed.messageId).toBe(`<${providerId}>`)
    expect(parsed.headers.find((h) => h.key === 'x-campaign')?.value).toBe('spring')
    // postal-mime keeps the line break that RFC 2046 assigns to the boundary delimiter.
    expect(parsed.text?.replace(/\r\n/g, '\n').replace(/\n$/, '')).toBe(text)
    expect(parsed.html?.replace(/\r?\n$/, '')).toBe(html)
  })

  it('records a row that points at the file', async () => {
    const { dir, outbox } = await newOutbox()
    const { providerId } = await outbox.send(message({ subject: 'Row check' }))

    const rows = await t.handle.db.select().from(outboxMessages).where(eq(outboxMessages.messageId, providerId))
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ from: 'Groundwork <hello@example.com>', to: ['ada@example.org'], subject: 'Row check', idempotencyKey: null })
    expect(path.dirname(rows[0]!.path)).toBe(dir)
    expect(await readFile(rows[0]!.path, 'utf8')).toContain(`Message-ID: <${providerId}>`)
  })

  it('writes once and returns the same providerId for a repeated idempotency key', async () => {
    const { dir, outbox } = await newOutbox()
    const first = await outbox.send(message(), { idempotencyKey: 'email/repeat' })
    const again = await outbox.send(message(), { idempotencyKey: 'email/repeat' })

    expect(again).toEqual(first)
    expect(await readdir(dir)).toHaveLength(1)
    const rows = await t.handle.db.select().from(outboxMessages).where(eq(outboxMessages.idempotencyKey, 'email/repeat'))
    expect(rows).toHaveLength(1)
  })

  it('keeps one file and one row when two calls with the same key race', async () => {
    const { dir, outbox } = await newOutbox()
    const [a, b] = await Promise.all([
      outbox.send(message(), { idempotencyKey: 'email/race' }),
      outbox.send(message(), { idempotencyKey: 'email/race' }),
    ])

    expect(a).toEqual(b)
    expect(await readdir(dir)).toHaveLength(1)
  })

  it('derives per-message keys for a batch, so a repeated batch writes nothing new', async () => {
    const { dir, outbox } = await newOutbox()
    const batch = [message({ subject: 'first' }), message({ subject: 'second' })]
    const first = await outbox.sendBatch(batch, { idempotencyKey: 'campaign/9/batch/1' })
    const again = await outbox.sendBatch(batch, { idempotencyKey: 'campaign/9/batch/1' })

    expect(again).toEqual(first)
    expect(await readdir(dir)).toHaveLength(2)
    const rows = await t.handle.db
      .select({ key: outboxMessages.idempotencyKey, subject: outboxMessages.subject })
      .from(outboxMessages)
      .where(like(outboxMessages.idempotencyKey, 'campaign/9/batch/1/%'))
      .orderBy(outboxMessages.idempotencyKey)
    expect(rows).toEqual([
      { key: 'campaign/9/batch/1/0', subject: 'first' },
      { key: 'campaign/9/batch/1/1', subject: 'second' },
    ])
  })

  it('refuses header injection in the subject and writes nothing', async () => {
    const { dir, outbox } = await newOutbox()
    const err = await providerError(outbox.send(message({ subject: 'Hi\r\nBcc: victim@example.net' })))
    expect(err.retryable).toBe(false)
    expect(await readdir(dir)).toHaveLength(0)
  })

  it('refuses a whole batch when one message is invalid', async () => {
    const { dir, outbox } = await newOutbox()
    const err = await providerError(outbox.sendBatch([message(), message({ subject: 'x\nBcc: victim@example.net' })]))
    expect(err.retryable).toBe(false)
    expect(await readdir(dir)).toHaveLength(0)
  })

  it('writes the valid messages of a permissive batch and reports the invalid one', async () => {
    const { dir, outbox } = await newOutbox()
    const results = await outbox.sendBatch([message(), message({ subject: 'x\nBcc: victim@example.net' })], { permissive: true })
    expect(results[0]!.providerId).toEqual(expect.any(String))
    expect(results[1]!.error).toMatch(/Refusing/)
    expect(await readdir(dir)).toHaveLength(1)
  })

  it('passes check() for a writable directory and fails it when the path is a file', async () => {
    const { dir, outbox } = await newOutbox()
    await expect(outbox.check()).resolves.toBeUndefined()
    expect(await readdir(dir)).toHaveLength(0)

    const file = path.join(root, 'not-a-dir')
    await writeFile(file, '')
    await expect(createOutboxTransport({ dir: file, db: t.handle.db }).check()).rejects.toThrow()
  })
})
