/**
 * Two app instances on different ports, sharing one PostgreSQL database, one Redis prefix and one
 * S3 bucket, as they run behind a load balancer: what one instance does, the other sees.
 */
import type net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { MailTransport } from '../src/infra/mail/types'
import { buildTestApp, uploadThroughGraphql, type TestApp } from './helpers/app'
import { chunkedUploadClient, download, pdf, sha256, type Session } from './helpers/chunked-upload'
import type { FakeResend } from './helpers/fake-resend'
import { s3Env, startS3 } from './helpers/s3'
import { collect, wsClient } from './helpers/ws'
import { addContacts, campaignAction, createAudience, createCampaign, getCampaign, useCampaignApp } from './campaign-fixtures'

const MiB = 1024 * 1024
const s3 = await startS3()
/** Both instances run every worker, campaigns go out at 20 requests/s across both, in batches of 10. */
const ENV = {
  ...s3Env(s3.config),
  WORKERS_ENABLED: 'true',
  WORKER_POLL_MS: '50',
  CAMPAIGN_BATCH_SIZE: '10',
  CAMPAIGN_RATE_LIMIT_PER_SECOND: '20',
  UPLOAD_PART_BYTES: String(5 * MiB),
}

const PROGRESS = 'subscription($id: ID!) { uploadProgress(uploadId: $id) { uploadId fileId stage bytesReceived percent } }'
const UPLOAD = 'mutation($file: Upload!, $input: UploadFileInput) { uploadFile(file: $file, input: $input) { __typename ... on UploadFileSuccess { file { id } } } }'
type Progress = { uploadProgress: { uploadId: string; fileId: string | null; stage: string; bytesReceived: number; percent: number } }
const ended = (events: Progress[]) => events.some((e) => ['COMPLETED', 'FAILED'].includes(e.uploadProgress.stage))

let a: TestApp
let b: TestApp
let fake: FakeResend
let admin: string
let templateId: string
useCampaignApp(ENV, (app) => ({ t: a, fake, admin, templateId } = app))

beforeAll(async () => {
  b = await buildTestApp({ database: a.database, redisPrefix: a.redisPrefix, env: { RESEND_API_KEY: 're_test_key', ...ENV } })
  await a.app.listen({ host: '127.0.0.1', port: 0 })
  await b.app.listen({ host: '127.0.0.1', port: 0 })
})
// Registered after useCampaignApp's, so it runs first: B leaves before A drops the shared database.
afterAll(async () => {
  await b?.close()
  await s3.close()
})

const port = (t: TestApp) => (t.app.server.address() as net.AddressInfo).port
const wsUrl = (t: TestApp) => `ws://127.0.0.1:${port(t)}/graphql`

describe('two instances sharing PostgreSQL, Redis and S3', () => {
  it('listen on different ports', () => {
    expect(port(a)).not.toBe(port(b))
  })

  it('deliver upload progress produced on B to a subscriber on A, and to nobody else', async () => {
    const owner = a.token('user', 'multi-owner')
    const mine = wsClient(wsUrl(a), owner)
    const snoop = wsClient(wsUrl(a), a.token('user', 'multi-snoop'))
    try {
      const watched = collect<Progress>(mine, PROGRESS, { id: 'multi-1' }, ended)
      const spied = collect<Progress>(snoop, PROGRESS, { id: 'multi-1' }, ended, 1_500)
      await Promise.all([watched.subscribed, spied.subscribed])
      const content = pdf(40_000)
      const res = await uploadThroughGraphql(b, owner, UPLOAD, { file: null, input: { uploadId: 'multi-1' } }, { filename: 'b.pdf', contentType: 'application/pdf', content })
      const fileId = (res.body.data as { uploadFile: { file: { id: string } } }).uploadFile.file.id

      const events = (await watched.events).map((e) => e.uploadProgress)
      expect(events[0]).toMatchObject({ stage: 'RECEIVING' })
      expect(events.at(-1)).toMatchObject({ uploadId: 'multi-1', fileId, stage: 'COMPLETED', percent: 100, bytesReceived: content.length })
      await expect(spied.events).rejects.toThrow(/timed out after 0 events/)
      // The file B stored is A's to serve too.
      const onA = await chunkedUploadClient(a, owner).settled(fileId)
      expect(sha256(await download(a, onA.url))).toBe(sha256(content))
    } finally {
      await Promise.all([mine.dispose(), snoop.dispose()])
    }
  })

  it("evict B's L1 copy when A sets the key", async () => {
    const onA = a.app.services.cache
    const onB = b.app.services.cache
    await onB.set('multi:greeting', 'hello')
    expect(await onA.get('multi:greeting')).toBe('hello')
    const l1Hits = () => onB.stats().levels.find((l) => l.level === 'l1')!.hits
    const hitsBefore = l1Hits()
    expect(await onB.get('multi:greeting')).toBe('hello')
    // B answers from its own memory: without the bus it would keep doing so for up to CACHE_L1_MAX_TTL.
    expect(l1Hits()).toBe(hitsBefore + 1)

    const received = onB.stats().busReceived
    await onA.set('multi:greeting', 'bonjour')
    let seen: unknown
    for (let i = 0; i < 100 && (seen = await onB.get('multi:greeting')) !== 'bonjour'; i++) await new Promise((r) => setTimeout(r, 20))
    expect(seen).toBe('bonjour')
    expect(onB.stats().busReceived).toBeGreaterThan(received)
  })

  it("send a campaign from both instances' workers, each recipient exactly once", async () => {
    const count = (transport: MailTransport) => {
      const counter = { emails: 0 }
      const send = transport.sendBatch.bind(transport)
      transport.sendBatch = async (messages, options) => {
        counter.emails += messages.length
        return send(messages, options)
      }
      return counter
    }
    const [byA, byB] = [count(a.app.mail), count(b.app.mail)]
    const recipients = Array.from({ length: 200 }, (_, i) => `multi${i}@example.com`)
    const audienceId = await createAudience(a, admin)
    await addContacts(a, admin, audienceId, recipients.map((email) => ({ email })))
    const id = await createCampaign(a, admin, { templateId, audienceIds: [audienceId] })
    expect((await campaignAction(b, admin, 'sendCampaign', id)).__typename).toBe('CampaignSuccess')

    let campaign = await getCampaign(a, admin, id)
    for (let i = 0; i < 300 && campaign.status !== 'SENT'; i++) {
      await new Promise((r) => setTimeout(r, 100))
      campaign = await getCampaign(a, admin, id)
    }
    expect(campaign).toMatchObject({ status: 'SENT', stats: { total: 200, sent: 200, queued: 0, failed: 0 } })

    const batchRequests = fake.requests.filter((r) => r.path === '/emails/batch')
    const perAddress = new Map<string, number>()
    for (const request of batchRequests) {
      for (const email of request.body as { to: string | string[] }[]) {
        for (const to of [email.to].flat()) perAddress.set(to, (perAddress.get(to) ?? 0) + 1)
      }
    }
    expect([...perAddress.keys()].sort()).toEqual([...recipients].sort())
    expect([...perAddress.values()].every((n) => n === 1)).toBe(true)
    expect(fake.sent).toHaveLength(200)
    // Both instances took batches: the work was shared, not done by one while the other idled.
    expect(byA.emails).toBeGreaterThan(0)
    expect(byB.emails).toBeGreaterThan(0)
    expect(byA.emails + byB.emails).toBe(200)
  })

  it('complete on B a chunked upload started on A, with progress of both halves on A', async () => {
    const token = a.token('user', 'multi-chunks')
    const [onA, onB] = [chunkedUploadClient(a, token), chunkedUploadClient(b, token)]
    const content = pdf(2 * 5 * MiB + 4321)
    const started = await onA.start({ filename: 'split.pdf', size: content.length, mimeType: 'application/pdf' })
    const session = started.session as Session
    expect(session.partCount).toBe(3)
    const part = (n: number) => content.subarray((n - 1) * session.partSize, n * session.partSize)
    const client = wsClient(wsUrl(a), token)
    try {
      const sub = collect<Progress>(client, PROGRESS, { id: session.id }, ended)
      await sub.subscribed
      expect((await onA.part(session.id, 1, part(1))).data?.uploadChunk.__typename).toBe('UploadChunkSuccess')

      // B knows the session from the database: what arrived on A, and what is missing.
      const resumed = (await onB.session(session.id))!
      expect(resumed).toMatchObject({ status: 'UPLOADING', receivedParts: [1], bytesReceived: session.partSize })
      for (const n of [2, 3]) expect((await onB.part(session.id, n, part(n))).data?.uploadChunk.__typename).toBe('UploadChunkSuccess')
      const done = await onB.complete(session.id)
      expect(done.__typename).toBe('CompleteUploadSuccess')

      const events = (await sub.events).map((e) => e.uploadProgress)
      const received = events.filter((e) => e.stage === 'RECEIVING').map((e) => e.bytesReceived)
      expect(received).toContain(session.partSize)
      expect(received).toContain(content.length)
      expect(events.at(-1)).toMatchObject({ stage: 'COMPLETED', fileId: done.file!.id })
      for (const [t, c] of [[a, onA], [b, onB]] as const) {
        const file = await c.settled(done.file!.id)
        expect(file).toMatchObject({ status: 'READY', size: content.length, sha256: sha256(content) })
        expect(sha256(await download(t, file.url))).toBe(sha256(content))
      }
    } finally {
      await client.dispose()
    }
  })
})
