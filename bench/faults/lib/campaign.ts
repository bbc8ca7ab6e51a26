/**
 * Campaign helpers for the fault scripts: seed a campaign through the real GraphQL API (the test
 * fixtures), wait for it to finish, and tally what the fake Resend received per recipient.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { TestApp } from '../../../test/helpers/app'
import type { FakeResend } from '../../../test/helpers/fake-resend'
import { addContacts, campaignAction, createAudience, createCampaign, createPublishedTemplate, getCampaign } from '../../../test/campaign-fixtures'
import type { Scenario } from './scenario'

export interface SeededCampaign {
  id: string
  recipients: string[]
}

/** A published template, an audience of `count` contacts and a draft campaign to them. */
export async function seedCampaign(t: TestApp, admin: string, count: number, prefix: string): Promise<SeededCampaign> {
  const templateId = await createPublishedTemplate(t, admin)
  const audienceId = await createAudience(t, admin, `${prefix} audience`)
  const recipients = Array.from({ length: count }, (_, i) => `${prefix}${i}@example.com`)
  for (let i = 0; i < count; i += 1000) await addContacts(t, admin, audienceId, recipients.slice(i, i + 1000).map((email) => ({ email })))
  const id = await createCampaign(t, admin, { name: prefix, templateId, audienceIds: [audienceId] })
  return { id, recipients }
}

export async function sendCampaign(t: TestApp, admin: string, id: string): Promise<void> {
  const sent = await campaignAction(t, admin, 'sendCampaign', id)
  if (sent.__typename !== 'CampaignSuccess') throw new Error(`sendCampaign: ${JSON.stringify(sent)}`)
}

export type CampaignView = Awaited<ReturnType<typeof getCampaign>>

/** Polls until the campaign is SENT (or stops sending); `onPoll` sees every snapshot. */
export async function waitForCampaign(t: TestApp, admin: string, id: string, timeoutMs: number, onPoll: (c: CampaignView) => void = () => {}): Promise<CampaignView> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const campaign = await getCampaign(t, admin, id)
    onPoll(campaign)
    if (campaign.status !== 'SENDING' || performance.now() > deadline) return campaign
    await sleep(200)
  }
}

/** An onPoll for waitForCampaign that logs each fifth of the way, every status change, and every 10 s of a stall. */
export function progressLog(s: Scenario, name: string): (c: CampaignView) => void {
  let last = ''
  let loggedAt = 0
  return (c) => {
    const fifth = Math.floor((Number(c.stats.sent) / Math.max(1, Number(c.stats.total))) * 5)
    const key = `${c.status} ${fifth}`
    if (key === last && s.elapsed() - loggedAt < 10_000) return
    s.log(`${name}: ${c.status}, sent ${c.stats.sent}/${c.stats.total}, failed ${c.stats.failed}, queued ${c.stats.queued}`)
    last = key
    loggedAt = s.elapsed()
  }
}

export interface ProviderTally {
  /** Emails the provider accepted (replays of an idempotency key are not new emails). */
  accepted: number
  /** Recipients the provider accepted more than once: real duplicates. */
  duplicates: number
  /** Recipients never accepted. */
  missing: number
  /** Batch requests, refused and replayed ones included. */
  requests: number
  /** Recipients that went out under more than one idempotency key: a duplicate the provider could not catch. */
  underTwoKeys: number
  /** Requests that repeated an earlier request's key: retries and re-claims that the key made harmless. */
  replays: number
}

export function tallyProvider(fake: Pick<FakeResend, 'sent' | 'requests'>, recipients: readonly string[]): ProviderTally {
  const accepted = new Map<string, number>()
  for (const email of fake.sent) for (const to of [email.to].flat()) accepted.set(to, (accepted.get(to) ?? 0) + 1)
  const keysOf = new Map<string, Set<string>>()
  const batches = fake.requests.filter((r) => r.path === '/emails/batch' && Array.isArray(r.body))
  const seenKeys = new Set<string>()
  let replays = 0
  for (const request of batches) {
    const key = String(request.headers['idempotency-key'])
    if (seenKeys.has(key)) replays++
    seenKeys.add(key)
    for (const email of request.body as { to: string | string[] }[]) {
      for (const to of [email.to].flat()) keysOf.set(to, (keysOf.get(to) ?? new Set()).add(key))
    }
  }
  return {
    accepted: fake.sent.length,
    duplicates: [...accepted.values()].filter((n) => n > 1).length,
    missing: recipients.filter((r) => !accepted.has(r)).length,
    requests: batches.length,
    underTwoKeys: [...keysOf.values()].filter((keys) => keys.size > 1).length,
    replays,
  }
}

export function formatTally(t: ProviderTally): string {
  return `${t.accepted} accepted, ${t.duplicates} duplicates, ${t.missing} missing, ${t.underTwoKeys} under two keys; ${t.requests} batch requests, ${t.replays} replays of a key`
}
