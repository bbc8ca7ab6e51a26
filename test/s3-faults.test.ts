/**
 * S3 (fauxqs) going away in the middle of a chunked upload, through a TCP proxy, so the real SDK and
 * network path fail. bench/faults/s3-outage.ts cuts it while a part is in flight and reports figures.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'
import { chunkedUploadClient, download, pdf, sha256, type Session } from './helpers/chunked-upload'
import { s3Env, startS3, type TestS3 } from './helpers/s3'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy'

const PART = 5 * 1024 * 1024
const COMPLETE = 'mutation($id: ID!) { completeUpload(sessionId: $id) { __typename } }'

describe('a chunked upload while S3 is unreachable', () => {
  let s3: TestS3
  let proxy: TcpProxy
  let t: TestApp
  let c: ReturnType<typeof chunkedUploadClient>
  beforeAll(async () => {
    s3 = await startS3()
    proxy = await startTcpProxy(Number(new URL(s3.config.endpoint!).port))
    t = await buildTestApp({ env: { ...s3Env(s3.config, `http://127.0.0.1:${proxy.port}`), UPLOAD_PART_BYTES: String(PART) } })
    c = chunkedUploadClient(t, t.token('user', 'resumer'))
  })
  afterAll(async () => {
    await t.close()
    await proxy.stop()
    await s3.close()
  })
  afterEach(() => proxy.start())

  it('refuses the part with a retryable SERVICE_UNAVAILABLE, keeps the parts that arrived, and completes once resumed', async () => {
    const content = pdf(3 * PART - 321)
    const session = (await c.start({ filename: 'resumed.pdf', size: content.length, mimeType: 'application/pdf' })).session as Session
    const part = (n: number) => content.subarray((n - 1) * PART, n * PART)
    expect((await c.part(session.id, 1, part(1))).data?.uploadChunk.__typename).toBe('UploadChunkSuccess')

    await proxy.stop()
    const refused = await c.part(session.id, 2, part(2))
    expect(refused.errors?.[0]?.extensions?.code).toBe('SERVICE_UNAVAILABLE')
    expect(refused.errors?.[0]?.message).toMatch(/unavailable/i)
    expect(await c.session(session.id)).toMatchObject({ status: 'UPLOADING', receivedParts: [1] })

    await proxy.start()
    for (const n of [2, 3]) expect((await c.part(session.id, n, part(n))).data?.uploadChunk.__typename).toBe('UploadChunkSuccess')
    const done = await c.complete(session.id)
    const file = await c.settled(done.file!.id)
    expect(file).toMatchObject({ status: 'READY', sha256: sha256(content) })
    expect(sha256(await download(t, file.url))).toBe(sha256(content))
  })

  it('refuses completeUpload with SERVICE_UNAVAILABLE, leaves the session open, and completes it when retried', async () => {
    const content = pdf(PART + 99)
    const session = (await c.start({ filename: 'late.pdf', size: content.length, mimeType: 'application/pdf' })).session as Session
    for (const n of [1, 2]) await c.part(session.id, n, content.subarray((n - 1) * PART, n * PART))

    await proxy.stop()
    const refused = await t.gql(COMPLETE, { id: session.id }, t.token('user', 'resumer'))
    expect(refused.errors?.[0]?.extensions?.code).toBe('SERVICE_UNAVAILABLE')
    expect(await c.session(session.id)).toMatchObject({ status: 'UPLOADING', receivedParts: [1, 2] })

    await proxy.start()
    const done = await c.complete(session.id)
    expect(done.__typename).toBe('CompleteUploadSuccess')
    expect((await c.settled(done.file!.id)).sha256).toBe(sha256(content))
  })
})
