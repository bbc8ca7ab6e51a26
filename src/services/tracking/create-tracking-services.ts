/**
 * Wires email tracking from its adapters. Campaigns and tracking need each other (campaigns render
 * tracked links and report sends and unsubscribes; tracking applies webhook events to campaign
 * recipients and pushes their stats), so the campaign side is reached through a getter that is
 * only called once both exist.
 */
import type { TrackingConfig } from '../../config'
import type { Database } from '../../infra/db/client'
import type { UrlSigner } from '../../infra/storage/signed-url'
import type { RecipientFeedbackService } from '../campaigns/recipient-feedback'
import { engagementEvents } from '../webhooks/engagement-events'
import type { WebhookEnqueuer } from '../webhooks/webhook-event-types'
import type { EngagementKind, Instrumentation } from '../instrumentation'
import { ConversionService } from './conversions'
import { EmailAnalytics } from './email-analytics'
import { EngagementWriter, type Hit } from './engagement-writer'
import { EventBuffer } from './event-buffer'
import { EventPruner } from './event-pruner'
import { EVENT_TYPE_NAMES, EventType } from './event-types'
import { HitRecorder } from './hit-recorder'
import { createMachineDetector, type MachineDetector } from './machine-detection'
import { createMessageTracking, type MessageTracking } from './message-tracking'
import { createTrackingTokens, type TrackingTokens } from './tracking-tokens'
import { createWebhookIntake, type WebhookIntake } from './webhook-intake'
import { parseResendEvent } from './webhook-payload'
import { WebhookProcessor } from './webhook-processor'
import { createWebhookVerifier } from './webhook-verifier'

type Logger = {
  info(obj: Record<string, unknown>, msg?: string): void
  warn(obj: Record<string, unknown>, msg?: string): void
  error(obj: Record<string, unknown>, msg?: string): void
}

/** What the campaign side gets from tracking. */
export interface CampaignTrackingHooks {
  /** Undefined when opens and clicks are both off. */
  message?: MessageTracking
  /** A batch was recorded: counted in the rollups (sent today, failed today...). */
  sendOutcome(accepted: number[], failed: number[]): void
  unsubscribed(recipientId: number): void
}

export interface CampaignSide {
  feedback: Pick<RecipientFeedbackService, 'applyDeliveryEvent' | 'applyDeliveryEvents'>
  /** The campaign's figures changed: subscribers hear about it (merged, at most once a second). */
  statsChanged(campaignId: string): void
}

export interface TrackingServicesDeps {
  db: Database
  signer: UrlSigner
  publicUrl: string
  config: TrackingConfig
  campaigns: () => CampaignSide
  /** Outgoing webhooks: applied events are queued for the app's endpoints in the transaction that applies them. */
  outgoingWebhooks?: WebhookEnqueuer
  pollMs?: number
  logger?: Logger
  instrumentation?: Pick<Instrumentation, 'engagementStored' | 'conversionRecorded' | 'webhookReceived' | 'webhookApplied'>
}

export interface TrackingServices {
  tokens: TrackingTokens
  recorder: HitRecorder
  conversions: ConversionService
  analytics: EmailAnalytics
  webhooks: {
    /** POST /webhooks/resend: verify, store, and kick processing for after the answer. */
    receive: WebhookIntake
    processor: WebhookProcessor
  }
  buffer: EventBuffer<Hit>
  writer: EngagementWriter
  pruner: EventPruner
  campaignHooks: CampaignTrackingHooks
  isMachine: MachineDetector
  /** Stores the buffered hits now (tests, shutdown). */
  flush(): Promise<void>
  /** Webhook polling and retention (instances with workers). */
  startWorkers(): void
  /** Stops the workers and stores what is buffered. */
  close(): Promise<void>
}

export function createTrackingServices(deps: TrackingServicesDeps): TrackingServices {
  const { db, config, logger, instrumentation } = deps
  const notify = (campaignId: string) => deps.campaigns().statsChanged(campaignId)
  const outgoing = deps.outgoingWebhooks
  const writer = new EngagementWriter(db, {
    scannerWindowMs: config.scannerWindowSeconds * 1000,
    onWritten: outgoing && ((tx, written) => outgoing.enqueue(tx, engagementEvents(written))),
  })
  const tokens = createTrackingTokens(deps.signer)
  const isMachine = createMachineDetector(config.machineUserAgents)
  const buffer = new EventBuffer<Hit>({
    max: config.bufferMax,
    batchSize: config.flushBatch,
    intervalMs: config.flushMs,
    logger,
    write: async (batch) => {
      for (const campaignId of await writer.write(batch)) notify(campaignId)
      if (instrumentation) reportEngagement(batch, instrumentation)
    },
  })
  buffer.start()
  const recorder = new HitRecorder({ tokens, buffer, isMachine, conversionParam: config.conversionParam })
  const processor = new WebhookProcessor({
    db,
    feedback: {
      applyDeliveryEvent: (...args) => deps.campaigns().feedback.applyDeliveryEvent(...args),
      applyDeliveryEvents: (...args) => deps.campaigns().feedback.applyDeliveryEvents(...args),
    },
    writer,
    notify,
    outgoing,
    concurrency: config.webhookConcurrency,
    pollMs: deps.pollMs,
    logger,
    instrumentation,
  })
  const pruner = new EventPruner(db, {
    eventRetentionDays: config.eventRetentionDays,
    webhookRetentionDays: config.webhookRetentionDays,
    intervalMs: config.pruneIntervalMs,
    logger,
  })
  return {
    tokens,
    recorder,
    conversions: new ConversionService({
      db,
      tokens,
      windowSeconds: config.attributionWindowHours * 3600,
      once: config.conversionOnce,
      defaultCurrency: config.defaultCurrency,
      notify,
      instrumentation,
      outgoing,
    }),
    analytics: new EmailAnalytics(db, () => {
      const s = buffer.stats()
      return { buffered: s.buffered, dropped: s.dropped }
    }),
    webhooks: {
      receive: countedIntake(
        createWebhookIntake({
          db,
          verify: config.webhookSecret ? createWebhookVerifier(config.webhookSecret) : null,
          parse: (payload) => parseResendEvent(payload, isMachine),
          // After the current I/O turn, so the provider has its answer first.
          stored: () => setImmediate(() => processor.kick()),
        }),
        instrumentation,
      ),
      processor,
    },
    buffer,
    writer,
    pruner,
    isMachine,
    campaignHooks: {
      message: createMessageTracking({ tokens, publicUrl: deps.publicUrl, opens: config.opens, clicks: config.clicks, linkTtlSeconds: config.linkTtlDays * 86_400 }),
      sendOutcome(accepted, failed) {
        if (accepted.length > 0) recorder.sendOutcome(accepted, EventType.sent)
        if (failed.length > 0) recorder.sendOutcome(failed, EventType.failed)
      },
      unsubscribed: (recipientId) => recorder.unsubscribed(recipientId),
    },
    flush: () => buffer.flush(),
    startWorkers() {
      processor.start()
      pruner.start()
    },
    async close() {
      await processor.stop()
      await pruner.stop()
      await buffer.close()
    },
  }
}

/** Opens, clicks and unsubscribes of a stored batch; send outcomes in it are counted where they are sent. */
function reportEngagement(batch: readonly Hit[], instrumentation: Pick<Instrumentation, 'engagementStored'>): void {
  const counts: Record<EngagementKind, [human: number, machine: number]> = { open: [0, 0], click: [0, 0], unsubscribe: [0, 0] }
  for (const hit of batch) {
    const name = EVENT_TYPE_NAMES[hit.type]
    if (name === 'open' || name === 'click' || name === 'unsubscribe') counts[name][hit.machine ? 1 : 0] += 1
  }
  for (const [kind, [human, machine]] of Object.entries(counts) as [EngagementKind, [number, number]][]) {
    if (human > 0) instrumentation.engagementStored(kind, false, human)
    if (machine > 0) instrumentation.engagementStored(kind, true, machine)
  }
}

function countedIntake(intake: WebhookIntake, instrumentation: Pick<Instrumentation, 'webhookReceived'> | undefined): WebhookIntake {
  if (!instrumentation) return intake
  return async (rawBody, headers) => {
    try {
      const result = await intake(rawBody, headers)
      instrumentation.webhookReceived(result.status)
      return result
    } catch (err) {
      instrumentation.webhookReceived('error')
      throw err
    }
  }
}
