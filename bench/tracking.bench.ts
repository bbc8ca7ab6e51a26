/**
 * Email tracking figures, each against a baseline measured in the same run:
 *
 *   1. Open pixel and click redirect, requests per second under autocannon, against a bare Fastify
 *      route answering the very same requests with byte-identical answers (the GIF and its headers;
 *      the 302 with its headers and a Location of the same length), without reading them, so only
 *      the app's work differs, not what goes over the wire (goal: at least 50% of the bare route). The
 *      headline figures send 10,000 distinct tokens, each connection starting at its own offset, so a
 *      token comes back only after 10,000 other requests, more than the app remembers as verified
 *      (tracking-tokens.ts): every request pays its HMAC check. A breakdown sends 1,000 tokens, which
 *      the app remembers after their first pass. The server's CPU time per request, app against bare,
 *      is reported beside the rates: it does not depend on what the client and the database take of
 *      the machine's cores.
 *      The servers run in a child process (bench/tracking-server.ts); autocannon runs here.
 *   2. Webhook ingestion: signed `email.delivered` events POSTed with 32 in flight, verified,
 *      stored and applied (recipient state, counters, raw event, rollups) by the app's processor.
 *   3. Rollup queries for one campaign of BENCH_ROLLUP_RECIPIENTS recipients (default 1,000,000)
 *      and about 3 events each, against the same totals computed from the raw events.
 *
 * Real services: a temporary PostgreSQL database (dropped afterwards) and Redis with a unique key
 * prefix. Run it with `npm run bench -- tracking`.
 */
import { fork } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { sql } from 'drizzle-orm'
import { Webhook } from 'standardwebhooks'
import type { Database } from '../src/infra/db/client'
import { createUrlSigner } from '../src/infra/storage/signed-url'
import { EmailAnalytics } from '../src/services/tracking/email-analytics'
import { createTrackingTokens } from '../src/services/tracking/tracking-tokens'
import { createTestDatabase, TEST_REDIS_URL, uniqueRedisPrefix } from '../test/helpers/services'
import { load as loadWith, type AutocannonResult } from './lib/load'
import { reportResult, versus, type Figure } from './lib/result'
import { median, round } from './lib/stats'
import { nowMs, sleep } from './lib/timing'

const SECONDS = Number(process.env.BENCH_SECONDS) || 5
const ROUNDS = Number(process.env.BENCH_ROUNDS) || 3
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS) || 50
const HTTP_RECIPIENTS = 10_000
/** Tokens of the repeat breakdown: fewer than the app remembers as verified (tracking-tokens.ts), so all of them are after one pass. */
const REPEATED_TOKENS = 1_000
const WEBHOOKS = Number(process.env.BENCH_WEBHOOKS) || 5_000
const WEBHOOK_IN_FLIGHT = 32
const ROLLUP_RECIPIENTS = Number(process.env.BENCH_ROLLUP_RECIPIENTS) || 1_000_000
const QUERY_RUNS = 15

const SIGNING_SECRET = 'bench-signing-bench-signing-bench-signing'
const WEBHOOK_SECRET = `whsec_${Buffer.from('groundwork-tracking-bench-webhook-key').toString('base64')}`
const HUMAN_UA = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0'

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`)

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(tmpdir(), 'gw-bench-tracking-'))
  const database = await createTestDatabase()
  const cleanups: (() => Promise<unknown>)[] = [() => database.drop(), () => rm(work, { recursive: true, force: true })]
  try {
    const db = database.handle.db
    const small = await seedCampaign(db, HTTP_RECIPIENTS, 'http')
    const server = await startServer(database.url, work)
    cleanups.unshift(() => server.stop())

    // BENCH_CASES=<name,...>: only these HTTP cases, and `webhooks` or `rollups` only when named.
    const only = process.env.BENCH_CASES?.split(',')
    const figures: Figure[] = []
    figures.push(...(await httpFigures(server, small.recipients.map((r) => r.id))))
    if (!only || only.includes('webhooks')) figures.push(await webhookFigure(db, server, small))
    await server.stop()
    if (!only || only.includes('rollups')) figures.push(...(await rollupFigures(db)))
    if (only) {
      // A profiling run: no result, so RESULTS.md keeps the last full run's figures (run.ts reports the bench as failed).
      log('BENCH_CASES set: a profiling run, no figures reported')
      return
    }
    reportResult({ bench: 'tracking', figures })
  } finally {
    for (const cleanup of cleanups) await cleanup().catch((err: unknown) => log(`cleanup failed: ${String(err)}`))
  }
}

interface Seeded {
  campaignId: string
  recipients: { id: number; providerId: string }[]
}

/** A sent campaign whose recipients are all accepted, as the dispatcher leaves them; inserted in SQL, not sent. */
async function seedCampaign(db: Database, recipients: number, label: string, withRows = true): Promise<Seeded> {
  const template = await db.execute<{ id: string }>(sql`
    insert into email_templates (name, kind, subject, html) values (${label}, 'marketing', 'News', '<a href="https://shop.example.com/sale">Sale</a>') returning id`)
  const version = await db.execute<{ id: string }>(sql`
    insert into email_template_versions (template_id, version, kind, subject, html, text, variables)
    values (${template.rows[0]!.id}, 1, 'marketing', 'News', '<a href="https://shop.example.com/sale">Sale</a>', 'Sale', '[]') returning id`)
  const campaign = await db.execute<{ id: string }>(sql`
    insert into campaigns (name, template_id, template_version_id, audience_ids, "from", status, started_at, completed_at)
    values (${label}, ${template.rows[0]!.id}, ${version.rows[0]!.id}, '{}', 'Bench <news@example.com>', 'sent', now() - interval '1 hour', now())
    returning id`)
  const campaignId = campaign.rows[0]!.id
  await db.execute(sql`
    insert into campaign_recipients (campaign_id, email, attributes, status, provider_id, sent_at)
    select ${campaignId}::uuid, ${label} || '-' || g || '@example.com', '{}'::jsonb, 'accepted', ${label} || '-p-' || g, now() - interval '1 hour'
    from generate_series(1, ${recipients}) g`)
  await db.execute(sql`insert into campaign_stats (campaign_id, total, sent) values (${campaignId}, ${recipients}, ${recipients})`)
  if (!withRows) return { campaignId, recipients: [] }
  const rows = await db.execute<{ id: string; provider_id: string }>(sql`select id, provider_id from campaign_recipients where campaign_id = ${campaignId} order by id`)
  return { campaignId, recipients: rows.rows.map((r) => ({ id: Number(r.id), providerId: r.provider_id })) }
}

interface Server {
  app: string
  bare: string
  stats(): Promise<{ written: number; dropped: number; batches: number; highWater: number }>
  cpu(): Promise<{ user: number; system: number }>
  stop(): Promise<void>
}

async function startServer(databaseUrl: string, work: string): Promise<Server> {
  const child = fork(path.join(import.meta.dirname, 'tracking-server.ts'), [], {
    // BENCH_PROFILE_DIR=<dir>: the server writes a V8 CPU profile there when it stops.
    execArgv: ['--import', 'tsx', ...(process.env.BENCH_SERVER_ARGS?.split(' ') ?? []), ...(process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : [])],
    env: {
      ...process.env,
      BENCH_DATABASE_URL: databaseUrl,
      BENCH_REDIS_URL: TEST_REDIS_URL,
      BENCH_REDIS_PREFIX: uniqueRedisPrefix(),
      BENCH_SIGNING_SECRET: SIGNING_SECRET,
      BENCH_WEBHOOK_SECRET: WEBHOOK_SECRET,
      BENCH_DATA_DIR: work,
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const next = <T>(type: string) =>
    new Promise<T>((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`tracking bench server exited with ${code}`))
      const onMessage = (msg: { type: string } & T) => {
        if (msg.type !== type) return
        child.off('message', onMessage)
        child.off('exit', onExit)
        resolve(msg)
      }
      child.on('message', onMessage)
      child.once('exit', onExit)
    })
  /** Sends a request of this type and waits for the server's answer of the same type. */
  const ask = <T>(type: string) => {
    const reply = next<T>(type)
    child.send({ type })
    return reply
  }
  const ready = await next<{ app: string; bare: string }>('ready')
  let stopped: Promise<void> | undefined
  return {
    ...ready,
    stats: async () => (await ask<{ stats: Awaited<ReturnType<Server['stats']>> }>('stats')).stats,
    cpu: async () => (await ask<{ cpu: Awaited<ReturnType<Server['cpu']>> }>('cpu')).cpu,
    stop: () =>
      (stopped ??= new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve()
        child.once('exit', () => resolve())
        child.send({ type: 'stop' })
      })),
  }
}

async function load(url: string, paths: string[], seconds: number): Promise<{ rps: number; result: AutocannonResult }> {
  const { rps, failed, result } = await loadWith({
    url,
    connections: CONNECTIONS,
    seconds,
    headers: { 'user-agent': HUMAN_UA },
    requests: paths.map((p) => ({ method: 'GET', path: p })),
    // Connections spread over the list: in step, each token would arrive 50 times within moments, and
    // all but the first would skip the HMAC check (the verified-token memo), whatever the list's length.
    spread: true,
  })
  if (failed > 0) log(`  ${url}: ${result.errors} errors, ${result.non2xx - result['3xx']} answers neither 2xx nor 3xx`)
  return { rps, result }
}

const FLOOR_NOTE = 'the same URLs behind a /bench/floor or /bench/checked prefix, byte-identical answers'

async function httpFigures(server: Server, recipientIds: number[]): Promise<Figure[]> {
  const tokens = createTrackingTokens(createUrlSigner(SIGNING_SECRET))
  const exp = Math.floor(Date.now() / 1000) + 86_400
  const destination = 'https://shop.example.com/sale?x=1&y=2'
  const pixels = recipientIds.map((id) => `/t/o/${tokens.openToken(id, exp)}.gif`)
  const clicks = recipientIds.map((id) => `/t/c/${tokens.clickToken(id, 0, destination, exp)}`)
  // As many requests as the other cases (autocannon builds every request of the list for every connection
  // at the start of a run, so a shorter list would start sooner), over REPEATED_TOKENS distinct tokens.
  const repeatedPixels = pixels.map((_, i) => pixels[i % REPEATED_TOKENS]!)
  const repeatedClicks = clicks.map((_, i) => clicks[i % REPEATED_TOKENS]!)
  // Signed with another key: the app answers the GIF after the rate limit and the token check, and records nothing.
  const forged = createTrackingTokens(createUrlSigner(`${SIGNING_SECRET}-other`))
  const forgedPixels = recipientIds.map((id) => `/t/o/${forged.openToken(id, exp)}.gif`)
  const cases = [
    { name: 'bare pixel', run: (seconds: number) => load(server.bare, pixels, seconds) },
    { name: 'pixel', run: (seconds: number) => load(server.app, pixels, seconds) },
    { name: 'repeat pixel', run: (seconds: number) => load(server.app, repeatedPixels, seconds) },
    { name: 'forged pixel', run: (seconds: number) => load(server.app, forgedPixels, seconds) },
    { name: 'floor pixel', run: (seconds: number) => load(server.app, pixels.map((p) => `/bench/floor${p}`), seconds) },
    { name: 'checked pixel', run: (seconds: number) => load(server.app, pixels.map((p) => `/bench/checked${p}`), seconds) },
    { name: 'bare redirect', run: (seconds: number) => load(server.bare, clicks, seconds) },
    { name: 'redirect', run: (seconds: number) => load(server.app, clicks, seconds) },
    { name: 'repeat redirect', run: (seconds: number) => load(server.app, repeatedClicks, seconds) },
    { name: 'checked redirect', run: (seconds: number) => load(server.app, clicks.map((p) => `/bench/checked${p}`), seconds) },
  ]
  // BENCH_CASES=<name,...>: only these cases, for profiling (BENCH_SERVER_ARGS, BENCH_PROFILE_DIR); no figures.
  const only = process.env.BENCH_CASES?.split(',')
  if (only) cases.splice(0, cases.length, ...cases.filter((c) => only.includes(c.name)))
  const samples = new Map<string, number[]>(cases.map((c) => [c.name, []]))
  const latency = new Map<string, number[]>(cases.map((c) => [c.name, []]))
  const cpu = new Map<string, number[]>(cases.map((c) => [c.name, []]))
  log(`HTTP: ${ROUNDS} interleaved rounds of ${SECONDS} s per case, ${CONNECTIONS} connections, + a warm-up round of 2 s`)
  for (let roundNo = 0; roundNo <= ROUNDS; roundNo++) {
    for (const c of cases) {
      const before = await server.cpu()
      const { rps, result } = await c.run(roundNo === 0 ? 2 : SECONDS)
      // Hits still buffered are stored before the next case, so no case (a baseline least of all) runs
      // beside the database work of the one before, and their storing counts in this case's CPU time.
      // Dropped hits, if the writer fell behind, are reported.
      await server.stats()
      const after = await server.cpu()
      const cpuPerRequest = (after.user - before.user + after.system - before.system) / (result['2xx'] + result['3xx'])
      if (roundNo > 0) {
        samples.get(c.name)!.push(rps)
        latency.get(c.name)!.push(result.latency.p99)
        cpu.get(c.name)!.push(cpuPerRequest)
        log(`  ${c.name}: ${Math.round(rps)} req/s, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, server CPU ${cpuPerRequest.toFixed(1)} µs/request`)
      }
      await sleep(500)
    }
  }
  if (only) return []
  const stats = await server.stats()
  log(`tracking buffer: ${stats.written} hits stored in ${stats.batches} batches, ${stats.dropped} dropped, high water ${stats.highWater}`)
  const fig = (name: string, label: string, note: string): Figure => ({
    name: label,
    value: Math.round(median(samples.get(name)!)),
    unit: 'req/s',
    note: `${note}; p99 ${median(latency.get(name)!)} ms; ${CONNECTIONS} connections, median of ${ROUNDS} × ${SECONDS} s`,
  })
  const bare = fig('bare pixel', 'baseline: bare Fastify route answering the GIF', 'same requests, byte-identical answers (status, headers, body), same process as the app, no plugins, request not read')
  const bareRedirect = fig('bare redirect', 'baseline: bare Fastify route answering a 302', 'same requests, byte-identical answers (status, headers, body), same process as the app, no plugins, request not read')
  // Rounds are paired (each case right after its baseline), so per-round ratios show the spread that
  // other load on the machine puts into the medians.
  const perRound = (name: string, base: string) =>
    samples.get(name)!.map((v, i) => (v / samples.get(base)!.at(i)!).toFixed(2)).join(', ')
  const target = (figure: Figure, base: Figure, name: string, baseName: string): Figure => {
    const withBase = versus({ ...figure, note: `${figure.note}; per-round ratios ${perRound(name, baseName)}` }, base)
    return { ...withBase, target: '≥ 50% of the bare route', met: (withBase.ratio ?? 0) >= 0.5 }
  }
  const fresh = `${recipientIds.length.toLocaleString('en')} distinct tokens, the connections spread over them, so a token comes back only after ${recipientIds.length.toLocaleString('en')} other requests: more than the app remembers as verified (every request pays its HMAC check)`
  const repeat = `${REPEATED_TOKENS.toLocaleString('en')} tokens, each remembered as verified after its first pass (no HMAC check)`
  // CPU time of the server process per request answered: what the app's own work costs, whatever the
  // load generator and the database take of the same two cores (which the req/s figures share).
  const cpuFig = (name: string, label: string): Figure => ({
    name: label,
    value: round(median(cpu.get(name)!)),
    unit: 'µs/request',
    note: `server process user + system CPU time over requests answered, storing of its hits included, PostgreSQL's own work not; median of ${ROUNDS}; per round ${cpu.get(name)!.map((v) => v.toFixed(1)).join(', ')}`,
  })
  const bareCpu = cpuFig('bare pixel', 'server CPU per request: bare GIF route')
  const bareRedirectCpu = cpuFig('bare redirect', 'server CPU per request: bare 302 route')
  return [
    bare,
    target(fig('pixel', 'GET /t/o/<token>.gif (open pixel)', `${fresh}; HMAC check, per-IP limit (quota leased from Redis), hit buffered and stored; ${stats.written} hits stored in ${stats.batches} batches, ${stats.dropped} dropped`), bare, 'pixel', 'bare pixel'),
    versus(fig('repeat pixel', 'breakdown: the pixel with repeated tokens', `${repeat}; per-round ratios ${perRound('repeat pixel', 'bare pixel')}`), bare),
    versus(fig('forged pixel', 'breakdown: the pixel with forged tokens (rate limit and token check only)', `what the app costs before recording anything: global hooks, the per-IP limit, the HMAC check; per-round ratios ${perRound('forged pixel', 'bare pixel')}`), bare),
    versus(fig('floor pixel', "breakdown: the pixel route's fixed cost (answer only)", `a bench route on the app with the pixel's options (global hooks, overload check, per-IP limit, metrics) answering the GIF without reading the token; ${FLOOR_NOTE}; per-round ratios ${perRound('floor pixel', 'bare pixel')}`), bare),
    versus(fig('checked pixel', 'breakdown: the pixel route with its token check, nothing recorded', `the same bench route checking each fresh token (HMAC), recording nothing; ${FLOOR_NOTE}; per-round ratios ${perRound('checked pixel', 'bare pixel')}`), bare),
    bareRedirect,
    target(fig('redirect', 'GET /t/c/<token> (click redirect)', `${fresh}, carrying the URL; HMAC check, rate limit, click buffered and stored, conversion token minted`), bareRedirect, 'redirect', 'bare redirect'),
    versus(fig('repeat redirect', 'breakdown: the redirect with repeated tokens', `${repeat}; the conversion token is still minted; per-round ratios ${perRound('repeat redirect', 'bare redirect')}`), bareRedirect),
    versus(fig('checked redirect', 'breakdown: the redirect route with its token check and conversion token, nothing recorded', `a bench route on the app with the redirect's options checking each fresh token (HMAC over the URL) and minting the conversion token (HMAC), recording nothing; ${FLOOR_NOTE}; per-round ratios ${perRound('checked redirect', 'bare redirect')}`), bareRedirect),
    bareCpu,
    versus(cpuFig('pixel', 'server CPU per request: open pixel'), bareCpu),
    versus(cpuFig('forged pixel', 'server CPU per request: pixel with forged tokens'), bareCpu),
    versus(cpuFig('floor pixel', "server CPU per request: the pixel route's fixed cost"), bareCpu),
    versus(cpuFig('checked pixel', 'server CPU per request: pixel route with its token check, nothing recorded'), bareCpu),
    bareRedirectCpu,
    versus(cpuFig('redirect', 'server CPU per request: click redirect'), bareRedirectCpu),
    versus(cpuFig('repeat redirect', 'server CPU per request: redirect with repeated tokens'), bareRedirectCpu),
    versus(cpuFig('checked redirect', 'server CPU per request: redirect route with its checks, nothing recorded'), bareRedirectCpu),
  ]
}

async function webhookFigure(db: Database, server: Server, seeded: Seeded): Promise<Figure> {
  const events = seeded.recipients.slice(0, WEBHOOKS).map((r, i) => {
    const body = JSON.stringify({
      type: 'email.delivered',
      created_at: new Date().toISOString(),
      data: { email_id: r.providerId, created_at: new Date().toISOString(), to: [`r${i}@example.com`], tags: { campaign_id: seeded.campaignId, recipient_id: String(r.id) } },
    })
    return { id: `msg_bench_${i}`, body }
  })
  const signer = new Webhook(WEBHOOK_SECRET)
  const start = nowMs()
  let next = 0
  let refused = 0
  const send = async () => {
    while (next < events.length) {
      const e = events[next++]!
      const timestamp = Math.floor(Date.now() / 1000)
      // Signed as the requests go out, like Resend does; the client's signing time is in the figure.
      const res = await fetch(`${server.app}/webhooks/resend`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'svix-id': e.id, 'svix-timestamp': String(timestamp), 'svix-signature': signer.sign(e.id, new Date(timestamp * 1000), e.body) },
        body: e.body,
      })
      if (res.status !== 200) refused++
      await res.arrayBuffer()
    }
  }
  await Promise.all(Array.from({ length: WEBHOOK_IN_FLIGHT }, send))
  const answeredMs = nowMs() - start
  for (;;) {
    const done = await db.execute<{ n: string }>(sql`select count(*) as n from webhook_events where status = 'done'`)
    if (Number(done.rows[0]!.n) >= events.length - refused) break
    await sleep(20)
  }
  const appliedMs = nowMs() - start
  const delivered = await db.execute<{ delivered: number }>(sql`select delivered from campaign_stats where campaign_id = ${seeded.campaignId}`)
  log(`webhooks: ${events.length} answered in ${Math.round(answeredMs)} ms (${refused} refused), all applied after ${Math.round(appliedMs)} ms; delivered counter ${delivered.rows[0]!.delivered}`)
  return {
    name: 'webhook ingestion: email.delivered verified, stored and applied',
    value: Math.round(events.length / (appliedMs / 1000)),
    unit: 'events/s',
    note: `${events.length} events, ${WEBHOOK_IN_FLIGHT} in flight; answered at ${Math.round(events.length / (answeredMs / 1000))}/s (2xx after the row is stored), applied by the app's processor (claimed in batches of up to 50, applied a batch per transaction) with state, counters, raw event and rollups`,
  }
}

async function rollupFigures(db: Database): Promise<Figure[]> {
  log(`rollups: seeding a campaign of ${ROLLUP_RECIPIENTS} recipients and its events (takes a while)`)
  let t = nowMs()
  const { campaignId } = await seedCampaign(db, ROLLUP_RECIPIENTS, 'big', false)
  const seededRecipientsMs = nowMs() - t
  t = nowMs()
  const start = Date.UTC(2030, 0, 1)
  // Sent over an hour, delivered seconds later (2% bounce), opens over three days (half the list, a
  // sixth of those by a machine, some twice), 10% of the list clicking and 14% clicking again.
  await db.execute(sql`
    create unlogged table bench_events as
    with r as (select id, row_number() over (order by id) as g from campaign_recipients where campaign_id = ${campaignId})
    select 1::smallint as type, id, ${start}::bigint + (g % 3600) * 1000 as at, false as machine, true as first from r
    union all select case when g % 50 = 0 then 4 else 2 end, id, ${start}::bigint + (g % 3600) * 1000 + 5000, false, true from r
    union all select 9, id, ${start}::bigint + (g * 7919 % 259200) * 1000 + 60000, g % 6 = 0, true from r where g % 2 = 0
    union all select 9, id, ${start}::bigint + (g * 7919 % 259200) * 1000 + 120000, false, false from r where g % 5 = 0 and g % 2 = 0
    union all select 9, id, ${start}::bigint + (g * 7919 % 259200) * 1000 + 180000, false, false from r where g % 2 = 1 and g % 3 = 0
    union all select 10, id, ${start}::bigint + (g * 7919 % 259200) * 1000 + 240000, false, true from r where g % 10 = 0
    union all select 10, id, ${start}::bigint + (g * 7919 % 259200) * 1000 + 300000, false, false from r where g % 7 = 0`)
  await db.execute(sql`
    insert into email_events (campaign_id, recipient_id, occurred_at, type, link_index, machine)
    select ${campaignId}::uuid, id, to_timestamp(at / 1000.0), type, case when type = 10 then 0 end, machine from bench_events`)
  await db.execute(sql`
    insert into campaign_event_rollups (campaign_id, bucket, type, count, machine, uniques, human_uniques)
    select ${campaignId}::uuid, date_trunc('minute', to_timestamp(at / 1000.0)), type, count(*), count(*) filter (where machine),
           count(*) filter (where first), count(*) filter (where first and not machine)
    from bench_events group by 2, 3`)
  const counts = await db.execute<{ events: string; rollups: string }>(sql`
    select (select count(*) from bench_events) as events, (select count(*) from campaign_event_rollups where campaign_id = ${campaignId}) as rollups`)
  await db.execute(sql`drop table bench_events`)
  await db.execute(sql`vacuum analyze email_events`)
  await db.execute(sql`vacuum analyze campaign_event_rollups`)
  const events = Number(counts.rows[0]!.events)
  const rollups = Number(counts.rows[0]!.rollups)
  log(`rollups: ${ROLLUP_RECIPIENTS} recipients in ${Math.round(seededRecipientsMs / 1000)} s, ${events} events and ${rollups} rollup rows in ${Math.round((nowMs() - t) / 1000)} s`)

  const analytics = new EmailAnalytics(db)
  const time = async (runs: number, fn: () => Promise<unknown>) => {
    await fn()
    const samples: number[] = []
    for (let i = 0; i < runs; i++) {
      const s = nowMs()
      await fn()
      samples.push(nowMs() - s)
    }
    return round(median(samples))
  }
  const totals = await time(QUERY_RUNS, () => analytics.campaignEngagement(campaignId))
  const hourly = await time(QUERY_RUNS, () => analytics.campaignTimeline(campaignId, new Date(start), new Date(start + 3 * 86_400_000), 'hour'))
  const minutes = await time(QUERY_RUNS, () => analytics.campaignTimeline(campaignId, new Date(start), new Date(start + 86_400_000), 'minute'))
  const raw = await time(3, () =>
    db.execute(sql`
      select type, count(*), count(*) filter (where machine), count(distinct recipient_id) from email_events where campaign_id = ${campaignId} group by type`),
  )
  const workload = `campaign of ${ROLLUP_RECIPIENTS.toLocaleString('en')} recipients, ${events.toLocaleString('en')} events, ${rollups.toLocaleString('en')} rollup rows`
  const baseline: Figure = { name: 'baseline: the same totals from the raw events', value: raw, unit: 'ms', note: `${workload}; count and count(distinct) over email_events, median of 3` }
  return [
    baseline,
    versus({ name: 'campaign totals from rollups (Campaign.stats engagement)', value: totals, unit: 'ms', note: `${workload}; median of ${QUERY_RUNS}` }, baseline),
    versus({ name: 'timeline, 3 days by hour (72 points)', value: hourly, unit: 'ms', note: `median of ${QUERY_RUNS}` }, baseline),
    versus({ name: 'timeline, 1 day by minute (1,440 points)', value: minutes, unit: 'ms', note: `median of ${QUERY_RUNS}` }, baseline),
  ]
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`)
  process.exit(1)
})
