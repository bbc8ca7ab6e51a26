import http from 'node:http'
import type net from 'node:net'
import { PassThrough } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, multipartBody, type TestApp } from './helpers/app'

describe('logging', () => {
  let t: TestApp
  const lines: string[] = []
  beforeAll(async () => {
    const stream = new PassThrough()
    stream.on('data', (chunk: Buffer) => lines.push(...chunk.toString().split('\n').filter(Boolean)))
    t = await buildTestApp({ redis: false, logStream: stream, env: { LOG_LEVEL: 'info' } })
  })
  afterAll(() => t.close())

  it('logs each request with its id and redacts bearer tokens and signed-link signatures', async () => {
    const token = t.token('admin')
    const res = await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: `Bearer ${token}` }, payload: { query: '{ viewer { id } }' } })
    await t.app.inject({ method: 'GET', url: '/files/download?key=files%2Fx&exp=1&name=a&type=b&sig=SUPERSECRETSIG' })
    await t.app.inject({ method: 'GET', url: '/verify-email?token=SINGLEUSETOKEN' })
    const all = lines.join('\n')
    expect(res.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
    expect(all).toContain(res.headers['x-request-id'] as string)
    expect(all).not.toContain(token)
    expect(all).not.toContain('SUPERSECRETSIG')
    expect(all).not.toContain('SINGLEUSETOKEN')
    expect(all).toContain('sig=[redacted]')
  })
})

describe('graceful shutdown', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ redis: false })
  })

  it('lets an in-flight upload finish before closing', async () => {
    await t.app.listen({ host: '127.0.0.1', port: 0 })
    const { port } = t.app.server.address() as net.AddressInfo
    const content = Buffer.concat([Buffer.from('%PDF-1.7\n'), Buffer.alloc(512 * 1024, 1)])
    const { payload, contentType } = multipartBody(
      { query: 'mutation($file: Upload!) { uploadFile(file: $file) { __typename } }', variables: { file: null } },
      [{ path: 'variables.file', filename: 'slow.pdf', contentType: 'application/pdf', content }],
    )
    const response = new Promise<string>((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port, path: '/graphql', method: 'POST', headers: { 'content-type': contentType, 'content-length': payload.length, authorization: `Bearer ${t.token('user')}`, 'graphql-require-preflight': '1' } },
        (res) => {
          let body = ''
          res.on('data', (d) => (body += d))
          res.on('end', () => resolve(body))
        },
      )
      req.on('error', reject)
      // Half the body now, the rest after shutdown has begun.
      req.write(payload.subarray(0, payload.length / 2))
      setTimeout(() => req.end(payload.subarray(payload.length / 2)), 300)
    })
    await new Promise((r) => setTimeout(r, 100))
    const closing = t.close()
    expect(JSON.parse(await response)).toEqual({ data: { uploadFile: { __typename: 'UploadFileSuccess' } } })
    await closing
  })
})
