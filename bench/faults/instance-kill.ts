/**
 * SIGKILL of an instance in the middle of a campaign and of image processing.
 *
 *   npx tsx bench/faults/instance-kill.ts      (or npm run bench -- faults/instance-kill)
 *
 * Two instances run as child processes (`node --import tsx src/main.ts`), every worker on, sharing a
 * fresh PostgreSQL database, a private redis-server, disk storage in a temporary directory and the
 * fake Resend. A campaign is sending from both and images are processing on A when A is SIGKILLed:
 * no shutdown, its leases simply stop being renewed. Shows: B finishes both once the leases expire
 * (FILE_PIPELINE_LEASE_MS, set to 3 s here; the campaign batch lease, 60 s), and no recipient gets
 * the email twice: what A had sent but not recorded goes out again under the same idempotency key.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'drizzle-orm'
import sharp from 'sharp'
import { buildTestApp, TEST_JWT_SECRET, TEST_SIGNING_SECRET } from '../../test/helpers/app'
import { startFakeResend } from '../../test/helpers/fake-resend'
import { createEmptyDatabase } from '../../test/helpers/services'
import { graphqlMultipart, postStreamed } from '../lib/http'
import { formatTally, progressLog, seedCampaign, sendCampaign, tallyProvider, waitForCampaign } from './lib/campaign'
import { spawnApp, startRedisServer, waitFor, type AppProcess } from './lib/processes'
import { check, measure, runScenario } from './lib/scenario'

const RECIPIENTS = Number(process.env.FAULT_RECIPIENTS ?? 3_000)
const IMAGES = Number(process.env.FAULT_IMAGES ?? 8)
const PIPELINE_LEASE_MS = 3_000
const CAMPAIGN_LEASE_MS = 60_000
const UPLOAD = 'mutation($file: Upload!) { uploadFile(file: $file, input: { waitForProcessing: false }) { __typename ... on UploadFileSuccess { file { id } } ... on Error { message } } }'

await runScenario('faults/instance-kill', 'an instance SIGKILLed mid-campaign and mid-pipeline; the other finishes', async (s) => {
  const work = await mkdtemp(path.join(tmpdir(), 'gw-fault-kill-'))
  s.defer(() => rm(work, { recursive: true, force: true }))
  const dataDir = path.join(work, 'data')
  const database = await createEmptyDatabase()
  s.defer(() => database.drop())
  const redis = await startRedisServer()
  s.defer(() => redis.stop())
  const fake = await startFakeResend()
  s.defer(() => fake.close())
  const shared = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'gwkill:', JWT_SECRET: TEST_JWT_SECRET, SIGNING_SECRET: TEST_SIGNING_SECRET }

  // An admin console on the same database and Redis, without workers: it seeds and watches, the children work.
  const consoleApp = await buildTestApp({ database, dataDir, redis: false, env: shared })
  s.defer(() => consoleApp.close())
  const db = consoleApp.app.db.db
  const admin = consoleApp.token('admin')

  const env = {
    ...shared,
    NODE_ENV: 'development',
    DATABASE_URL: database.url,
    DATA_DIR: dataDir,
    PUBLIC_URL: 'http://groundwork.fault',
    RESEND_API_KEY: 're_fault',
    RESEND_BASE_URL: fake.url,
    WORKERS_ENABLED: 'true',
    WORKER_POLL_MS: '200',
    CAMPAIGN_BATCH_SIZE: '20',
    CAMPAIGN_RATE_LIMIT_PER_SECOND: '10',
    FILE_PIPELINE_LEASE_MS: String(PIPELINE_LEASE_MS),
    UPLOAD_MAX_IMAGE_BYTES: String(32 * 1024 * 1024),
    RATE_LIMIT_MAX: '1000000',
    LOG_LEVEL: 'info',
  }
  const children: AppProcess[] = []
  s.defer(() => Promise.all(children.map((c) => c.kill('SIGTERM'))))
  for (const name of ['A', 'B']) {
    const child = await spawnApp(name, env, path.join(work, `${name}.log`))
    children.push(child)
    s.log(`instance ${name} up: pid ${child.pid}, ${child.url}`)
  }
  const [a, b] = children as [AppProcess, AppProcess]

  const campaign = await seedCampaign(consoleApp, admin, RECIPIENTS, 'kill')
  const images = await Promise.all(
    Array.from({ length: IMAGES }, (_, i) =>
      sharp({ create: { width: 3000, height: 2000, channels: 3, background: '#000', noise: { type: 'gaussian', mean: 100 + i, sigma: 40 } } }).jpeg({ quality: 90 }).toBuffer(),
    ),
  )
  s.log(`seeded: a campaign of ${RECIPIENTS} recipients (batches of 20, 10 requests/s), ${IMAGES} noisy 3000×2000 JPEGs of ~${(images[0]!.length / 1024 / 1024).toFixed(1)} MiB`)
  fake.reset()
  await sendCampaign(consoleApp, admin, campaign.id)

  const token = consoleApp.token('user', 'photographer')
  const fileIds = await Promise.all(
    images.map(async (content, i) => {
      const { parts, contentType } = graphqlMultipart({ query: UPLOAD, variables: { file: null } }, [{ path: 'variables.file', filename: `photo-${i}.jpg`, contentType: 'image/jpeg', content }])
      const res = await postStreamed(`${a.url}/graphql`, parts, { 'content-type': contentType, authorization: `Bearer ${token}`, 'graphql-require-preflight': '1' })
      const body = JSON.parse(res.body) as { data?: { uploadFile: { file?: { id: string }; message?: string } } }
      const id = body.data?.uploadFile.file?.id
      if (!id) throw new Error(`upload ${i} to A: HTTP ${res.status} ${res.body}`)
      return id
    }),
  )
  s.log(`${IMAGES} images uploaded to A; A processes them`)

  const progress = async () => {
    const [row] = (await db.execute<{ running: number; open: number; sent: number }>(sql`
      select (select count(*)::int from file_processing_steps where status = 'running') as running,
             (select count(*)::int from file_processing_steps where status in ('pending', 'running')) as open,
             (select count(*)::int from campaign_recipients where campaign_id = ${campaign.id} and status = 'accepted') as sent`)).rows
    return row!
  }
  // Kill A while it is busy with both: steps running and the campaign well under way but not done.
  const atKill = await waitFor('A to be busy with steps and the campaign', async () => {
    const p = await progress()
    return p.running > 0 && p.sent >= RECIPIENTS * 0.2 ? p : undefined
  }, 120_000, 20)
  const [leased] = (await db.execute<{ batches: number; steps: number }>(sql`
    select (select count(*)::int from campaign_batches where campaign_id = ${campaign.id} and status = 'sending') as batches,
           (select count(*)::int from file_processing_steps where status = 'running') as steps`)).rows
  await a.kill('SIGKILL')
  const killedAt = performance.now()
  s.log(`A SIGKILLed: ${atKill.sent}/${RECIPIENTS} recipients accepted, ${leased!.batches} batches and ${leased!.steps} steps leased (by A or B), ${atKill.open} steps left`)

  const filesDone = waitFor('every image to settle', async () => {
    const [row] = (await db.execute<{ open: number }>(sql`select count(*)::int as open from files where id = any(${sql.param(fileIds)}::uuid[]) and status = 'processing'`)).rows
    return row!.open === 0 ? performance.now() : 0
  }, 300_000, 100)
  const done = await waitForCampaign(consoleApp, admin, campaign.id, 300_000, progressLog(s, 'campaign'))
  const campaignSeconds = (performance.now() - killedAt) / 1000
  const filesSeconds = ((await filesDone) - killedAt) / 1000
  await sleep(500)

  const files = (await db.execute<{ status: string; n: number }>(sql`select status::text, count(*)::int as n from files where id = any(${sql.param(fileIds)}::uuid[]) group by status`)).rows
  const ready = files.find((f) => f.status === 'ready')?.n ?? 0
  const [steps] = (await db.execute<{ rerun: number; total: number; failed: number }>(sql`
    select count(*) filter (where attempts > 1)::int as rerun, count(*)::int as total, count(*) filter (where status = 'failed')::int as failed
    from file_processing_steps`)).rows
  const tally = tallyProvider(fake, campaign.recipients)
  s.log(`campaign ${done.status} ${campaignSeconds.toFixed(1)} s after the kill; provider: ${formatTally(tally)}`)
  s.log(`images: ${files.map((f) => `${f.n} ${f.status}`).join(', ')} ${filesSeconds.toFixed(1)} s after the kill; ${steps!.rerun} of ${steps!.total} steps ran more than once, ${steps!.failed} failed`)
  s.log(`B still alive: ${b.alive}`)

  return [
    check('A killed in the middle of both', leased!.steps + leased!.batches, 'leases held at the kill', 'steps running and the campaign under way (the scenario really interrupted work)', atKill.running > 0 && atKill.sent < RECIPIENTS, `${atKill.sent}/${RECIPIENTS} recipients accepted at the kill; ${leased!.batches} batches and ${leased!.steps} steps leased`),
    check('campaign finished by B, each recipient once', tally.duplicates + tally.missing + tally.underTwoKeys, 'problems', '0 duplicates, 0 missing, campaign SENT', done.status === 'SENT' && tally.duplicates + tally.missing + tally.underTwoKeys === 0, `${formatTally(tally)}; a replay is a batch A had sent but not recorded, sent again by B under the same key`),
    measure('campaign: kill to SENT', campaignSeconds, 's', `the campaign batch lease is ${CAMPAIGN_LEASE_MS / 1000} s: A's unrecorded batches wait for it`),
    check('images finished by B', ready, 'images READY', `${IMAGES} of ${IMAGES}`, ready === IMAGES, `${steps!.rerun} steps ran again after their lease lapsed; ${steps!.failed} failed`),
    measure('images: kill to the last one settled', filesSeconds, 's', `FILE_PIPELINE_LEASE_MS=${PIPELINE_LEASE_MS}`),
  ]
})
