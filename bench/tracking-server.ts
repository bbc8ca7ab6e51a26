/**
 * The server side of bench/tracking.bench.ts, in a process of its own so that autocannon (in the
 * parent) and the servers do not share an event loop. It runs, on two ports:
 *   - the real app, built as the tests build it (PostgreSQL, Redis, rate limiting, metrics...);
 *   - a bare Fastify with the same two URL patterns answering the very same bytes (status, headers,
 *     GIF; a Location of the same length, conversion token included) without reading the request,
 *     the baseline (the client sends both the very same requests). Only what the app does differs,
 *     not what goes over the wire.
 * It reports its ports over IPC and answers `stats` requests with the tracking buffer's counters.
 */
import Fastify from 'fastify'
import { buildApp } from '../src/app'
import { loadConfig } from '../src/config'
import { GIF, PIXEL_HEADERS, REDIRECT_HEADERS, trackingRouteOptions } from '../src/http/tracking'
import { withParam } from '../src/services/tracking/hit-recorder'

/** Where the bench's click tokens lead, with a conversion token of the app's shape (recipient 5000, link 0, a click time). */
const LOCATION = withParam('https://shop.example.com/sale?x=1&y=2', 'gw_click', `5000.0.1764000000.${'A'.repeat(43)}`)

async function main(): Promise<void> {
  const config = loadConfig({
    DATA_DIR: process.env.BENCH_DATA_DIR,
    DATABASE_URL: process.env.BENCH_DATABASE_URL,
    REDIS_URL: process.env.BENCH_REDIS_URL,
    REDIS_KEY_PREFIX: process.env.BENCH_REDIS_PREFIX,
    SIGNING_SECRET: process.env.BENCH_SIGNING_SECRET,
    JWT_SECRET: 'bench-secret-bench-secret-bench-secret-01',
    PUBLIC_URL: 'http://groundwork.bench',
    RESEND_WEBHOOK_SECRET: process.env.BENCH_WEBHOOK_SECRET,
    WORKERS_ENABLED: 'false',
    GRAPHIQL: 'false',
    // The per-IP limit stays on (its quota leases from Redis are part of the cost), set above what one client sends.
    TRACKING_RATE_LIMIT_MAX: '10000000',
    TRACKING_WEBHOOK_CONCURRENCY: process.env.BENCH_WEBHOOK_CONCURRENCY ?? '4',
  })
  const app = await buildApp(config, { logger: false })
  // Breakdowns of the hot routes' cost, on the app with the pixel's and the redirect's own options:
  // - floor: nothing but the answer (what the app's hooks, overload check, per-IP limit and metrics cost);
  // - checked: the token checked (and, for a click, the conversion token minted), nothing recorded.
  const { hot } = trackingRouteOptions(app)
  const { tokens } = app.services.tracking
  app.get('/bench/floor/t/o/:file', hot('open'), (_request, reply) => {
    void reply.code(200).headers(PIXEL_HEADERS).send(GIF)
  })
  app.get<{ Params: { file: string } }>('/bench/checked/t/o/:file', hot('open'), (request, reply) => {
    if (!tokens.verifyOpen(request.params.file.slice(0, -4)).ok) throw new Error('the bench sent a token the app does not take')
    void reply.code(200).headers(PIXEL_HEADERS).send(GIF)
  })
  app.get<{ Params: { '*': string } }>('/bench/checked/t/c/*', hot('click'), (request, reply) => {
    const click = tokens.verifyClick(request.params['*'])
    if (!click.ok) throw new Error('the bench sent a token the app does not take')
    const location = withParam(click.url, config.tracking.conversionParam, tokens.conversionToken(click.recipientId, click.linkIndex, Math.floor(Date.now() / 1000)))
    void reply.code(302).headers(REDIRECT_HEADERS).header('location', location).send()
  })
  const appAddress = await app.listen({ host: '127.0.0.1', port: 0 })

  const bare = Fastify({ logger: false })
  bare.get('/t/o/:file', (_request, reply) => {
    void reply.code(200).headers(PIXEL_HEADERS).send(GIF)
  })
  bare.get('/t/c/*', (_request, reply) => {
    void reply.code(302).headers(REDIRECT_HEADERS).header('location', LOCATION).send()
  })
  const bareAddress = await bare.listen({ host: '127.0.0.1', port: 0 })

  process.on('message', (msg: { type: string }) => {
    if (msg.type === 'stats') {
      void app.services.tracking.flush().then(() => process.send!({ type: 'stats', stats: app.services.tracking.buffer.stats() }))
    } else if (msg.type === 'cpu') {
      process.send!({ type: 'cpu', cpu: process.cpuUsage() })
    } else if (msg.type === 'stop') {
      void Promise.all([app.close(), bare.close()]).then(() => process.exit(0))
    }
  })
  process.send!({ type: 'ready', app: appAddress, bare: bareAddress })
}

main().catch((err: unknown) => {
  process.stderr.write(`tracking bench server failed: ${err instanceof Error ? err.stack : String(err)}\n`)
  process.exit(1)
})
