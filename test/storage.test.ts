import { createHash } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDiskStorage, MIN_PART_BYTES } from '../src/infra/storage/disk'
import { createS3Storage } from '../src/infra/storage/s3'
import { createUrlSigner } from '../src/infra/storage/signed-url'
import { ObjectNotFoundError, type ObjectStorage } from '../src/infra/storage/types'
import { ServiceUnavailableError } from '../src/lib/errors'
import { startS3 } from './helpers/s3'

interface Subject {
  storage: ObjectStorage
  teardown(): Promise<void>
}

const signer = createUrlSigner('test-secret-that-is-long-enough-to-use')

const adapters: { name: string; start(): Promise<Subject> }[] = [
  {
    name: 'disk',
    async start() {
      const root = await mkdtemp(path.join(os.tmpdir(), 'gw-storage-'))
      const storage = createDiskStorage({ root, publicUrl: 'http://app.test', signer })
      return { storage, teardown: () => rm(root, { recursive: true, force: true }) }
    },
  },
  {
    name: 's3',
    async start() {
      const s3 = await startS3()
      const storage = createS3Storage(s3.config)
      return {
        storage,
        async teardown() {
          await storage.close()
          await s3.close()
        },
      }
    },
  },
]

let keySeq = 0
const newKey = (prefix = 'obj'): string => `test/${prefix}-${++keySeq}`

async function readAll(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of body) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

function md5(buf: Buffer): string {
  return createHash('md5').update(buf).digest('hex')
}

/** Deterministic bytes that differ at every offset, so a misplaced range or part shows up. */
function bytes(size: number, seed = 0): Buffer {
  const buf = Buffer.alloc(size)
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff
  return buf
}

function chunked(buf: Buffer, chunkSize: number): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < buf.length; i += chunkSize) yield buf.subarray(i, i + chunkSize)
    })(),
  )
}

describe.each(adapters)('$name storage', (adapter) => {
  let storage: ObjectStorage
  let subject: Subject

  beforeAll(async () => {
    subject = await adapter.start()
    storage = subject.storage
  })
  afterAll(async () => {
    await subject?.teardown()
  })

  it('answers the readiness check', async () => {
    await expect(storage.check()).resolves.toBeUndefined()
  })

  it('stores a buffer and returns its bytes, size and content type', async () => {
    const key = newKey()
    const data = Buffer.from('hello, storage')
    const put = await storage.put(key, data, { contentType: 'text/plain' })
    expect(put.size).toBe(data.length)

    const head = await storage.head(key)
    expect(head).toMatchObject({ key, size: data.length, contentType: 'text/plain' })
    expect(head?.etag).toMatch(/^[^"]+$/)
    expect(head?.lastModified).toBeInstanceOf(Date)

    const got = await storage.get(key)
    expect(got).toMatchObject({ size: data.length, totalSize: data.length, contentType: 'text/plain' })
    expect(await readAll(got.body)).toEqual(data)
  })

  it('replaces an object on a second put to the same key', async () => {
    const key = newKey()
    await storage.put(key, Buffer.from('first version'), { contentType: 'text/plain' })
    await storage.put(key, Buffer.from('v2'), { contentType: 'application/json' })
    const got = await storage.get(key)
    expect(got.contentType).toBe('application/json')
    expect((await readAll(got.body)).toString()).toBe('v2')
  })

  it('stores a stream of known length', async () => {
    const key = newKey()
    const data = bytes(200_000)
    const put = await storage.put(key, chunked(data, 16_384), { contentType: 'application/pdf', contentLength: data.length })
    expect(put.size).toBe(data.length)
    expect(md5(await readAll((await storage.get(key)).body))).toBe(md5(data))
  })

  it('stores a small stream of unknown length', async () => {
    const key = newKey()
    const data = bytes(70_000, 1)
    const put = await storage.put(key, chunked(data, 10_000), { contentType: 'image/png' })
    expect(put.size).toBe(data.length)
    expect(await storage.head(key)).toMatchObject({ size: data.length, contentType: 'image/png' })
    expect(md5(await readAll((await storage.get(key)).body))).toBe(md5(data))
  })

  it('stores a stream of unknown length larger than one upload part', async () => {
    const key = newKey()
    const data = bytes(9 * 1024 * 1024 + 123, 2)
    const put = await storage.put(key, chunked(data, 64 * 1024), { contentType: 'application/octet-stream' })
    expect(put.size).toBe(data.length)
    expect(await storage.head(key)).toMatchObject({ size: data.length, contentType: 'application/octet-stream' })
    expect(md5(await readAll((await storage.get(key)).body))).toBe(md5(data))
  })

  it.each([
    ['known', 300_000],
    ['unknown', undefined],
  ])('leaves no object behind when a stream of %s length fails midway', async (_label, contentLength) => {
    const key = newKey()
    const failure = new Error('client went away')
    const body = Readable.from(
      (async function* () {
        yield bytes(100_000)
        await new Promise((resolve) => setTimeout(resolve, 20))
        throw failure
      })(),
    )
    await expect(storage.put(key, body, { contentLength })).rejects.toBe(failure)
    expect(await storage.head(key)).toBeNull()
  })

  it('reads an inclusive byte range', async () => {
    const key = newKey()
    const data = bytes(1000)
    await storage.put(key, data, { contentType: 'application/octet-stream' })
    const got = await storage.get(key, { start: 10, end: 19 })
    expect(got).toMatchObject({ size: 10, totalSize: 1000 })
    expect(await readAll(got.body)).toEqual(data.subarray(10, 20))
  })

  it('clamps a range that runs past the end to the last byte', async () => {
    const key = newKey()
    const data = bytes(100)
    await storage.put(key, data)
    const got = await storage.get(key, { start: 90, end: 500 })
    expect(got).toMatchObject({ size: 10, totalSize: 100 })
    expect(await readAll(got.body)).toEqual(data.subarray(90))
  })

  it('rejects a range that starts past the end with a RangeError', async () => {
    const key = newKey()
    await storage.put(key, bytes(100))
    await expect(storage.get(key, { start: 100, end: 200 })).rejects.toBeInstanceOf(RangeError)
  })

  it('returns null from head and throws ObjectNotFoundError from get for a missing key', async () => {
    const key = newKey('missing')
    expect(await storage.head(key)).toBeNull()
    const err = await storage.get(key).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ObjectNotFoundError)
    expect((err as ObjectNotFoundError).key).toBe(key)
  })

  it('deletes an object, and deleting it again succeeds', async () => {
    const key = newKey()
    await storage.put(key, Buffer.from('bye'))
    await storage.delete(key)
    expect(await storage.head(key)).toBeNull()
    await expect(storage.delete(key)).resolves.toBeUndefined()
  })

  it('copies an object with its content type', async () => {
    const from = newKey('src')
    const to = newKey('dst')
    const data = bytes(5000, 3)
    await storage.put(from, data, { contentType: 'image/webp' })
    await storage.copy(from, to)
    const got = await storage.get(to)
    expect(got.contentType).toBe('image/webp')
    expect(await readAll(got.body)).toEqual(data)
    expect(await storage.head(from)).not.toBeNull()
  })

  it('throws ObjectNotFoundError when copying a missing key', async () => {
    await expect(storage.copy(newKey('missing'), newKey())).rejects.toBeInstanceOf(ObjectNotFoundError)
  })

  it('assembles a multipart upload from parts sent out of order, one of them replaced', async () => {
    const key = newKey('multi')
    const part1 = bytes(MIN_PART_BYTES, 4)
    const part2 = bytes(MIN_PART_BYTES, 5)
    const part3 = bytes(1234, 6)
    const { uploadId } = await storage.createMultipartUpload(key, { contentType: 'application/pdf' })

    const r3 = await storage.uploadPart(key, uploadId, 3, part3)
    const stale2 = await storage.uploadPart(key, uploadId, 2, bytes(MIN_PART_BYTES, 99))
    const r1 = await storage.uploadPart(key, uploadId, 1, chunked(part1, 256 * 1024), part1.length)
    // A retried part: the second upload wins, and only its ETag is accepted.
    const r2 = await storage.uploadPart(key, uploadId, 2, chunked(part2, 256 * 1024))
    expect(r2).toEqual({ etag: md5(part2), size: part2.length })
    expect(r2.etag).not.toBe(stale2.etag)
    expect(r3.size).toBe(part3.length)

    const done = await storage.completeMultipartUpload(key, uploadId, [
      { partNumber: 3, etag: r3.etag },
      { partNumber: 1, etag: r1.etag },
      { partNumber: 2, etag: r2.etag },
    ])
    const whole = Buffer.concat([part1, part2, part3])
    expect(done.size).toBe(whole.length)
    const got = await storage.get(key)
    expect(got.contentType).toBe('application/pdf')
    expect(md5(await readAll(got.body))).toBe(md5(whole))
    // Completed uploads are gone, as on S3.
    await expect(storage.uploadPart(key, uploadId, 4, Buffer.from('late'))).rejects.toBeInstanceOf(ObjectNotFoundError)
  })

  it('refuses to complete with the ETag of a part that was since replaced', async () => {
    const key = newKey('multi')
    const { uploadId } = await storage.createMultipartUpload(key)
    const stale = await storage.uploadPart(key, uploadId, 1, Buffer.from('old bytes'))
    await storage.uploadPart(key, uploadId, 1, Buffer.from('new bytes'))
    await expect(storage.completeMultipartUpload(key, uploadId, [{ partNumber: 1, etag: stale.etag }])).rejects.toThrow()
    expect(await storage.head(key)).toBeNull()
    await storage.abortMultipartUpload(key, uploadId)
  })

  it('refuses a non-final part smaller than the S3 minimum', async () => {
    const key = newKey('multi')
    const { uploadId } = await storage.createMultipartUpload(key)
    const a = await storage.uploadPart(key, uploadId, 1, Buffer.from('too small'))
    const b = await storage.uploadPart(key, uploadId, 2, Buffer.from('last'))
    await expect(
      storage.completeMultipartUpload(key, uploadId, [
        { partNumber: 1, etag: a.etag },
        { partNumber: 2, etag: b.etag },
      ]),
    ).rejects.toThrow()
    await storage.abortMultipartUpload(key, uploadId)
  })

  it('aborts a multipart upload, and aborting it again succeeds', async () => {
    const key = newKey('multi')
    const { uploadId } = await storage.createMultipartUpload(key)
    const part = await storage.uploadPart(key, uploadId, 1, Buffer.from('partial'))
    await storage.abortMultipartUpload(key, uploadId)
    await expect(storage.abortMultipartUpload(key, uploadId)).resolves.toBeUndefined()
    await expect(storage.completeMultipartUpload(key, uploadId, [{ partNumber: 1, etag: part.etag }])).rejects.toBeInstanceOf(
      ObjectNotFoundError,
    )
    expect(await storage.head(key)).toBeNull()
  })

  it.each(['../escape', '/absolute', 'a//b', 'a/../b', 'a/./b', '.hidden', 'trailing/', 'back\\slash', 'sp ace', ''])(
    'refuses the unsafe key %j in every operation',
    async (bad) => {
      const unsafe = /unsafe storage key/
      await expect(storage.put(bad, Buffer.from('x'))).rejects.toThrow(unsafe)
      await expect(storage.get(bad)).rejects.toThrow(unsafe)
      await expect(storage.head(bad)).rejects.toThrow(unsafe)
      await expect(storage.delete(bad)).rejects.toThrow(unsafe)
      await expect(storage.copy('safe/key', bad)).rejects.toThrow(unsafe)
      await expect(storage.copy(bad, 'safe/key')).rejects.toThrow(unsafe)
      await expect(storage.createMultipartUpload(bad)).rejects.toThrow(unsafe)
      await expect(
        storage.signedDownloadUrl(bad, { expiresInSeconds: 60, filename: 'x', contentType: 'text/plain' }),
      ).rejects.toThrow(unsafe)
    },
  )
})

describe('disk storage specifics', () => {
  let root: string
  let storage: ObjectStorage

  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'gw-disk-'))
    storage = createDiskStorage({ root, publicUrl: 'http://app.test/', signer })
  })
  afterAll(async () => {
    await rm(root, { recursive: true, force: true })
  })

  it('leaves no staging file behind when a put fails', async () => {
    const body = Readable.from(
      (async function* () {
        yield Buffer.from('partial')
        throw new Error('aborted')
      })(),
    )
    await expect(storage.put('fail/one', body)).rejects.toThrow('aborted')
    expect(await readdir(path.join(root, '.tmp'))).toEqual([])
  })

  it('refuses a stream whose length differs from the declared contentLength', async () => {
    await expect(storage.put('len/mismatch', Buffer.from('four'), { contentLength: 5 })).rejects.toThrow(/Expected 5 bytes/)
    expect(await storage.head('len/mismatch')).toBeNull()
  })

  it.each(['../../etc', 'ABCDEF', '0123456789abcdef0123456789abcdef/..', 'not-hex-at-all-not-hex-at-all-12'])(
    'refuses the upload id %j before touching the filesystem',
    async (uploadId) => {
      await expect(storage.uploadPart('k/ey', uploadId, 1, Buffer.from('x'))).rejects.toThrow(/upload id/)
      await expect(storage.abortMultipartUpload('k/ey', uploadId)).rejects.toThrow(/upload id/)
    },
  )

  it('does not accept an upload id under a different key', async () => {
    const { uploadId } = await storage.createMultipartUpload('owner/key')
    await expect(storage.uploadPart('other/key', uploadId, 1, Buffer.from('x'))).rejects.toBeInstanceOf(ObjectNotFoundError)
    await storage.abortMultipartUpload('owner/key', uploadId)
  })

  it('removes the part directory after completing an upload', async () => {
    const { uploadId } = await storage.createMultipartUpload('done/key')
    const part = await storage.uploadPart('done/key', uploadId, 1, Buffer.from('only part'))
    await storage.completeMultipartUpload('done/key', uploadId, [{ partNumber: 1, etag: part.etag }])
    expect(await readdir(path.join(root, '.multipart'))).not.toContain(uploadId)
  })

  it('signs a download link to this app carrying the key, name and type', async () => {
    await storage.put('dl/key', Buffer.from('x'))
    const url = new URL(await storage.signedDownloadUrl('dl/key', { expiresInSeconds: 60, filename: 'a b.pdf', contentType: 'application/pdf' }))
    expect(`${url.origin}${url.pathname}`).toBe('http://app.test/files/download')
    const verified = signer.verify(Object.fromEntries(url.searchParams))
    expect(verified).toEqual({ ok: true, params: { key: 'dl/key', name: 'a b.pdf', type: 'application/pdf' } })
  })

  it('fails the readiness check with ServiceUnavailableError when the root is not writable', async () => {
    const file = path.join(root, 'dl', 'key')
    const broken = createDiskStorage({ root: path.join(file, 'sub'), publicUrl: 'http://app.test', signer })
    await expect(broken.check()).rejects.toBeInstanceOf(ServiceUnavailableError)
  })
})

describe('s3 storage specifics', () => {
  it('presigns a GET that overrides content type and disposition and serves the bytes', async () => {
    const s3 = await startS3()
    const storage = createS3Storage(s3.config)
    try {
      await storage.put('files/report', Buffer.from('%PDF-1.7'), { contentType: 'application/pdf' })
      const url = new URL(
        await storage.signedDownloadUrl('files/report', { expiresInSeconds: 300, filename: 'résumé.pdf', contentType: 'application/pdf' }),
      )
      expect(url.searchParams.get('response-content-type')).toBe('application/pdf')
      expect(url.searchParams.get('response-content-disposition')).toBe(
        `attachment; filename="resume.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf`,
      )
      expect(url.searchParams.get('X-Amz-Expires')).toBe('300')
      const res = await fetch(url)
      expect(res.status).toBe(200)
      expect(await res.text()).toBe('%PDF-1.7')
    } finally {
      await storage.close()
      await s3.close()
    }
  })

  it('treats aborting an unknown upload as done', async () => {
    const s3 = await startS3()
    const storage = createS3Storage(s3.config)
    try {
      await expect(storage.abortMultipartUpload('files/x', 'no-such-upload')).resolves.toBeUndefined()
    } finally {
      await storage.close()
      await s3.close()
    }
  })
})

describe('s3 storage when the service is unreachable', () => {
  async function closedPort(): Promise<number> {
    const server = net.createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as net.AddressInfo
    await new Promise<void>((resolve) => server.close(() => resolve()))
    return port
  }

  const config = (port: number) => ({
    bucket: 'unreachable',
    endpoint: `http://127.0.0.1:${port}`,
    region: 'us-east-1',
    accessKeyId: 'test',
    secretAccessKey: 'test',
    forcePathStyle: true,
  })

  it('rejects every operation with ServiceUnavailableError when nothing listens on the port', async () => {
    const storage = createS3Storage(config(await closedPort()), { connectTimeoutMs: 500, requestTimeoutMs: 1000 })
    try {
      const results = await Promise.allSettled([
        storage.put('k/a', Buffer.from('x')),
        storage.put('k/b', chunked(bytes(1000), 100), { contentLength: 1000 }),
        storage.put('k/c', chunked(bytes(1000), 100)),
        storage.get('k/a'),
        storage.head('k/a'),
        storage.delete('k/a'),
        storage.copy('k/a', 'k/b'),
        storage.createMultipartUpload('k/a'),
        storage.uploadPart('k/a', 'some-upload', 1, Buffer.from('x')),
        storage.check(),
      ])
      for (const result of results) {
        expect(result.status).toBe('rejected')
        const err = (result as PromiseRejectedResult).reason as Error
        expect(err).toBeInstanceOf(ServiceUnavailableError)
        // Nothing about hosts, ports or the SDK reaches a client.
        expect(err.message).toBe('Storage is unavailable')
      }
    } finally {
      await storage.close()
    }
  })

  it('times out with ServiceUnavailableError when the service accepts connections but never answers', async () => {
    const sockets = new Set<net.Socket>()
    const server = net.createServer((socket) => {
      sockets.add(socket)
      socket.on('error', () => {})
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as net.AddressInfo
    const storage = createS3Storage(config(port), { connectTimeoutMs: 500, requestTimeoutMs: 300 })
    try {
      const started = Date.now()
      await expect(storage.head('k/a')).rejects.toBeInstanceOf(ServiceUnavailableError)
      await expect(storage.get('k/a')).rejects.toBeInstanceOf(ServiceUnavailableError)
      // A streamed put has no overall deadline (it moves at the uploader's pace) but still may not sit idle.
      await expect(storage.put('k/s', chunked(bytes(1000), 100), { contentLength: 1000 })).rejects.toBeInstanceOf(
        ServiceUnavailableError,
      )
      // Two attempts of 300 ms each per call, plus the SDK's retry delay: far below the test's own timeout.
      expect(Date.now() - started).toBeLessThan(8_000)
    } finally {
      await storage.close()
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })
})
