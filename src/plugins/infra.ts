import path from 'node:path'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Cluster, Redis } from 'ioredis'
import type { Config } from '../config'
import { createDatabase, type DatabaseHandle } from '../infra/db/client'
import { loadDevSecrets } from '../infra/dev-secrets'
import { createEventBus, type EventBus } from '../infra/events'
import { createOutboxTransport } from '../infra/mail/outbox'
import { createResendTransport } from '../infra/mail/resend'
import type { MailTransport } from '../infra/mail/types'
import { closeRedis, createRedis, whenReady } from '../infra/redis'
import { createDiskStorage } from '../infra/storage/disk'
import { createS3Storage } from '../infra/storage/s3'
import { createUrlSigner, type UrlSigner } from '../infra/storage/signed-url'
import type { ObjectStorage } from '../infra/storage/types'

export interface Secrets {
  jwtSecret?: string
  jwtPublicKey?: string
  signingSecret: string
}

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    secrets: Secrets
    signer: UrlSigner
    db: DatabaseHandle
    redis: Redis | Cluster | null
    storage: ObjectStorage
    mail: MailTransport
    events: EventBus
  }
}

/** Configured secrets win; embedded mode falls back to ones generated once into DATA_DIR. */
export const secretsPlugin = fp(
  async (app: FastifyInstance) => {
    const { auth, signingSecret, dataDir } = app.config
    const needsDev = !signingSecret || (!auth.jwtSecret && !auth.jwtPublicKey)
    const dev = needsDev ? await loadDevSecrets(dataDir) : undefined
    if (dev && !auth.jwtSecret && !auth.jwtPublicKey) app.log.warn('JWT_SECRET is not set: using a development secret from DATA_DIR (mint tokens with `npm run token`)')
    const secrets: Secrets = {
      jwtSecret: auth.jwtSecret ?? (auth.jwtPublicKey ? undefined : dev!.jwtSecret),
      jwtPublicKey: auth.jwtPublicKey,
      signingSecret: signingSecret ?? dev!.signingSecret,
    }
    app.decorate('secrets', secrets)
    app.decorate('signer', createUrlSigner(secrets.signingSecret))
  },
  { name: 'secrets' },
)

export const databasePlugin = fp(
  async (app: FastifyInstance) => {
    const db = await createDatabase({ databaseUrl: app.config.databaseUrl, pgliteDir: path.join(app.config.dataDir, 'pglite') })
    app.decorate('db', db)
    app.addHook('onClose', () => db.close())
  },
  { name: 'database' },
)

export const redisPlugin = fp(
  async (app: FastifyInstance) => {
    // One warning per outage and one line when it ends, not one per reconnect attempt.
    let down = false
    const onError = (err: Error) => {
      if (down) return
      down = true
      app.log.warn({ err }, 'Redis connection lost: serving from memory and the database until it is back')
    }
    const redis = app.config.redisUrl ? createRedis({ url: app.config.redisUrl, cluster: app.config.redisCluster, onError }) : null
    app.decorate<FastifyInstance['redis']>('redis', redis)
    if (!redis) return
    redis.on('ready', () => {
      if (!down) return
      down = false
      app.log.info('Redis connection restored')
    })
    app.addHook('onClose', () => closeRedis(redis))
    // Give Redis a moment to connect so the first requests use it; past that, or as soon as the first
    // attempt fails (refused, timed out), boot anyway and degrade.
    const connected = await whenReady(redis, REDIS_BOOT_WAIT_MS)
    if (!connected) app.log.warn('Redis is not reachable: serving from memory and the database until it is')
  },
  { name: 'redis' },
)

const REDIS_BOOT_WAIT_MS = 2_000

export const storagePlugin = fp(
  async (app: FastifyInstance) => {
    const { s3, dataDir, publicUrl } = app.config
    const storage = s3 ? createS3Storage(s3) : createDiskStorage({ root: path.join(dataDir, 'files'), publicUrl, signer: app.signer })
    app.decorate('storage', storage)
    app.addHook('onClose', () => storage.close())
  },
  { name: 'storage', dependencies: ['secrets'] },
)

export const mailPlugin = fp(
  async (app: FastifyInstance) => {
    const { resendApiKey, dataDir } = app.config
    const mail = resendApiKey ? createResendTransport({ apiKey: resendApiKey }) : createOutboxTransport({ dir: path.join(dataDir, 'outbox'), db: app.db.db })
    app.decorate('mail', mail)
    app.addHook('onClose', () => mail.close())
  },
  { name: 'mail', dependencies: ['database'] },
)

export const eventsPlugin = fp(
  async (app: FastifyInstance) => {
    const events = createEventBus({ redisUrl: app.config.redisUrl, prefix: app.config.redisKeyPrefix })
    app.decorate('events', events)
    // When Redis itself did not answer at boot there is nothing to wait for: boot degraded at once.
    const reachable = app.redis?.status === 'ready'
    if (reachable && !(await events.ready(REDIS_BOOT_WAIT_MS))) app.log.warn('The Redis event bus is not connected: subscriptions will start once it is')
    // Mercurius never closes a custom emitter: without this, Redis subscriber connections keep the process alive.
    app.addHook('onClose', () => events.close())
  },
  { name: 'events', dependencies: ['redis'] },
)
