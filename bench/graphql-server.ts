/**
 * The server side of bench/scale.bench.ts's GraphQL figures, in a process of its own so that
 * autocannon (in the parent) does not share the servers' event loop. On three ports:
 *   - the real app with its resolver cache (the default);
 *   - the same app with CACHE_RESOLVERS=false, reading PostgreSQL on every request;
 *   - a bare Fastify route answering the very same JSON from memory: no auth, no GraphQL.
 * Both apps share one database, so they answer the same query with the same data.
 */
import Fastify from 'fastify'
import { buildApp } from '../src/app'
import { loadConfig } from '../src/config'

async function start(resolverCache: boolean) {
  const config = loadConfig({
    DATA_DIR: process.env.BENCH_DATA_DIR,
    DATABASE_URL: process.env.BENCH_DATABASE_URL,
    REDIS_URL: process.env.BENCH_REDIS_URL,
    REDIS_KEY_PREFIX: `${process.env.BENCH_REDIS_PREFIX}${resolverCache ? 'on' : 'off'}:`,
    SIGNING_SECRET: process.env.BENCH_SIGNING_SECRET,
    JWT_SECRET: process.env.BENCH_JWT_SECRET,
    PUBLIC_URL: 'http://groundwork.bench',
    WORKERS_ENABLED: resolverCache ? 'true' : 'false',
    GRAPHIQL: 'false',
    LOG_LEVEL: 'error',
    CACHE_RESOLVERS: String(resolverCache),
  })
  const app = await buildApp(config, { logger: false })
  return { app, address: await app.listen({ host: '127.0.0.1', port: 0 }) }
}

async function main(): Promise<void> {
  const cached = await start(true)
  const uncached = await start(false)
  const bare = Fastify({ logger: false })
  let body: unknown = null
  bare.post('/graphql', (_request, reply) => {
    void reply.send(body)
  })
  const bareAddress = await bare.listen({ host: '127.0.0.1', port: 0 })

  process.on('message', (msg: { type: string; body?: unknown }) => {
    if (msg.type === 'body') {
      body = msg.body
      process.send!({ type: 'body-set' })
    } else if (msg.type === 'cache-stats') {
      const s = cached.app.services.cache.stats()
      process.send!({ type: 'cache-stats', stats: { hits: s.hits, misses: s.misses, loads: s.loads }, uncached: uncached.app.services.cache.stats().loads })
    } else if (msg.type === 'stop') {
      void Promise.all([cached.app.close(), uncached.app.close(), bare.close()]).then(() => process.exit(0))
    }
  })
  process.send!({ type: 'ready', cached: cached.address, uncached: uncached.address, bare: bareAddress })
}

main().catch((err: unknown) => {
  process.stderr.write(`graphql bench server failed: ${err instanceof Error ? err.stack : String(err)}\n`)
  process.exit(1)
})
