/**
 * Delivers queued emails whose time has come, and reclaims rows whose sender died mid-send.
 * Any number of dispatchers (one per instance) share the table: `FOR UPDATE SKIP LOCKED` hands
 * each row to one of them, and the `locked_until` lease hands it to another if that one crashes.
 */
import { and, eq, inArray, lt, lte, or, sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { emails } from '../../infra/db/schema/email'
import type { MailTransport } from '../../infra/mail/types'
import {
  DEFAULT_LEASE_MS,
  deliverClaimedEmail,
  leaseUntil,
  type DeliveryDeps,
  type EmailLogger,
  type EmailRecord,
  type EmailRow,
  templateRenderer,
} from './email-service'
import { bundledTemplates, type TransactionalTemplates } from './templates'

export interface EmailDispatcherDeps {
  db: Database
  transport: MailTransport
  from: string
  /** The set the emails were queued with (EMAIL_TEMPLATES_DIR); the bundled templates when absent. */
  templates?: TransactionalTemplates
  logger?: EmailLogger
  /** Pause between polls when there was nothing (or little) to do. */
  pollMs?: number
  batchSize?: number
  leaseMs?: number
  onSent?: (email: EmailRecord) => void
}

/**
 * Claims up to `limit` due rows: queued ones whose send_at has passed, and sending ones whose
 * lease expired (their worker crashed). Claiming bumps `attempts`, which also fences off a
 * stale worker that comes back late.
 */
export async function claimDueEmails(db: Database, limit: number, leaseMs = DEFAULT_LEASE_MS): Promise<EmailRow[]> {
  const due = db
    .select({ id: emails.id })
    .from(emails)
    .where(
      or(
        and(eq(emails.status, 'queued'), lte(emails.sendAt, sql`now()`)),
        and(eq(emails.status, 'sending'), lt(emails.lockedUntil, sql`now()`)),
      ),
    )
    .orderBy(emails.sendAt)
    .limit(limit)
    .for('update', { skipLocked: true })
  const rows = await db
    .update(emails)
    .set({ status: 'sending', lockedUntil: leaseUntil(leaseMs), attempts: sql`${emails.attempts} + 1` })
    .where(inArray(emails.id, due))
    .returning()
  return rows.sort((a, b) => a.sendAt.getTime() - b.sendAt.getTime())
}

export class EmailDispatcher {
  private readonly delivery: DeliveryDeps
  private readonly pollMs: number
  private readonly batchSize: number
  private readonly leaseMs: number
  private running = false
  private timer: NodeJS.Timeout | undefined
  private readonly inFlight = new Set<Promise<number>>()

  constructor(private readonly deps: EmailDispatcherDeps) {
    this.delivery = {
      db: deps.db,
      transport: deps.transport,
      from: deps.from,
      renderer: templateRenderer(deps.templates ?? bundledTemplates()),
      logger: deps.logger,
      onSent: deps.onSent,
    }
    this.pollMs = deps.pollMs ?? 1_000
    this.batchSize = deps.batchSize ?? 20
    this.leaseMs = deps.leaseMs ?? DEFAULT_LEASE_MS
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.schedule(0)
  }

  /** Stops polling and waits for the batch in flight, so shutdown does not abandon claimed rows to the lease timeout. */
  async stop(): Promise<void> {
    this.running = false
    clearTimeout(this.timer)
    this.timer = undefined
    await Promise.allSettled([...this.inFlight])
  }

  /** Claims and delivers one batch; returns how many rows it claimed. */
  runOnce(): Promise<number> {
    const run = this.deliverBatch()
    this.inFlight.add(run)
    // Errors reach the caller through `run`; this branch only tidies up and must not reject unhandled.
    run.then(
      () => this.inFlight.delete(run),
      () => this.inFlight.delete(run),
    )
    return run
  }

  private async deliverBatch(): Promise<number> {
    const rows = await claimDueEmails(this.deps.db, this.batchSize, this.leaseMs)
    await Promise.all(
      rows.map((row) =>
        deliverClaimedEmail(this.delivery, row).catch((err: unknown) => {
          // The row keeps its lease and is reclaimed when it expires; the idempotency key makes that safe.
          this.deps.logger?.error({ emailId: row.id, err }, 'recording an email delivery failed')
        }),
      ),
    )
    return rows.length
  }

  private schedule(delayMs: number): void {
    if (!this.running) return
    this.timer = setTimeout(() => void this.tick(), delayMs)
    // A pending poll must not keep a process alive that is otherwise done (scripts, tests).
    this.timer.unref()
  }

  private async tick(): Promise<void> {
    let claimed = 0
    try {
      claimed = await this.runOnce()
    } catch (err) {
      this.deps.logger?.error({ err }, 'email dispatcher poll failed')
    }
    // A full batch means there is probably more due: go again without waiting.
    this.schedule(claimed >= this.batchSize ? 0 : this.pollMs)
  }
}
