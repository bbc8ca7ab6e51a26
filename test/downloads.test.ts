import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { downloadRoutes } from '../src/http/downloads'
import { createDiskStorage } from '../src/infra/storage/disk'
import { createUrlSigner } from '../src/infra/storage/signed-url'
import type { ObjectStorage } from '../src/infra/storage/types'
import { contentDisposition } from '../src/lib/content-disposition'

const signer = createUrlSigner('downloads-test-secret-0123456789abcdef')
const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex')
const PDF = Buffer.from('%PDF-1.7 0123456789 abcdefghijklmnopqrstuvwxyz')

let root: string
let storage: ObjectStorage
let app: FastifyInstance

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'gw-downloads-'))
  storage = createDiskStorage({ root, publicUrl: 'http://app.test', signer })
  await storage.put('files/image', PNG, { contentType: 'image/png' })
  await storage.put('files/doc', PDF, { contentType: 'application/pdf' })
  await storage.put('files/svg', Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>'), { contentType: 'image/svg+xml' })
  app = Fastify({ logger: false })
  await app.register(downloadRoutes, { storage, signer })
  await app.ready()
})

afterAll(async () => {
  await app?.close()
  await rm(root, { recursive: true, force: true })
})

async function linkFor(key: string, filename: string, contentType: string, expiresInSeconds = 600): Promise<string> {
  const url = new URL(await storage.signedDownloadUrl(key, { expiresInSeconds, filename, contentType }))
  return `${url.pathname}${url.search}`
}

function errorOf(res: { json(): unknown }): { message: string; code: string } {
  return (res.json() as { error: { message: string; code: string } }).error
}

describe('GET /files/download', () => {
  it('serves an image inline with the signed type and protective headers', async () => {
    const res = await app.inject({ method: 'GET', url: await linkFor('files/image', 'photo.png', 'image/png') })
    expect(res.statusCode).toBe(200)
    expect(res.rawPayload).toEqual(PNG)
    expect(res.headers).toMatchObject({
      'content-type': 'image/png',
      'content-disposition': `inline; filename="photo.png"; filename*=UTF-8''photo.png`,
      'x-content-type-options': 'nosniff',
      'content-security-policy': "default-src 'none'; sandbox",
      'accept-ranges': 'bytes',
      'content-length': String(PNG.length),
    })
    expect(res.headers['cache-control']).toMatch(/^private, max-age=(\d+)$/)
    expect(res.headers.etag).toMatch(/^"[0-9a-f]{32}"$/)
    expect(res.headers['last-modified']).toBeDefined()
  })

  it('sends a PDF as an attachment with an RFC 6266 filename* for a non-ASCII name', async () => {
    const res = await app.inject({ method: 'GET', url: await linkFor('files/doc', 'résumé 2024.pdf', 'application/pdf') })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toBe('application/pdf')
    expect(res.headers['content-disposition']).toBe(
      `attachment; filename="resume 2024.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9%202024.pdf`,
    )
    expect(res.rawPayload).toEqual(PDF)
  })

  it('sends SVG as an attachment because it can carry script', async () => {
    const res = await app.inject({ method: 'GET', url: await linkFor('files/svg', 'logo.svg', 'image/svg+xml') })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-disposition']).toMatch(/^attachment;/)
  })

  it('keeps the browser cache no longer than the link lives', async () => {
    const res = await app.inject({ method: 'GET', url: await linkFor('files/doc', 'a.pdf', 'application/pdf', 90) })
    const maxAge = Number(/max-age=(\d+)/.exec(String(res.headers['cache-control']))?.[1])
    expect(maxAge).toBeGreaterThan(80)
    expect(maxAge).toBeLessThanOrEqual(90)
  })

  it.each([
    ['bytes=0-3', 0, 3],
    ['bytes=10-19', 10, 19],
    ['bytes=40-', 40, PDF.length - 1],
    ['bytes=-5', PDF.length - 5, PDF.length - 1],
    ['bytes=30-9999', 30, PDF.length - 1],
    ['bytes=-9999', 0, PDF.length - 1],
  ])('answers %s with 206 and the matching Content-Range', async (range, start, end) => {
    const res = await app.inject({ method: 'GET', url: await linkFor('files/doc', 'a.pdf', 'application/pdf'), headers: { range } })
    expect(res.statusCode).toBe(206)
    expect(res.headers['content-range']).toBe(`bytes ${start}-${end}/${PDF.length}`)
    expect(res.headers['content-length']).toBe(String(end - start + 1))
    expect(res.rawPayload).toEqual(PDF.subarray(start, end + 1))
  })

  it.each([`bytes=${PDF.length}-`, `bytes=${PDF.length + 10}-${PDF.length + 20}`, 'bytes=-0'])(
    'returns 416 with Content-Range bytes */size for the unsatisfiable range %s',
    async (range) => {
      const res = await app.inject({ method: 'GET', url: await linkFor('files/doc', 'a.pdf', 'application/pdf'), headers: { range } })
      expect(res.statusCode).toBe(416)
      expect(res.headers['content-range']).toBe(`bytes */${PDF.length}`)
      expect(errorOf(res).code).toBe('RANGE_NOT_SATISFIABLE')
    },
  )

  it.each(['bytes=0-1,5-6', 'bytes=5-2', 'items=0-3', 'bytes=abc'])('ignores the Range %s and serves the whole file', async (range) => {
    const res = await app.inject({ method: 'GET', url: await linkFor('files/doc', 'a.pdf', 'application/pdf'), headers: { range } })
    expect(res.statusCode).toBe(200)
    expect(res.rawPayload).toEqual(PDF)
  })

  it('serves the whole file when If-Range names another version', async () => {
    const url = await linkFor('files/doc', 'a.pdf', 'application/pdf')
    const res = await app.inject({ method: 'GET', url, headers: { range: 'bytes=0-3', 'if-range': '"stale"' } })
    expect(res.statusCode).toBe(200)
    expect(res.rawPayload).toEqual(PDF)
    const etag = (await app.inject({ method: 'HEAD', url })).headers.etag as string
    const ranged = await app.inject({ method: 'GET', url, headers: { range: 'bytes=0-3', 'if-range': etag } })
    expect(ranged.statusCode).toBe(206)
  })

  it('returns 403 INVALID_SIGNATURE when the key was changed', async () => {
    const url = new URL(await storage.signedDownloadUrl('files/doc', { expiresInSeconds: 60, filename: 'a.pdf', contentType: 'application/pdf' }))
    url.searchParams.set('key', 'files/image')
    const res = await app.inject({ method: 'GET', url: `${url.pathname}${url.search}` })
    expect(res.statusCode).toBe(403)
    expect(res.headers['content-type']).toMatch(/^application\/json/)
    expect(errorOf(res)).toEqual({ code: 'INVALID_SIGNATURE', message: expect.any(String) })
  })

  it('returns 403 when the content type was changed to get HTML rendered', async () => {
    const url = new URL(await storage.signedDownloadUrl('files/doc', { expiresInSeconds: 60, filename: 'a.pdf', contentType: 'application/pdf' }))
    url.searchParams.set('type', 'text/html')
    const res = await app.inject({ method: 'GET', url: `${url.pathname}${url.search}` })
    expect(res.statusCode).toBe(403)
  })

  it.each([
    ['no signature', (q: URLSearchParams) => q.delete('sig')],
    ['a truncated signature', (q: URLSearchParams) => q.set('sig', q.get('sig')!.slice(0, -2))],
    ['a repeated parameter', (q: URLSearchParams) => q.append('key', 'files/image')],
    ['a later expiry', (q: URLSearchParams) => q.set('exp', String(Number(q.get('exp')) + 3600))],
  ])('returns 403 for a link with %s', async (_label, tamper) => {
    const url = new URL(await storage.signedDownloadUrl('files/doc', { expiresInSeconds: 60, filename: 'a.pdf', contentType: 'application/pdf' }))
    tamper(url.searchParams)
    const res = await app.inject({ method: 'GET', url: `${url.pathname}${url.search}` })
    expect(res.statusCode).toBe(403)
    expect(errorOf(res).code).toBe('INVALID_SIGNATURE')
  })

  it('returns 410 LINK_EXPIRED for an expired link', async () => {
    const query = signer.sign({ key: 'files/doc', name: 'a.pdf', type: 'application/pdf' }, Math.floor(Date.now() / 1000) - 1)
    const res = await app.inject({ method: 'GET', url: `/files/download?${query}` })
    expect(res.statusCode).toBe(410)
    expect(errorOf(res).code).toBe('LINK_EXPIRED')
  })

  it('returns 403 for a validly signed link that is not a download link', async () => {
    const query = signer.sign({ campaign: '1', recipient: '2' }, Math.floor(Date.now() / 1000) + 60)
    const res = await app.inject({ method: 'GET', url: `/files/download?${query}` })
    expect(res.statusCode).toBe(403)
  })

  it('returns 404 NOT_FOUND when the file is gone', async () => {
    await storage.put('files/temp', Buffer.from('soon gone'))
    const url = await linkFor('files/temp', 't.txt', 'text/plain')
    await storage.delete('files/temp')
    const res = await app.inject({ method: 'GET', url })
    expect(res.statusCode).toBe(404)
    expect(errorOf(res).code).toBe('NOT_FOUND')
    expect(res.headers['content-disposition']).toBeUndefined()
  })
})

describe('HEAD /files/download', () => {
  it('answers with the download headers and length but no body', async () => {
    const res = await app.inject({ method: 'HEAD', url: await linkFor('files/doc', 'a.pdf', 'application/pdf') })
    expect(res.statusCode).toBe(200)
    expect(res.rawPayload.length).toBe(0)
    expect(res.headers).toMatchObject({
      'content-type': 'application/pdf',
      'content-length': String(PDF.length),
      'accept-ranges': 'bytes',
      'x-content-type-options': 'nosniff',
    })
    expect(res.headers['content-disposition']).toMatch(/^attachment;/)
  })

  it('answers a ranged HEAD with 206 and the range length', async () => {
    const res = await app.inject({ method: 'HEAD', url: await linkFor('files/doc', 'a.pdf', 'application/pdf'), headers: { range: 'bytes=5-9' } })
    expect(res.statusCode).toBe(206)
    expect(res.headers['content-range']).toBe(`bytes 5-9/${PDF.length}`)
    expect(res.headers['content-length']).toBe('5')
    expect(res.rawPayload.length).toBe(0)
  })

  it('returns 403 for a tampered link', async () => {
    const url = new URL(await storage.signedDownloadUrl('files/doc', { expiresInSeconds: 60, filename: 'a.pdf', contentType: 'application/pdf' }))
    url.searchParams.set('name', 'b.pdf')
    const res = await app.inject({ method: 'HEAD', url: `${url.pathname}${url.search}` })
    expect(res.statusCode).toBe(403)
  })
})

describe('contentDisposition', () => {
  it('keeps quotes, backslashes, percent signs and control characters out of the ASCII fallback', () => {
    expect(contentDisposition('a"b\\c%41\r\nd.txt', 'attachment')).toBe(
      `attachment; filename="a_b_c_41d.txt"; filename*=UTF-8''a%22b%5Cc%2541d.txt`,
    )
  })

  it("percent-encodes the characters encodeURIComponent leaves alone but RFC 8187 does not allow: '()*", () => {
    expect(contentDisposition("it's (final)*.pdf", 'inline')).toBe(
      `inline; filename="it's (final)*.pdf"; filename*=UTF-8''it%27s%20%28final%29%2A.pdf`,
    )
  })

  it('replaces characters with no ASCII form and falls back to "download" for an empty name', () => {
    expect(contentDisposition('報告.pdf', 'attachment')).toBe(`attachment; filename="__.pdf"; filename*=UTF-8''%E5%A0%B1%E5%91%8A.pdf`)
    expect(contentDisposition('\u0000 ', 'attachment')).toBe(`attachment; filename="download"; filename*=UTF-8''download`)
  })

  it('survives a lone surrogate instead of throwing', () => {
    expect(contentDisposition('a\uD800b', 'attachment')).toBe(`attachment; filename="a_b"; filename*=UTF-8''a%EF%BF%BDb`)
  })
})

describe('createUrlSigner', () => {
  it('refuses to sign the reserved names exp and sig', () => {
    expect(() => signer.sign({ exp: '1' }, 10)).toThrow(/reserved/)
    expect(() => signer.sign({ sig: '1' }, 10)).toThrow(/reserved/)
  })

  it('reports a wrong signature on an expired link as invalid, not expired', () => {
    const query = Object.fromEntries(signer.sign({ a: 'b' }, 1))
    expect(signer.verify(query)).toEqual({ ok: false, reason: 'expired' })
    expect(signer.verify({ ...query, a: 'c' })).toEqual({ ok: false, reason: 'invalid' })
  })

  it('does not accept a link signed with another secret', () => {
    const other = createUrlSigner('another-secret-0123456789abcdef0123')
    const query = Object.fromEntries(other.sign({ a: 'b' }, Math.floor(Date.now() / 1000) + 60))
    expect(signer.verify(query)).toEqual({ ok: false, reason: 'invalid' })
  })

  it('binds names to values, so moving characters between them breaks the signature', () => {
    const exp = Math.floor(Date.now() / 1000) + 60
    const query = Object.fromEntries(signer.sign({ ab: 'c' }, exp))
    const { ab: _ab, ...rest } = query
    expect(signer.verify({ ...rest, a: 'bc' })).toEqual({ ok: false, reason: 'invalid' })
    expect(signer.verify(query)).toEqual({ ok: true, params: { ab: 'c' } })
  })
})
