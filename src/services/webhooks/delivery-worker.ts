/**
 * Sends due deliveries. Every instance with workers polls; each claims only as many rows as it has
 * free slots, so a claimed row is being sent at once and its lease only has to outlast one
 * request. A 2xx is delivered; anything else (a timeout, a refused connection, a 3xx, 4xx or 5xx)
 * is retried on the schedule until the attempts run out. An endpoint is disabled after
 * `disableAfterFailures` deliveries in a row failed for good, or at once on a 410 Gone (the receiver
 * is gone for good), as Svix does.
 */
import type { Database } from '../../infra/db/client'
import {
  claimDeliveries,
  markAttemptFailed,
  markDelivered,
  pruneDeliveries,
  recordEndpointFailure,
  recordEndpointSuccess,
  releaseDelivery,
  type ClaimedDelivery,
} from './delivery-queue'
import type { Instrumentation } from '../instrumentation'
import { nextRetryDelay, type RetryPolicy } from './retry-schedule'
import { createAgents, postWebhook, type PostResult } from './webhook-request'
import { forgetExpiredSecrets } from './endpoint-service'
import { signWebhook } from './webhook-signature'

export interface DeliveryWorkerDeps {
  db: Database
  retry: RetryPolicy
  timeoutMs: number
  concurrency: number
  disableAfterFailures: number
  allowPrivate: boolean
  /** Delivered and failed rows older than this are deleted; 0 keeps them. */
  retentionDays: number
  pollMs?: number
  pruneIntervalMs?: number
  instrumentation?: Pick<Instrumentation, 'webhookDelivery'>
  logger?: { warn(obj: Record<string, unknown>, msg?: string): void; error(obj: Record<string, unknown>, msg?: string): void }
}

export interface DrainResult {
  delivered: number
  failed: number
}

/** Past the request deadline, so a live worker's row is never claimed twice. */
const LEASE_MARGIN_MS = 30_000

export class DeliveryWorker {
  private readonly agents
  private readonly abort = new AbortController()
  private draining: Promise<DrainResult> | null = null
  private timer: NodeJS.Timeout | null = null
  private pruneTimer: NodeJS.Timeout | null = null
  private again = false
  private stopped = false

  /** Half the slots at most for one endpoint, so one that hangs leaves the rest to the others. */
  private readonly perEndpoint: number

  constructor(private readonly deps: DeliveryWorkerDeps) {
    this.agents = createAgents(deps.concurrency)
    this.perEndpoint = Math.max(1, Math.floor(deps.concurrency / 2))
  }

  /** Polls for due deliveries and prunes old ones (instances with workers). */
  start(): void {
    if (this.timer) return
    this.timer = setInterval(() => {
      this.drain().catch((err: unknown) => this.deps.logger?.error({ err }, 'webhook delivery failed'))
    }, this.deps.pollMs ?? 1_000)
    this.timer.unref()
    this.pruneTimer = setInterval(() => {
      this.prune().catch((err: unknown) => this.deps.logger?.warn({ err }, 'pruning webhook deliveries failed'))
    }, this.deps.pruneIntervalMs ?? 3_600_000)
    this.pruneTimer.unref()
  }

  /**
   * Stops claiming, aborts the requests in flight and gives their rows back uncounted, so another
   * instance (or this one after its restart) sends them at once instead of after the lease.
   */
  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    if (this.pruneTimer) clearInterval(this.pruneTimer)
    this.timer = this.pruneTimer = null
    this.abort.abort()
    await this.draining?.catch(() => undefined)
    this.agents.destroy()
  }

  /**
   * Sends everything due when called and resolves when it is all done. Retries scheduled meanwhile
   * wait for the next drain (the next poll), so a drain always ends, however short the schedule.
   * Called while a drain runs, it joins it and makes it pass once more: the running pass only sends
   * what was due when it started, and the caller expects what is due now.
   */
  drain(): Promise<DrainResult> {
    if (this.draining) {
      this.again = true
      return this.draining
    }
    this.draining = (async () => {
      const total: DrainResult = { delivered: 0, failed: 0 }
      do {
        this.again = false
        const pass = await this.run()
        total.delivered += pass.delivered
        total.failed += pass.failed
      } while (this.again && !this.stopped)
      return total
    })().finally(() => {
      this.draining = null
    })
    return this.draining
  }

  /** Deletes delivered and failed rows past retention, as of `now`. */
  async prune(now: Date = new Date()): Promise<number> {
    await forgetExpiredSecrets(this.deps.db, now)
    if (this.deps.retentionDays <= 0) return 0
    return pruneDeliveries(this.deps.db, new Date(now.getTime() - this.deps.retentionDays * 86_400_000))
  }

  private async run(): Promise<DrainResult> {
    const result: DrainResult = { delivered: 0, failed: 0 }
    const inFlight = new Set<Promise<void>>()
    const leaseMs = this.deps.timeoutMs + LEASE_MARGIN_MS
    const dueBy = new Date()
    while (!this.stopped) {
      const free = this.deps.concurrency - inFlight.size
      const rows = free > 0 ? await claimDeliveries(this.deps.db, free, leaseMs, dueBy, this.perEndpoint) : []
      for (const row of rows) {
        const sending: Promise<void> = this.deliver(row, result)
          .catch((err: unknown) => this.deps.logger?.warn({ err, deliveryId: row.id }, 'webhook delivery attempt not recorded; it is retried after its lease'))
          .finally(() => inFlight.delete(sending))
        inFlight.add(sending)
      }
      if (inFlight.size === 0) break
      // Claim again as soon as a slot frees up: more rows may be due than there are slots.
      if (rows.length === 0 || inFlight.size >= this.deps.concurrency) await Promise.race(inFlight)
    }
    await Promise.all(inFlight)
    return result
  }

  private async deliver(row: ClaimedDelivery, result: DrainResult): Promise<void> {
    const { db } = this.deps
    if (!row.endpointEnabled) {
      // Queued before the endpoint was disabled: failed, so redeliverWebhookDelivery can send it once it is enabled again.
      await markAttemptFailed(db, row, { statusCode: null, error: 'The endpoint is disabled' }, null)
      result.failed++
      this.deps.instrumentation?.webhookDelivery('failed', 0)
      return
    }
    const body = JSON.stringify(row.payload)
    const headers = signWebhook(row.secrets, row.messageId, Math.floor(Date.now() / 1000), body)
    const started = performance.now()
    const outcome = await postWebhook(row.url, body, { ...headers }, { timeoutMs: this.deps.timeoutMs, allowPrivate: this.deps.allowPrivate, signal: this.abort.signal }, this.agents)
    if (outcome.aborted) {
      await releaseDelivery(db, row)
      return
    }
    const seconds = (performance.now() - started) / 1000
    if (outcome.ok) {
      await markDelivered(db, row, outcome)
      await recordEndpointSuccess(db, row.endpointId)
      result.delivered++
      this.deps.instrumentation?.webhookDelivery('delivered', seconds)
      return
    }
    const retried = await this.failed(row, outcome, result)
    this.deps.instrumentation?.webhookDelivery(retried ? 'retry' : 'failed', seconds)
  }

  /** Records a failed attempt; true when it is scheduled again. Only a delivery given up counts against the endpoint. */
  private async failed(row: ClaimedDelivery, outcome: PostResult, result: DrainResult): Promise<boolean> {
    const gone = outcome.statusCode === 410
    const delay = gone ? null : nextRetryDelay(this.deps.retry, row.attempts)
    await markAttemptFailed(this.deps.db, row, outcome, delay)
    if (delay !== null) return true
    result.failed++
    const health = await recordEndpointFailure(this.deps.db, row.endpointId, this.deps.disableAfterFailures, gone ? 'The endpoint answered 410 Gone' : null)
    if (health.disabled) this.deps.logger?.warn({ endpointId: row.endpointId, lastError: outcome.error }, 'webhook endpoint disabled')
    return false
  }
}
