/**
 * Resend answering storms of 429 and 500 during a campaign.
 *
 *   npx tsx bench/faults/resend-storm.ts      (or npm run bench -- faults/resend-storm)
 *
 * The app in process with its workers on, sending through the real resend SDK to the fake Resend
 * (test/helpers/fake-resend.ts). A campaign of FAULT_RECIPIENTS (3000) recipients runs once without a
 * fault, for the baseline, then again while the fake answers a run of 429s (with retry-after: 1)
 * followed by a run of 500s. Shows: no recipient gets the email twice, none is lost, nothing is counted
 * as failed, and reports the time the storms added.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { buildTestApp } from '../../test/helpers/app'
import { startFakeResend } from '../../test/helpers/fake-resend'
import { formatTally, progressLog, seedCampaign, sendCampaign, tallyProvider, waitForCampaign } from './lib/campaign'
import { waitFor } from './lib/processes'
import { check, measure, runScenario } from './lib/scenario'

const RECIPIENTS = Number(process.env.FAULT_RECIPIENTS ?? 3_000)
const BATCH = 50
const RATE_PER_SECOND = 10
/** Requests that succeed before the storm starts, then the storm itself. */
const CALM_REQUESTS = 10
const STORM_429 = Number(process.env.FAULT_STORM_429 ?? 20)
const STORM_500 = Number(process.env.FAULT_STORM_500 ?? 10)

await runScenario('faults/resend-storm', 'Resend answering 429 and 500 storms during a campaign', async (s) => {
  const fake = await startFakeResend()
  s.defer(() => fake.close())
  // The SDK reads it when the app builds its transport.
  process.env.RESEND_BASE_URL = fake.url
  const t = await buildTestApp({
    env: {
      RESEND_API_KEY: 're_fault',
      WORKERS_ENABLED: 'true',
      WORKER_POLL_MS: '100',
      CAMPAIGN_BATCH_SIZE: String(BATCH),
      CAMPAIGN_RATE_LIMIT_PER_SECOND: String(RATE_PER_SECOND),
      LOG_LEVEL: 'error',
    },
  })
  s.defer(() => t.close())
  const admin = t.token('admin')
  const expectedRequests = Math.ceil(RECIPIENTS / BATCH)
  s.log(`campaigns of ${RECIPIENTS} recipients in batches of ${BATCH} (${expectedRequests} requests), at most ${RATE_PER_SECOND} requests/s`)

  const run = async (name: string, storm: boolean) => {
    const campaign = await seedCampaign(t, admin, RECIPIENTS, name)
    fake.reset()
    const started = performance.now()
    await sendCampaign(t, admin, campaign.id)
    let stormStart = 0
    let stormEnd = 0
    if (storm) {
      await waitFor('the calm requests', () => fake.requests.length >= CALM_REQUESTS, 60_000, 2)
      fake.failNext(429, STORM_429, { 'retry-after': '1' })
      fake.failNext(500, STORM_500)
      stormStart = performance.now()
      s.log(`storm: the next ${STORM_429} requests get 429 (retry-after: 1), then ${STORM_500} get 500`)
      void waitFor('the end of the storm', () => fake.requests.length >= CALM_REQUESTS + STORM_429 + STORM_500, 600_000, 5).then(() => {
        stormEnd = performance.now()
        s.log(`storm over after ${((stormEnd - stormStart) / 1000).toFixed(1)} s`)
      }, () => {})
    }
    const done = await waitForCampaign(t, admin, campaign.id, 600_000, progressLog(s, name))
    const seconds = (performance.now() - started) / 1000
    // Nothing must trickle in after the campaign says it is done.
    await sleep(500)
    const tally = tallyProvider(fake, campaign.recipients)
    s.log(`${name}: ${done.status} in ${seconds.toFixed(1)} s; provider: ${formatTally(tally)}`)
    return { done, seconds, tally, stormSeconds: stormEnd ? (stormEnd - stormStart) / 1000 : undefined }
  }

  const calm = await run('calm', false)
  const stormy = await run('storm', true)
  const { tally, done } = stormy
  const added = stormy.seconds - calm.seconds
  return [
    check('recipients who got the email twice', tally.duplicates, 'recipients', '0', tally.duplicates === 0 && tally.underTwoKeys === 0, `${tally.underTwoKeys} recipients went out under two idempotency keys; ${tally.replays} requests replayed a key after a 429/500, harmlessly`),
    check('recipients lost', tally.missing, 'recipients', '0, and the campaign SENT with every recipient accepted', tally.missing === 0 && done.status === 'SENT' && done.stats.sent === RECIPIENTS, `campaign ${done.status}: sent ${done.stats.sent}, failed ${done.stats.failed}, queued ${done.stats.queued}`),
    check('recipients counted as failed', Number(done.stats.failed), 'recipients', '0 (429 and 5xx are retried, never failures)', Number(done.stats.failed) === 0),
    measure('campaign time without a fault', calm.seconds, 's', `${calm.tally.requests} requests`),
    measure('time added by the storms', added, 's', `${stormy.seconds.toFixed(1)} s with ${STORM_429}× 429 + ${STORM_500}× 500 (storm lasted ${stormy.stormSeconds?.toFixed(1) ?? '?'} s); a 500 defers its batch 15-30 s (backoff), a 429 holds every sender for retry-after`),
  ]
})
