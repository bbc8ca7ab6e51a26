import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'
import { addContacts, campaignAction, createAudience, createCampaign, createPublishedTemplate, getCampaign } from './campaign-fixtures'

let t: TestApp

beforeAll(async () => {
  // Embedded mode: PGlite, no Redis, no RESEND_API_KEY, so mail goes to the .eml outbox.
  t = await buildTestApp({ postgres: false, redis: false, env: { CAMPAIGN_RATE_LIMIT_PER_SECOND: '0' } })
}, 120_000)
afterAll(() => t.close())

it('runs a whole campaign on PGlite through the outbox, with the unsubscribe headers in each .eml', async () => {
  const admin = t.token('admin')
  expect(t.app.mail.kind).toBe('outbox')
  const templateId = await createPublishedTemplate(t, admin)
  const audienceId = await createAudience(t, admin)
  await addContacts(t, admin, audienceId, [{ email: 'one@example.com', name: 'One' }, { email: 'two@example.com' }, { email: 'ONE@example.com' }])
  const id = await createCampaign(t, admin, { templateId, audienceIds: [audienceId] })
  await campaignAction(t, admin, 'sendCampaign', id)
  await t.app.campaignDispatcher.drain()

  expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { total: 2, sent: 2 } })
  const outbox = path.join(t.dataDir, 'outbox')
  const files = (await readdir(outbox)).filter((f) => f.endsWith('.eml'))
  expect(files).toHaveLength(2)
  const eml = (await Promise.all(files.map((f) => readFile(path.join(outbox, f), 'utf8')))).join('\n')
  expect(eml).toContain('List-Unsubscribe-Post: List-Unsubscribe=One-Click')
  expect(eml).toMatch(/List-Unsubscribe:\s+<http:\/\/groundwork\.test\/t\/u\//)
  expect(eml).toContain('Subject: News for One')
})
