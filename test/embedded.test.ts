import { spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, uploadThroughGraphql, type TestApp } from './helpers/app'

/** The defaults a fresh clone runs on: PGlite, in-memory cache, disk storage, .eml outbox. */
describe('embedded mode', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ postgres: false, redis: false })
  })
  afterAll(() => t.close())

  it('reports its embedded parts as ready', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/readyz' })
    expect(res.json()).toMatchObject({
      status: 'ready',
      checks: { database: { status: 'up', driver: 'pglite' }, redis: { status: 'disabled' }, storage: { status: 'up', kind: 'disk' }, mail: { status: 'up', kind: 'outbox' } },
    })
    expect(t.app.services.cache.stats().backend).toBe('memory')
  })

  it('writes transactional mail to the outbox as .eml files', async () => {
    const res = await t.gql<{ sendWelcomeEmail: { email: { status: string; providerId: string } } }>(
      'mutation($input: WelcomeEmailInput!) { sendWelcomeEmail(input: $input) { ... on SendEmailSuccess { email { status providerId } } } }',
      { input: { user: { id: '1', email: 'ada@example.com', name: 'Ada' } } },
      t.token('service'),
    )
    expect(res.data.sendWelcomeEmail.email.status).toBe('SENT')
    const files = await readdir(path.join(t.dataDir, 'outbox'))
    const eml = files.find((f) => f.endsWith('.eml'))
    expect(eml).toBeDefined()
    const text = await readFile(path.join(t.dataDir, 'outbox', eml!), 'utf8')
    expect(text).toMatch(/^To: ada@example\.com\r$/m)
    expect(text).toContain(`Message-ID: <${res.data.sendWelcomeEmail.email.providerId}>`)
  })

  it('uploads to local disk and serves the signed download URL', async () => {
    const content = Buffer.concat([Buffer.from('%PDF-1.7\n'), Buffer.alloc(4096, 7)])
    const res = await uploadThroughGraphql(
      t,
      t.token('user', 'zoe'),
      'mutation($file: Upload!) { uploadFile(file: $file) { ... on UploadFileSuccess { file { url } } } }',
      { file: null },
      { filename: 'résumé.pdf', contentType: 'application/pdf', content },
    )
    const url = (res.body.data as { uploadFile: { file: { url: string } } }).uploadFile.file.url
    const dl = await t.app.inject({ method: 'GET', url: url.replace('http://groundwork.test', '') })
    expect(dl.statusCode).toBe(200)
    expect(dl.headers['content-disposition']).toContain("filename*=UTF-8''r%C3%A9sum%C3%A9.pdf")
    expect(dl.rawPayload.equals(content)).toBe(true)
  })
})

describe('npm start on a fresh data directory', () => {
  let dataDir: string
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'gw-start-'))
  })
  afterAll(() => rm(dataDir, { recursive: true, force: true }))

  it('serves /graphql and GraphiQL with no configuration at all', async () => {
    const port = 40_000 + Math.floor(Math.random() * 20_000)
    const env = { PATH: process.env.PATH, HOME: process.env.HOME, DATA_DIR: dataDir, PORT: String(port), LOG_LEVEL: 'warn' }
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: path.resolve(import.meta.dirname, '..'), env, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (d) => (output += d))
    child.stderr.on('data', (d) => (output += d))
    try {
      const base = `http://127.0.0.1:${port}`
      let health: Response | undefined
      for (let i = 0; i < 100 && !health; i++) {
        health = await fetch(`${base}/healthz`).catch(() => undefined)
        if (!health) await new Promise((r) => setTimeout(r, 200))
      }
      expect(health?.status, output).toBe(200)
      const gql = await fetch(`${base}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ viewer { id } }' }) })
      expect(await gql.json()).toEqual({ data: { viewer: null } })
      expect((await fetch(`${base}/graphiql`)).status).toBe(200)
    } finally {
      child.kill('SIGTERM')
      await new Promise((r) => child.once('exit', r))
    }
  })
})
