/**
 * PostgreSQL unreachable for a few seconds under load, with work pending.
 *
 *   npx tsx bench/faults/postgres-outage.ts      (or npm run bench -- faults/postgres-outage)
 *
 * The shared PostgreSQL keeps running: the app reaches its own database through a TCP proxy
 * (test/helpers/tcp-proxy.ts), which is stopped (every connection dropped, new ones refused) and
 * started again. Meanwhile HTTP clients read a campaign through GraphQL (the database every time)
 * and a file (the cache), a campaign is sending and a reminder email falls due. Shows: requests that
 * need the database fail fast with an error the client can act on, /readyz says unavailable, cached
 * reads keep working, and the campaign and the email resume after the outage, each recipient once.
 */
import type net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildTestApp, uploadThroughGraphql } from '../../test/helpers/app'
import { pdf } from '../../test/helpers/chunked-upload'
import { startFakeResend } from '../../test/helpers/fake-resend'
import { createEmptyDatabase, PG_ADMIN_URL } from '../../test/helpers/services'
import { startTcpProxy } from '../../test/helpers/tcp-proxy'
import { formatTally, progressLog, seedCampaign, sendCampaign, tallyProvider, waitForCampaign } from './lib/campaign'
import { during, formatLoad, startLoad, summarizeLoad } from './lib/load'
import { waitFor } from './lib/processes'
import { check, measure, runScenario } from './lib/scenario'

const RECIPIENTS = Number(process.env.FAULT_RECIPIENTS ?? 1_000)
const OUTAGE_MS = Number(process.env.FAULT_OUTAGE_MS ?? 5_000)
const CONCURRENCY = 8
/** What a client may call failing fast; the pool's connection timeout (5 s) is what a hang would look like. */
const FAST_MS = 1_000
const CAMPAIGN = 'query($id: ID!) { campaign(id: $id) { id status stats { sent queued } } }'
const FILE = 'query($id: ID!) { file(id: $id) { id filename size } }'
const UPLOAD = 'mutation($file: Upload!) { uploadFile(file: $file) { __typename ... on UploadFileSuccess { file { id } } } }'
const REMIND = `mutation($input: EventReminderInput!) { scheduleEventReminder(input: $input) {
  __typename ... on ScheduleEventReminderSuccess { email { id } } ... on Error { message } } }`

await runScenario('faults/postgres-outage', 'PostgreSQL unreachable for a few seconds under load, with a campaign and a scheduled email pending', async (s) => {
  const database = await createEmptyDatabase()
  s.defer(() => database.drop())
  const proxy = await startTcpProxy(Number(new URL(PG_ADMIN_URL).port || 5432))
  s.defer(() => proxy.stop())
  const proxied = new URL(database.url)
  proxied.port = String(proxy.port)
  const fake = await startFakeResend()
  s.defer(() => fake.close())
  process.env.RESEND_BASE_URL = fake.url
  const t = await buildTestApp({
    database: { ...database, url: proxied.toString() },
    env: {
      RESEND_API_KEY: 're_fault',
      WORKERS_ENABLED: 'true',
      WORKER_POLL_MS: '200',
      CAMPAIGN_BATCH_SIZE: '10',
      CAMPAIGN_RATE_LIMIT_PER_SECOND: '10',
      RATE_LIMIT_MAX: '1000000',
    },
  })
  s.defer(() => t.close())
  await t.app.listen({ host: '127.0.0.1', port: 0 })
  const base = `http://127.0.0.1:${(t.app.server.address() as net.AddressInfo).port}`
  s.log(`database ${database.name} behind a TCP proxy on port ${proxy.port}; app on ${base}`)

  const admin = t.token('admin')
  const user = t.token('user', 'reader')
  const upload = await uploadThroughGraphql(t, user, UPLOAD, { file: null }, { filename: 'cached.pdf', contentType: 'application/pdf', content: pdf(5_000) })
  const fileId = (upload.body.data as { uploadFile: { file: { id: string } } }).uploadFile.file.id
  const campaign = await seedCampaign(t, admin, RECIPIENTS, 'pgfault')
  fake.reset()
  await sendCampaign(t, admin, campaign.id)
  s.log(`campaign of ${RECIPIENTS} recipients sending at 10 requests/s of 10`)

  const gql = async (query: string, variables: Record<string, unknown>, token: string) => {
    const res = await fetch(`${base}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ query, variables }) })
    const body = (await res.json()) as { data?: Record<string, unknown>; errors?: { message: string; extensions?: { code?: string } }[] }
    if (body.errors) return `HTTP ${res.status} ${body.errors[0]!.extensions?.code ?? 'no code'}: ${body.errors[0]!.message}`
    return Object.values(body.data ?? {})[0] ? undefined : `HTTP ${res.status}: no data`
  }
  const dbReads = startLoad(CONCURRENCY, () => gql(CAMPAIGN, { id: campaign.id }, admin))
  const cachedReads = startLoad(2, () => gql(FILE, { id: fileId }, user))
  s.defer(() => Promise.all([dbReads.stop(), cachedReads.stop()]))
  await sleep(2_000)

  const sendAt = new Date(Date.now() + 2_000).toISOString()
  const reminder = await t.gql<{ scheduleEventReminder: { email?: { id: string }; message?: string } }>(
    REMIND,
    { input: { user: { id: 'u1', email: 'reminded@example.com', name: 'Reminded' }, event: { id: 'ev1', title: 'Outage party', date: '2030-01-01T18:00:00Z', location: 'Here' }, sendAt } },
    t.token('service', 'backend'),
  )
  const emailId = reminder.data.scheduleEventReminder.email?.id
  if (!emailId) throw new Error(`scheduleEventReminder: ${JSON.stringify(reminder)}`)
  s.log(`reminder email ${emailId} scheduled for ${sendAt}, due during the outage`)

  const cutAt = performance.now()
  await proxy.stop()
  s.log(`database unreachable (proxy stopped) for ${OUTAGE_MS} ms`)
  await sleep(300)
  const readyDown = await fetch(`${base}/readyz`)
  const readyBody = (await readyDown.json()) as { status: string }
  s.log(`/readyz during the outage: HTTP ${readyDown.status} ${readyBody.status}`)
  await sleep(OUTAGE_MS - 300)
  const restoredAt = performance.now()
  await proxy.start()
  s.log('database reachable again')
  const reminderSent = waitFor('the reminder email to go out', () => (fake.sent.some((m) => m.idempotencyKey === `email/${emailId}`) ? performance.now() : 0), 120_000, 20).catch(() => 0)
  const firstSuccess = await waitFor('a database read to succeed again', () => dbReads.samples.find((x) => x.ok && x.start >= restoredAt)?.start ?? 0, 60_000, 10)
  s.log(`first successful database read ${(firstSuccess - restoredAt).toFixed(0)} ms after the restore`)
  await sleep(2_000)
  const [db, cached] = await Promise.all([dbReads.stop(), cachedReads.stop()])

  // Requests in flight when the proxy stopped belong to the outage.
  const pre = summarizeLoad(db.filter((x) => x.start + x.ms < cutAt))
  const outageSamples = db.filter((x) => x.start < restoredAt && x.start + x.ms >= cutAt)
  const failed = summarizeLoad(outageSamples.filter((x) => !x.ok))
  const outage = summarizeLoad(outageSamples)
  const after = summarizeLoad(during(db, firstSuccess, Infinity))
  const cachedOutage = summarizeLoad(cached.filter((x) => x.start < restoredAt && x.start + x.ms >= cutAt))
  s.log(`database reads before:  ${formatLoad(pre)}`)
  s.log(`database reads outage:  ${formatLoad(outage)}`)
  s.log(`database reads after:   ${formatLoad(after)}`)
  s.log(`cached reads outage:    ${formatLoad(cachedOutage)}`)
  for (const [error, n] of failed.errors) s.log(`  client saw ${n}× ${error}`)

  const done = await waitForCampaign(t, admin, campaign.id, 300_000, progressLog(s, 'campaign'))
  const resumedIn = (performance.now() - restoredAt) / 1000
  const emailSentAt = await reminderSent
  const reminderCopies = fake.sent.filter((m) => m.idempotencyKey === `email/${emailId}`).length
  const tally = tallyProvider({ requests: fake.requests, sent: fake.sent.filter((m) => m.idempotencyKey?.startsWith('campaign/')) }, campaign.recipients)
  s.log(`campaign ${done.status} ${resumedIn.toFixed(1)} s after the restore; provider: ${formatTally(tally)}; reminder sent ${reminderCopies}×, ${emailSentAt ? `${((emailSentAt - restoredAt) / 1000).toFixed(1)} s after the restore` : 'never'}`)

  const codes = failed.errors.map(([e]) => e)
  const clear = codes.length > 0 && codes.every((c) => !/INTERNAL_SERVER_ERROR|no code/.test(c))
  return [
    check('slowest failed request during the outage', failed.max, 'ms', `≤ ${FAST_MS} ms (fail fast)`, failed.requests > 0 && failed.max <= FAST_MS, `${failed.requests} of ${outage.requests} database reads failed during the outage; p50 of failures ${failed.p50.toFixed(1)} ms`),
    check('failed requests carry a specific error code', codes.length, 'distinct errors', 'every failure names the cause (not INTERNAL_SERVER_ERROR)', clear, codes.join('; ') || 'no failures'),
    check('/readyz during the outage', readyDown.status, 'HTTP status', '503 unavailable, so a load balancer stops routing here', readyDown.status === 503 && readyBody.status === 'unavailable'),
    check('cached reads failed during the outage', cachedOutage.failed, 'requests', '0 (served from the cache)', cachedOutage.failed === 0 && cachedOutage.requests > 0, `${cachedOutage.requests} cached reads during the outage`),
    measure('first successful database read after the restore', firstSuccess - restoredAt, 'ms', `then ${formatLoad(after)}`),
    check('campaign resumed and finished, each recipient once', tally.duplicates + tally.missing + tally.underTwoKeys, 'problems', '0 duplicates, 0 missing, campaign SENT', done.status === 'SENT' && tally.duplicates + tally.missing + tally.underTwoKeys === 0, `SENT ${resumedIn.toFixed(1)} s after the restore (a batch whose outcome could not be recorded waits for its 60 s lease, then goes again under the same key); ${formatTally(tally)}`),
    check('scheduled email that fell due during the outage', reminderCopies, 'emails sent', '1', reminderCopies === 1, emailSentAt ? `sent ${((emailSentAt - restoredAt) / 1000).toFixed(1)} s after the restore` : 'never sent'),
  ]
})
