import type { FastifyInstance } from 'fastify'
import { createRequire } from 'node:module'
import fp from 'fastify-plugin'
import { InstanceRepository } from '../infra/db/instance-repository'
import { SystemMonitor } from '../services/system/system-monitor'
import type { Services } from '../graphql/context'
import { createTokenVerifier, type TokenVerifier } from '../services/auth/jwt'
import type { CampaignDispatcher } from '../services/campaigns/campaign-dispatcher'
import { createCampaignServices } from '../services/campaigns/create-campaign-services'
import { createCacheService } from '../services/cache/create-cache-service'
import { EmailDispatcher } from '../services/email/email-dispatcher'
import { EmailService } from '../services/email/email-service'
import { FileService } from '../services/files/file-service'
import { createTrackingServices } from '../services/tracking/create-tracking-services'

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
    const filesCache = cache.namespace('files')
    const files = new FileService({ db: app.db.db, storage: app.storage, publish: app.events.publish, limits: config.uploads, config: config.files, pollMs: config.workerPollMs, logger, cache: filesCache })
    const filesWarmer = files.cacheWarmer()
    if (filesWarmer) filesCache.registerWarmer(filesWarmer)
    const emailDeps = { db: app.db.db, transport: app.mail, from: config.emailFrom, logger }
    const email = new EmailService({ ...emailDeps, links: config.links })
    const dispatcher = new EmailDispatcher({ ...emailDeps, pollMs: config.workerPollMs })
    // Tracking and campaigns need each other; tracking reaches the campaign side only once both exist.
    const tracking = createTrackingServices({
      db: app.db.db, signer: app.signer, publicUrl: config.publicUrl, config: config.tracking, pollMs: config.workerPollMs, logger,
      campaigns: () => ({ feedback: campaignServices.recipientFeedback, statsChanged: (id) => statsPublisher.changed(id) }),
    })
    const { dispatcher: campaignDispatcher, close: closeCampaigns, statsPublisher, ...campaignServices } = createCampaignServices({
      db: app.db.db, redis: app.redis, redisKeyPrefix: config.redisKeyPrefix, transport: app.mail, signer: app.signer, publish: app.events.publish,
      publicUrl: config.publicUrl, defaultFrom: config.emailFrom, config: config.campaigns, pollMs: config.workerPollMs, logger, tracking: tracking.campaignHooks, cache,
    })

    const system = new SystemMonitor(new InstanceRepository(app.db.db), { version: packageVersion(), logger })
    app.decorate('services', { cache, files, email, system, tracking, ...campaignServices })
    app.decorate('tokens', createTokenVerifier({ secret: app.secrets.jwtSecret, publicKey: app.secrets.jwtPublicKey, issuer: config.auth.jwtIssuer, audience: config.auth.jwtAudience }))
    app.decorate('emailDispatcher', dispatcher)
    app.decorate('campaignDispatcher', campaignDispatcher)

    if (config.workers) {
      app.addHook('onReady', async () => dispatcher.start())
      app.addHook('onReady', async () => files.startWorkers())
      app.addHook('onReady', async () => campaignDispatcher.start())
      app.addHook('onReady', async () => tracking.startWorkers())
    }
    // preClose: stop claiming work before the database goes away.
    app.addHook('onReady', () => system.start())
    app.addHook('preClose', () => system.stop())
    app.addHook('preClose', () => dispatcher.stop())
    app.addHook('preClose', () => files.stopWorkers())
    app.addHook('preClose', () => closeCampaigns())
    // After the campaigns: their last send outcomes are still in the buffer.
    app.addHook('preClose', () => tracking.close())
    // Boot warming runs in the background: a slow warmer must not hold up readiness.
    if (config.cache.warmOnBoot.length > 0) {
      app.addHook('onReady', async () => {
        cache.warmCache(config.cache.warmOnBoot, { popular: false }).catch((err: unknown) => logger.warn({ err }, 'cache warming on boot failed'))
      })
    }
    app.addHook('onClose', () => cache.close())
  },
  { name: 'services', dependencies: ['database', 'redis', 'storage', 'mail', 'events', 'secrets'] },
)

function packageVersion(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version
}
