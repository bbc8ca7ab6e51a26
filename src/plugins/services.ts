import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { FileRepository } from '../infra/db/file-repository'
import type { Services } from '../graphql/context'
import { createTokenVerifier, type TokenVerifier } from '../services/auth/jwt'
import { CacheService } from '../services/cache/cache-service'
import { EmailDispatcher } from '../services/email/email-dispatcher'
import { EmailService } from '../services/email/email-service'
import { FileService } from '../services/files/file-service'

declare module 'fastify' {
  interface FastifyInstance {
    services: Services
    tokens: TokenVerifier
    emailDispatcher: EmailDispatcher
  }
}

/** The domain layer, wired to the adapters registered before it. */
export const servicesPlugin = fp(
  async (app: FastifyInstance) => {
    const { config } = app
    const logger = app.log.child({ component: 'services' })
    const cache = new CacheService({ redis: app.redis, keyPrefix: config.redisKeyPrefix, defaultTtlSeconds: config.cache.defaultTtlSeconds })
    const files = new FileService({ files: new FileRepository(app.db.db), storage: app.storage, publish: app.events.publish, limits: config.uploads, logger })
    const emailDeps = { db: app.db.db, transport: app.mail, from: config.emailFrom, logger }
    const email = new EmailService({ ...emailDeps, links: config.links })
    const dispatcher = new EmailDispatcher({ ...emailDeps, pollMs: config.workerPollMs })

    app.decorate('services', { cache, files, email })
    app.decorate('tokens', createTokenVerifier({ secret: app.secrets.jwtSecret, publicKey: app.secrets.jwtPublicKey, issuer: config.auth.jwtIssuer, audience: config.auth.jwtAudience }))
    app.decorate('emailDispatcher', dispatcher)

    if (config.workers) {
      app.addHook('onReady', async () => dispatcher.start())
    }
    // preClose: stop claiming work before the database goes away.
    app.addHook('preClose', () => dispatcher.stop())
  },
  { name: 'services', dependencies: ['database', 'redis', 'storage', 'mail', 'events', 'secrets'] },
)
