import Fastify, { type FastifyInstance, type onSendHookHandler } from 'fastify'
import type { Config } from './config'
import { graphqlPlugin } from './graphql/plugin'
import { downloadRoutes } from './http/downloads'
import { unsubscribeRoutes } from './http/unsubscribe'
import { trackingRoutes } from './http/tracking'
import { webhookRoutes } from './http/webhooks'
import { registerErrorHandler } from './http/error-handler'
import { hookList } from './lib/route-hooks'
import { healthRoutes } from './http/health'
import { databasePlugin, eventsPlugin, mailPlugin, redisPlugin, secretsPlugin, storagePlugin } from './plugins/infra'
import { metricsPlugin } from './plugins/metrics'
import { protectionPlugin } from './plugins/protection'
import { servicesPlugin } from './plugins/services'

export interface BuildOptions {
  /** false silences logging (tests). */
  logger?: false
  /** Where log lines go instead of stdout (tests read it). */
  logStream?: NodeJS.WritableStream
}

/** Query parameters that are credentials: signed-link signatures and email tokens. */
const SECRET_PARAMS = /([?&](?:sig|token|signature)=)[^&]*/gi

/** Infrastructure first, then the domain, then GraphQL and HTTP routes. */
export async function buildApp(config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger:
      options.logger === false
        ? false
        : {
            level: config.logLevel,
            stream: options.logStream,
            redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'authorization', '*.authorization'], censor: '[redacted]' },
            serializers: {
              req: (req: { method: string; url: string; id: string; ip?: string }) => ({
                method: req.method,
                url: req.url.replace(SECRET_PARAMS, '$1[redacted]'),
                reqId: req.id,
                remoteAddress: req.ip,
              }),
            },
          },
    trustProxy: config.trustProxy,
    genReqId: () => crypto.randomUUID(),
    requestIdHeader: 'x-request-id',
    // Let in-flight uploads finish on shutdown while idle keep-alive sockets close at once.
    forceCloseConnections: 'idle',
    bodyLimit: 1024 * 1024,
  })
  app.decorate('config', config)
  // Every answer carries its request id, except on routes answering mail clients by the thousand
  // (the tracking pixel and redirect, `requestIdHeader: false`): nobody there reads it, and each
  // header is bytes on every hit. Attached per route, so those routes do not even run the hook.
  const echoRequestId: onSendHookHandler = (request, reply, payload, done) => {
    reply.header('x-request-id', request.id)
    done(null, payload)
  }
  app.addHook('onRoute', (route) => {
    if (route.config?.requestIdHeader !== false) route.onSend = [echoRequestId, ...hookList(route.onSend)]
  })
  registerErrorHandler(app)

  try {
    await app.register(metricsPlugin)
    await app.register(secretsPlugin)
    await app.register(databasePlugin)
    await app.register(redisPlugin)
    await app.register(storagePlugin)
    await app.register(mailPlugin)
    await app.register(eventsPlugin)
    await app.register(protectionPlugin)
    await app.register(servicesPlugin)
    await app.register(graphqlPlugin)
    await app.register(healthRoutes)
    await app.register(downloadRoutes, { storage: app.storage, signer: app.signer })
    await app.register(unsubscribeRoutes)
    await app.register(trackingRoutes)
    await app.register(webhookRoutes)
  } catch (err) {
    // A plugin that fails to load (bad templates, an unreachable database) leaves the ones before it open: close them.
    await app.close().catch(() => {})
    throw err
  }
  return app
}
