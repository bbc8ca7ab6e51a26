/**
 * Addresses suppressed or unsubscribed after their row left the queue: a suppression only drops
 * queued rows not yet in a batch, so a failed row about to be retried is judged again first.
 */
import { sql } from 'drizzle-orm'
import { beforeEach, describe, expect, it } from 'vitest'
import type { TestApp } from './helpers/app'
import type { FakeResend } from './helpers/fake-resend'
import { addContacts, campaignAction, createAudience, createCampaign, expectData, getCampaign, useCampaignApp } from './campaign-fixtures'

let fake: FakeResend
let t: TestApp
let admin: string
let templateId: string
useCampaignApp({}, (app) => ({ fake, t, admin, templateId } = app))

async function sendTo(emails: string[][]): Promise<{ id: string; audiences: string[] }> {
  const audiences: string[] = []
  for (const list of emails) {
    const audienceId = await createAudience(t, admin)
    await addContacts(t, admin, audienceId, list.map((email) => ({ email })))
    audiences.push(audienceId)
  }
  const id = await createCampaign(t, admin, { templateId, audienceIds: audiences })
  const sent = await campaignAction(t, admin, 'sendCampaign', id)
  if (sent.__typename !== 'CampaignSuccess') throw new Error(JSON.stringify(sent))
  return { id, audiences }
}

async function suppress(...emails: string[]) {
  const res = await t.gql<{ suppressEmails: { __typename: string } }>(
    'mutation($emails: [String!]!) { suppressEmails(emails: $emails, reason: UNSUBSCRIBED) { __typename } }',
    { emails },
    admin,
  )
  expect(expectData(res).suppressEmails.__typename).not.toMatch(/Error/)
}

async function rows(campaignId: string) {
  const result = await t.app.db.db.execute<{ email: string; status: string; reason: string | null }>(sql`
    select email, status::text, reason from campaign_recipients where campaign_id = ${campaignId} order by email`)
  return result.rows
}

let seq = 0
/** Addresses of this test only: suppressions are global and outlive a test. */
let run = ''
beforeEach(() => {
  run = `t${++seq}`
})
const e = (name: string) => `${name}.${run}@example.com`

const sentTo = () => fake.sent.map((s) => (Array.isArray(s.to) ? s.to[0] : s.to))

describe('retryFailedRecipients', () => {
  it('marks a failed recipient suppressed since as suppressed instead of sending it again, and retries the others', async () => {
    const { id } = await sendTo([[e('gone'), e('stays')]])
    // Refused as a whole, then each half alone: both rows fail.
    fake.failNext(422, 3)
    await t.app.campaignDispatcher.drain()
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ failed: 2, sent: 0 })

    await suppress(e('gone'))
    fake.reset()
    const retried = await campaignAction(t, admin, 'retryFailedRecipients', id)
    expect(retried).toMatchObject({ __typename: 'CampaignSuccess', campaign: { status: 'SENDING', stats: { failed: 0, queued: 1, suppressed: 1 } } })
    await t.app.campaignDispatcher.drain()

    expect(sentTo()).toEqual([e('stays')])
    expect(await getCampaign(t, admin, id)).toMatchObject({ status: 'SENT', stats: { total: 2, sent: 1, failed: 0, queued: 0, suppressed: 1 } })
    expect(await rows(id)).toEqual([
      { email: e('gone'), status: 'suppressed', reason: 'unsubscribed' },
      { email: e('stays'), status: 'accepted', reason: null },
    ])
  })

  it('leaves a sent campaign sent when every failed recipient was suppressed since, and moves the counters', async () => {
    const { id } = await sendTo([[e('late')]])
    fake.failNext(422)
    await t.app.campaignDispatcher.drain()
    await suppress(e('late'))
    fake.reset()

    const retried = await campaignAction(t, admin, 'retryFailedRecipients', id)
    expect(retried).toMatchObject({ __typename: 'CampaignSuccess', campaign: { status: 'SENT' } })
    await t.app.campaignDispatcher.drain()
    expect(fake.sent).toHaveLength(0)
    // Read through the stats cache: the change must have dropped the cached snapshot.
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ failed: 0, queued: 0, suppressed: 1, sent: 0 })
    const round = await t.app.db.db.execute<{ retry_round: number }>(sql`select retry_round from campaigns where id = ${id}`)
    expect(Number(round.rows[0]!.retry_round)).toBe(0)
  })

  it("drops a failed recipient whose contacts in the campaign's audiences all unsubscribed (the audience scope), not one still subscribed in another", async () => {
    const { id, audiences } = await sendTo([[e('left'), e('both')], [e('both')]])
    fake.failNext(422, 3)
    await t.app.campaignDispatcher.drain()
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ failed: 2 })
    // What an `audience`-scoped unsubscribe from another campaign to the first audience leaves: contacts marked, no suppression row.
    await t.app.db.db.execute(sql`
      update contacts set status = 'unsubscribed' where audience_id = ${audiences[0]} and lower(email) in (${e('left')}, ${e('both')})`)
    fake.reset()

    await campaignAction(t, admin, 'retryFailedRecipients', id)
    await t.app.campaignDispatcher.drain()
    expect(sentTo()).toEqual([e('both')])
    expect(await rows(id)).toEqual([
      { email: e('both'), status: 'accepted', reason: null },
      { email: e('left'), status: 'suppressed', reason: 'unsubscribed' },
    ])
    expect((await getCampaign(t, admin, id)).stats).toMatchObject({ sent: 1, failed: 0, suppressed: 1, queued: 0 })
  })
})
