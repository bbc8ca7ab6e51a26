import type { FastifyInstance } from 'fastify'
import { createRequire } from 'node:module'
import fp from 'fastify-plugin'
import { InstanceRepository } from '../infra/db/instance-repository'
import { countedTransport } from '../infra/mail/counted-transport'
import { InfrastructureStats } from '../services/system/infrastructure-stats'
import { SystemMonitor } from '../services/system/system-monitor'
import type { Services } from '../graphql/context'
import { createTokenVerifier, type TokenVerifier } from '../services/auth/jwt'
import type { CampaignDispatcher } from '../services/campaigns/campaign-dispatcher'
import { createCampaignServices } from '../services/campaigns/create-campaign-services'
import { createCacheService } from '../services/cache/create-cache-service'
import { EmailDispatcher } from '../services/email/email-dispatcher'
import { EmailService } from '../services/email/email-service'
import { loadTransactionalTemplates } from '../services/email/templates'
import { FileService } from '../services/files/file-service'
import type { MailKind } from '../services/instrumentation'
import { QueueDepths } from '../services/system/queue-depths'
import { createTrackingServices } from '../services/tracking/create-tracking-services'
import { createWebhookServices } from '../services/webhooks/create-webhook-services'
import { createInstrumentation, registerScrapedMetrics } from './domain-metrics'

declare module 'fastify' {
  interface FastifyInstance {
    services: Services
    tokens: TokenVerifier
    emailDispatcher: EmailDispatcher
    campaignDispatcher: CampaignDispatcher
  }
}

/** The domain layer, wired to the adapters registered before it. */
export const servicesPlugin = fp(
  async (app: FastifyInstance) => {
    const { config } = app
    const logger = app.log.child({ component: 'services' })
    const cache = createCacheService(config, app.redis)
    const instrumentation = createInstrumentation(app.metrics.registry)
    // One wrapper per kind of mail, so the metrics tell transactional and campaign sends apart.
    const countedMail = (kind: MailKind) => countedTransport(app.mail, (response, messages) => instrumentation.mailSent(kind, response, messages))
    // CACHE_RESOLVERS=false leaves the domain services uncached (diagnosing a suspected stale entry, measuring what the cache saves).
    const domainCache = config.cache.resolvers ? cache : undefined
    const filesCache = cache.namespace('files')
    const files = new FileService({ db: app.db.db, storage: app.storage, publish: app.events.publish, limits: config.uploads, config: config.files, pollMs: config.workerPollMs, logger, cache: domainCache && filesCache, instrumentation })
    const filesWarmer = files.cacheWarmer()
    if (filesWarmer) filesCache.registerWarmer(filesWarmer)
    // Loaded and checked now, so a broken template fails the boot with its file, line and column.
    const templates = loadTransactionalTemplates(config.emailTemplatesDir)
    const emailDeps = { db: app.db.db, transport: countedMail('transactional'), from: config.emailFrom, templates, logger }
    const email = new EmailService({ ...emailDeps, links: config.links })
    const dispatcher = new EmailDispatcher({ ...emailDeps, pollMs: config.workerPollMs })
    const webhooks = createWebhookServices({ db: app.db.db, config: config.webhooks, events: app.events, pollMs: config.workerPollMs, pruneIntervalMs: config.tracking.pruneIntervalMs, logger, instrumentation })
    // Tracking and campaigns need each other; tracking reaches the campaign side only once both exist.
    const tracking = createTrackingServices({
      outgoingWebhooks: webhooks.enqueuer,
      db: app.db.db, signer: app.signer, publicUrl: config.publicUrl, config: config.tracking, pollMs: config.workerPollMs, logger, instrumentation,
      campaigns: () => ({ feedback: campaignServices.recipientFeedback, statsChanged: (id) => statsPublisher.changed(id) }),
    })
    const { dispatcher: campaignDispatcher, close: closeCampaigns, statsPublisher, ...campaignServices } = createCampaignServices({
      db: app.db.db, redis: app.redis, redisKeyPrefix: config.redisKeyPrefix, transport: countedMail('campaign'), signer: app.signer, publish: app.events.publish,
      publicUrl: config.publicUrl, defaultFrom: config.emailFrom, config: config.campaigns, unsubscribeScope: config.tracking.unsubscribeScope, pollMs: config.workerPollMs, logger, tracking: tracking.campaignHooks, cache: domainCache, instrumentation,
    })

    const system = new SystemMonitor(new InstanceRepository(app.db.db), { version: packageVersion(), logger })
    const infrastructure = new InfrastructureStats({ cache, files: files.stats, cacheMs: config.statsCacheMs })
    app.decorate('services', { cache, files, email, system, infrastructure, tracking, webhooks, ...campaignServices })
    app.decorate('tokens', createTokenVerifier({ secret: app.secrets.jwtSecret, publicKey: app.secrets.jwtPublicKey, issuer: config.auth.jwtIssuer, audience: config.auth.jwtAudience }))
    app.decorate('emailDispatcher', dispatcher)
    app.decorate('campaignDispatcher', campaignDispatcher)
    const queueDepths = new QueueDepths(app.db.db)
    registerScrapedMetrics(app.metrics, { cache: () => cache.stats(), trackingBuffer: () => tracking.buffer.stats(), queueDepths: () => queueDepths.read() })

    if (config.workers) {
      app.addHook('onReady', async () => dispatcher.start())
      app.addHook('onReady', async () => files.startWorkers())
      app.addHook('onReady', async () => campaignDispatcher.start())
      app.addHook('onReady', async () => tracking.startWorkers())
      app.addHook('onReady', async () => webhooks.startWorkers())
    }
    // preClose: stop claiming work before the database goes away.
    app.addHook('onReady', () => system.start())
    app.addHook('preClose', () => system.stop())
    app.addHook('preClose', () => dispatcher.stop())
    app.addHook('preClose', () => files.stopWorkers())
    app.addHook('preClose', () => closeCampaigns())
    // After the campaigns: their last send outcomes are still in the buffer.
    app.addHook('preClose', () => tracking.close())
    // After tracking: its last buffered hits queue their deliveries as they are stored.
    app.addHook('preClose', () => webhooks.close())
    // Boot warming runs in the background: a slow warmer must not hold up readiness.
    if (config.cache.warmOnBoot.length > 0) {
      app.addHook('onReady', async () => {
        cache.warmCache(config.cache.warmOnBoot, { popular: false }).catch((err: unknown) => logger.warn({ err }, 'cache warming on boot failed'))
      })
    }
    app.addHook('onClose', () => cache.close())
  },
  { name: 'services', dependencies: ['metrics', 'database', 'redis', 'storage', 'mail', 'events', 'secrets'] },
)

function packageVersion(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version
}
