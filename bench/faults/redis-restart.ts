/**
 * Redis killed (SIGKILL) and restarted under load.
 *
 *   npx tsx bench/faults/redis-restart.ts      (or npm run bench -- faults/redis-restart)
 *
 * A private redis-server on a free port; the app in process, listening on a port, with REDIS_URL
 * pointing at it; 8 HTTP clients reading files through GraphQL (`file(id)`, served by the
 * multi-level cache) without pause. Redis is killed, the load goes on for a few seconds, Redis comes
 * back empty on the same port. Shows: requests kept their latency within the soft timeout and none
 * failed, a cache read that has to ask Redis returns at once, and the instance flushed its L1 once the
 * invalidation bus was subscribed again (it cannot know what other instances changed meanwhile).
 */
import type net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildTestApp, uploadThroughGraphql } from '../../test/helpers/app'
import { pdf } from '../../test/helpers/chunked-upload'
import { during, formatLoad, startLoad, summarizeLoad } from './lib/load'
import { startRedisServer, waitFor } from './lib/processes'
import { check, measure, runScenario } from './lib/scenario'

const FILES = Number(process.env.FAULT_FILES ?? 100)
const CONCURRENCY = Number(process.env.FAULT_CONCURRENCY ?? 8)
const BEFORE_MS = 3_000
const OUTAGE_MS = Number(process.env.FAULT_OUTAGE_MS ?? 5_000)
const AFTER_MS = 4_000
const UPLOAD = 'mutation($file: Upload!) { uploadFile(file: $file) { __typename ... on UploadFileSuccess { file { id } } } }'
const READ = 'query($id: ID!) { file(id: $id) { id filename size sha256 status } }'

await runScenario('faults/redis-restart', 'Redis SIGKILLed and restarted under cached GraphQL reads', async (s) => {
  const redis = await startRedisServer()
  s.defer(() => redis.stop())
  const logs: string[] = []
  const logStream = { write: (line: string) => logs.push(line) } as unknown as NodeJS.WritableStream
  const t = await buildTestApp({ redis: false, logStream, env: { REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'gwfault:', LOG_LEVEL: 'warn', RATE_LIMIT_MAX: '1000000' } })
  s.defer(() => t.close())
  await t.app.listen({ host: '127.0.0.1', port: 0 })
  const url = `http://127.0.0.1:${(t.app.server.address() as net.AddressInfo).port}/graphql`
  const softTimeoutMs = t.app.config.cache.softTimeoutMs
  s.log(`redis-server on port ${redis.port}, app on ${url}, CACHE_SOFT_TIMEOUT_MS=${softTimeoutMs}`)

  const token = t.token('user', 'reader')
  const ids: string[] = []
  for (let i = 0; i < FILES; i++) {
    const res = await uploadThroughGraphql(t, token, UPLOAD, { file: null }, { filename: `f${i}.pdf`, contentType: 'application/pdf', content: pdf(2_000) })
    ids.push((res.body.data as { uploadFile: { file: { id: string } } }).uploadFile.file.id)
  }
  s.log(`${FILES} files uploaded`)

  const cache = t.app.services.cache
  const timeline: { at: number; items: number; loads: number; resubscribes: number }[] = []
  const sampler = setInterval(() => {
    const st = cache.stats()
    timeline.push({ at: performance.now(), items: st.items, loads: st.loads, resubscribes: st.busResubscribes })
  }, 10)
  s.defer(() => clearInterval(sampler))
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` }
  const load = startLoad(CONCURRENCY, async (i) => {
    const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ query: READ, variables: { id: ids[i % ids.length] } }) })
    const body = (await res.json()) as { data?: { file: { id: string } | null }; errors?: { message: string; extensions?: { code?: string } }[] }
    if (body.errors) return `${body.errors[0]!.extensions?.code ?? res.status}: ${body.errors[0]!.message}`
    return body.data?.file ? undefined : `HTTP ${res.status}: no file`
  })
  s.defer(() => load.stop())
  const loadStartedAt = performance.now()

  // Untagged probe entries: L1 answers them while Redis is down, so whether they survive the reconnect
  // shows the flush directly (Redis comes back empty, so a flushed probe is gone).
  const PROBES = 100
  for (let i = 0; i < PROBES; i++) await cache.set(`probe:${i}`, i)
  const probesAnswered = async () => {
    let n = 0
    for (let i = 0; i < PROBES; i++) if ((await cache.get(`probe:${i}`)) === i) n++
    return n
  }

  await sleep(BEFORE_MS)
  const before = cache.stats()
  const killedAt = performance.now()
  await redis.kill()
  s.log(`redis-server killed (SIGKILL); L1 holds ${before.items} entries, bus resubscribes so far ${before.busResubscribes}`)
  // A key L1 lacks makes the cache ask Redis: how long that takes is the wait a request can have on Redis.
  const waits: number[] = []
  const until = performance.now() + OUTAGE_MS / 2
  for (let i = 0; performance.now() < until; i++) {
    const t0 = performance.now()
    await cache.get(`absent:${i}`)
    waits.push(performance.now() - t0)
    await sleep(20)
  }
  const probesDuringOutage = await probesAnswered()
  await sleep(OUTAGE_MS / 2)
  const restartedAt = performance.now()
  await redis.start()
  s.log('redis-server restarted on the same port, empty')
  const resubscribedAt = await waitFor('the cache bus to subscribe again', () => (cache.stats().busResubscribes > before.busResubscribes ? performance.now() : 0), 30_000, 5)
  const probesAfterFlush = await probesAnswered()
  s.log(`cache bus subscribed again ${(resubscribedAt - restartedAt).toFixed(0)} ms after the restart; probe entries answered: ${probesDuringOutage}/${PROBES} during the outage, ${probesAfterFlush}/${PROBES} after the resubscription`)
  await sleep(AFTER_MS)
  const samples = await load.stop()
  clearInterval(sampler)
  const after = cache.stats()

  // The first second warms the JIT and the connection pools: not a fair baseline.
  const pre = summarizeLoad(during(samples, loadStartedAt + 1_000, killedAt))
  const outage = summarizeLoad(during(samples, killedAt, restartedAt))
  const post = summarizeLoad(during(samples, restartedAt, Infinity))
  const all = summarizeLoad(samples)
  s.log(`before:  ${formatLoad(pre)}`)
  s.log(`outage:  ${formatLoad(outage)}`)
  s.log(`after:   ${formatLoad(post)}`)

  // What L1 held around the resubscription, for the log: file entries cannot be checked against Redis
  // during the outage, so some are already gone, and the load refills L1 fast.
  const lastBefore = [...timeline].reverse().find((p) => p.resubscribes === before.busResubscribes)!
  const firstAfter = timeline.find((p) => p.resubscribes > before.busResubscribes)!
  const loadsDuringOutage = (timeline.filter((p) => p.at < restartedAt).at(-1)?.loads ?? before.loads) - before.loads
  s.log(`L1 entries: ${before.items} before the kill, ${lastBefore.items} just before the resubscription, ${firstAfter.items} just after it, ${after.items} at the end`)
  s.log(`during the outage: ${loadsDuringOutage} loader calls (tagged entries cannot be checked against Redis, so they are read again), ${after.l2Timeouts - before.l2Timeouts} soft timeouts, ${after.errors - before.errors} cache errors counted; ${logs.filter((l) => /redis/i.test(l)).length} log lines at LOG_LEVEL=warn mention Redis`)

  const budget = pre.p99 + softTimeoutMs
  const longestWait = waits.reduce((a, b) => Math.max(a, b), 0)
  return [
    check(
      'request p99 during the Redis outage',
      outage.p99,
      'ms',
      `≤ ${budget.toFixed(0)} ms (p99 before the outage ${pre.p99.toFixed(0)} ms + soft timeout ${softTimeoutMs} ms)`,
      outage.p99 <= budget,
      `${outage.requests} requests in ${(OUTAGE_MS / 1000).toFixed(0)} s by ${CONCURRENCY} clients, p50 ${outage.p50.toFixed(1)} ms, max ${outage.max.toFixed(1)} ms; before: p50 ${pre.p50.toFixed(1)} ms, max ${pre.max.toFixed(1)} ms. Tagged entries cannot be checked against Redis during the outage, so they are read from PostgreSQL (${loadsDuringOutage} loader calls)`,
    ),
    measure('slowest cache read that had to ask Redis during the outage', longestWait, 'ms', `${waits.length} reads of keys L1 lacked, under the same load; CACHE_SOFT_TIMEOUT_MS=${softTimeoutMs}`),
    check('failed requests (before, during and after the outage)', all.failed, 'requests', '0', all.failed === 0, all.errors.length ? all.errors.slice(0, 3).map(([e, n]) => `${n}× ${e}`).join('; ') : `${all.requests} requests, all answered`),
    check(
      'L1 flushed after the reconnect: probe entries still answered',
      probesAfterFlush,
      'entries',
      `0 of the ${PROBES} that L1 answered during the outage (${probesDuringOutage}), once the bus resubscribed`,
      probesDuringOutage === PROBES && probesAfterFlush === 0 && after.busResubscribes > before.busResubscribes,
      `bus resubscribes ${before.busResubscribes} → ${after.busResubscribes}; Redis came back empty, so a flushed probe is gone`,
    ),
    measure('Redis calls cut off by the soft timeout during the outage', after.l2Timeouts - before.l2Timeouts, 'calls', 'a killed Redis refuses at once and the breaker opens, so only calls in flight at the kill or during the reconnect can wait that long'),
    measure('time from the restart to the bus subscribed again', resubscribedAt - restartedAt, 'ms'),
    measure('request p99 after the reconnect', post.p99, 'ms', formatLoad(post)),
  ]
})
