/**
 * File management of the real app (issue 4), each figure against a baseline measured in the same run:
 *
 *   1. A chunked upload of a large file (1 GiB unless BENCH_CHUNKED_BYTES says otherwise) in 8 MiB parts,
 *      4 in parallel, to the disk adapter and to S3 (fauxqs, in a child process so its memory is not
 *      ours): MB/s and ms/MB of receiving, time to READY, peak RSS growth. Baseline: a raw POST of the
 *      same bytes to a bare route that streams them to a file.
 *   2. 1000 concurrent small uploads (10 KB PDFs, each answered once processed): successes, p50/p99
 *      latency, peak RSS.
 *   3. The image pipeline on ~5 MB JPEGs (4000x3000): ms per input MB per variant, against bare sharp
 *      doing the same operations (header check, rotate + 2048 px + mozjpeg, 256 and 1280 px WebP).
 *   4. Progress: uploadProgress events per upload (over graphql-ws), and the latency from the end of
 *      the last step (its finishedAt) to the terminal event reaching the subscriber.
 *
 * Real services as the tests use them: a temporary PostgreSQL database and Redis with a unique prefix.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { pipeline } from 'node:stream/promises'
import Fastify from 'fastify'
import { createClient, type Client } from 'graphql-ws'
import sharp from 'sharp'
import WebSocket from 'ws'
import { type Env } from '../src/config'
import { createEmptyDatabase } from '../test/helpers/services'
import { graphqlMultipart, postStreamed } from './lib/http'
import { formatBytes, jemallocLoaded } from './lib/machine'
import { atMost, reportResult, versus, type Figure } from './lib/result'
import { median, percentile } from './lib/stats'
import { MB, msPerMB, nowMs, sleep } from './lib/timing'
import { startBenchApp, type RunningApp } from './lib/app'

const MiB = 1024 * 1024
const CHUNKED_BYTES = Number(process.env.BENCH_CHUNKED_BYTES) || 1024 * MiB
const PART = 8 * MiB
const PARALLEL_PARTS = 4
const SMALL_UPLOADS = Number(process.env.BENCH_SMALL_UPLOADS) || 1000
const JPEG_RUNS = Number(process.env.BENCH_RUNS) || 5

const UPLOAD = `mutation($file: Upload!, $input: UploadFileInput) { uploadFile(file: $file, input: $input) {
  __typename ... on Error { message } ... on UploadFileSuccess { file { id status size } } } }`
const START = `mutation($input: StartUploadInput!) { startUpload(input: $input) { __typename ... on Error { message } ... on StartUploadSuccess { session { id partSize partCount } } } }`
const CHUNK = `mutation($sessionId: ID!, $partNumber: Int!, $chunk: Upload!) { uploadChunk(sessionId: $sessionId, partNumber: $partNumber, chunk: $chunk) { __typename ... on Error { message } } }`
const COMPLETE = `mutation($id: ID!) { completeUpload(sessionId: $id) { __typename ... on Error { message } ... on CompleteUploadSuccess { file { id } } } }`
const FILE = `query($id: ID!) { file(id: $id) { status size currentVersion { steps { name finishedAt } } } }`
const PROGRESS = 'subscription($id: ID!) { uploadProgress(uploadId: $id) { stage percent } }'


async function main(): Promise<void> {
  const work = await mkdtemp(path.join(tmpdir(), 'gw-bench-files-'))
  const cleanups: (() => Promise<unknown>)[] = [() => rm(work, { recursive: true, force: true })]
  try {
    log(`sharp concurrency ${sharp.concurrency()}, jemalloc ${(await jemallocLoaded()) ? 'loaded' : 'not loaded'}; chunked file ${formatBytes(CHUNKED_BYTES)}`)
    const database = await createEmptyDatabase()
    cleanups.unshift(() => database.drop())
    const baseline = await startBaselineServer(path.join(work, 'baseline'))
    cleanups.unshift(() => baseline.close())
    const disk = await startBenchApp(path.join(work, 'disk'), database, { ...sessionLimit(), UPLOAD_QUOTA_BYTES: '0', UPLOAD_MAX_IMAGE_BYTES: String(32 * MiB) })
    cleanups.unshift(() => disk.close())
    const s3 = await startFauxqsProcess()
    cleanups.unshift(() => s3.close())
    const s3App = await startBenchApp(path.join(work, 's3'), database, { ...sessionLimit(), UPLOAD_QUOTA_BYTES: '0', ...s3.env })
    cleanups.unshift(() => s3App.close())

    const figures: Figure[] = []
    figures.push(...(await chunkedFigures(baseline.url, disk, s3App)))
    figures.push(...(await concurrentFigures(disk)))
    figures.push(...(await imageFigures(disk)))
    reportResult({ bench: 'files', figures })
  } finally {
    for (const cleanup of cleanups) await cleanup().catch((err: unknown) => log(`cleanup failed: ${String(err)}`))
  }
}

// ---------------------------------------------------------------- 1. chunked uploads

/** The file is never whole in the client: parts are views of a few random 8 MiB blocks. */
function partOf(blocks: Buffer[], n: number, size: number): Buffer {
  const start = (n - 1) * PART
  const block = blocks[(n - 1) % blocks.length]!.subarray(0, Math.min(PART, size - start))
  return n === 1 ? Buffer.concat([Buffer.from('%PDF-1.7\n'), block.subarray(9)]) : block
}

async function chunkedFigures(baselineUrl: string, disk: RunningApp, s3App: RunningApp): Promise<Figure[]> {
  const blocks = [randomBytes(PART), randomBytes(PART), randomBytes(PART), randomBytes(PART)]
  const partCount = Math.ceil(CHUNKED_BYTES / PART)
  const parts = Array.from({ length: partCount }, (_, i) => partOf(blocks, i + 1, CHUNKED_BYTES))

  const rawMs = await measure(async () => {
    const res = await postStreamed(baselineUrl, parts, { 'content-type': 'application/octet-stream' })
    if (res.status !== 200) throw new Error(`baseline answered ${res.status}`)
  })
  const base: Figure = { name: `baseline: raw POST → file, ${formatBytes(CHUNKED_BYTES)}`, value: msPerMB(rawMs.ms, CHUNKED_BYTES), unit: 'ms/MB', note: mbps(rawMs.ms) }
  log(`${base.name}: ${base.value.toFixed(2)} ms/MB`)
  const figures: Figure[] = [base]
  for (const [label, app] of [['disk', disk], ['S3 (fauxqs)', s3App]] as const) {
    const run = await chunkedUpload(app, parts)
    log(`chunked → ${label}: receive ${run.receiveMs.toFixed(0)} ms, complete ${run.completeMs.toFixed(0)} ms, ready after ${run.processMs.toFixed(0)} ms, RSS +${formatBytes(run.rssGrowth)}, ${run.events} progress events`)
    figures.push(
      atMost(
        versus(
          {
            name: `chunked upload ${formatBytes(CHUNKED_BYTES)} in 8 MiB parts (${PARALLEL_PARTS} in parallel) → ${label}`,
            value: msPerMB(run.receiveMs, CHUNKED_BYTES),
            unit: 'ms/MB',
            note: `${mbps(run.receiveMs)} receiving all parts; completeUpload ${run.completeMs.toFixed(0)} ms; processing to READY (sha256 over the assembled object) ${run.processMs.toFixed(0)} ms`,
          },
          base,
        ),
        [{ label: 'goal', max: 10 }],
      ),
      atMost({ name: `peak RSS growth, chunked upload → ${label}`, value: run.rssGrowth / MiB, unit: 'MiB', note: 'client and server in this process; fauxqs in a child process' }, [{ label: 'goal', max: 150 }]),
      { name: `uploadProgress events, chunked upload → ${label}`, value: run.events, unit: 'events', note: `${partCount} parts; receiving throttled to one event per 250 ms per request, then one per processing step` },
    )
  }
  return figures
}

async function chunkedUpload(app: RunningApp, parts: Buffer[]) {
  const size = parts.reduce((n, p) => n + p.length, 0)
  const sampler = rssSampler()
  const started = nowMs()
  const start = (await gql(app, START, { input: { filename: 'big.pdf', size, mimeType: 'application/pdf' } })) as { startUpload: { session: { id: string } } }
  const sessionId = start.startUpload.session.id
  const watch = await watchProgress(app, sessionId)
  let next = 1
  const worker = async () => {
    for (let n = next++; n <= parts.length; n = next++) {
      const { parts: body, contentType } = graphqlMultipart({ query: CHUNK, variables: { sessionId, partNumber: n, chunk: null } }, [
        { path: 'variables.chunk', filename: `part-${n}`, contentType: 'application/octet-stream', content: parts[n - 1]! },
      ])
      const res = await postStreamed(app.url, body, { 'content-type': contentType, authorization: `Bearer ${app.token}`, 'graphql-require-preflight': '1' })
      if (!res.body.includes('UploadChunkSuccess')) throw new Error(`part ${n}: ${res.body.slice(0, 300)}`)
    }
  }
  await Promise.all(Array.from({ length: PARALLEL_PARTS }, worker))
  const received = nowMs()
  const done = (await gql(app, COMPLETE, { id: sessionId })) as { completeUpload: { file?: { id: string }; message?: string } }
  if (!done.completeUpload.file) throw new Error(`complete: ${done.completeUpload.message}`)
  const completed = nowMs()
  const events = await watch.terminal
  const ready = nowMs()
  const file = (await gql(app, FILE, { id: done.completeUpload.file.id })) as { file: { status: string; size: number } }
  if (file.file.status !== 'READY' || file.file.size !== size) throw new Error(`file ended ${JSON.stringify(file.file)}`)
  const rssGrowth = sampler.stop()
  await gql(app, 'mutation($id: ID!) { deleteFile(id: $id) { __typename } }', { id: done.completeUpload.file.id })
  return { receiveMs: received - started, completeMs: completed - received, processMs: ready - completed, rssGrowth, events: events.length }
}

// ---------------------------------------------------------------- 2. 1000 concurrent small uploads

async function concurrentFigures(app: RunningApp): Promise<Figure[]> {
  const files = Array.from({ length: SMALL_UPLOADS }, () => Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(10_000 - 9)]))
  const sampler = rssSampler()
  const latencies: number[] = []
  let ok = 0
  const errors = new Map<string, number>()
  const started = nowMs()
  await Promise.all(
    files.map(async (content) => {
      const t0 = nowMs()
      try {
        const body = await uploadFile(app, { filename: 'small.pdf', contentType: 'application/pdf', content })
        if (body.includes('"status":"READY"')) ok++
        else errors.set(body.slice(0, 120), (errors.get(body.slice(0, 120)) ?? 0) + 1)
      } catch (err) {
        errors.set(String(err).slice(0, 120), (errors.get(String(err).slice(0, 120)) ?? 0) + 1)
      }
      latencies.push(nowMs() - t0)
    }),
  )
  const wall = nowMs() - started
  const rss = sampler.stop()
  for (const [message, n] of errors) log(`  ${n} × ${message}`)
  log(`${SMALL_UPLOADS} concurrent uploads: ${ok} READY in ${wall.toFixed(0)} ms; p50 ${median(latencies).toFixed(0)} ms, p99 ${percentile(latencies, 99).toFixed(0)} ms; RSS peak ${formatBytes(sampler.peak)}`)
  return [
    atMost({ name: `${SMALL_UPLOADS} concurrent small uploads (10 KB PDF): failures`, value: SMALL_UPLOADS - ok, unit: 'uploads', note: `${ok} answered READY (processing included) in ${(wall / 1000).toFixed(1)} s` }, [{ label: 'seed', max: 0 }]),
    { name: `${SMALL_UPLOADS} concurrent small uploads: p50 latency`, value: median(latencies), unit: 'ms' },
    { name: `${SMALL_UPLOADS} concurrent small uploads: p99 latency`, value: percentile(latencies, 99), unit: 'ms' },
    atMost({ name: `${SMALL_UPLOADS} concurrent small uploads: peak RSS`, value: sampler.peak / MiB, unit: 'MiB', note: `growth ${formatBytes(rss)}; client and server in this process` }, [{ label: 'seed', max: 1024 }]),
  ]
}

// ---------------------------------------------------------------- 3 + 4. image pipeline and progress

async function imageFigures(app: RunningApp): Promise<Figure[]> {
  const jpeg = await noisyJpeg()
  const variants = 2
  const bare: number[] = []
  const pipelineMs: number[] = []
  const events: number[] = []
  const terminalLatency: number[] = []
  for (let run = 0; run <= JPEG_RUNS; run++) {
    const b = await measure(() => bareSharp(jpeg))
    const uploadId = randomUUID()
    const watch = await watchProgress(app, uploadId)
    const p = await measure(() => uploadFile(app, { filename: 'photo.jpg', contentType: 'image/jpeg', content: jpeg }, { uploadId }))
    if (!p.result.includes('"status":"READY"')) throw new Error(`image upload: ${p.result.slice(0, 300)}`)
    const seen = await watch.terminal
    const id = /"id":"([^"]+)"/.exec(p.result)![1]!
    const finishedAt = ((await gql(app, FILE, { id })) as { file: { currentVersion: { steps: { name: string; finishedAt: string }[] } } }).file.currentVersion.steps.find((s) => s.name === 'finalize')!.finishedAt
    await gql(app, 'mutation($id: ID!) { deleteFile(id: $id) { __typename } }', { id })
    if (run === 0) continue
    bare.push(b.ms)
    pipelineMs.push(p.ms)
    events.push(seen.length)
    terminalLatency.push(seen.at(-1)!.at - new Date(finishedAt).getTime())
  }
  // Small PDFs: the progress of an upload with no image steps.
  const pdfEvents: number[] = []
  for (let i = 0; i < 20; i++) {
    const uploadId = randomUUID()
    const watch = await watchProgress(app, uploadId)
    await uploadFile(app, { filename: 'p.pdf', contentType: 'application/pdf', content: Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(20_000)]) }, { uploadId })
    pdfEvents.push((await watch.terminal).length)
  }
  const mb = jpeg.length / MB
  const bareFig: Figure = { name: `baseline: bare sharp, ${(jpeg.length / MB).toFixed(1)} MB JPEG → 2048 px JPEG + 256/1280 px WebP`, value: median(bare) / mb / variants, unit: 'ms/MB/variant', note: `median of ${JPEG_RUNS}: ${median(bare).toFixed(0)} ms` }
  log(`image: bare sharp ${median(bare).toFixed(0)} ms, pipeline ${median(pipelineMs).toFixed(0)} ms; events ${events.join(',')}; terminal latency ${terminalLatency.map((x) => x.toFixed(0)).join(',')} ms`)
  return [
    bareFig,
    versus({ name: 'image pipeline via uploadFile (receive, store, validate, checksum, optimise, 2 variants, finalise)', value: median(pipelineMs) / mb / variants, unit: 'ms/MB/variant', note: `median of ${JPEG_RUNS}: ${median(pipelineMs).toFixed(0)} ms per ${mb.toFixed(1)} MB JPEG` }, bareFig),
    { name: 'uploadProgress events per upload: 5 MB JPEG', value: median(events), unit: 'events', note: 'median; stages RECEIVING, VALIDATING, CHECKSUMMING, OPTIMIZING, CREATING_VARIANTS, STORING, COMPLETED' },
    { name: 'uploadProgress events per upload: 20 KB PDF', value: median(pdfEvents), unit: 'events', note: 'median of 20' },
    atMost({ name: 'last step finished → terminal event at the subscriber', value: median(terminalLatency), unit: 'ms', note: `median of ${JPEG_RUNS}, max ${Math.max(...terminalLatency).toFixed(0)} ms; via Redis pub/sub` }, [{ label: 'goal', max: 250 }]),
  ]
}

/** The operations the pipeline runs on an image, with nothing around them. */
async function bareSharp(input: Buffer): Promise<void> {
  await sharp(input, { limitInputPixels: 50_000_000 }).metadata()
  const optimized = await sharp(input, { limitInputPixels: 50_000_000, failOn: 'warning' }).rotate().resize({ width: 2048, height: 2048, fit: 'inside', withoutEnlargement: true }).jpeg({ quality: 82, mozjpeg: true }).toBuffer()
  for (const edge of [256, 1280]) await sharp(optimized).resize({ width: edge, height: edge, fit: 'inside', withoutEnlargement: true }).webp({ quality: 78 }).toBuffer()
}

/** A camera-like 12 MP JPEG: gradients plus noise, which is what makes photos large. */
async function noisyJpeg(): Promise<Buffer> {
  const width = 4000
  const height = 3000
  const raw = Buffer.alloc(width * height * 3)
  const noise = randomBytes(raw.length)
  for (let i = 0; i < raw.length; i++) raw[i] = Math.max(0, Math.min(255, ((i / 3) % width) / width * 200 + 30 + (noise[i]! / 255 - 0.5) * 40))
  return sharp(raw, { raw: { width, height, channels: 3 } }).jpeg({ quality: 92 }).toBuffer()
}

// ---------------------------------------------------------------- plumbing

async function uploadFile(app: RunningApp, file: { filename: string; contentType: string; content: Buffer }, input?: Record<string, unknown>): Promise<string> {
  const { parts, contentType } = graphqlMultipart({ query: UPLOAD, variables: { file: null, input } }, [{ path: 'variables.file', ...file }])
  const res = await postStreamed(app.url, parts, { 'content-type': contentType, authorization: `Bearer ${app.token}`, 'graphql-require-preflight': '1' })
  return res.body
}

async function gql(app: RunningApp, query: string, variables: Record<string, unknown>): Promise<Record<string, unknown>> {
  const res = await fetch(app.url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${app.token}` }, body: JSON.stringify({ query, variables }) })
  const body = (await res.json()) as { data?: Record<string, unknown>; errors?: unknown[] }
  if (body.errors) throw new Error(`${query.slice(0, 60)}: ${JSON.stringify(body.errors)}`)
  return body.data!
}

/** Subscribes and resolves with every event (and its arrival time) once a terminal one arrived. */
async function watchProgress(app: RunningApp, uploadId: string): Promise<{ terminal: Promise<{ stage: string; at: number }[]> }> {
  const client: Client = createClient({ url: app.ws, webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${app.token}` }, retryAttempts: 0, lazy: false })
  await new Promise<void>((resolve) => client.on('connected', () => resolve()))
  const seen: { stage: string; at: number }[] = []
  const terminal = new Promise<{ stage: string; at: number }[]>((resolve, reject) => {
    client.subscribe<{ uploadProgress: { stage: string } }>(
      { query: PROGRESS, variables: { id: uploadId } },
      {
        next: (msg) => {
          seen.push({ stage: msg.data!.uploadProgress.stage, at: Date.now() })
        },
        error: reject,
        complete: () => resolve(seen),
      },
    )
  }).finally(() => void client.dispose())
  // No acknowledgement exists for a subscribe message: give it a moment to register.
  await sleep(50)
  return { terminal }
}

function rssSampler() {
  const start = process.memoryUsage.rss()
  let peak = start
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20)
  return {
    get peak() {
      return peak
    },
    stop() {
      clearInterval(timer)
      return Math.max(0, peak - start)
    },
  }
}

async function measure<T>(fn: () => Promise<T>): Promise<{ ms: number; result: T }> {
  const t0 = nowMs()
  const result = await fn()
  return { ms: nowMs() - t0, result }
}

function mbps(ms: number): string {
  return `${(CHUNKED_BYTES / MB / (ms / 1000)).toFixed(0)} MB/s`
}


async function startBaselineServer(dir: string) {
  await mkdir(dir, { recursive: true })
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 })
  app.addContentTypeParser('application/octet-stream', (_request, _payload, done) => done(null))
  app.post('/raw', async (request) => {
    const file = path.join(dir, randomUUID())
    await pipeline(request.raw, createWriteStream(file))
    await rm(file)
    return { ok: true }
  })
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  return { url: `${address}/raw`, close: () => app.close() }
}

/** fauxqs holds objects in memory: in a child process, a 1 GiB object does not count as our RSS. */
async function startFauxqsProcess(): Promise<{ env: Env; close(): Promise<void> }> {
  const script = `import { startFauxqs } from 'fauxqs'
const s = await startFauxqs({ port: 0, logger: false })
s.createBucket('gw-bench-files')
console.log(JSON.stringify({ port: s.port }))`
  const child: ChildProcess = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] })
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve)
    child.once('exit', (code) => reject(new Error(`fauxqs exited with ${code}`)))
  })
  const { port } = JSON.parse(line) as { port: number }
  return {
    env: { S3_BUCKET: 'gw-bench-files', S3_ENDPOINT: `http://127.0.0.1:${port}`, S3_REGION: 'us-east-1', S3_ACCESS_KEY_ID: 'bench', S3_SECRET_ACCESS_KEY: 'bench', S3_FORCE_PATH_STYLE: 'true' },
    close: async () => {
      child.kill('SIGTERM')
    },
  }
}

function log(message: string): void {
  console.log(`[files] ${message}`)
}

await main()

function sessionLimit() {
  return { UPLOAD_SESSION_MAX_BYTES: String(Math.max(CHUNKED_BYTES, 10 * 1024 * MiB)) }
}
