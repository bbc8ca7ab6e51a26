/**
 * Transactional email. Every email is an `emails` row first and a provider call second, so a
 * provider outage or a crash between the two loses nothing: the row stays queued and
 * EmailDispatcher delivers it later. The delivery rules (claim, send, retry, give up) live here
 * and are shared by the immediate path and the dispatcher.
 */
import { and, eq, lte, sql } from 'drizzle-orm'
import type { PgUpdateSetSource } from 'drizzle-orm/pg-core'
import type { Database } from '../../infra/db/client'
import { emails } from '../../infra/db/schema/email'
import { MailProviderError, type MailTransport } from '../../infra/mail/types'
import { checkEmail } from '../../lib/email-address'
import { ConflictError, NotFoundError, ValidationError } from '../../lib/errors'
import {
  consumeEmailToken,
  EMAIL_VERIFICATION_TTL_MS,
  issueEmailToken,
  PASSWORD_RESET_TTL_MS,
} from '../auth/email-tokens'
import { bundledTemplates, type EmailRenderer, type TransactionalTemplates } from './templates'

/** Claims of one row before it is marked failed; at the backoff cap that is several hours of retrying. */
export const MAX_ATTEMPTS = 8
/** Longer than any provider call should take (the transports time out well before), short enough that a crash delays mail by a minute. */
export const DEFAULT_LEASE_MS = 60_000
const BASE_RETRY_MS = 30_000
const MAX_RETRY_MS = 60 * 60_000
const MAX_SCHEDULE_AHEAD_MS = 365 * 24 * 60 * 60_000
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
/** The templates this service sends and the variables it fills in for each (see the send methods below). */
const SENT_TEMPLATES = {
  welcome: ['name', 'verificationLink'],
  'password-reset': ['name', 'resetLink', 'expiresInMinutes'],
  'event-reminder': ['name', 'event.title', 'event.date', 'event.location', 'event.url'],
} as const

export type EmailRow = typeof emails.$inferSelect
type EmailUpdate = PgUpdateSetSource<typeof emails>
export type EmailStatus = 'QUEUED' | 'SENDING' | 'SENT' | 'FAILED' | 'CANCELLED'

export interface EmailRecord {
  id: string
  to: string
  template: string
  status: EmailStatus
  sendAt: Date
  attempts: number
  providerId: string | null
  lastError: string | null
  createdAt: Date
  sentAt: Date | null
}

type LogFn = (obj: Record<string, unknown>, msg?: string) => void
export interface EmailLogger {
  info: LogFn
  warn: LogFn
  error: LogFn
}

export interface DeliveryDeps {
  db: Database
  transport: MailTransport
  from: string
  renderer: EmailRenderer
  logger?: EmailLogger
  onSent?: (email: EmailRecord) => void
}

export function toEmailRecord(row: EmailRow): EmailRecord {
  return {
    id: row.id,
    to: row.to,
    template: row.template,
    status: row.status.toUpperCase() as EmailStatus,
    sendAt: row.sendAt,
    attempts: row.attempts,
    providerId: row.providerId,
    lastError: row.lastError,
    createdAt: row.createdAt,
    sentAt: row.sentAt,
  }
}

/** The provider's `retry-after` when it gave one, else exponential backoff with jitter so a burst of failures does not retry in lockstep. */
export function retryDelayMs(attempts: number, retryAfterMs?: number, random: () => number = Math.random): number {
  if (retryAfterMs !== undefined && Number.isFinite(retryAfterMs) && retryAfterMs >= 0) return Math.min(retryAfterMs, MAX_RETRY_MS)
  const ceiling = Math.min(MAX_RETRY_MS, BASE_RETRY_MS * 2 ** Math.max(0, attempts - 1))
  return Math.round(ceiling / 2 + (random() * ceiling) / 2)
}

function interval(ms: number) {
  return sql`make_interval(secs => ${ms / 1000}::double precision)`
}

export function leaseUntil(leaseMs: number) {
  return sql`now() + ${interval(leaseMs)}`
}

/** Claims one due, queued row; undefined when it is not due, already claimed or no longer queued. */
export async function claimEmailById(db: Database, id: string, leaseMs = DEFAULT_LEASE_MS): Promise<EmailRow | undefined> {
  const [row] = await db
    .update(emails)
    .set({ status: 'sending', lockedUntil: leaseUntil(leaseMs), attempts: sql`${emails.attempts} + 1` })
    .where(and(eq(emails.id, id), eq(emails.status, 'queued'), lte(emails.sendAt, sql`now()`)))
    .returning()
  return row
}

/**
 * Sends a row this process has claimed and records the outcome. The idempotency key is the same
 * on every attempt, so a retry after a crash (sent, but not yet marked sent) cannot send twice.
 * Errors from the database propagate; the row then stays `sending` and is reclaimed when its lease expires.
 */
export async function deliverClaimedEmail(deps: DeliveryDeps, row: EmailRow): Promise<EmailRow> {
  const log = { emailId: row.id, template: row.template, attempts: row.attempts }
  // Only a row whose sends keep crashing the process gets here: retryable errors give up earlier.
  if (row.attempts > MAX_ATTEMPTS) return finish(deps.db, row, failed(`Gave up after ${MAX_ATTEMPTS} attempts`))

  let rendered
  try {
    rendered = deps.renderer(row.template, row.data)
  } catch (err) {
    deps.logger?.error({ ...log, err }, 'email template failed to render')
    return finish(deps.db, row, failed(errorMessage(err)))
  }

  let providerId: string
  try {
    ;({ providerId } = await deps.transport.send(
      {
        from: deps.from,
        to: [row.to],
        subject: rendered.subject,
        html: rendered.html,
        text: rendered.text,
        tags: [{ name: 'template', value: row.template.replace(/[^A-Za-z0-9_-]/g, '_') }],
      },
      { idempotencyKey: `email/${row.id}` },
    ))
  } catch (err) {
    // Anything but a provider's explicit "no" (a bug, a dropped socket) is retried: a retry cannot double-send.
    const retryable = !(err instanceof MailProviderError) || err.retryable
    const message = errorMessage(err)
    if (!retryable) {
      deps.logger?.warn({ ...log, err }, 'email rejected by the provider')
      return finish(deps.db, row, failed(message))
    }
    if (row.attempts >= MAX_ATTEMPTS) {
      deps.logger?.error({ ...log, err }, 'email still failing after the last attempt')
      return finish(deps.db, row, failed(`${message} (gave up after ${row.attempts} attempts)`))
    }
    const delayMs = retryDelayMs(row.attempts, err instanceof MailProviderError ? err.retryAfterMs : undefined)
    deps.logger?.warn({ ...log, err, retryInMs: delayMs }, 'email delivery failed, will retry')
    return finish(deps.db, row, {
      status: 'queued',
      sendAt: sql`now() + ${interval(delayMs)}`,
      lockedUntil: null,
      lastError: message,
    })
  }

  const sent = await record(
    deps.db,
    row,
    {
      status: 'sent',
      providerId,
      sentAt: sql`now()`,
      lockedUntil: null,
      lastError: null,
      // The data held the raw single-use token of a verification or reset link; it is no longer needed.
      data: {},
    },
    // Delivered is delivered, even if a slow attempt lost its lease to another worker meanwhile.
    false,
  )
  deps.logger?.info({ ...log, providerId }, 'email sent')
  // Not applied: a slower twin already recorded (and announced) this delivery.
  if (sent.applied) {
    try {
      deps.onSent?.(toEmailRecord(sent.row))
    } catch (err) {
      deps.logger?.error({ ...log, err }, 'onSent listener failed')
    }
  }
  return sent.row
}

/** A final failure. Its data goes as on success: it may hold the raw token of a link nobody will be sent. */
function failed(reason: string) {
  return { status: 'failed' as const, lockedUntil: null, lastError: reason.slice(0, 2000), data: {} }
}

/**
 * Records an outcome while the row is still `sending`. With `fenced`, only if nobody reclaimed
 * it since (the attempt count is the fencing token), so a stale worker cannot requeue or fail a
 * row another worker is sending. `applied` is false when someone else got there first.
 */
async function record(
  db: Database,
  row: EmailRow,
  set: EmailUpdate,
  fenced = true,
): Promise<{ row: EmailRow; applied: boolean }> {
  const conditions = [eq(emails.id, row.id), eq(emails.status, 'sending')]
  if (fenced) conditions.push(eq(emails.attempts, row.attempts))
  const [updated] = await db
    .update(emails)
    .set(set)
    .where(and(...conditions))
    .returning()
  if (updated) return { row: updated, applied: true }
  const [current] = await db.select().from(emails).where(eq(emails.id, row.id))
  return { row: current ?? row, applied: false }
}

async function finish(db: Database, row: EmailRow, set: EmailUpdate): Promise<EmailRow> {
  return (await record(db, row, set)).row
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

export interface EmailServiceDeps {
  db: Database
  transport: MailTransport
  from: string
  links: { verifyEmailUrl: string; resetPasswordUrl: string }
  /** Loaded and checked at boot (EMAIL_TEMPLATES_DIR); the bundled templates when absent. */
  templates?: TransactionalTemplates
  logger?: EmailLogger
  onSent?: (email: EmailRecord) => void
  leaseMs?: number
}

export interface SendEmailOptions {
  /** Deliver at this time instead of now. */
  sendAt?: Date
  /** A second call with the same key returns the first email instead of queueing another. */
  dedupeKey?: string
}

export interface EmailUser {
  id: string
  email: string
  name?: string | null
}

export interface EventReminderInput {
  user: EmailUser
  event: { id: string; title: string; date: Date | string; location: string; url?: string | null }
  sendAt: Date
}

export class EmailService {
  private readonly delivery: DeliveryDeps
  private readonly leaseMs: number
  private readonly templates: TransactionalTemplates

  /** Throws TemplateFilesError when the templates lack one this service sends, or need data it never provides. */
  constructor(private readonly deps: EmailServiceDeps) {
    this.templates = deps.templates ?? bundledTemplates()
    this.templates.assertProvides(SENT_TEMPLATES)
    this.delivery = { ...deps, renderer: templateRenderer(this.templates) }
    this.leaseMs = deps.leaseMs ?? DEFAULT_LEASE_MS
  }

  /**
   * Validates and renders up front (bad input fails here and queues nothing), stores the row,
   * and delivers it at once when it is due. A provider outage still returns the email, QUEUED.
   */
  async sendEmail(to: string, template: string, data: unknown, opts: SendEmailOptions = {}): Promise<EmailRecord> {
    const address = checkAddress(to)
    const context = this.templates.validateData(template, data)
    this.templates.render(template, context)
    if (opts.sendAt && Number.isNaN(opts.sendAt.getTime())) throw ValidationError.field(['sendAt'], 'sendAt is not a valid date')

    const [inserted] = await this.deps.db
      .insert(emails)
      .values({ template, to: address, data: context, sendAt: opts.sendAt, dedupeKey: opts.dedupeKey })
      .onConflictDoNothing({ target: emails.dedupeKey })
      .returning()
    if (!inserted) return this.findByDedupeKey(opts.dedupeKey!)
    if (opts.sendAt && opts.sendAt.getTime() > Date.now()) return toEmailRecord(inserted)

    try {
      const claimed = await claimEmailById(this.deps.db, inserted.id, this.leaseMs)
      if (!claimed) return toEmailRecord(inserted)
      return toEmailRecord(await deliverClaimedEmail(this.delivery, claimed))
    } catch (err) {
      // The row is stored; throwing now would make the caller retry and queue the email twice.
      this.deps.logger?.error({ emailId: inserted.id, err }, 'immediate email delivery failed; the dispatcher will retry')
      return toEmailRecord(inserted)
    }
  }

  async sendWelcomeEmail(user: EmailUser): Promise<EmailRecord> {
    const to = checkAddress(user.email)
    const { token } = await issueEmailToken(this.deps.db, {
      kind: 'verify_email',
      userId: user.id,
      email: to,
      ttlMs: EMAIL_VERIFICATION_TTL_MS,
    })
    return this.sendEmail(to, 'welcome', {
      name: user.name,
      verificationLink: withToken(this.deps.links.verifyEmailUrl, token),
    })
  }

  async requestPasswordReset(user: EmailUser): Promise<EmailRecord> {
    const to = checkAddress(user.email)
    const { token } = await issueEmailToken(this.deps.db, {
      kind: 'password_reset',
      userId: user.id,
      email: to,
      ttlMs: PASSWORD_RESET_TTL_MS,
    })
    return this.sendEmail(to, 'password-reset', {
      name: user.name,
      resetLink: withToken(this.deps.links.resetPasswordUrl, token),
      expiresInMinutes: Math.round(PASSWORD_RESET_TTL_MS / 60_000),
    })
  }

  async scheduleEventReminder({ user, event, sendAt }: EventReminderInput): Promise<EmailRecord> {
    if (!(sendAt instanceof Date) || Number.isNaN(sendAt.getTime())) throw ValidationError.field(['sendAt'], 'sendAt is not a valid date')
    const now = Date.now()
    if (sendAt.getTime() < now) throw ValidationError.field(['sendAt'], 'sendAt must be in the future')
    if (sendAt.getTime() > now + MAX_SCHEDULE_AHEAD_MS) throw ValidationError.field(['sendAt'], 'sendAt must be within a year')
    return this.sendEmail(
      user.email,
      'event-reminder',
      { name: user.name, event: { title: event.title, date: event.date, location: event.location, url: event.url } },
      // Each id escaped: free-form ids with a slash ("team/7" and "42/team") must not make another pair's key.
      { sendAt, dedupeKey: `event-reminder/${encodeURIComponent(event.id)}/${encodeURIComponent(user.id)}/${sendAt.toISOString()}` },
    )
  }

  verifyEmail(token: string): Promise<{ userId: string; email: string }> {
    return consumeEmailToken(this.deps.db, 'verify_email', token)
  }

  consumePasswordResetToken(token: string): Promise<{ userId: string; email: string }> {
    return consumeEmailToken(this.deps.db, 'password_reset', token)
  }

  async getEmail(id: string): Promise<EmailRecord> {
    const [row] = UUID.test(id) ? await this.deps.db.select().from(emails).where(eq(emails.id, id)) : []
    if (!row) throw new NotFoundError('Email', id)
    return toEmailRecord(row)
  }

  /** Only a queued email can be cancelled: once claimed, the provider may already have it. */
  async cancelScheduledEmail(id: string): Promise<EmailRecord> {
    const [row] = UUID.test(id)
      ? await this.deps.db
          .update(emails)
          // Never sent now: the data (a reminder's, or a link's raw token) is no longer needed.
          .set({ status: 'cancelled', lockedUntil: null, data: {} })
          .where(and(eq(emails.id, id), eq(emails.status, 'queued')))
          .returning()
      : []
    if (row) return toEmailRecord(row)
    const current = await this.getEmail(id)
    throw new ConflictError(`The email is ${current.status.toLowerCase()} and can no longer be cancelled`)
  }

  private async findByDedupeKey(dedupeKey: string): Promise<EmailRecord> {
    const [existing] = await this.deps.db.select().from(emails).where(eq(emails.dedupeKey, dedupeKey))
    if (!existing) throw new ConflictError('An email with this dedupe key was just removed; try again')
    return toEmailRecord(existing)
  }
}

export function templateRenderer(templates: TransactionalTemplates): EmailRenderer {
  return (template, data) => templates.render(template, data)
}

function checkAddress(to: string): string {
  const result = checkEmail(to)
  if (!result.valid) throw ValidationError.field(['to'], `The email address ${result.reason}`)
  return result.normalized!
}

function withToken(base: string, token: string): string {
  const url = new URL(base)
  url.searchParams.set('token', token)
  return url.toString()
}
