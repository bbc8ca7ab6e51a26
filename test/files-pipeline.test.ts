import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { deflateSync } from 'node:zlib'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ObjectStorage } from '../src/infra/storage/types'
import { buildTestApp, uploadThroughGraphql, type TestApp } from './helpers/app'
import { createEmptyDatabase, type TestDatabase } from './helpers/services'

const UPLOAD = `mutation($file: Upload!, $input: UploadFileInput) { uploadFile(file: $file, input: $input) {
  __typename ... on UploadFileSuccess { file { id status } } ... on Error { message } ... on UnsupportedFileTypeError { detectedType } } }`
const FILE = `query($id: ID!) { file(id: $id) { id status error mimeType size url
  currentVersion { number status error width height pageCount variants { name mimeType width height size url } steps { name status attempts } } } }`

type Step = { name: string; status: string; attempts: number }
type Variant = { name: string; mimeType: string; width: number; height: number; size: number; url: string }
type FileView = {
  id: string
  status: string
  error: string | null
  mimeType: string
  size: number
  url: string | null
  currentVersion: { number: number; status: string; error: string | null; width: number | null; height: number | null; pageCount: number | null; variants: Variant[]; steps: Step[] }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

async function upload(t: TestApp, token: string, file: { filename: string; contentType: string; content: Buffer }, input?: Record<string, unknown>) {
  const res = await uploadThroughGraphql(t, token, UPLOAD, { file: null, input }, file)
  return res.body as { data?: { uploadFile: { __typename: string; message?: string; file?: { id: string; status: string }; detectedType?: string } }; errors?: { message: string; extensions?: Record<string, unknown> }[] }
}

async function fileView(t: TestApp, token: string, id: string): Promise<FileView> {
  const r = await t.gql<{ file: FileView }>(FILE, { id }, token)
  expect(r.errors).toBeUndefined()
  return r.data.file
}

async function settled(t: TestApp, token: string, id: string): Promise<FileView> {
  for (let i = 0; i < 800; i++) {
    const f = await fileView(t, token, id)
    // The file row and the version row are read one after the other: wait until both settled.
    if (f.status !== 'PROCESSING' && f.currentVersion.status !== 'PROCESSING') return f
    await sleep(25)
  }
  throw new Error(`file ${id} is still processing`)
}

async function download(t: TestApp, url: string): Promise<Buffer> {
  const res = await t.app.inject({ method: 'GET', url: url.slice('http://groundwork.test'.length) })
  expect(res.statusCode).toBe(200)
  return res.rawPayload
}

function jpeg(width: number, height: number): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: { r: 30, g: 120, b: 200 } } }).jpeg().toBuffer()
}

/** A PDF whose page tree is plain text. */
function plainPdf(pages: number): Buffer {
  const kids = Array.from({ length: pages }, (_, i) => `${i + 3} 0 R`).join(' ')
  const objects = [`1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj`, `2 0 obj << /Type /Pages /Kids [${kids}] /Count ${pages} >> endobj`]
  for (let i = 0; i < pages; i++) objects.push(`${i + 3} 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >> endobj`)
  return Buffer.from(`%PDF-1.4\n${objects.join('\n')}\ntrailer << /Root 1 0 R >>\n%%EOF\n`, 'latin1')
}

/** A PDF 1.5 whose page tree sits in a compressed object stream, as most modern writers do it. */
function objectStreamPdf(pages: number): Buffer {
  const kids = Array.from({ length: pages }, (_, i) => `${i + 10} 0 R`).join(' ')
  const body = `2 0 << /Type /Pages /Kids [${kids}] /Count ${pages} >> ` + Array.from({ length: pages }, () => `<< /Type /Page /Parent 2 0 R >>`).join(' ')
  const packed = deflateSync(Buffer.from(body, 'latin1'))
  return Buffer.concat([
    Buffer.from(`%PDF-1.5\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n5 0 obj << /Type /ObjStm /N ${pages + 1} /First 4 /Filter /FlateDecode /Length ${packed.length} >>\nstream\n`, 'latin1'),
    packed,
    Buffer.from('\nendstream\nendobj\ntrailer << /Root 1 0 R >>\n%%EOF\n', 'latin1'),
  ])
}

describe('the processing pipeline', () => {
  let t: TestApp
  let token: string
  beforeAll(async () => {
    t = await buildTestApp({ env: { IMAGE_MAX_FRAMES: '10', IMAGE_MAX_EDGE: '2048' } })
    token = t.token('user', 'pia')
  })
  afterAll(() => t.close())

  it('optimises an image and renders a 256 px thumbnail and a 1280 px WebP preview, each with a URL', async () => {
    const r = await upload(t, token, { filename: 'photo.jpg', contentType: 'image/jpeg', content: await jpeg(1600, 1200) })
    const file = await fileView(t, token, r.data!.uploadFile.file!.id)
    expect(file).toMatchObject({ status: 'READY', currentVersion: { width: 1600, height: 1200 } })
    expect(file.currentVersion.steps.map((s) => `${s.name}:${s.status}`)).toEqual(['validate:DONE', 'checksum:DONE', 'optimize:DONE', 'variants:DONE', 'finalize:DONE'])
    const [thumb, preview] = file.currentVersion.variants
    expect(thumb).toMatchObject({ name: 'thumb', mimeType: 'image/webp', width: 256, height: 192 })
    expect(preview).toMatchObject({ name: 'preview', mimeType: 'image/webp', width: 1280, height: 960 })
    for (const v of [thumb!, preview!]) {
      const bytes = await download(t, v.url)
      expect(bytes.length).toBe(v.size)
      expect(await sharp(bytes).metadata()).toMatchObject({ format: 'webp', width: v.width, height: v.height })
    }
    // The received bytes (with their EXIF data) are gone once the optimised image is stored.
    const names = await readdir(path.join(t.dataDir, 'files', 'files', file.id), { recursive: true })
    expect(names.filter((n) => n.endsWith('source'))).toEqual([])
  })

  it('deletes what a step wrote when the file was deleted while the step ran', async () => {
    const storage = t.app.storage as ObjectStorage
    const put = storage.put
    let reached!: () => void
    const atOptimize = new Promise<void>((r) => (reached = r))
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    // The optimise step's write is held (slow storage) while the file is deleted.
    storage.put = async (key, body, opts) => {
      if (/\/image\.\w+$/.test(key)) {
        reached()
        await gate
      }
      return put.call(storage, key, body, opts)
    }
    let id: string
    try {
      const png = await sharp({ create: { width: 400, height: 300, channels: 3, background: '#3a7' } }).png().toBuffer()
      const up = await upload(t, token, { filename: 'p.png', contentType: 'image/png', content: png }, { waitForProcessing: false })
      id = up.data!.uploadFile.file!.id
      await atOptimize
      const del = await t.gql('mutation($id: ID!) { deleteFile(id: $id) { __typename } }', { id }, token)
      expect(del.data).toEqual({ deleteFile: { __typename: 'DeleteFileSuccess' } })
    } finally {
      release()
      storage.put = put
    }
    // The upload's drive runs in this process: wait for it to end (no timing involved).
    const inFlight = (t.app.services.files.pipeline as unknown as { inFlight: Set<Promise<void>> }).inFlight
    await Promise.allSettled([...inFlight])
    const root = path.join(t.dataDir, 'files', 'files', id)
    const left = (await readdir(root, { recursive: true, withFileTypes: true }).catch(() => [])).filter((e) => e.isFile())
    expect(left.map((e) => e.name)).toEqual([])
  })

  it('counts the pages of a PDF, in plain text or in a compressed object stream, and skips the image steps', async () => {
    const plain = await upload(t, token, { filename: 'three.pdf', contentType: 'application/pdf', content: plainPdf(3) })
    const file = await fileView(t, token, plain.data!.uploadFile.file!.id)
    expect(file.currentVersion.pageCount).toBe(3)
    expect(file.currentVersion.steps.map((s) => `${s.name}:${s.status}`)).toEqual(['validate:DONE', 'checksum:DONE', 'optimize:SKIPPED', 'variants:SKIPPED', 'finalize:DONE'])
    expect(file.currentVersion.variants).toEqual([])
    const packed = await upload(t, token, { filename: 'seven.pdf', contentType: 'application/pdf', content: objectStreamPdf(7) })
    expect((await fileView(t, token, packed.data!.uploadFile.file!.id)).currentVersion.pageCount).toBe(7)
  })

  it('refuses an animated GIF with more frames than allowed, and accepts one within the cap', async () => {
    const frames = (n: number) => Promise.all(Array.from({ length: n }, (_, i) => sharp({ create: { width: 24, height: 24, channels: 3, background: { r: i * 10, g: 50, b: 90 } } }).png().toBuffer()))
    const tooMany = await sharp(await frames(11), { join: { animated: true } }).gif().toBuffer()
    const refused = await upload(t, token, { filename: 'long.gif', contentType: 'image/gif', content: tooMany })
    expect(refused.data!.uploadFile).toMatchObject({ __typename: 'ValidationError' })
    expect(refused.data!.uploadFile.message).toMatch(/11 frames; at most 10/)
    const fine = await sharp(await frames(4), { join: { animated: true } }).gif().toBuffer()
    const accepted = await upload(t, token, { filename: 'short.gif', contentType: 'image/gif', content: fine })
    const file = await fileView(t, token, accepted.data!.uploadFile.file!.id)
    expect(file).toMatchObject({ status: 'READY', mimeType: 'image/gif', currentVersion: { width: 24, height: 24 } })
  })

  it('refuses SVG unless configured', async () => {
    const svg = Buffer.from('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>')
    const r = await upload(t, token, { filename: 'x.svg', contentType: 'image/svg+xml', content: svg })
    expect(r.data!.uploadFile).toMatchObject({ __typename: 'UnsupportedFileTypeError', message: 'SVG files are not allowed', detectedType: 'image/svg+xml' })
  })

  it('keeps a failed upload visible with its reason, and shows which step failed', async () => {
    const whole = await sharp(randomBytes(256 * 256 * 3), { raw: { width: 256, height: 256, channels: 3 } }).jpeg().toBuffer()
    const corrupt = whole.subarray(0, Math.floor(whole.length / 2))
    const r = await upload(t, token, { filename: 'broken.jpg', contentType: 'image/jpeg', content: corrupt }, { waitForProcessing: false })
    expect(r.data!.uploadFile).toMatchObject({ __typename: 'UploadFileSuccess', file: { status: 'PROCESSING' } })
    const file = await settled(t, token, r.data!.uploadFile.file!.id)
    expect(file).toMatchObject({ status: 'FAILED', error: 'The image is corrupt or cannot be decoded', url: null, currentVersion: { status: 'FAILED' } })
    // A client error is not retried: one attempt, then FAILED.
    expect(file.currentVersion.steps.find((s) => s.status === 'FAILED')).toMatchObject({ attempts: 1 })
  })
})

describe('the processing pipeline with SVG allowed', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ env: { UPLOAD_ALLOW_SVG: 'true' } })
  })
  afterAll(() => t.close())

  it('rasterises an SVG to PNG from memory, so no script survives', async () => {
    const token = t.token('user', 'sid')
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><script>alert(document.cookie)</script><rect width="40" height="20" fill="red"/></svg>')
    const r = await upload(t, token, { filename: 'logo.svg', contentType: 'image/svg+xml', content: svg })
    const file = await fileView(t, token, r.data!.uploadFile.file!.id)
    expect(file).toMatchObject({ status: 'READY', mimeType: 'image/png', currentVersion: { width: 40, height: 20 } })
    const stored = await download(t, file.url!)
    expect((await sharp(stored).metadata()).format).toBe('png')
    expect(stored.includes(Buffer.from('script'))).toBe(false)
  })
})

describe('pipeline retries', () => {
  let t: TestApp
  let storage: ObjectStorage & { put: ObjectStorage['put'] }
  let originalPut: ObjectStorage['put']
  beforeAll(async () => {
    t = await buildTestApp({ env: { FILE_PIPELINE_BACKOFF_MS: '20', FILE_PIPELINE_MAX_ATTEMPTS: '3' } })
    storage = t.app.storage as typeof storage
    originalPut = storage.put
  })
  afterAll(() => t.close())

  const failOptimizedPuts = (times: number) => {
    let left = times
    storage.put = async (key, body, options) => {
      if (/\/image\.\w+$/.test(key) && left-- > 0) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })
      return originalPut(key, body, options)
    }
  }

  it('retries a step that failed on a transient error, with backoff, and then completes', async () => {
    failOptimizedPuts(2)
    try {
      const token = t.token('user', 'rory')
      const r = await upload(t, token, { filename: 'retry.jpg', contentType: 'image/jpeg', content: await jpeg(300, 200) })
      expect(r.data!.uploadFile).toMatchObject({ __typename: 'UploadFileSuccess', file: { status: 'READY' } })
      const file = await fileView(t, token, r.data!.uploadFile.file!.id)
      expect(file.currentVersion.steps.map((s) => [s.name, s.attempts])).toEqual([['validate', 1], ['checksum', 1], ['optimize', 3], ['variants', 1], ['finalize', 1]])
    } finally {
      storage.put = originalPut
    }
  })

  it('fails the file after the last attempt, with the reason visible and its bytes removed', async () => {
    failOptimizedPuts(100)
    try {
      const token = t.token('user', 'fay')
      const r = await upload(t, token, { filename: 'doomed.jpg', contentType: 'image/jpeg', content: await jpeg(300, 200) })
      expect(r.errors?.[0]).toMatchObject({ message: 'Processing failed after 3 attempts, please upload again', extensions: { code: 'SERVICE_UNAVAILABLE' } })
      const list = await t.gql<{ files: { edges: { node: { id: string; status: string; error: string } }[] } }>('{ files { edges { node { id status error } } } }', {}, token)
      const [failed] = list.data.files.edges.map((e) => e.node)
      expect(failed).toMatchObject({ status: 'FAILED', error: 'Processing failed after 3 attempts, please upload again' })
      const file = await fileView(t, token, failed!.id)
      expect(file.currentVersion.steps.find((s) => s.name === 'optimize')).toMatchObject({ status: 'FAILED', attempts: 3 })
      expect(await readdir(path.join(t.dataDir, 'files', 'files', failed!.id), { recursive: true }).then((n) => n.filter((x) => x.includes('.')))).toEqual([])
    } finally {
      storage.put = originalPut
    }
  })
})

describe('pipeline concurrency', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ env: { IMAGE_CONCURRENCY: '1', IMAGE_VARIANTS: 'none' } })
  })
  afterAll(() => t.close())

  it('decodes at most IMAGE_CONCURRENCY images at once while many uploads are processed', async () => {
    const storage = t.app.storage as ObjectStorage & { get: ObjectStorage['get'] }
    const original = storage.get
    let active = 0
    let peak = 0
    storage.get = async (key, range) => {
      // Whole-image reads happen inside the image pool; a slow read makes any overlap visible.
      if (range) return original(key, range)
      active++
      peak = Math.max(peak, active)
      await sleep(30)
      const result = await original(key, range)
      result.body.once('close', () => active--)
      return result
    }
    try {
      const token = t.token('user', 'cora')
      const images = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => jpeg(200 + i, 100)))
      const results = await Promise.all(images.map((content, i) => upload(t, token, { filename: `p${i}.jpg`, contentType: 'image/jpeg', content })))
      expect(results.map((r) => r.data?.uploadFile.file?.status)).toEqual(Array(6).fill('READY'))
      expect(peak).toBe(1)
    } finally {
      storage.get = original
    }
  })
})

describe('a pipeline interrupted by a crash', () => {
  let database: TestDatabase
  let dataDir: string
  const apps: TestApp[] = []
  beforeAll(async () => {
    database = await createEmptyDatabase()
    dataDir = await mkdtemp(path.join(tmpdir(), 'gw-crash-'))
  })
  afterAll(async () => {
    for (const app of apps) await app.close().catch(() => {})
    await database.drop()
    await rm(dataDir, { recursive: true, force: true })
  })

  it('resumes on another instance from the step that was running, without redoing finished steps', async () => {
    const env = { FILE_PIPELINE_LEASE_MS: '600', WORKER_POLL_MS: '50' }
    const doomed = await buildTestApp({ database, dataDir, env })
    apps.push(doomed)
    const token = doomed.token('user', 'cass')
    const storage = doomed.app.storage as ObjectStorage & { put: ObjectStorage['put'] }
    const originalPut = storage.put
    // The optimise step hangs, as in a process that froze and is then killed.
    storage.put = (key, body, options) => (/\/image\.\w+$/.test(key) ? new Promise(() => {}) : originalPut(key, body, options))
    const content = await jpeg(500, 400)
    const r = await upload(doomed, token, { filename: 'crash.jpg', contentType: 'image/jpeg', content }, { waitForProcessing: false })
    const id = r.data!.uploadFile.file!.id
    for (let i = 0; i < 400; i++) {
      const steps = (await fileView(doomed, token, id)).currentVersion.steps
      if (steps.find((s) => s.name === 'optimize')?.status === 'RUNNING') break
      await sleep(25)
    }
    await doomed.close()

    const survivor = await buildTestApp({ database, dataDir, env: { ...env, WORKERS_ENABLED: 'true' } })
    apps.push(survivor)
    const file = await settled(survivor, token, id)
    expect(file).toMatchObject({ status: 'READY', currentVersion: { width: 500, height: 400 } })
    expect(file.currentVersion.steps.map((s) => [s.name, s.attempts])).toEqual([['validate', 1], ['checksum', 1], ['optimize', 2], ['variants', 1], ['finalize', 1]])
    expect((await sharp(await download(survivor, file.url!)).metadata()).width).toBe(500)
    expect(sha256(await download(survivor, file.url!))).not.toBe(sha256(content))
  })
})
