import { createHash, randomBytes } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, uploadThroughGraphql, type TestApp } from './helpers/app'
import { startS3 } from './helpers/s3'

const UPLOAD = `mutation($file: Upload!, $input: UploadFileInput) {
  uploadFile(file: $file, input: $input) {
    __typename
    ... on UploadFileSuccess { file { id filename mimeType size sha256 status url currentVersion { number width height originalSize } } }
    ... on Error { message }
    ... on FileTooLargeError { maxBytes }
    ... on UnsupportedFileTypeError { detectedType allowedTypes }
    ... on ValidationError { fieldErrors { path message } }
  }
}`

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')
const pdf = (size: number) => Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(size - 9)])
const MAX_BYTES = 256 * 1024
const MAX_IMAGE_BYTES = 2 * 1024 * 1024

async function jpegWithExif(width: number, height: number): Promise<Buffer> {
  // Orientation 6 = rotate 90° clockwise on display; the optimiser must apply it before stripping EXIF.
  return sharp({ create: { width, height, channels: 3, background: { r: 200, g: 120, b: 40 } } })
    .jpeg()
    .withMetadata({ orientation: 6, exif: { IFD0: { Copyright: 'secret-gps-and-camera' } } })
    .toBuffer()
}

async function storedObjects(dataDir: string): Promise<string[]> {
  const root = path.join(dataDir, 'files')
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => [])
  return entries.filter((e) => e.isFile() && !/(^|\/)\.(tmp|meta|multipart)(\/|$)/.test(path.relative(root, e.parentPath))).map((e) => e.name)
}

type UploadResult = { __typename: string; message?: string; file?: Record<string, unknown> & { currentVersion: Record<string, unknown> } } & Record<string, unknown>

describe.each([
  { name: 'disk', s3: false },
  { name: 's3 (fauxqs)', s3: true },
])('uploads to $name', ({ s3 }) => {
  let t: TestApp
  let closeS3: (() => Promise<void>) | undefined
  let alice: string

  beforeAll(async () => {
    let env: Record<string, string> = { UPLOAD_MAX_BYTES: String(MAX_BYTES), UPLOAD_MAX_IMAGE_BYTES: String(MAX_IMAGE_BYTES), IMAGE_MAX_EDGE: '1024' }
    if (s3) {
      const s = await startS3()
      closeS3 = s.close
      env = {
        ...env,
        S3_BUCKET: s.config.bucket,
        S3_ENDPOINT: s.config.endpoint!,
        S3_REGION: s.config.region,
        S3_ACCESS_KEY_ID: s.config.accessKeyId!,
        S3_SECRET_ACCESS_KEY: s.config.secretAccessKey!,
        S3_FORCE_PATH_STYLE: 'true',
      }
    }
    t = await buildTestApp({ env })
    alice = t.token('user', 'alice')
  })
  afterAll(async () => {
    await t.close()
    await closeS3?.()
  })

  const upload = async (file: { filename: string; contentType: string; content: Buffer }, input?: Record<string, unknown>, token = alice) => {
    const res = await uploadThroughGraphql(t, token, UPLOAD, { file: null, input }, file)
    expect(res.body.errors).toBeUndefined()
    return (res.body.data as { uploadFile: UploadResult }).uploadFile
  }

  const fileCount = async () => {
    const r = await t.gql<{ files: { edges: unknown[] } }>('{ files(first: 100) { edges { node { id } } } }', {}, t.token('admin'))
    return r.data.files.edges.length
  }

  it('optimises a JPEG: applies EXIF rotation, strips metadata, bounds the edge and records both checksums', async () => {
    const original = await jpegWithExif(1600, 800)
    const result = await upload({ filename: 'holiday.jpg', contentType: 'image/jpeg', content: original })
    expect(result.__typename).toBe('UploadFileSuccess')
    const file = result.file!
    expect(file).toMatchObject({ filename: 'holiday.jpg', mimeType: 'image/jpeg', status: 'READY' })
    // Rotated by the EXIF orientation, then fitted inside 1024 px.
    expect(file.currentVersion).toMatchObject({ number: 1, width: 512, height: 1024, originalSize: original.length })

    const stored = await download(t, file.url as string)
    expect(sha256(stored)).toBe(file.sha256)
    const meta = await sharp(stored).metadata()
    expect(meta.exif).toBeUndefined()
    expect(meta.orientation ?? 1).toBe(1)
    expect(stored.includes(Buffer.from('secret-gps-and-camera'))).toBe(false)
  })

  it('stores a PDF byte for byte with its sha256', async () => {
    const content = pdf(100 * 1024)
    const result = await upload({ filename: 'report.pdf', contentType: 'application/pdf', content })
    expect(result.file).toMatchObject({ mimeType: 'application/pdf', size: content.length, sha256: sha256(content) })
    expect(sha256(await download(t, result.file!.url as string))).toBe(sha256(content))
  })

  it('rejects content that contradicts the declared type, storing nothing', async () => {
    const before = await fileCount()
    const result = await upload({ filename: 'cat.png', contentType: 'image/png', content: pdf(20_000) })
    expect(result).toMatchObject({ __typename: 'UnsupportedFileTypeError', detectedType: 'application/pdf' })
    expect(result.message).toMatch(/declared as image\/png/)
    expect(await fileCount()).toBe(before)
  })

  it('rejects a type outside the allowlist even when declared honestly', async () => {
    const result = await upload({ filename: 'notes.txt', contentType: 'text/plain', content: Buffer.from('just some text, no magic number') })
    expect(result.__typename).toBe('UnsupportedFileTypeError')
    expect(result.allowedTypes).toContain('image/jpeg')
  })

  it('rejects an oversized file while streaming and leaves no partial object or row', async () => {
    const before = await fileCount()
    const objectsBefore = s3 ? [] : await storedObjects(t.dataDir)
    const result = await upload({ filename: 'big.pdf', contentType: 'application/pdf', content: pdf(MAX_BYTES * 3) })
    expect(result).toMatchObject({ __typename: 'FileTooLargeError', maxBytes: MAX_BYTES })
    expect(await fileCount()).toBe(before)
    if (!s3) expect(await storedObjects(t.dataDir)).toEqual(objectsBefore)
  })

  it('applies the image limit to images', async () => {
    const noisy = await sharp(randomBytes(1400 * 1400 * 3), { raw: { width: 1400, height: 1400, channels: 3 } }).png({ compressionLevel: 0 }).toBuffer()
    expect(noisy.length).toBeGreaterThan(MAX_IMAGE_BYTES)
    const result = await upload({ filename: 'noise.png', contentType: 'image/png', content: noisy })
    expect(result).toMatchObject({ __typename: 'FileTooLargeError', maxBytes: MAX_IMAGE_BYTES })
  })

  it('rejects a decompression bomb before decoding it', async () => {
    const bomb = await sharp({ create: { width: 12_000, height: 12_000, channels: 3, background: '#000' }, limitInputPixels: false }).greyscale().png({ compressionLevel: 9 }).toBuffer()
    expect(bomb.length).toBeLessThan(MAX_IMAGE_BYTES)
    const result = await upload({ filename: 'bomb.png', contentType: 'image/png', content: bomb })
    expect(result.__typename).toBe('ValidationError')
    expect(result.message).toMatch(/pixels/)
  })

  it('rejects a corrupt image', async () => {
    const jpeg = await jpegWithExif(64, 64)
    const corrupt = Buffer.concat([jpeg.subarray(0, 300), randomBytes(500)])
    const result = await upload({ filename: 'broken.jpg', contentType: 'image/jpeg', content: corrupt })
    expect(result.__typename).toBe('ValidationError')
  })

  it('keeps only the base name of a path-traversal filename and never uses it as a storage key', async () => {
    const result = await upload({ filename: '../../../etc/passwd.pdf', contentType: 'application/pdf', content: pdf(2_000) })
    expect(result.file!.filename).toBe('passwd.pdf')
    if (!s3) {
      const names = await storedObjects(t.dataDir)
      expect(names.some((n) => n.includes('passwd'))).toBe(false)
    }
  })

  it('refuses a multipart request without the preflight header (CSRF)', async () => {
    const res = await uploadThroughGraphql(t, alice, UPLOAD, { file: null }, { filename: 'a.pdf', contentType: 'application/pdf', content: pdf(1000) }, {})
    expect(res.statusCode).toBe(400)
    expect(res.body.errors?.[0]?.extensions?.code).toBe('CSRF_PREFLIGHT_REQUIRED')
  })

  it('answers a malformed multipart body with a 400', async () => {
    const res = await t.app.inject({
      method: 'POST',
      url: '/graphql',
      headers: { 'content-type': 'multipart/form-data; boundary=xyz', 'graphql-require-preflight': '1', authorization: `Bearer ${alice}` },
      payload: '--xyz\r\nContent-Disposition: form-data; name="map"\r\n\r\n{}\r\n--xyz--\r\n',
    })
    expect(res.statusCode).toBe(400)
    expect(res.json().errors[0].extensions.code).toBe('BAD_MULTIPART_REQUEST')
  })

  /** A multipart request with this `map`, one small PDF as part "0", from nobody in particular. */
  const withMap = (variables: Record<string, unknown>, map: Record<string, string[]>) => {
    const boundary = 'gwmap'
    const field = (name: string, value: string) => `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`
    const payload = Buffer.concat([
      Buffer.from(field('operations', JSON.stringify({ query: UPLOAD, variables })) + field('map', JSON.stringify(map))),
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="0"; filename="a.pdf"\r\nContent-Type: application/pdf\r\n\r\n`),
      pdf(1000),
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ])
    return t.app.inject({ method: 'POST', url: '/graphql', headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'graphql-require-preflight': '1' }, payload })
  }

  it('refuses map paths that leave the request data, and nothing outside it changes', async () => {
    const call = Function.prototype.call
    for (const path of ['variables.hasOwnProperty.call', 'variables.toString.name', 'variables.list.push.x', 'variables.file.x', 'variables.missing.x', 'variables.constructor', 'variables.__proto__', 'variables..file']) {
      const res = await withMap({ file: null, list: [] }, { 0: [path] })
      expect(res.statusCode, path).toBe(400)
      expect(res.json().errors[0].extensions.code, path).toBe('BAD_MULTIPART_REQUEST')
      expect(res.body, path).not.toMatch(/at .*\.(js|ts):\d+/)
    }
    expect(Object.prototype.hasOwnProperty.call).toBe(call)
    expect(Object.prototype.toString.name).toBe('toString')
    expect(Object.hasOwn(Array.prototype.push, 'x')).toBe(false)
    // The app still serves, uploads included.
    const result = await upload({ filename: 'after.pdf', contentType: 'application/pdf', content: pdf(1000) })
    expect(result.file?.filename).toBe('after.pdf')
  })

  it('refuses one file mapped to two variables', async () => {
    const res = await withMap({ file: null, other: null }, { 0: ['variables.file', 'variables.other'] })
    expect(res.statusCode).toBe(400)
    expect(res.json().errors[0]).toMatchObject({ message: 'Each file of a multipart request must be mapped to one variable', extensions: { code: 'BAD_MULTIPART_REQUEST' } })
  })

  it('rejects an invalid uploadId', async () => {
    const result = await upload({ filename: 'a.pdf', contentType: 'application/pdf', content: pdf(1000) }, { uploadId: 'bad id/with#chars' })
    expect(result.__typename).toBe('ValidationError')
  })

  it('shows a file to its owner and admins only', async () => {
    const result = await upload({ filename: 'private.pdf', contentType: 'application/pdf', content: pdf(3000) })
    const id = result.file!.id
    const q = 'query($id: ID!) { file(id: $id) { id ownerId } }'
    expect((await t.gql(q, { id }, alice)).data).toEqual({ file: { id, ownerId: 'alice' } })
    expect((await t.gql(q, { id }, t.token('user', 'mallory'))).data).toEqual({ file: null })
    expect((await t.gql(q, { id }, t.token('admin'))).data).toEqual({ file: { id, ownerId: 'alice' } })
    const del = await t.gql<{ deleteFile: { __typename: string } }>('mutation($id: ID!) { deleteFile(id: $id) { __typename } }', { id }, t.token('user', 'mallory'))
    expect(del.data.deleteFile.__typename).toBe('NotFoundError')
  })

  it('pages through files with cursors', async () => {
    const bob = t.token('user', 'bob')
    for (let i = 0; i < 5; i++) await upload({ filename: `b${i}.pdf`, contentType: 'application/pdf', content: pdf(1000 + i) }, undefined, bob)
    const q = 'query($after: String) { files(first: 2, after: $after) { edges { cursor node { filename } } pageInfo { hasNextPage endCursor } } }'
    const names: string[] = []
    let after: string | null = null
    for (let page = 0; page < 5; page++) {
      const r: { data: { files: { edges: { node: { filename: string } }[]; pageInfo: { hasNextPage: boolean; endCursor: string } } } } = await t.gql(q, { after }, bob)
      names.push(...r.data.files.edges.map((e) => e.node.filename))
      if (!r.data.files.pageInfo.hasNextPage) break
      after = r.data.files.pageInfo.endCursor
    }
    expect(names).toEqual(['b4.pdf', 'b3.pdf', 'b2.pdf', 'b1.pdf', 'b0.pdf'])
    const bad = await t.gql('{ files(after: "garbage") { edges { cursor } } }', {}, bob)
    expect(bad.errors?.[0]?.extensions?.code).toBe('VALIDATION_FAILED')
  })

  it('refuses a forged files cursor whose id is not a uuid or whose date PostgreSQL cannot hold', async () => {
    const bob = t.token('user', 'bob')
    const q = 'query($after: String) { files(first: 2, after: $after) { edges { cursor } } }'
    const cursor = (parts: unknown[]) => Buffer.from(JSON.stringify(parts)).toString('base64url')
    const uuid = '00000000-0000-0000-0000-000000000000'
    for (const parts of [
      ['2024-01-01T00:00:00.000Z', 'not-a-uuid'],
      ['+275760-09-13T00:00:00.000Z', uuid],
      ['+010000-01-01T00:00:00.000Z', uuid],
      ['0000-01-01T00:00:00.000Z', uuid],
      ['-000001-01-01T00:00:00.000Z', uuid],
    ]) {
      const r = await t.gql(q, { after: cursor(parts) }, bob)
      expect(r.errors?.map((e) => e.extensions?.code), JSON.stringify(parts)).toEqual(['VALIDATION_FAILED'])
    }
    // The edges of the range are fine.
    for (const date of ['9999-12-31T23:59:59.999Z', '0001-01-01T00:00:00.000Z']) {
      const r = await t.gql(q, { after: cursor([date, uuid]) }, bob)
      expect(r.errors, date).toBeUndefined()
    }
  })

  it('adds versions, restores an old one as a new version, and deletes everything', async () => {
    const v1 = pdf(1500)
    const first = await upload({ filename: 'doc.pdf', contentType: 'application/pdf', content: v1 })
    const id = first.file!.id
    const v2 = pdf(1600)
    const { body } = await uploadThroughGraphql(
      t,
      alice,
      'mutation($id: ID!, $file: Upload!) { uploadFileVersion(fileId: $id, file: $file) { __typename ... on UploadFileVersionSuccess { file { currentVersion { number sha256 } } } } }',
      { id, file: null },
      { filename: 'doc-v2.pdf', contentType: 'application/pdf', content: v2 },
    )
    expect(body.data).toEqual({ uploadFileVersion: { __typename: 'UploadFileVersionSuccess', file: { currentVersion: { number: 2, sha256: sha256(v2) } } } })

    const restored = await t.gql<{ restoreFileVersion: { file: { filename: string; currentVersion: { number: number; sha256: string }; versions: { number: number }[]; url: string } } }>(
      'mutation($id: ID!) { restoreFileVersion(fileId: $id, version: 1) { ... on RestoreFileVersionSuccess { file { filename url currentVersion { number sha256 } versions { number } } } } }',
      { id },
      alice,
    )
    const file = restored.data.restoreFileVersion.file
    expect(file.currentVersion).toEqual({ number: 3, sha256: sha256(v1) })
    expect(file.versions.map((v) => v.number)).toEqual([3, 2, 1])
    expect(file.filename).toBe('doc.pdf')
    expect(sha256(await download(t, file.url))).toBe(sha256(v1))

    const objectsBefore = s3 ? [] : await storedObjects(t.dataDir)
    const del = await t.gql('mutation($id: ID!) { deleteFile(id: $id) { ... on DeleteFileSuccess { deletedFileId } } }', { id }, alice)
    expect(del.data).toEqual({ deleteFile: { deletedFileId: id } })
    expect((await t.gql('query($id: ID!) { file(id: $id) { id } }', { id }, alice)).data).toEqual({ file: null })
    // Version 3 restored version 1 by sharing its stored object (deduplication), so two objects go.
    if (!s3) expect((await storedObjects(t.dataDir)).length).toBe(objectsBefore.length - 2)
  })

  it('refuses an out-of-range URL lifetime', async () => {
    const result = await upload({ filename: 'x.pdf', contentType: 'application/pdf', content: pdf(1000) })
    const r = await t.gql('query($id: ID!) { file(id: $id) { url(expiresIn: 5) } }', { id: result.file!.id }, alice)
    expect(r.errors?.[0]?.extensions?.code).toBe('VALIDATION_FAILED')
  })
})

describe('uploads when storage fails', () => {
  let t: TestApp
  beforeAll(async () => {
    const port = await closedPort()
    t = await buildTestApp({
      env: { S3_BUCKET: 'unreachable', S3_ENDPOINT: `http://127.0.0.1:${port}`, S3_ACCESS_KEY_ID: 'x', S3_SECRET_ACCESS_KEY: 'y', S3_FORCE_PATH_STYLE: 'true' },
    })
  })
  afterAll(() => t.close())

  it('answers SERVICE_UNAVAILABLE and records no file row', async () => {
    const res = await uploadThroughGraphql(t, t.token('user', 'carol'), UPLOAD, { file: null }, { filename: 'a.pdf', contentType: 'application/pdf', content: pdf(5000) })
    expect(res.body.errors?.[0]?.extensions?.code).toBe('SERVICE_UNAVAILABLE')
    expect(res.body.errors?.[0]?.message).toMatch(/unavailable/)
    const files = await t.gql<{ files: { edges: unknown[] } }>('{ files { edges { cursor } } }', {}, t.token('admin'))
    expect(files.data.files.edges).toEqual([])
  })
})

describe('uploads over a real keep-alive connection', () => {
  let t: TestApp
  let base: string
  beforeAll(async () => {
    t = await buildTestApp({ redis: false })
    await t.app.listen({ host: '127.0.0.1', port: 0 })
    base = `http://127.0.0.1:${(t.app.server.address() as net.AddressInfo).port}`
  })
  afterAll(() => t.close())

  it('answers a follow-up request after an upload whose file was never read (mercurius#950)', async () => {
    const { multipartBody } = await import('./helpers/app')
    const { payload, contentType } = multipartBody({ query: UPLOAD, variables: { file: null } }, [
      { path: 'variables.file', filename: 'a.pdf', contentType: 'application/pdf', content: pdf(200 * 1024) },
    ])
    // No token: the resolver is refused before it reads the stream.
    const first = await fetch(`${base}/graphql`, { method: 'POST', headers: { 'content-type': contentType, 'graphql-require-preflight': '1' }, body: payload })
    const firstBody = (await first.json()) as { errors: { extensions: { code: string } }[] }
    expect(firstBody.errors[0]!.extensions.code).toBe('UNAUTHENTICATED')
    const second = await fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ viewer { id } }' }),
      signal: AbortSignal.timeout(5_000),
    })
    expect(await second.json()).toEqual({ data: { viewer: null } })
  })
})

async function download(t: TestApp, url: string): Promise<Buffer> {
  if (url.startsWith('http://groundwork.test/')) {
    const res = await t.app.inject({ method: 'GET', url: url.slice('http://groundwork.test'.length) })
    expect(res.statusCode).toBe(200)
    expect(res.headers['x-content-type-options']).toBe('nosniff')
    return res.rawPayload
  }
  const res = await fetch(url)
  expect(res.status).toBe(200)
  return Buffer.from(await res.arrayBuffer())
}

async function closedPort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}
