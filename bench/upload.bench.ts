/**
 * Upload throughput of the real app, in ms per MB, against a baseline measured in the same run:
 * a plain Fastify route in this process that streams a raw POST body of the same bytes to a file.
 *
 *   - 50 MB PDF through `uploadFile` (GraphQL multipart over HTTP) to the disk adapter and to S3 (fauxqs)
 *   - ~5 MB JPEG (12 MP) through `uploadFile`, which runs it through sharp, to the disk adapter
 *
 * Real services: a temporary PostgreSQL database (dropped afterwards) and Redis with a unique key
 * prefix, as the integration tests use. Run it with `npm run bench -- upload`.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import Fastify, { type FastifyInstance } from 'fastify'
import sharp from 'sharp'
import { startS3, type TestS3 } from '../test/helpers/s3'
import { createEmptyDatabase } from '../test/helpers/services'
import { graphqlMultipart, postStreamed } from './lib/http'
import { jemallocLoaded } from './lib/machine'
import { atMost, reportResult, versus, type Figure } from './lib/result'
import { median, summarize } from './lib/stats'
import { interleave, MB, msPerMB, type Case } from './lib/timing'
import { startBenchApp, type RunningApp } from './lib/app'

const UPLOAD_LIMITS = { UPLOAD_MAX_BYTES: String(100 * 1024 * 1024), UPLOAD_MAX_IMAGE_BYTES: String(32 * 1024 * 1024) }

const RUNS = Number(process.env.BENCH_RUNS) || 7
const PDF_BYTES = 50 * MB
const JPEG_TARGET_BYTES = 5 * MB
const SEED_TARGET = { label: 'seed', max: 100 }
const GOAL_TARGET = { label: 'goal', max: 10 }

const UPLOAD_QUERY = `mutation($file: Upload!) {
  uploadFile(file: $file) { __typename ... on Error { message } ... on UploadFileSuccess { file { id size mimeType } } }
}`
const DELETE_QUERY = 'mutation($id: ID!) { deleteFile(id: $id) { __typename } }'

interface Measured {
  samples: number[]
  msPerMB: number
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(tmpdir(), 'gw-bench-upload-'))
  const cleanups: (() => Promise<unknown>)[] = [() => rm(work, { recursive: true, force: true })]
  try {
    const pdf = Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(PDF_BYTES - 9)])
    const jpeg = await noisyJpeg(JPEG_TARGET_BYTES)
    log(`inputs: PDF ${pdf.length} bytes, JPEG ${jpeg.data.length} bytes (${jpeg.width}x${jpeg.height}, quality ${jpeg.quality})`)
    log(`sharp concurrency ${sharp.concurrency()}, jemalloc ${(await jemallocLoaded()) ? 'loaded' : 'not loaded'}, ${RUNS} interleaved rounds + 1 warm-up`)

    // Baseline: the same bytes as a raw POST body, streamed to a file by a bare Fastify route.
    const baseline = await startBaselineServer(path.join(work, 'baseline'))
    cleanups.unshift(() => baseline.app.close())

    const database = await createEmptyDatabase()
    cleanups.unshift(() => database.drop())
    const disk = await startBenchApp(path.join(work, 'disk'), database, UPLOAD_LIMITS)
    cleanups.unshift(() => disk.close())
    const s3: TestS3 = await startS3()
    cleanups.unshift(() => s3.close())
    const c = s3.config
    const s3App = await startBenchApp(path.join(work, 's3'), database, {
      ...UPLOAD_LIMITS,
      S3_BUCKET: c.bucket,
      S3_ENDPOINT: c.endpoint,
      S3_REGION: c.region,
      S3_ACCESS_KEY_ID: c.accessKeyId,
      S3_SECRET_ACCESS_KEY: c.secretAccessKey,
      S3_FORCE_PATH_STYLE: 'true',
    })
    cleanups.unshift(() => s3App.close())

    const pdfFile = { filename: 'bench.pdf', contentType: 'application/pdf', content: pdf }
    const jpegFile = { filename: 'bench.jpg', contentType: 'image/jpeg', content: jpeg.data }
    const cases = [
      { name: 'baseline 50 MB', bytes: pdf.length, ...rawCase(baseline.url, pdf) },
      { name: 'disk 50 MB PDF', bytes: pdf.length, ...uploadCase(disk, pdfFile) },
      { name: 'S3 50 MB PDF', bytes: pdf.length, ...uploadCase(s3App, pdfFile) },
      { name: 'baseline JPEG bytes', bytes: jpeg.data.length, ...rawCase(baseline.url, jpeg.data) },
      { name: 'disk JPEG', bytes: jpeg.data.length, ...uploadCase(disk, jpegFile) },
    ]
    const samples = await interleave(cases, { runs: RUNS, warmup: 1, settleMs: 250 })
    const [base50, diskPdf, s3Pdf, base5, diskJpeg] = cases.map((k): Measured => {
      const perMB = samples.get(k.name)!.map((ms) => msPerMB(ms, k.bytes))
      const m = { samples: perMB, msPerMB: median(perMB) }
      log(`${k.name}: median ${m.msPerMB.toFixed(2)} ms/MB (${perMB.map((v) => v.toFixed(2)).join(', ')})`)
      return m
    }) as [Measured, Measured, Measured, Measured, Measured]

    const base50Fig: Figure = { name: 'baseline: raw POST → file, 50 MB', value: base50.msPerMB, unit: 'ms/MB', note: spread(base50) }
    const base5Fig: Figure = { name: `baseline: raw POST → file, ${mbLabel(jpeg.data.length)}`, value: base5.msPerMB, unit: 'ms/MB', note: spread(base5) }
    const figures: Figure[] = [
      base50Fig,
      atMost(versus({ name: 'uploadFile 50 MB PDF → disk', value: diskPdf.msPerMB, unit: 'ms/MB', note: `${spread(diskPdf)}; app on PostgreSQL (temporary database) and Redis` }, base50Fig), [SEED_TARGET, GOAL_TARGET]),
      atMost(versus({ name: 'uploadFile 50 MB PDF → S3 (fauxqs)', value: s3Pdf.msPerMB, unit: 'ms/MB', note: spread(s3Pdf) }, base50Fig), [SEED_TARGET, GOAL_TARGET]),
      base5Fig,
      atMost(
        versus(
          {
            name: `uploadFile ${mbLabel(jpeg.data.length)} JPEG (${jpeg.width}x${jpeg.height}) → sharp → disk`,
            value: diskJpeg.msPerMB,
            unit: 'ms/MB',
            note: `${spread(diskJpeg)}; sharp concurrency ${sharp.concurrency()}`,
          },
          base5Fig,
        ),
        [SEED_TARGET],
      ),
    ]
    reportResult({ bench: 'upload', figures })
  } finally {
    for (const cleanup of cleanups) await cleanup().catch((err: unknown) => log(`cleanup failed: ${String(err)}`))
  }
}



async function startBaselineServer(dir: string): Promise<{ app: FastifyInstance; url: string }> {
  await mkdir(dir, { recursive: true })
  const app = Fastify({ logger: false })
  // Leave the body unread, as the app's multipart parser does, so the route can stream it.
  app.addContentTypeParser('application/octet-stream', (_request, _payload, done) => done(null))
  app.post('/raw', async (request) => {
    const file = path.join(dir, randomUUID())
    await pipeline(request.raw, createWriteStream(file))
    await rm(file)
    return { ok: true }
  })
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, url: `${address}/raw` }
}

function rawCase(url: string, content: Buffer): Pick<Case, 'run'> {
  return {
    run: async () => {
      const res = await postStreamed(url, [content], { 'content-type': 'application/octet-stream' })
      if (res.status !== 200) throw new Error(`baseline POST answered ${res.status}: ${res.body.slice(0, 300)}`)
    },
  }
}

function uploadCase(app: RunningApp, file: { filename: string; contentType: string; content: Buffer }): Pick<Case, 'run' | 'after'> {
  let fileId: string | undefined
  return {
    run: async () => {
      fileId = await upload(app, file)
    },
    // Deleting between runs keeps disk use and fauxqs memory flat; it is not part of the measured time.
    after: async () => {
      if (fileId) await gql(app, DELETE_QUERY, { id: fileId })
      fileId = undefined
    },
  }
}

async function upload(app: RunningApp, file: { filename: string; contentType: string; content: Buffer }): Promise<string> {
  const { parts, contentType } = graphqlMultipart({ query: UPLOAD_QUERY, variables: { file: null } }, [{ path: 'variables.file', ...file }])
  const res = await postStreamed(app.url, parts, {
    'content-type': contentType,
    authorization: `Bearer ${app.token}`,
    'graphql-require-preflight': '1',
  })
  const result = parseUpload(res.status, res.body)
  // Non-images are stored byte for byte; images are re-encoded, so only their presence is checked.
  if (!file.contentType.startsWith('image/') && result.size !== file.content.length) {
    throw new Error(`stored ${result.size} bytes of ${file.content.length}`)
  }
  return result.id
}

function parseUpload(status: number, body: string): { id: string; size: number } {
  let json: { data?: { uploadFile?: { __typename: string; message?: string; file?: { id: string; size: number } } }; errors?: { message: string }[] }
  try {
    json = JSON.parse(body) as typeof json
  } catch {
    throw new Error(`upload answered ${status} with a non-JSON body: ${body.slice(0, 300)}`)
  }
  const result = json.data?.uploadFile
  if (status !== 200 || !result?.file) {
    throw new Error(`upload failed (${status}): ${result?.__typename ?? ''} ${result?.message ?? ''} ${JSON.stringify(json.errors ?? [])}`.trim())
  }
  return result.file
}

async function gql(app: RunningApp, query: string, variables: Record<string, unknown>): Promise<void> {
  const res = await fetch(app.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${app.token}` },
    body: JSON.stringify({ query, variables }),
  })
  const body = (await res.json()) as { errors?: unknown[] }
  if (res.status !== 200 || body.errors) throw new Error(`${query} failed (${res.status}): ${JSON.stringify(body)}`)
}

/**
 * A camera-like JPEG: 12 MP of smooth gradients with per-pixel noise, the amplitude tuned so the
 * file lands near the target size (noise is what makes photos large).
 */
async function noisyJpeg(targetBytes: number): Promise<{ data: Buffer; width: number; height: number; quality: number }> {
  const width = 4000
  const height = 3000
  const quality = 92
  const noise = randomBytes(width * height * 3)
  const raw = Buffer.alloc(width * height * 3)
  const encode = (amplitude: number) => {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const i = (y * width + x) * 3
        const base0 = (x / width) * 200 + 20
        const base1 = (y / height) * 180 + 40
        const base2 = ((x + y) / (width + height)) * 160 + 50
        raw[i] = clampByte(base0 + (noise[i]! / 255 - 0.5) * amplitude)
        raw[i + 1] = clampByte(base1 + (noise[i + 1]! / 255 - 0.5) * amplitude)
        raw[i + 2] = clampByte(base2 + (noise[i + 2]! / 255 - 0.5) * amplitude)
      }
    }
    return sharp(raw, { raw: { width, height, channels: 3 } }).jpeg({ quality }).toBuffer()
  }
  // Size grows monotonically with the amplitude: bisect a few times, keep the closest.
  let lo = 8
  let hi = 96
  let best: Buffer | undefined
  for (let i = 0; i < 6; i++) {
    const amplitude = (lo + hi) / 2
    const data = await encode(amplitude)
    if (!best || Math.abs(data.length - targetBytes) < Math.abs(best.length - targetBytes)) best = data
    if (Math.abs(data.length - targetBytes) <= targetBytes * 0.03) break
    if (data.length < targetBytes) lo = amplitude
    else hi = amplitude
  }
  return { data: best!, width, height, quality }
}

function clampByte(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : v
}

function spread(m: Measured): string {
  const s = summarize(m.samples)
  return `median of ${s.n}, min ${s.min.toFixed(2)}, max ${s.max.toFixed(2)} ms/MB; ${(1000 / m.msPerMB).toFixed(0)} MB/s`
}

function mbLabel(bytes: number): string {
  return `${(bytes / MB).toFixed(1)} MB`
}

function log(message: string): void {
  console.log(`[upload] ${message}`)
}

await main()
