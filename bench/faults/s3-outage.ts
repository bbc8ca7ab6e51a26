/**
 * S3 cut in the middle of a chunked upload.
 *
 *   npx tsx bench/faults/s3-outage.ts      (or npm run bench -- faults/s3-outage)
 *
 * fauxqs (in-process S3) behind a TCP proxy; the app stores through the proxy. A client uploads a
 * 9-part file the way a resumable client does: on a retryable error it waits, asks `uploadSession`
 * which parts arrived, and sends the missing ones. While part 4 is on its way to S3 the proxy drops
 * every connection and refuses new ones for a few seconds. Shows: the client gets SERVICE_UNAVAILABLE
 * (retryable) quickly instead of hanging, resumes, and the file completes byte for byte; reports the
 * bytes sent again and the time the outage added against the same upload without a fault.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { buildTestApp, type TestApp } from '../../test/helpers/app'
import { chunkedUploadClient, download, pdf, sha256, type Session } from '../../test/helpers/chunked-upload'
import { s3Env, startS3 } from '../../test/helpers/s3'
import { startTcpProxy, type TcpProxy } from '../../test/helpers/tcp-proxy'
import { check, measure, runScenario, type Scenario } from './lib/scenario'

const MiB = 1024 * 1024
const PART = 5 * MiB
const PARTS = 9
const CUT_PART = 4
/** After the part's request starts: past the multipart parsing, while its bytes stream to S3. */
const CUT_DELAY_MS = Number(process.env.FAULT_CUT_DELAY_MS ?? 10)
const OUTAGE_MS = Number(process.env.FAULT_OUTAGE_MS ?? 3_000)
/** The client's backoff after a refused request: doubles up to the cap, back to the start after a success. */
const RETRY_MS = 250
const RETRY_MAX_MS = 2_000

interface Attempt {
  part: number | 'complete'
  ms: number
  ok: boolean
  code?: string
}

/** Uploads `content` as a resumable client does; `beforePart` may start a fault. Returns every request made. */
async function resumableUpload(s: Scenario, t: TestApp, token: string, content: Buffer, beforePart: (n: number) => void = () => {}) {
  const c = chunkedUploadClient(t, token)
  const started = await c.start({ filename: 'big.pdf', size: content.length, mimeType: 'application/pdf' })
  const session = started.session as Session
  const attempts: Attempt[] = []
  let bytesSent = 0
  let received: number[] = []
  let backoff = RETRY_MS
  const retry = async () => {
    await sleep(backoff)
    backoff = Math.min(backoff * 2, RETRY_MAX_MS)
    // What a client that lost track (or restarted) does: ask the server which parts it has.
    received = (await c.session(session.id))!.receivedParts
  }
  const began = performance.now()
  for (;;) {
    const missing = Array.from({ length: session.partCount }, (_, i) => i + 1).filter((n) => !received.includes(n))
    let refused = false
    for (const n of missing) {
      beforePart(n)
      const body = content.subarray((n - 1) * session.partSize, n * session.partSize)
      const t0 = performance.now()
      const res = await c.part(session.id, n, body)
      bytesSent += body.length
      const code = res.errors?.[0]?.extensions?.code as string | undefined
      attempts.push({ part: n, ms: performance.now() - t0, ok: res.data?.uploadChunk.__typename === 'UploadChunkSuccess', code: code ?? (res.data?.uploadChunk.__typename !== 'UploadChunkSuccess' ? res.data?.uploadChunk.__typename : undefined) })
      if (!attempts.at(-1)!.ok) {
        s.log(`part ${n}: ${code ?? res.data?.uploadChunk.__typename} (${res.errors?.[0]?.message ?? res.data?.uploadChunk.message}) after ${attempts.at(-1)!.ms.toFixed(0)} ms; retrying in ${backoff} ms`)
        refused = true
        break
      }
      backoff = RETRY_MS
    }
    if (refused) {
      await retry()
      continue
    }
    const t0 = performance.now()
    const done = await c.complete(session.id)
    attempts.push({ part: 'complete', ms: performance.now() - t0, ok: done.__typename === 'CompleteUploadSuccess', code: done.__typename })
    if (done.__typename === 'CompleteUploadSuccess') {
      const file = await c.settled(done.file!.id)
      return { attempts, bytesSent, ms: performance.now() - began, file, intact: file.status === 'READY' && sha256(await download(t, file.url)) === sha256(content) }
    }
    s.log(`completeUpload: ${done.__typename} (${done.message}); retrying in ${backoff} ms`)
    await retry()
  }
}

await runScenario('faults/s3-outage', 'S3 connections cut in the middle of a chunked upload', async (s) => {
  const s3 = await startS3()
  s.defer(() => s3.close())
  const proxy: TcpProxy = await startTcpProxy(Number(new URL(s3.config.endpoint!).port))
  s.defer(() => proxy.stop())
  const t = await buildTestApp({ env: { ...s3Env(s3.config, `http://127.0.0.1:${proxy.port}`), UPLOAD_PART_BYTES: String(PART), RATE_LIMIT_MAX: '1000000' } })
  s.defer(() => t.close())
  const token = t.token('user', 'uploader')
  const content = pdf(PARTS * PART - 1234)
  s.log(`fauxqs behind a TCP proxy on port ${proxy.port}; uploading ${(content.length / MiB).toFixed(1)} MiB in ${PARTS} parts of ${PART / MiB} MiB`)

  const clean = await resumableUpload(s, t, token, content)
  s.log(`without a fault: ${clean.ms.toFixed(0)} ms, ${clean.attempts.length} requests, intact: ${clean.intact}`)

  let cutAt = 0
  let restoredAt = 0
  let restored: Promise<void> | undefined
  const faulty = await resumableUpload(s, t, token, content, (n) => {
    if (n !== CUT_PART || cutAt) return
    // Part 4's request is about to start: cut once its bytes are flowing to S3, then stay down a while.
    restored = (async () => {
      await sleep(CUT_DELAY_MS)
      cutAt = performance.now()
      await proxy.stop()
      s.log(`proxy cut: S3 unreachable for ${OUTAGE_MS} ms`)
      await sleep(OUTAGE_MS)
      await proxy.start()
      restoredAt = performance.now()
      s.log('proxy restored')
    })()
  })
  await restored
  const failures = faulty.attempts.filter((a) => !a.ok)
  const codes = [...new Set(failures.map((a) => a.code ?? 'none'))]
  const resent = faulty.bytesSent - content.length
  s.log(`with the fault: ${faulty.ms.toFixed(0)} ms, ${faulty.attempts.length} requests (${failures.length} refused: ${codes.join(', ')}), ${(resent / MiB).toFixed(1)} MiB sent again, intact: ${faulty.intact}`)

  const slowestFailure = failures.reduce((m, a) => Math.max(m, a.ms), 0)
  const first = failures[0]
  const landed = first?.part === CUT_PART ? `while part ${CUT_PART} was being stored` : `between parts (part ${CUT_PART} was already stored; part ${first?.part} was refused first)`
  return [
    check('upload completed byte for byte after the outage', faulty.intact ? 1 : 0, '', '1 (READY, sha256 of the download equals the original)', faulty.intact, `file ${faulty.file.id}, ${faulty.file.status}`),
    check('refused requests answered with a retryable error', failures.length, 'requests', 'every one SERVICE_UNAVAILABLE, at least one', failures.length > 0 && codes.every((c) => c === 'SERVICE_UNAVAILABLE'), `codes seen: ${codes.join(', ') || 'none'}`),
    measure('slowest refused request', slowestFailure, 'ms', `the cut landed ${landed}; outage ${(restoredAt - cutAt).toFixed(0)} ms; the client backed off ${RETRY_MS} ms doubling to ${RETRY_MAX_MS} ms`),
    measure('bytes sent again', resent / MiB, 'MiB', `${(resent / PART).toFixed(0)} part(s) of ${PART / MiB} MiB re-sent; parts already stored were never sent again`),
    measure('time added by the outage', faulty.ms - clean.ms, 'ms', `${faulty.ms.toFixed(0)} ms against ${clean.ms.toFixed(0)} ms without a fault, for a ${OUTAGE_MS} ms outage`),
  ]
})
