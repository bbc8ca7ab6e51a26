/**
 * Wires the campaign domain from its adapters, so the app's services plugin needs one call.
 */
import type { Cluster, Redis } from 'ioredis'
import type { CampaignConfig, UnsubscribeScope } from '../../config'
import type { Database } from '../../infra/db/client'
import type { MailTransport } from '../../infra/mail/types'
import type { UrlSigner } from '../../infra/storage/signed-url'
import type { CacheService } from '../cache/cache-service'
import type { Instrumentation } from '../instrumentation'
import type { EmailLogger } from '../email/email-service'
import type { CampaignTrackingHooks } from '../tracking/create-tracking-services'
import { AudienceService } from './audience-service'
import { CampaignDispatcher } from './campaign-dispatcher'
import { CampaignService } from './campaign-service'
import { campaignStatsCache, CampaignStatsPublisher, createPushGate } from './campaign-stats'
import { createRateLimiter } from './rate-limiter'
import { RecipientFeedbackService } from './recipient-feedback'
import { EmailTemplateService } from './template-service'
import { createUnsubscribeLinks } from './unsubscribe-links'

export interface CampaignServicesDeps {
  db: Database
  redis: Redis | Cluster | null
  redisKeyPrefix: string
  transport: MailTransport
  signer: UrlSigner
  publish: (topic: string, payload: unknown) => Promise<void>
  publicUrl: string
  defaultFrom: string
  config: CampaignConfig
  /** TRACKING_UNSUBSCRIBE_SCOPE; default `global`. */
  unsubscribeScope?: UnsubscribeScope
  pollMs: number
  tracking?: CampaignTrackingHooks
  logger?: EmailLogger
  /**
   * The app cache: published template versions and campaign stats snapshots go in namespaces of it,
   * and the template warmer is registered on it.
   */
  cache?: CacheService
  /** Rate limiter waits, for metrics. */
  instrumentation?: Pick<Instrumentation, 'rateLimitWaited'>
}

export interface CampaignServices {
  emailTemplates: EmailTemplateService
  audiences: AudienceService
  campaigns: CampaignService
  recipientFeedback: RecipientFeedbackService
  dispatcher: CampaignDispatcher
  /**
   * Pushes campaignStats snapshots and drops the cached one; tracking tells it when engagement
   * figures move. Code that writes campaign_stats elsewhere must tell this publisher, not one of its own.
   */
  statsPublisher: CampaignStatsPublisher
  /** Stops the worker and pending stats pushes. */
  close(): Promise<void>
}

export function createCampaignServices(deps: CampaignServicesDeps): CampaignServices {
  const { db, config } = deps
  const stats = new CampaignStatsPublisher({
    db,
    publish: deps.publish,
    gate: createPushGate(deps.redis, deps.redisKeyPrefix),
    logger: deps.logger,
    cache: deps.cache && campaignStatsCache(deps.cache),
  })
  const templateCache = deps.cache?.namespace('email-templates')
  const emailTemplates = new EmailTemplateService(db, templateCache)
  const templateWarmer = emailTemplates.cacheWarmer()
  if (templateCache && templateWarmer) templateCache.registerWarmer(templateWarmer)
  const links = createUnsubscribeLinks(deps.signer, deps.publicUrl)
  const limiter = createRateLimiter({
    ratePerSecond: config.rateLimitPerSecond,
    redis: deps.redis,
    keyPrefix: deps.redisKeyPrefix,
    logger: deps.logger,
    onWait: (seconds) => deps.instrumentation?.rateLimitWaited(seconds),
  })
  const dispatcher = new CampaignDispatcher({
    db,
    transport: deps.transport,
    limiter,
    links,
    stats,
    tracking: deps.tracking,
    logger: deps.logger,
    unsubscribeMailto: config.unsubscribeMailto,
    pollMs: deps.pollMs,
    batchSize: config.batchSize,
    concurrency: config.concurrency,
    leaseMs: config.leaseMs,
  })
  return {
    emailTemplates,
    audiences: new AudienceService(db, deps.publish, (ids) => stats.changedMany(ids)),
    campaigns: new CampaignService({ db, defaultFrom: deps.defaultFrom, stats }),
    recipientFeedback: new RecipientFeedbackService({
      db,
      links,
      stats,
      thresholds: { bounceRate: config.pauseBounceRate, complaintRate: config.pauseComplaintRate, minSent: config.pauseMinSent },
      unsubscribeScope: deps.unsubscribeScope,
      onUnsubscribed: deps.tracking?.unsubscribed,
    }),
    dispatcher,
    statsPublisher: stats,
    async close() {
      await dispatcher.stop()
      stats.close()
    },
  }
}
