import type net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'
import { startFakeResend, type FakeResend } from './helpers/fake-resend'
import { collect, wsClient } from './helpers/ws'
import { addContacts, campaignAction, createAudience, createCampaign, createPublishedTemplate } from './campaign-fixtures'

const STATS = 'subscription($id: ID!) { campaignStats(campaignId: $id) { campaignId status total queued sent failed suppressed deliveryRate updatedAt } }'
type StatsEvent = { campaignStats: { campaignId: string; status: string; total: number; queued: number; sent: number; failed: number } }
const isSent = (events: StatsEvent[]) => events.some((e) => e.campaignStats.status === 'SENT')

let fake: FakeResend
let sender: TestApp
let watcher: TestApp
let admin: string
let templateId: string

function wsUrl(t: TestApp): string {
  return `ws://127.0.0.1:${(t.app.server.address() as net.AddressInfo).port}/graphql`
}

beforeAll(async () => {
  fake = await startFakeResend()
  process.env.RESEND_BASE_URL = fake.url
  const env = { RESEND_API_KEY: 're_test_key', CAMPAIGN_RATE_LIMIT_PER_SECOND: '4', CAMPAIGN_BATCH_SIZE: '10' }
  sender = await buildTestApp({ env })
  // A second instance on the same database and Redis: it sends nothing, it only has subscribers.
  watcher = await buildTestApp({ env, database: sender.database, redisPrefix: sender.redisPrefix })
  await sender.app.listen({ host: '127.0.0.1', port: 0 })
  await watcher.app.listen({ host: '127.0.0.1', port: 0 })
  admin = sender.token('admin')
  templateId = await createPublishedTemplate(sender, admin)
})
afterAll(async () => {
  await watcher.close()
  await sender.close()
  await fake.close()
})

async function sendingCampaign(count: number): Promise<string> {
  const audienceId = await createAudience(sender, admin)
  await addContacts(sender, admin, audienceId, Array.from({ length: count }, (_, i) => ({ email: `st${i}-${audienceId.slice(0, 6)}@example.com` })))
  const id = await createCampaign(sender, admin, { templateId, audienceIds: [audienceId] })
  await campaignAction(sender, admin, 'sendCampaign', id)
  return id
}

describe('campaignStats subscription', () => {
  it('starts with the current snapshot, pushes merged counters at most once a second and the end state at once', async () => {
    const id = await sendingCampaign(60)
    const client = wsClient(wsUrl(sender), admin)
    const arrivals: number[] = []
    try {
      const sub = collect<StatsEvent>(client, STATS, { id }, (events) => {
        arrivals.push(Date.now())
        return isSent(events)
      })
      await sub.subscribed
      await sender.app.campaignDispatcher.drain()
      const events = (await sub.events).map((e) => e.campaignStats)

      expect(events[0]).toMatchObject({ campaignId: id, status: 'SENDING', total: 60, queued: 60, sent: 0 })
      expect(events.at(-1)).toMatchObject({ status: 'SENT', queued: 0, sent: 60, failed: 0 })
      const sentCounts = events.map((e) => e.sent)
      expect(sentCounts).toEqual([...sentCounts].sort((a, b) => a - b))
      // Six batches over about 1.5 s: far fewer pushes than batches, and none of the throttled
      // pushes (same status as the one before) closer than a second to the previous throttled one.
      const throttled = arrivals.filter((_, i) => i > 0 && events[i]!.status === events[i - 1]!.status)
      for (let i = 1; i < throttled.length; i++) expect(throttled[i]! - throttled[i - 1]!).toBeGreaterThanOrEqual(900)
      expect(events.length).toBeLessThan(6)
    } finally {
      await client.dispose()
    }
  })

  it('reaches a subscriber on another instance', async () => {
    const id = await sendingCampaign(15)
    const client = wsClient(wsUrl(watcher), admin)
    try {
      const sub = collect<StatsEvent>(client, STATS, { id }, isSent)
      await sub.subscribed
      await sender.app.campaignDispatcher.drain()
      const events = (await sub.events).map((e) => e.campaignStats)
      expect(events.at(-1)).toMatchObject({ campaignId: id, status: 'SENT', sent: 15 })
    } finally {
      await client.dispose()
    }
  })

  it('pushes a pause at once, with the reason in the snapshot', async () => {
    const id = await sendingCampaign(3)
    const client = wsClient(wsUrl(sender), admin)
    try {
      const sub = collect<{ campaignStats: { status: string; pauseReason: string | null } }>(
        client,
        'subscription($id: ID!) { campaignStats(campaignId: $id) { status pauseReason } }',
        { id },
        (events) => events.some((e) => e.campaignStats.status === 'PAUSED'),
        5_000,
      )
      await sub.subscribed
      await campaignAction(sender, admin, 'pauseCampaign', id)
      const events = await sub.events
      expect(events.at(-1)!.campaignStats).toEqual({ status: 'PAUSED', pauseReason: 'Paused by an administrator' })
    } finally {
      await client.dispose()
    }
  })

  it('refuses a subscriber who is not an admin', async () => {
    const id = await sendingCampaign(1)
    const client = wsClient(wsUrl(sender), sender.token('user'))
    try {
      const sub = collect<StatsEvent>(client, STATS, { id }, () => true, 5_000)
      await expect(sub.events).rejects.toThrow(/FORBIDDEN|not allowed/)
    } finally {
      await client.dispose()
    }
  })
})
