import { randomBytes } from 'node:crypto'
import type net from 'node:net'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, uploadThroughGraphql, type TestApp } from './helpers/app'
import { collect, wsClient } from './helpers/ws'

const PROGRESS = 'subscription($id: ID!) { uploadProgress(uploadId: $id) { uploadId fileId stage step steps percent bytesReceived error } }'
const UPLOAD = 'mutation($file: Upload!, $input: UploadFileInput) { uploadFile(file: $file, input: $input) { __typename ... on UploadFileSuccess { file { id } } } }'

type Progress = { uploadProgress: { uploadId: string; fileId: string; stage: string; step: number; steps: number; percent: number; bytesReceived: number; error: string | null } }
const terminal = (events: Progress[]) => events.some((e) => ['COMPLETED', 'FAILED'].includes(e.uploadProgress.stage))

describe.each([
  { name: 'in-process emitter', redis: false },
  { name: 'Redis emitter', redis: true },
])('subscriptions over graphql-ws with the $name', ({ redis }) => {
  let t: TestApp
  let url: string
  beforeAll(async () => {
    t = await buildTestApp({ redis })
    await t.app.listen({ host: '127.0.0.1', port: 0 })
    url = `ws://127.0.0.1:${(t.app.server.address() as net.AddressInfo).port}/graphql`
  })
  afterAll(() => t.close())

  it('streams an image upload through every stage to COMPLETED', async () => {
    const token = t.token('user', 'dana')
    const client = wsClient(url, token)
    try {
      const sub = collect<Progress>(client, PROGRESS, { id: 'img-1' }, terminal)
      await sub.subscribed
      const jpeg = await sharp({ create: { width: 800, height: 600, channels: 3, background: '#3366aa' } }).jpeg().toBuffer()
      const res = await uploadThroughGraphql(t, token, UPLOAD, { file: null, input: { uploadId: 'img-1', size: jpeg.length } }, { filename: 'a.jpg', contentType: 'image/jpeg', content: jpeg })
      const fileId = (res.body.data as { uploadFile: { file: { id: string } } }).uploadFile.file.id
      const events = (await sub.events).map((e) => e.uploadProgress)
      const stages = [...new Set(events.map((e) => e.stage))]
      // Every durable processing step is a stage of its own (the checksum and the variants too).
      expect(stages).toEqual(['RECEIVING', 'VALIDATING', 'CHECKSUMMING', 'OPTIMIZING', 'CREATING_VARIANTS', 'STORING', 'COMPLETED'])
      const last = events.at(-1)!
      expect(last).toMatchObject({ uploadId: 'img-1', fileId, stage: 'COMPLETED', step: 6, steps: 6, percent: 100, bytesReceived: jpeg.length, error: null })
      const percents = events.map((e) => e.percent)
      expect(percents).toEqual([...percents].sort((a, b) => a - b))
    } finally {
      await client.dispose()
    }
  })

  it('ends a rejected upload with a FAILED event carrying the reason', async () => {
    const token = t.token('user', 'dana')
    const client = wsClient(url, token)
    try {
      const sub = collect<Progress>(client, PROGRESS, { id: 'bad-1' }, terminal)
      await sub.subscribed
      await uploadThroughGraphql(t, token, UPLOAD, { file: null, input: { uploadId: 'bad-1' } }, { filename: 'a.png', contentType: 'image/png', content: Buffer.from('%PDF-1.7\nnot a png at all') })
      const last = (await sub.events).at(-1)!.uploadProgress
      expect(last.stage).toBe('FAILED')
      expect(last.error).toMatch(/declared as image\/png/)
    } finally {
      await client.dispose()
    }
  })

  it("never shows one user's upload progress to another user with the same uploadId", async () => {
    const owner = t.token('user', 'erin')
    const snoop = wsClient(url, t.token('user', 'mallory'))
    const own = wsClient(url, owner)
    try {
      const spied = collect<Progress>(snoop, PROGRESS, { id: 'shared-id' }, terminal, 1_500)
      const mine = collect<Progress>(own, PROGRESS, { id: 'shared-id' }, terminal)
      await Promise.all([spied.subscribed, mine.subscribed])
      await uploadThroughGraphql(t, owner, UPLOAD, { file: null, input: { uploadId: 'shared-id' } }, { filename: 'r.pdf', contentType: 'application/pdf', content: Buffer.from('%PDF-1.7\nhello') })
      expect((await mine.events).at(-1)!.uploadProgress.stage).toBe('COMPLETED')
      await expect(spied.events).rejects.toThrow(/timed out after 0 events/)
    } finally {
      await Promise.all([snoop.dispose(), own.dispose()])
    }
  })

  it('gives a late subscriber the current state first: a finished upload answers with its terminal event and completes', async () => {
    const token = t.token('user', 'lena')
    await uploadThroughGraphql(t, token, UPLOAD, { file: null, input: { uploadId: 'late-1' } }, { filename: 'l.pdf', contentType: 'application/pdf', content: Buffer.from('%PDF-1.7\nlate') })
    const client = wsClient(url, token)
    try {
      const events = (await collect<Progress>(client, PROGRESS, { id: 'late-1' }, () => false).events).map((e) => e.uploadProgress)
      expect(events).toHaveLength(1)
      expect(events[0]).toMatchObject({ uploadId: 'late-1', stage: 'COMPLETED', percent: 100 })
    } finally {
      await client.dispose()
    }
  })

  it('follows a chunked upload by its session id, from the parts through processing', async () => {
    const token = t.token('user', 'cleo')
    const part = 8 * 1024 * 1024
    const content = Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(part + 4096 - 9)])
    const started = await t.gql<{ startUpload: { session: { id: string } } }>(
      'mutation($i: StartUploadInput!) { startUpload(input: $i) { ... on StartUploadSuccess { session { id } } } }',
      { i: { filename: 'big.pdf', size: content.length, mimeType: 'application/pdf' } },
      token,
    )
    const sessionId = started.data.startUpload.session.id
    const client = wsClient(url, token)
    try {
      const sub = collect<Progress>(client, PROGRESS, { id: sessionId }, terminal)
      await sub.subscribed
      const CHUNK = 'mutation($s: ID!, $n: Int!, $chunk: Upload!) { uploadChunk(sessionId: $s, partNumber: $n, chunk: $chunk) { __typename } }'
      for (const n of [1, 2]) {
        await uploadThroughGraphql(t, token, CHUNK, { s: sessionId, n, chunk: null }, { filename: 'p', contentType: 'application/octet-stream', content: content.subarray((n - 1) * part, n * part), path: 'variables.chunk' })
      }
      const done = await t.gql<{ completeUpload: { file: { id: string } } }>('mutation($s: ID!) { completeUpload(sessionId: $s) { ... on CompleteUploadSuccess { file { id } } } }', { s: sessionId }, token)
      const events = (await sub.events).map((e) => e.uploadProgress)
      // The snapshot saved at startUpload arrives first; the parts then move RECEIVING on.
      expect(events[0]).toMatchObject({ stage: 'RECEIVING', percent: 0 })
      expect([...new Set(events.map((e) => e.stage))]).toEqual(['RECEIVING', 'VALIDATING', 'CHECKSUMMING', 'STORING', 'COMPLETED'])
      expect(events.filter((e) => e.stage === 'RECEIVING' && e.bytesReceived > 0).length).toBeGreaterThanOrEqual(2)
      const percents = events.map((e) => e.percent)
      expect(percents).toEqual([...percents].sort((a, b) => a - b))
      expect(events.at(-1)).toMatchObject({ uploadId: sessionId, fileId: done.data.completeUpload.file.id, stage: 'COMPLETED', step: 4, steps: 4, bytesReceived: content.length })
    } finally {
      await client.dispose()
    }
  })

  it.runIf(redis)('delivers progress to a subscriber connected to another instance', async () => {
    const other = await buildTestApp({ redis: true, database: t.database, redisPrefix: t.redisPrefix })
    try {
      const token = t.token('user', 'otto')
      const client = wsClient(url, token)
      try {
        const sub = collect<Progress>(client, PROGRESS, { id: 'cross-1' }, terminal)
        await sub.subscribed
        await uploadThroughGraphql(other, token, UPLOAD, { file: null, input: { uploadId: 'cross-1' } }, { filename: 'x.pdf', contentType: 'application/pdf', content: Buffer.from('%PDF-1.7\ncross') })
        const stages = (await sub.events).map((e) => e.uploadProgress.stage)
        expect(stages[0]).toBe('RECEIVING')
        expect(stages.at(-1)).toBe('COMPLETED')
      } finally {
        await client.dispose()
      }
    } finally {
      await other.close()
    }
  })

  it('refuses a connection with a bad token at connect time', async () => {
    const client = wsClient(url, 'not-a-jwt')
    try {
      const sub = collect<Progress>(client, PROGRESS, { id: 'x' }, terminal, 5_000)
      await expect(sub.events).rejects.toBeDefined()
    } finally {
      await client.dispose()
    }
  })

  it('refuses an anonymous uploadProgress subscription', async () => {
    const client = wsClient(url)
    try {
      const sub = collect<Progress>(client, PROGRESS, { id: 'x' }, terminal, 5_000)
      await expect(sub.events).rejects.toThrow(/UNAUTHENTICATED|Authentication required/)
    } finally {
      await client.dispose()
    }
  })

  it('validates a subscription as a query: unknown fields and arguments of the wrong type are refused', async () => {
    const admin = wsClient(url, t.token('admin'))
    try {
      await expect(collect(admin, 'subscription { cacheStats { nope } }', {}, () => true, 5_000).events).rejects.toThrow(/Cannot query field \W+nope/)
      await expect(collect(admin, 'subscription { cacheStats(intervalMs: "soon") { hits } }', {}, () => true, 5_000).events).rejects.toThrow(/Int cannot represent/)
    } finally {
      await admin.dispose()
    }
  })

  it('pushes cacheStats snapshots to admins only', async () => {
    const admin = wsClient(url, t.token('admin'))
    const user = wsClient(url, t.token('user'))
    try {
      const ticks = await collect<{ cacheStats: { hits: number } }>(admin, 'subscription { cacheStats(intervalMs: 250) { hits misses backend } }', {}, (e) => e.length >= 2).events
      expect(ticks).toHaveLength(2)
      await expect(collect(user, 'subscription { cacheStats { hits } }', {}, () => true, 5_000).events).rejects.toThrow(/FORBIDDEN|not allowed/)
    } finally {
      await Promise.all([admin.dispose(), user.dispose()])
    }
  })
})
