/**
 * Sends campaigns, in every instance at once: starts scheduled campaigns that are due, claims
 * batches of recipients (a new batch, or one whose lease expired or whose retry is due), renders
 * them, waits for the global rate limiter, sends them as one provider request under the batch's
 * idempotency key, and records the per-recipient outcome. Modelled on EmailDispatcher: start, stop,
 * runOnce, and a crash loses nothing.
 */
import { eq, sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { campaigns, emailTemplateVersions } from '../../infra/db/schema/campaigns'
import { MailProviderError, type MailMessage, type MailTransport } from '../../infra/mail/types'
import { BoundedMap } from '../../lib/bounded-map'
import { DEFAULT_LEASE_MS, retryDelayMs, type EmailLogger } from '../email/email-service'
import {
  deferBatch,
  formBatch,
  prepareBatchRecipients,
  reclaimBatch,
  recordBatch,
  releaseBatch,
  splitBatch,
  type BatchOutcome,
  type ClaimedBatch,
} from './campaign-batches'
import { buildCampaignMessage, type CampaignForSending } from './campaign-message'
import { completeCampaignIfDone, dueScheduledCampaignIds, startCampaign } from './campaign-start'
import type { CampaignStatsPublisher } from './campaign-stats'
import type { RateLimiter } from './rate-limiter'
import { compileTemplate, type CompiledTemplate } from './template-engine'
import type { UnsubscribeLinks } from './unsubscribe-links'
import type { CampaignTrackingHooks } from '../tracking/create-tracking-services'

export interface CampaignDispatcherDeps {
  db: Database
  transport: MailTransport
  limiter: RateLimiter
  links: UnsubscribeLinks
  stats: CampaignStatsPublisher
  /** Tracked links in the HTML, and send outcomes counted in the tracking rollups. */
  tracking?: CampaignTrackingHooks
  logger?: EmailLogger
  unsubscribeMailto?: string
  pollMs?: number
  /** Recipients per provider request (at most 100). */
  batchSize?: number
  /** Batches this instance works on at once. */
  concurrency?: number
  leaseMs?: number
  /** Consecutive 5xx/timeouts of one batch before the campaign is paused for a human. */
  maxFailures?: number
}

/** A 429 without retry-after: Resend's limit is per second, so a second is the natural wait. */
const DEFAULT_RATE_LIMIT_WAIT_MS = 1_000
const DEFAULT_MAX_FAILURES = 8
const TEMPLATE_CACHE_SIZE = 50

export class CampaignDispatcher {
  private readonly pollMs: number
  private readonly batchSize: number
  private readonly concurrency: number
  private readonly leaseMs: number
  private readonly maxFailures: number
  private readonly templates = new BoundedMap<string, CompiledTemplate>(TEMPLATE_CACHE_SIZE)
  private running = false
  private abort = new AbortController()
  private lanes: Promise<void>[] = []
  private readonly inFlight = new Set<Promise<number>>()

  constructor(private readonly deps: CampaignDispatcherDeps) {
    this.pollMs = deps.pollMs ?? 1_000
    this.batchSize = Math.min(100, Math.max(1, deps.batchSize ?? 100))
    this.concurrency = Math.max(1, deps.concurrency ?? 2)
    this.leaseMs = deps.leaseMs ?? DEFAULT_LEASE_MS
    this.maxFailures = deps.maxFailures ?? DEFAULT_MAX_FAILURES
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.abort = new AbortController()
    this.lanes = Array.from({ length: this.concurrency }, (_, i) => this.lane(i))
  }

  /** Stops claiming, hands back batches still waiting for the rate limiter, and waits for the ones being sent. */
  async stop(): Promise<void> {
    this.running = false
    this.abort.abort()
    await Promise.allSettled([...this.lanes, ...this.inFlight])
    this.lanes = []
  }

  /** Starts due campaigns, then claims and sends one batch; returns how many recipients it claimed. */
  runOnce(): Promise<number> {
    const run = this.dispatchOne()
    this.inFlight.add(run)
    run.then(
      () => this.inFlight.delete(run),
      () => this.inFlight.delete(run),
    )
    return run
  }

  /** Runs until nothing is left to claim; for scripts, benchmarks and tests. */
  async drain(): Promise<number> {
    let total = 0
    for (;;) {
      const claimed = await Promise.all(Array.from({ length: this.concurrency }, () => this.runOnce()))
      const sum = claimed.reduce((a, b) => a + b, 0)
      if (sum === 0) return total
      total += sum
    }
  }

  private async lane(index: number): Promise<void> {
    // Staggered, so lanes of a fresh instance do not all poll in the same millisecond.
    await this.pause(index * 50)
    while (this.running) {
      let claimed = 0
      try {
        claimed = await this.runOnce()
      } catch (err) {
        this.deps.logger?.error({ err }, 'campaign dispatcher poll failed')
      }
      if (claimed === 0) await this.pause(this.pollMs)
    }
  }

  private async pause(ms: number): Promise<void> {
    if (!this.running || ms <= 0) return
    const signal = this.abort.signal
    await new Promise<void>((resolve) => {
      // The listener goes whichever way the pause ends: one left per idle poll piles up over a day.
      const done = () => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      // A pending poll must not keep a process alive that is otherwise done (scripts, tests).
      timer.unref()
      signal.addEventListener('abort', done, { once: true })
    })
  }

  private async dispatchOne(): Promise<number> {
    await this.startDueCampaigns()
    const batch = (await reclaimBatch(this.deps.db, this.leaseMs)) ?? (await this.formNextBatch())
    if (!batch) return 0
    await this.sendBatch(batch)
    return batch.size
  }

  private async startDueCampaigns(): Promise<void> {
    for (const id of await dueScheduledCampaignIds(this.deps.db)) {
      const started = await startCampaign(this.deps.db, id, { onlyIfDue: true })
      if (!started) continue
      this.deps.logger?.info({ campaignId: id, recipients: started.total, queued: started.queued }, 'scheduled campaign started')
      await completeCampaignIfDone(this.deps.db, id)
      await this.deps.stats.stateChanged(id)
    }
  }

  private async formNextBatch(): Promise<ClaimedBatch | null> {
    const sending = await this.deps.db
      .select({ id: campaigns.id, retryRound: campaigns.retryRound })
      .from(campaigns)
      .where(eq(campaigns.status, 'sending'))
      .orderBy(campaigns.startedAt)
      .limit(20)
    for (const campaign of sending) {
      const batch = await formBatch(this.deps.db, campaign, this.batchSize, this.leaseMs)
      if (batch) return batch
      // Nothing left to form: the campaign is done once its last batches are recorded.
      if (await completeCampaignIfDone(this.deps.db, campaign.id)) await this.deps.stats.stateChanged(campaign.id)
    }
    return null
  }

  private async sendBatch(batch: ClaimedBatch): Promise<void> {
    const { db, logger } = this.deps
    const log = { campaignId: batch.campaignId, batchId: batch.id, key: batch.idempotencyKey, attempts: batch.attempts }
    const campaign = await this.loadCampaign(batch.campaignId)
    if (!campaign) {
      await releaseBatch(db, batch, 'The campaign stopped sending after the batch was claimed')
      return
    }
    const prepared = await prepareBatchRecipients(db, batch)
    if (prepared.fenced) {
      logger?.warn(log, 'campaign batch was re-claimed by another worker before it was sent')
      return
    }
    const { recipients } = prepared
    if (prepared.dropped.length > 0) {
      logger?.info({ ...log, dropped: prepared.dropped.length }, 'recipients suppressed or unsubscribed while the batch waited were dropped from it')
      await this.deps.stats.changed(batch.campaignId)
    }
    if (prepared.kept.length > 0) {
      // The provider may hold this payload under the key already: a smaller one would be refused (409), a new key would mail the rest twice.
      logger?.warn({ ...log, kept: prepared.kept.map((r) => r.id) }, 'recipients suppressed since an attempt that may have reached the provider are re-sent with the batch unchanged')
    }
    const messages: MailMessage[] = []
    const sentIds: number[] = []
    const outcome: BatchOutcome = { accepted: [], failed: [] }
    for (const recipient of recipients) {
      const message = buildCampaignMessage(campaign, recipient, { links: this.deps.links, unsubscribeMailto: this.deps.unsubscribeMailto, tracking: this.deps.tracking?.message })
      if ('error' in message) outcome.failed.push({ id: recipient.id, reason: message.error })
      else {
        messages.push(message)
        sentIds.push(recipient.id)
      }
    }

    if (messages.length > 0) {
      try {
        await this.deps.limiter.acquire(this.abort.signal)
      } catch {
        await releaseBatch(db, batch, 'Dispatcher stopped before sending')
        return
      }
      try {
        // Permissive: one invalid address fails alone instead of refusing its 99 neighbours.
        const results = await this.deps.transport.sendBatch(messages, { idempotencyKey: batch.idempotencyKey, permissive: true })
        results.forEach((r, i) =>
          r.providerId !== undefined ? outcome.accepted.push({ id: sentIds[i]!, providerId: r.providerId }) : outcome.failed.push({ id: sentIds[i]!, reason: r.error }),
        )
        // The provider said its window is used up: hold every instance until it resets, instead of earning a 429.
        const window = this.deps.transport.rateLimit?.()
        if (window && window.remaining <= 0 && window.resetAt > Date.now()) await this.deps.limiter.backOff(window.resetAt - Date.now())
      } catch (err) {
        await this.handleSendError(batch, campaign, { allIds: recipients.map((r) => r.id), sentIds, renderFailures: outcome.failed }, err)
        return
      }
    }

    const recorded = await recordBatch(db, batch, outcome)
    if (recorded) this.deps.tracking?.sendOutcome(outcome.accepted.map((a) => a.id), outcome.failed.map((f) => f.id))
    if (!recorded) logger?.warn(log, 'campaign batch was re-claimed by another worker before it was recorded')
    else logger?.info({ ...log, accepted: outcome.accepted.length, failed: outcome.failed.length }, 'campaign batch sent')
    this.deps.stats.changed(batch.campaignId)
    if (await completeCampaignIfDone(db, batch.campaignId)) await this.deps.stats.stateChanged(batch.campaignId)
  }

  /**
   * 429, 5xx, timeouts: the same batch again later, never a failure. A refusal of the request as a
   * whole: narrowed down by splitting, so only the recipient at fault fails. Anything else (a bad
   * API key, say) would fail every batch alike, so the campaign is paused with the reason instead.
   */
  private async handleSendError(
    batch: ClaimedBatch,
    campaign: CampaignForSending & { retryRound: number },
    ids: { allIds: number[]; sentIds: number[]; renderFailures: BatchOutcome['failed'] },
    err: unknown,
  ): Promise<void> {
    const { db, logger } = this.deps
    const message = err instanceof Error ? err.message : String(err)
    const log = { campaignId: batch.campaignId, batchId: batch.id, key: batch.idempotencyKey, attempts: batch.attempts, err }
    const providerError = err instanceof MailProviderError ? err : undefined
    const retryable = !providerError || providerError.retryable

    if (retryable && providerError?.statusCode === 429) {
      const waitMs = providerError.retryAfterMs ?? DEFAULT_RATE_LIMIT_WAIT_MS
      await this.deps.limiter.backOff(waitMs)
      await deferBatch(db, batch, waitMs, message, false)
      logger?.warn({ ...log, retryInMs: waitMs }, 'provider rate limit hit; batch deferred')
      return
    }
    if (retryable) {
      const failures = batch.failures + 1
      const delayMs = retryDelayMs(failures, providerError?.retryAfterMs)
      await deferBatch(db, batch, delayMs, message, true)
      logger?.warn({ ...log, retryInMs: delayMs, failures }, 'campaign batch failed; will retry with the same key')
      if (failures >= this.maxFailures) await this.pauseCampaign(batch.campaignId, `The provider kept failing (${failures} attempts): ${message}`)
      return
    }
    const status = providerError?.statusCode
    if (status === 400 || status === 422) {
      if (ids.sentIds.length > 1) {
        await splitBatch(db, batch, ids.allIds, campaign.retryRound)
        logger?.warn(log, 'provider refused a batch; splitting it to find the recipient at fault')
        return
      }
      // One message left and still refused: that recipient fails, alone.
      const failed = [...ids.renderFailures, ...ids.sentIds.map((id) => ({ id, reason: message }))]
      const recorded = await recordBatch(db, batch, { accepted: [], failed })
      if (recorded) this.deps.tracking?.sendOutcome([], failed.map((f) => f.id))
      if (recorded) this.deps.stats.changed(batch.campaignId)
      if (await completeCampaignIfDone(db, batch.campaignId)) await this.deps.stats.stateChanged(batch.campaignId)
      return
    }
    await deferBatch(db, batch, 0, message, false)
    await this.pauseCampaign(batch.campaignId, `The provider refused the request: ${message}`)
    logger?.error(log, 'provider refused a campaign batch; campaign paused')
  }

  private async pauseCampaign(campaignId: string, reason: string): Promise<void> {
    const paused = await this.deps.db
      .update(campaigns)
      .set({ status: 'paused', pauseReason: reason.slice(0, 1000), updatedAt: sql`now()` })
      .where(sql`${campaigns.id} = ${campaignId} and ${campaigns.status} = 'sending'`)
      .returning({ id: campaigns.id })
    if (paused.length > 0) await this.deps.stats.stateChanged(campaignId)
  }

  /** The campaign with its compiled template, or null when it is no longer sending. */
  private async loadCampaign(id: string): Promise<(CampaignForSending & { retryRound: number }) | null> {
    const [row] = await this.deps.db
      .select({ campaign: campaigns, version: { id: emailTemplateVersions.id, version: emailTemplateVersions.version } })
      .from(campaigns)
      .innerJoin(emailTemplateVersions, eq(emailTemplateVersions.id, campaigns.templateVersionId))
      .where(eq(campaigns.id, id))
    if (!row || row.campaign.status !== 'sending' || !row.campaign.startedAt) return null
    return {
      id: row.campaign.id,
      from: row.campaign.from,
      replyTo: row.campaign.replyTo,
      tags: row.campaign.tags,
      startedAt: row.campaign.startedAt,
      templateId: row.campaign.templateId,
      templateVersion: row.version.version,
      retryRound: row.campaign.retryRound,
      template: await this.compiled(row.version.id),
    }
  }

  private async compiled(versionId: string): Promise<CompiledTemplate> {
    const cached = this.templates.get(versionId)
    if (cached) return cached
    const [version] = await this.deps.db.select().from(emailTemplateVersions).where(eq(emailTemplateVersions.id, versionId))
    if (!version) throw new Error(`Template version ${versionId} is missing`)
    const compiled = compileTemplate(version)
    this.templates.set(versionId, compiled)
    return compiled
  }
}
