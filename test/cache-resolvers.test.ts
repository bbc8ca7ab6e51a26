/**
 * The cache in the service's own resolvers: the registered warmers (file metadata, published email
 * template versions), template version lookups and campaign stats snapshots. Two app instances share
 * PostgreSQL and Redis; "loads" is the cache's count of loader calls, i.e. database reads it made.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CampaignStatsPublisher, createPushGate } from '../src/services/campaigns/campaign-stats'
import { buildTestApp, uploadThroughGraphql, type TestApp } from './helpers/app'
import { campaignAction, createAudience, createCampaign, createPublishedTemplate, expectData, MARKETING_HTML } from './campaign-fixtures'

const UPLOAD = `mutation($file: Upload!) { uploadFile(file: $file) { __typename ... on UploadFileSuccess { file { id status } } ... on Error { message } } }`
const FILE = `query($id: ID!) { file(id: $id) { id status currentVersion { number } } }`
const TEMPLATE_VERSION = `query($id: ID!, $n: Int) { emailTemplate(id: $id) { latestVersion version(number: $n) { version subject } } }`

let a: TestApp
let b: TestApp
let admin: string

async function waitUntil(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await sleep(10)
  }
}

const loads = (t: TestApp) => t.app.services.cache.stats().loads

async function uploadPdf(t: TestApp): Promise<string> {
  const content = Buffer.concat([Buffer.from('%PDF-1.7\n'), Buffer.alloc(500, 7)])
  const res = await uploadThroughGraphql(t, t.token('user', 'alice'), UPLOAD, { file: null }, { filename: 'a.pdf', contentType: 'application/pdf', content })
  const upload = res.body.data?.uploadFile as { __typename: string; file?: { id: string; status: string } }
  if (!upload.file) throw new Error(`upload failed: ${JSON.stringify(res.body)}`)
  return upload.file.id
}

async function publishNewSubject(t: TestApp, id: string, subject: string): Promise<void> {
  expectData(await t.gql('mutation($id: ID!, $input: UpdateEmailTemplateInput!) { updateEmailTemplate(id: $id, input: $input) { __typename } }', { id, input: { subject } }, admin))
  const res = expectData(await t.gql<{ publishEmailTemplate: { __typename: string } }>('mutation($id: ID!) { publishEmailTemplate(id: $id) { __typename } }', { id }, admin))
  expect(res.publishEmailTemplate.__typename).toBe('EmailTemplateSuccess')
}

beforeAll(async () => {
  a = await buildTestApp()
  b = await buildTestApp({ database: a.database, redisPrefix: a.redisPrefix })
  admin = a.token('admin')
  await waitUntil(() => a.app.services.cache.stats().busResubscribes > 0 && b.app.services.cache.stats().busResubscribes > 0, 'both buses are subscribed')
})

afterAll(async () => {
  await b?.close()
  await a?.close()
})

describe('warmers registered by the app', () => {
  it('registers a file-metadata warmer and a published-template warmer', () => {
    const names = a.app.services.cache.warmerNames()
    expect(names).toEqual(expect.arrayContaining(['files.recent', 'email-templates.published']))
  })

  it('warmCache with no arguments puts file rows and published versions into Redis, and later reads hit the cache instead of the loaders', async () => {
    const fileId = await uploadPdf(a)
    await waitUntil(async () => {
      const res = await a.gql<{ file: { status: string } }>(FILE, { id: fileId }, a.token('user', 'alice'))
      return res.data.file.status === 'READY'
    }, 'the file is ready', 15_000)
    const templateId = await createPublishedTemplate(a, admin)
    const redis = a.app.redis!
    const prefix = `${a.redisPrefix}cache:`
    await redis.unlink(`${prefix}files:${fileId}`, `${prefix}email-templates:${templateId}:v1`)

    // Instance b has never read either of them.
    const res = await b.gql<{ warmCache: { __typename: string; result: { warmers: string[]; entries: number; failed: number } } }>(
      'mutation { warmCache { __typename ... on WarmCacheSuccess { result { warmers entries failed } } } }',
      {},
      b.token('admin'),
    )
    expect(res.errors).toBeUndefined()
    expect(res.data.warmCache.__typename).toBe('WarmCacheSuccess')
    expect(res.data.warmCache.result.warmers).toEqual(expect.arrayContaining(['files.recent', 'email-templates.published']))
    expect(res.data.warmCache.result.entries).toBeGreaterThanOrEqual(4)
    expect(await redis.exists(`${prefix}files:${fileId}`, `${prefix}files:${fileId}:v1`)).toBe(2)
    expect(await redis.exists(`${prefix}email-templates:${templateId}:v1`)).toBe(1)

    const hits = (ns: string) => b.app.services.cache.stats().namespaces.find((n) => n.namespace === ns)?.hits ?? 0
    const before = loads(b)
    const [fileHits, templateHits] = [hits('files'), hits('email-templates')]
    const file = await b.gql<{ file: { id: string; currentVersion: { number: number } } }>(FILE, { id: fileId }, b.token('user', 'alice'))
    expect(file.data.file).toMatchObject({ id: fileId, currentVersion: { number: 1 } })
    const version = await b.gql<{ emailTemplate: { version: { version: number } } }>(TEMPLATE_VERSION, { id: templateId, n: 1 }, b.token('admin'))
    expect(version.data.emailTemplate.version.version).toBe(1)
    expect(loads(b)).toBe(before)
    expect(hits('files')).toBeGreaterThanOrEqual(fileHits + 2)
    expect(hits('email-templates')).toBeGreaterThan(templateHits)
  })
})

describe('template version lookups', () => {
  it('serves a second read of a published version from the cache, and shows a newly published version afterwards', async () => {
    const id = await createPublishedTemplate(a, admin, { subject: 'First {{name}}' })
    const start = loads(a)
    const first = await a.gql<{ emailTemplate: { version: { subject: string } } }>(TEMPLATE_VERSION, { id, n: 1 }, admin)
    expect(first.data.emailTemplate.version.subject).toBe('First {{name}}')
    const afterFirst = loads(a)
    // The first read went through the cache's loader: the lookup is cached, not just uncounted.
    expect(afterFirst).toBe(start + 1)
    await a.gql(TEMPLATE_VERSION, { id, n: 1 }, admin)
    expect(loads(a)).toBe(afterFirst)
    // The other instance reads it from Redis, not the database.
    const before = loads(b)
    await b.gql(TEMPLATE_VERSION, { id, n: 1 }, admin)
    expect(loads(b)).toBe(before)

    await publishNewSubject(a, id, 'Second {{name}}')

    const latest = await b.gql<{ emailTemplate: { latestVersion: number; version: { version: number; subject: string } } }>(TEMPLATE_VERSION, { id }, admin)
    expect(latest.data.emailTemplate).toEqual({ latestVersion: 2, version: { version: 2, subject: 'Second {{name}}' } })
    // Publishing dropped the template's cached lookups on every instance: version 1 is read again once.
    const beforeReread = loads(b)
    expect((await b.gql<{ emailTemplate: { version: { subject: string } } }>(TEMPLATE_VERSION, { id, n: 1 }, admin)).data.emailTemplate.version.subject).toBe('First {{name}}')
    expect(loads(b)).toBe(beforeReread + 1)
  })

  it('caches lookups by version id too (a campaign\'s templateVersion)', async () => {
    const templateId = await createPublishedTemplate(a, admin, { html: MARKETING_HTML })
    const version = await a.app.services.emailTemplates.getVersion(templateId, 1)
    await a.app.services.emailTemplates.getVersionById(version.id)
    const before = loads(a)
    expect((await a.app.services.emailTemplates.getVersionById(version.id)).version).toBe(1)
    expect(loads(a)).toBe(before)
  })
})

describe('campaign stats snapshots (CampaignStatsPublisher with a cache)', () => {
  async function draftCampaign(): Promise<string> {
    const templateId = await createPublishedTemplate(a, admin)
    const audienceId = await createAudience(a, admin)
    return createCampaign(a, admin, { templateId, audienceIds: [audienceId] })
  }
  const publisherOn = (t: TestApp) =>
    new CampaignStatsPublisher({ db: t.app.db.db, publish: async () => {}, gate: createPushGate(null), cache: t.app.services.cache.namespace('campaign-stats-test') })

  it('serves a second read from the cache and shows a state change at once, on both instances', async () => {
    const id = await draftCampaign()
    const [onA, onB] = [publisherOn(a), publisherOn(b)]
    const start = loads(a)
    expect(await onA.snapshot(id)).toMatchObject({ status: 'draft' })
    expect(loads(a)).toBe(start + 1)
    expect(await onA.snapshot(id)).toMatchObject({ status: 'draft' })
    expect(loads(a)).toBe(start + 1)
    expect(await onB.snapshot(id)).toMatchObject({ status: 'draft' })

    expect((await campaignAction(a, admin, 'cancelCampaign', id)).campaign).toMatchObject({ status: 'CANCELLED' })
    await onA.stateChanged(id)

    expect(await onA.snapshot(id)).toMatchObject({ status: 'cancelled' })
    await waitUntil(async () => (await onB.snapshot(id))?.status === 'cancelled', 'instance b sees the cancelled campaign')
    onA.close()
    onB.close()
  })

  it('drops the cached snapshot when counters move and the publisher is told', async () => {
    const id = await draftCampaign()
    const publisher = publisherOn(a)
    expect(await publisher.snapshot(id)).toMatchObject({ total: 0, queued: 0 })
    const before = loads(a)
    expect(await publisher.snapshot(id)).toMatchObject({ total: 0 })
    expect(loads(a)).toBe(before)

    await a.app.db.db.execute(sql`insert into campaign_stats (campaign_id, total, queued) values (${id}, 5, 5)`)
    publisher.changed(id)
    publisher.close()

    await waitUntil(async () => (await publisher.snapshot(id))?.total === 5, 'the new counters are read')
    await waitUntil(async () => (await publisherOn(b).snapshot(id))?.total === 5, 'instance b reads the new counters')
    expect(await publisher.snapshot(id)).toMatchObject({ total: 5, queued: 5 })
  })
})

describe('CACHE_RESOLVERS=false', () => {
  it('reads file metadata from the database on every request and stores nothing in the cache', async () => {
    const off = await buildTestApp({ database: a.database, env: { CACHE_RESOLVERS: 'false' } })
    try {
      const fileId = await uploadPdf(off)
      const user = off.token('user', 'alice')
      await waitUntil(async () => (await off.gql<{ file: { status: string } }>(FILE, { id: fileId }, user)).data.file.status === 'READY', 'the file is ready', 15_000)
      const before = off.app.services.cache.stats()
      for (let i = 0; i < 3; i++) expect((await off.gql<{ file: { id: string } }>(FILE, { id: fileId }, user)).data.file.id).toBe(fileId)
      const after = off.app.services.cache.stats()
      expect(after.loads).toBe(before.loads)
      expect(after.sets).toBe(before.sets)
      expect(after.items).toBe(0)
    } finally {
      await off.close()
    }
  })
})
