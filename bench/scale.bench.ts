/**
 * Proof at scale (the infrastructure issue), two parts:
 *   1. 100k cached items: memory per item in L1 (V8 heap, after GC) beside a plain Map holding the
 *      same values, Redis memory per key beside raw SETs of the same JSON, and hit latency at 100k
 *      items beside the same reads over 1k items.
 *   2. GraphQL throughput for a cached query (`file(id)`, whose resolvers read through the cache)
 *      against the same query with CACHE_RESOLVERS=false (PostgreSQL on every request) and against
 *      a bare Fastify route answering the same JSON from memory. The servers run in a child process
 *      (bench/graphql-server.ts); autocannon runs here, interleaved rounds.
 */
import { fork } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { Redis } from 'ioredis'
import { createTokenSigner } from '../src/services/auth/jwt'
import { CacheService } from '../src/services/cache/cache-service'
import { createTestDatabase, TEST_REDIS_URL, uniqueRedisPrefix } from '../test/helpers/services'
import { graphqlMultipart, postStreamed } from './lib/http'
import { load } from './lib/load'
import { reportResult, versus, type Figure } from './lib/result'
import { median, round } from './lib/stats'
import { sleep } from './lib/timing'

const ITEMS = Number(process.env.BENCH_ITEMS) || 100_000
const SECONDS = Number(process.env.BENCH_SECONDS) || 5
const ROUNDS = Number(process.env.BENCH_ROUNDS) || 3
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS) || 50
const JWT_SECRET = 'bench-secret-bench-secret-bench-secret-01'
const SIGNING_SECRET = 'bench-signing-bench-signing-bench-signing'
const FILE_QUERY = 'query($id: ID!) { file(id: $id) { id filename mimeType size status createdAt currentVersion { number size sha256 } } }'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void
const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`)
const figures: Figure[] = []
const MiB = 1024 * 1024

/** What the service caches most: a file row. About 330 bytes of JSON. */
function fileRow(i: number) {
  return {
    id: randomUUID(),
    ownerId: `user-${i % 5000}`,
    filename: `holiday-photo-${i}.jpg`,
    mimeType: 'image/jpeg',
    size: 1_000_000 + i,
    status: 'ready',
    sha256: randomBytes(32).toString('hex'),
    currentVersion: 1,
    createdAt: new Date(1_700_000_000_000 + i * 1000),
  }
}

function heapAfterGc(): number {
  for (let i = 0; i < 3; i++) gc()
  return process.memoryUsage().heapUsed
}

async function redisUsedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory')
  return Number(/used_memory:(\d+)/.exec(info)?.[1])
}

/** p50 of per-read time within batches of 1000 awaited reads, over `total` reads of random keys. */
async function readLatencyUs(read: (i: number) => Promise<unknown>, keys: number, total = 1_000_000, batch = 1000): Promise<{ p50: number; hits: number }> {
  const perOp: number[] = []
  let hits = 0
  const order = Uint32Array.from({ length: total }, () => Math.floor(Math.random() * keys))
  for (let done = 0; done < total; done += batch) {
    const t0 = performance.now()
    for (let i = 0; i < batch; i++) if ((await read(order[done + i]!)) !== undefined) hits++
    perOp.push(((performance.now() - t0) * 1000) / batch)
  }
  return { p50: median(perOp), hits }
}

async function cachedItems(redis: Redis, prefix: string): Promise<void> {
  log(`${ITEMS} cached items`)
  const keys = Array.from({ length: ITEMS }, (_, i) => `file:${i}`)

  // Baseline: the same values in a plain Map.
  let heap0 = heapAfterGc()
  const map = new Map<string, unknown>()
  for (let i = 0; i < ITEMS; i++) map.set(keys[i]!, fileRow(i))
  const mapPerItem = (heapAfterGc() - heap0) / ITEMS
  // Read after the measurement, so V8's liveness analysis cannot let GC take the map before it.
  if (map.size !== ITEMS) throw new Error('map lost entries')
  map.clear()

  const cache = new CacheService({ redis, keyPrefix: `${prefix}c:`, timeoutMs: 2_000, defaultTtlSeconds: 3600, memory: { maxItems: ITEMS * 2, maxBytes: 1024 * MiB }, bus: false })
  const redis0 = await redisUsedMemory(redis)
  heap0 = heapAfterGc()
  const writeStart = performance.now()
  for (let i = 0; i < ITEMS; i += 1000) await cache.setMany(keys.slice(i, i + 1000).map((key, j) => ({ key, value: fileRow(i + j) })))
  const writeMs = performance.now() - writeStart
  const cachePerItem = (heapAfterGc() - heap0) / ITEMS
  const redisPerKey = (await redisUsedMemory(redis)) - redis0
  const stats = cache.stats()
  if (stats.items !== ITEMS) throw new Error(`L1 holds ${stats.items} items, expected ${ITEMS}`)

  // Redis baseline: the same JSON under raw SETs with the same TTL.
  const rawBefore = await redisUsedMemory(redis)
  for (let i = 0; i < ITEMS; i += 1000) {
    const pipeline = redis.pipeline()
    for (let j = i; j < Math.min(i + 1000, ITEMS); j++) pipeline.set(`${prefix}raw:${keys[j]}`, JSON.stringify(fileRow(j)), 'EX', 3600)
    await pipeline.exec()
  }
  const rawPerKey = ((await redisUsedMemory(redis)) - rawBefore) / ITEMS

  figures.push(versus({ name: `L1 memory per item, ${ITEMS / 1000}k file rows (V8 heap after GC)`, value: round(cachePerItem), unit: 'bytes', note: `the value itself included; L1's own size estimate ${Math.round(stats.l1Bytes / ITEMS)} bytes/item (serialised size)` }, { name: 'a plain Map of the same values', value: round(mapPerItem), unit: 'bytes' }))
  figures.push(versus({ name: `Redis memory per key, ${ITEMS / 1000}k entries (INFO used_memory)`, value: round(redisPerKey / ITEMS), unit: 'bytes', note: 'entry header (type, TTL) + typed serialisation' }, { name: 'raw SET of JSON.stringify(value) EX 3600', value: round(rawPerKey), unit: 'bytes' }))
  figures.push({ name: `writing ${ITEMS / 1000}k entries with setMany (1000 per pipeline)`, value: round(writeMs), unit: 'ms', note: `${Math.round(ITEMS / (writeMs / 1000))} entries/s into L1 and Redis` })

  // Hit latency over all 100k keys against the same reads over 1k keys (hot in CPU caches).
  const small = await readLatencyUs((i) => cache.get(keys[i % 1000]!), 1000)
  const large = await readLatencyUs((i) => cache.get(keys[i]!), ITEMS)
  const small2 = await readLatencyUs((i) => cache.get(keys[i % 1000]!), 1000)
  const large2 = await readLatencyUs((i) => cache.get(keys[i]!), ITEMS)
  const baseline = Math.min(small.p50, small2.p50)
  const l1 = Math.min(large.p50, large2.p50)
  const hitRate = (large.hits + large2.hits) / 2_000_000
  // Uniformly random keys are the worst case for CPU caches; real traffic is skewed towards hot keys.
  figures.push(versus({ name: `L1 hit p50 over ${ITEMS / 1000}k items (uniformly random keys)`, value: round(l1), unit: 'µs', note: `hit rate ${round(hitRate)} over 2M reads` }, { name: 'the same reads over 1k items', value: round(baseline), unit: 'µs' }))

  // L2: a second cache on the same prefix starts with an empty L1; peek reads Redis without filling it.
  const reader = new CacheService({ redis, keyPrefix: `${prefix}c:`, timeoutMs: 2_000, bus: false })
  const l2 = await readLatencyUs((i) => reader.peek(keys[i]!), ITEMS, 50_000, 100)
  const raw = await readLatencyUs((i) => redis.get(`${prefix}raw:${keys[i]}`).then((v) => v ?? undefined), ITEMS, 50_000, 100)
  if (l2.hits !== 50_000) throw new Error(`L2 served ${l2.hits} of 50000 reads`)
  figures.push(versus({ name: `L2 hit p50 over ${ITEMS / 1000}k keys (peek)`, value: round(l2.p50), unit: 'µs' }, { name: 'raw ioredis GET of the same keys', value: round(raw.p50), unit: 'µs' }))
  await reader.close()
  await cache.close()
}

interface Servers {
  cached: string
  uncached: string
  bare: string
}

async function graphqlThroughput(): Promise<void> {
  const database = await createTestDatabase()
  const dataDir = await mkdtemp(path.join(tmpdir(), 'gw-bench-scale-'))
  const child = fork(path.join(import.meta.dirname, 'graphql-server.ts'), [], {
    execArgv: ['--import', 'tsx'],
    env: {
      ...process.env,
      BENCH_DATA_DIR: dataDir,
      BENCH_DATABASE_URL: database.url,
      BENCH_REDIS_URL: TEST_REDIS_URL,
      BENCH_REDIS_PREFIX: uniqueRedisPrefix(),
      BENCH_SIGNING_SECRET: SIGNING_SECRET,
      BENCH_JWT_SECRET: JWT_SECRET,
    },
  })
  const request = <T>(type: string, payload: Record<string, unknown> = {}): Promise<T> =>
    new Promise((resolve) => {
      const onMessage = (msg: { type: string }) => {
        if (msg.type !== type && !(type === 'body' && msg.type === 'body-set')) return
        child.off('message', onMessage)
        resolve(msg as T)
      }
      child.on('message', onMessage)
      if (type !== 'ready') child.send({ type, ...payload })
    })
  try {
    const servers = await request<Servers>('ready')
    const token = createTokenSigner(JWT_SECRET)({ id: 'bench-user', roles: ['user'], email: 'bench@example.com', name: 'bench' })
    const auth = { authorization: `Bearer ${token}` }
    const fileId = await uploadFile(servers.cached, auth)
    const body = JSON.stringify({ query: FILE_QUERY, variables: { id: fileId } })
    const headers = { 'content-type': 'application/json', ...auth }
    const answer = (url: string) => fetch(`${url}/graphql`, { method: 'POST', headers, body }).then((r) => r.json() as Promise<{ data?: unknown; errors?: unknown }>)
    const [fromCached, fromUncached] = [await answer(servers.cached), await answer(servers.uncached)]
    if (!fromCached.data || JSON.stringify(fromCached) !== JSON.stringify(fromUncached)) throw new Error(`the two apps answer differently: ${JSON.stringify(fromCached)} / ${JSON.stringify(fromUncached)}`)
    await request('body', { body: fromCached })

    const cases = [
      { name: 'bare', url: servers.bare },
      { name: 'cached', url: servers.cached },
      { name: 'uncached', url: servers.uncached },
    ]
    const rps = new Map<string, number[]>(cases.map((c) => [c.name, []]))
    const p99 = new Map<string, number[]>(cases.map((c) => [c.name, []]))
    log(`GraphQL: ${ROUNDS} interleaved rounds of ${SECONDS} s per case, ${CONNECTIONS} connections, + a warm-up round of 2 s`)
    for (let round = -1; round < ROUNDS; round++) {
      for (const c of cases) {
        const run = await load({ url: c.url, connections: CONNECTIONS, seconds: round < 0 ? 2 : SECONDS, requests: [{ method: 'POST', path: '/graphql', body, headers }] })
        if (run.failed > 0) throw new Error(`${c.name}: ${run.failed} failed requests (errors ${run.result.errors}, non-2xx ${run.result.non2xx})`)
        if (round < 0) continue
        rps.get(c.name)!.push(run.rps)
        p99.get(c.name)!.push(run.result.latency.p99)
        log(`  round ${round + 1} ${c.name}: ${Math.round(run.rps)} req/s, p99 ${run.result.latency.p99} ms`)
        await sleep(500)
      }
    }
    const stats = await request<{ stats: { hits: number; misses: number; loads: number }; uncached: number }>('cache-stats')
    const med = (name: string) => median(rps.get(name)!)
    const ratios = (a: string, b: string) => rps.get(a)!.map((v, i) => round(v / rps.get(b)![i]!, 2)).join(', ')
    const note = (name: string) => `p99 ${median(p99.get(name)!)} ms; ${CONNECTIONS} connections, median of ${ROUNDS} × ${SECONDS} s`
    const bare: Figure = { name: 'baseline: bare Fastify route answering the same JSON from memory', value: Math.round(med('bare')), unit: 'req/s', note: note('bare') }
    const uncached: Figure = { name: 'file(id) query, CACHE_RESOLVERS=false (PostgreSQL per request)', value: Math.round(med('uncached')), unit: 'req/s', note: `${note('uncached')}; loader calls on the cached app during the run: ${stats.stats.loads}` }
    const cached: Figure = { name: 'file(id) query through the resolver cache', value: Math.round(med('cached')), unit: 'req/s' }
    figures.push(bare, versus(uncached, bare))
    const speedup = med('cached') / med('uncached')
    figures.push({ ...versus(cached, uncached), target: '≥ 2.5× the uncached query', met: speedup >= 2.5, note: `${note('cached')}; per-round ratios ${ratios('cached', 'uncached')}` })
    figures.push({ ...versus({ ...cached, name: 'file(id) query through the resolver cache, against the bare route' }, bare), note: `per-round ratios ${ratios('cached', 'bare')}: JWT check, GraphQL parse/validate/execute (JIT), cost limits, metrics` })
  } finally {
    child.send({ type: 'stop' })
    await new Promise((resolve) => child.once('exit', resolve))
    await rm(dataDir, { recursive: true, force: true })
    await database.drop()
  }
}

async function uploadFile(url: string, headers: Record<string, string>): Promise<string> {
  const content = Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(20_000)])
  const upload = graphqlMultipart(
    { query: 'mutation($file: Upload!) { uploadFile(file: $file) { __typename ... on UploadFileSuccess { file { id } } ... on Error { message } } }', variables: { file: null } },
    [{ path: 'variables.file', filename: 'report.pdf', contentType: 'application/pdf', content }],
  )
  const res = await postStreamed(`${url}/graphql`, upload.parts, { ...headers, 'content-type': upload.contentType, 'graphql-require-preflight': '1' })
  const id = (JSON.parse(res.body) as { data?: { uploadFile?: { file?: { id: string } } } }).data?.uploadFile?.file?.id
  if (!id) throw new Error(`upload failed: ${res.body}`)
  const deadline = Date.now() + 30_000
  for (;;) {
    const status = await fetch(`${url}/graphql`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ query: 'query($id: ID!) { file(id: $id) { status } }', variables: { id } }) })
    const json = (await status.json()) as { data?: { file?: { status: string } } }
    if (json.data?.file?.status === 'READY') return id
    if (Date.now() > deadline) throw new Error(`file not ready: ${JSON.stringify(json)}`)
    await sleep(100)
  }
}

async function main(): Promise<void> {
  const redis = new Redis(TEST_REDIS_URL)
  const prefix = `gwbench:scale:${process.pid}:`
  try {
    await cachedItems(redis, prefix)
  } finally {
    let cursor = '0'
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      cursor = next
      if (found.length > 0) await redis.unlink(...found)
    } while (cursor !== '0')
    redis.disconnect()
  }
  await graphqlThroughput()
  for (const f of figures) log(`${f.name}: ${f.value} ${f.unit}${f.ratio !== undefined ? ` (×${round(f.ratio)} of ${f.baseline?.name})` : ''}${f.met === undefined ? '' : f.met ? ' met' : ' NOT met'}`)
  reportResult({ bench: 'scale', figures })
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
