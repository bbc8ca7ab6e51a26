import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EventType } from '../src/services/tracking/event-types'
import {
  campaignStats,
  countEvents,
  postWebhook,
  recipientStatus,
  resendEvent,
  sendTrackedCampaign,
  signedWebhook,
  startTrackingApp,
  type SentRecipient,
  type TrackingContext,
} from './tracking-fixtures'

let ctx: TrackingContext

beforeAll(async () => {
  ctx = await startTrackingApp({ CAMPAIGN_PAUSE_MIN_SENT: '1000' })
})
afterAll(async () => {
  await ctx.t.close()
  await ctx.fake.close()
})

const drain = () => ctx.t.app.services.tracking.webhooks.processor.drain()

async function webhookRows(): Promise<number> {
  const rows = await ctx.t.app.db.db.execute<{ n: string }>(sql`select count(*) as n from webhook_events`)
  return Number(rows.rows[0]!.n)
}

async function suppression(email: string): Promise<string | null> {
  const rows = await ctx.t.app.db.db.execute<{ reason: string }>(sql`select reason from suppressions where email = ${email}`)
  return rows.rows[0]?.reason ?? null
}

describe('POST /webhooks/resend: verification', () => {
  it('accepts a signed event, answers before applying it, and applies it from the stored row', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['wh-delivered@example.com'])
    const res = await postWebhook(ctx.t, resendEvent('email.delivered', recipients[0]!, campaignId))
    expect(res).toMatchObject({ statusCode: 200, body: { status: 'accepted' } })
    await drain()
    expect(await recipientStatus(ctx.t, recipients[0]!.id)).toBe('delivered')
    expect(await campaignStats(ctx, campaignId)).toMatchObject({ sent: 1, delivered: 1, deliveryRate: 1 })
    expect(await countEvents(ctx.t, campaignId, EventType.delivered)).toBe(1)
  })

  it('refuses a bad signature, a stale or future timestamp and missing headers with 401, storing nothing', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['wh-forged@example.com'])
    const event = resendEvent('email.bounced', recipients[0]!, campaignId, { bounce: { type: 'Permanent', subType: 'General', message: 'x' } })
    const before = await webhookRows()
    const other = `whsec_${Buffer.from('some-other-secret-entirely-0000').toString('base64')}`
    const now = Math.floor(Date.now() / 1000)

    expect((await postWebhook(ctx.t, event, { secret: other })).statusCode).toBe(401)
    expect((await postWebhook(ctx.t, event, { timestamp: now - 6 * 60 })).statusCode).toBe(401)
    expect((await postWebhook(ctx.t, event, { timestamp: now + 6 * 60 })).statusCode).toBe(401)
    // Signed for one body, sent with another: the signature covers the raw bytes.
    const signed = signedWebhook(event)
    const tampered = signed.body.replace('Permanent', 'Transient')
    expect((await ctx.t.app.inject({ method: 'POST', url: '/webhooks/resend', headers: signed.headers, payload: tampered })).statusCode).toBe(401)
    // Same JSON, re-serialised with other whitespace: not the bytes that were signed.
    const reformatted = JSON.stringify(JSON.parse(signed.body), null, 2)
    expect((await ctx.t.app.inject({ method: 'POST', url: '/webhooks/resend', headers: signed.headers, payload: reformatted })).statusCode).toBe(401)
    const { 'svix-signature': _dropped, ...unsigned } = signed.headers
    expect((await ctx.t.app.inject({ method: 'POST', url: '/webhooks/resend', headers: unsigned, payload: signed.body })).statusCode).toBe(401)

    expect(await webhookRows()).toBe(before)
    await drain()
    expect(await recipientStatus(ctx.t, recipients[0]!.id)).toBe('accepted')
    expect(await suppression('wh-forged@example.com')).toBeNull()
  })

  it('de-duplicates on svix-id: a replay is acknowledged and applied once', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['wh-replay@example.com'])
    const event = resendEvent('email.delivery_delayed', recipients[0]!, campaignId)
    const first = await postWebhook(ctx.t, event, { svixId: 'msg_replayed_1' })
    const replay = await postWebhook(ctx.t, event, { svixId: 'msg_replayed_1' })
    expect(first.body.status).toBe('accepted')
    expect(replay).toMatchObject({ statusCode: 200, body: { status: 'duplicate' } })
    await drain()
    expect(await campaignStats(ctx, campaignId)).toMatchObject({ deliveryDelays: 1 })
  })

  it('answers 400 to a signed body that is not JSON or has no email id, and 200 "ignored" to event types it does not use', async () => {
    const before = await webhookRows()
    const notJson = await postWebhook(ctx.t, '{"type": "email.delivered", "data": {')
    expect(notJson).toMatchObject({ statusCode: 400, body: { error: { code: 'WEBHOOK_MALFORMED' } } })
    expect((await postWebhook(ctx.t, { type: 'email.delivered', data: {} })).statusCode).toBe(400)
    expect((await postWebhook(ctx.t, [1, 2, 3])).statusCode).toBe(400)

    for (const type of ['contact.created', 'domain.updated', 'email.received', 'email.something_new', 'email.sent']) {
      const res = await postWebhook(ctx.t, { type, created_at: new Date().toISOString(), data: { email_id: 'x', id: 'y' } })
      expect(res, type).toMatchObject({ statusCode: 200, body: { status: 'ignored' } })
    }
    expect(await webhookRows()).toBe(before)
  })

  it('answers 404 when no webhook secret is configured', async () => {
    const bare = await startTrackingApp({ RESEND_WEBHOOK_SECRET: '' })
    try {
      const res = await postWebhook(bare.t, { type: 'email.delivered', data: { email_id: 'x' } })
      expect(res.statusCode).toBe(404)
    } finally {
      await bare.t.close()
      await bare.fake.close()
    }
  })
})

describe('POST /webhooks/resend: events', () => {
  it('suppresses a hard bounce and a complaint, counts a soft bounce without suppressing, and records failures', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['hard@example.com', 'soft@example.com', 'spam@example.com', 'failed@example.com', 'blocked@example.com'])
    const [hard, soft, spam, failed, blocked] = recipients as [SentRecipient, SentRecipient, SentRecipient, SentRecipient, SentRecipient]
    await postWebhook(ctx.t, resendEvent('email.bounced', hard, campaignId, { bounce: { type: 'Permanent', subType: 'Suppressed', message: 'mailbox does not exist' } }))
    await postWebhook(ctx.t, resendEvent('email.bounced', soft, campaignId, { bounce: { type: 'Transient', subType: 'MailboxFull', message: 'full' } }))
    await postWebhook(ctx.t, resendEvent('email.delivered', spam, campaignId))
    await postWebhook(ctx.t, resendEvent('email.complained', spam, campaignId))
    await postWebhook(ctx.t, resendEvent('email.failed', failed, campaignId, { failed: { reason: 'reached_daily_quota' } }))
    await postWebhook(ctx.t, resendEvent('email.suppressed', blocked, campaignId, { suppressed: { type: 'OnAccountSuppressionList', message: 'previously bounced' } }))
    await drain()

    expect(await recipientStatus(ctx.t, hard.id)).toBe('bounced')
    expect(await recipientStatus(ctx.t, soft.id)).toBe('accepted')
    expect(await recipientStatus(ctx.t, spam.id)).toBe('complained')
    expect(await recipientStatus(ctx.t, failed.id)).toBe('failed')
    expect(await recipientStatus(ctx.t, blocked.id)).toBe('suppressed')
    expect(await suppression('hard@example.com')).toBe('bounced')
    expect(await suppression('spam@example.com')).toBe('complained')
    expect(await suppression('blocked@example.com')).toBe('bounced')
    expect(await suppression('soft@example.com')).toBeNull()
    expect(await suppression('failed@example.com')).toBeNull()
    // Failed and suppressed after acceptance leave `sent`, so total = queued + sent + failed + suppressed still holds.
    expect(await campaignStats(ctx, campaignId)).toMatchObject({
      total: 5, sent: 3, delivered: 1, bounced: 1, complained: 1, failed: 1, suppressed: 1, softBounces: 1, bounceRate: 0.3333, complaintRate: 0.3333,
    })
    const reason = await ctx.t.app.db.db.execute<{ reason: string }>(sql`select reason from campaign_recipients where id = ${hard.id}`)
    expect(reason.rows[0]!.reason).toBe('Permanent: Suppressed: mailbox does not exist')
  })

  it('counts provider-tracked opens and clicks, a scanner user agent as machine', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['provider-open@example.com'])
    const r = recipients[0]!
    // Clicks seconds after the send would all be a scanner's.
    await ctx.t.app.db.db.execute(sql`update campaign_recipients set sent_at = now() - interval '1 hour' where id = ${r.id}`)
    await postWebhook(ctx.t, resendEvent('email.opened', r, campaignId))
    await postWebhook(ctx.t, resendEvent('email.clicked', r, campaignId, { click: { link: 'https://shop.example.com/', userAgent: 'Mimecast URL Protect', ipAddress: '10.0.0.1', timestamp: new Date().toISOString() } }))
    await postWebhook(ctx.t, resendEvent('email.clicked', r, campaignId, { click: { link: 'https://shop.example.com/', userAgent: 'Mozilla/5.0 (Macintosh) Safari/605', ipAddress: '10.0.0.2', timestamp: new Date().toISOString() } }))
    await drain()
    const stats = await campaignStats(ctx, campaignId)
    expect(stats.opens).toMatchObject({ total: 1, uniqueHuman: 1 })
    expect(stats.clicks).toEqual({ total: 2, human: 1, machine: 1, unique: 1, uniqueHuman: 1 })
  })

  it('finds the recipient by its tags when the event overtakes the send, and applies it once the send is recorded', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['overtaken@example.com'])
    const r = recipients[0]!
    // As if the provider's webhook came before our batch was recorded.
    await ctx.t.app.db.db.execute(sql`update campaign_recipients set status = 'sending', provider_id = null where id = ${r.id}`)
    const res = await postWebhook(ctx.t, resendEvent('email.delivered', r, campaignId))
    expect(res.body.status).toBe('accepted')
    await drain()
    expect(await recipientStatus(ctx.t, r.id)).toBe('sending')
    const pending = await ctx.t.app.db.db.execute<{ status: string; last_error: string }>(sql`select status, last_error from webhook_events where svix_id = ${res.svixId}`)
    expect(pending.rows[0]).toEqual({ status: 'pending', last_error: 'The send is not recorded yet' })

    await ctx.t.app.db.db.execute(sql`update campaign_recipients set status = 'accepted', provider_id = ${r.providerId} where id = ${r.id}`)
    // The retry's time has come.
    await ctx.t.app.db.db.execute(sql`update webhook_events set next_attempt_at = now() where svix_id = ${res.svixId}`)
    await drain()
    expect(await recipientStatus(ctx.t, r.id)).toBe('delivered')
  })

  it('ignores events of mail that is not a campaign’s, but still suppresses a hard-bounced address', async () => {
    const bounce = await postWebhook(ctx.t, resendEvent('email.bounced', { providerId: 'transactional-1', email: 'Typo@Example.com' }, null, { bounce: { type: 'Permanent', subType: 'General', message: 'no such user' } }))
    const delivered = await postWebhook(ctx.t, resendEvent('email.delivered', { providerId: 'transactional-2', email: 'fine@example.com' }, null))
    await drain()
    const rows = await ctx.t.app.db.db.execute<{ svix_id: string; status: string }>(sql`select svix_id, status from webhook_events where svix_id in (${bounce.svixId}, ${delivered.svixId})`)
    expect(Object.fromEntries(rows.rows.map((r) => [r.svix_id, r.status]))).toEqual({ [bounce.svixId]: 'done', [delivered.svixId]: 'ignored' })
    expect(await suppression('typo@example.com')).toBe('bounced')
  })
})

describe('ordering', () => {
  const SEQUENCE = ['email.delivered', 'email.bounced', 'email.delivered', 'email.complained', 'email.delivery_delayed', 'email.delivered', 'email.failed']

  function shuffled<T>(items: T[], seed: number): T[] {
    const out = [...items]
    let s = seed
    for (let i = out.length - 1; i > 0; i--) {
      s = (s * 1103515245 + 12345) % 2 ** 31
      const j = s % (i + 1)
      ;[out[i], out[j]] = [out[j]!, out[i]!]
    }
    return out
  }

  it('ends in the same state and the same counters whatever the order and repetition of the same events', async () => {
    const emails = Array.from({ length: 8 }, (_, i) => `order${i}@example.com`)
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, emails)
    // Every recipient gets the same events, each in another order, some repeated.
    for (const [i, r] of recipients.entries()) {
      const events = shuffled([...SEQUENCE, ...SEQUENCE.slice(0, i % 4)], i + 1)
      for (const type of events) {
        const data = type === 'email.bounced' ? { bounce: { type: 'Permanent', subType: 'General', message: 'gone' } } : type === 'email.failed' ? { failed: { reason: 'x' } } : {}
        expect((await postWebhook(ctx.t, resendEvent(type, r, campaignId, data))).statusCode).toBe(200)
      }
      // Half of them processed one by one, half all at once.
      if (i % 2 === 0) await drain()
    }
    await drain()
    const states = await Promise.all(recipients.map((r) => recipientStatus(ctx.t, r.id)))
    expect(new Set(states)).toEqual(new Set(['complained']))
    // A complaint implies delivery; nothing else is left counted.
    expect(await campaignStats(ctx, campaignId)).toMatchObject({ total: 8, sent: 8, delivered: 8, complained: 8, bounced: 0, failed: 0, suppressed: 0 })
  })

  it('never lets a late delivered override a bounce, and a complaint never goes back to delivered', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['late1@example.com', 'late2@example.com'])
    const [a, b] = recipients as [SentRecipient, SentRecipient]
    for (const type of ['email.bounced', 'email.delivered', 'email.delivered']) {
      await postWebhook(ctx.t, resendEvent(type, a, campaignId, { bounce: { type: 'Permanent', subType: 'General', message: 'gone' } }))
      await drain()
    }
    for (const type of ['email.delivered', 'email.complained', 'email.delivered']) {
      await postWebhook(ctx.t, resendEvent(type, b, campaignId))
      await drain()
    }
    expect(await recipientStatus(ctx.t, a.id)).toBe('bounced')
    expect(await recipientStatus(ctx.t, b.id)).toBe('complained')
    expect(await campaignStats(ctx, campaignId)).toMatchObject({ sent: 2, delivered: 1, bounced: 1, complained: 1 })
  })
})

describe('batches', () => {
  type Within = (tx: unknown, outcomes: { status: string }[]) => Promise<void>
  type ApplyMany = (items: unknown[], within: Within) => Promise<{ status: string }[]>
  const processor = () => ctx.t.app.services.tracking.webhooks.processor as unknown as { kick?: () => void; deps: { feedback: { applyDeliveryEvents: ApplyMany } } }

  /**
   * Runs `post` with the processor's kicks held back (the route kicks a drain after each event), so one
   * drain then claims every row; `wrap` replaces applyDeliveryEvents for that drain.
   */
  async function heldBack(post: () => Promise<void>, wrap: (original: ApplyMany) => ApplyMany): Promise<void> {
    const p = processor()
    const original = p.deps.feedback.applyDeliveryEvents
    p.kick = () => {}
    try {
      await post()
      p.deps.feedback.applyDeliveryEvents = wrap(original)
      await drain()
    } finally {
      p.deps.feedback.applyDeliveryEvents = original
      delete p.kick
    }
  }

  async function webhookStatuses(svixIds: string[]): Promise<string[]> {
    const rows = await ctx.t.app.db.db.execute<{ svix_id: string; status: string }>(sql`select svix_id, status from webhook_events where svix_id = any(${sql.param(svixIds)}::text[])`)
    const byId = new Map(rows.rows.map((r) => [r.svix_id, r.status]))
    return svixIds.map((id) => byId.get(id)!)
  }

  async function rollupCount(campaignId: string, type: number): Promise<{ count: number; uniques: number }> {
    const rows = await ctx.t.app.db.db.execute<{ count: string; uniques: string }>(sql`
      select coalesce(sum(count), 0) as count, coalesce(sum(uniques), 0) as uniques from campaign_event_rollups where campaign_id = ${campaignId} and type = ${type}`)
    return { count: Number(rows.rows[0]!.count), uniques: Number(rows.rows[0]!.uniques) }
  }

  it('applies a claim of delivered and failed events in one transaction, with the state, counters, raw events and retries of one by one', async () => {
    const emails = Array.from({ length: 12 }, (_, i) => `batch${i}@example.com`)
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, emails)
    const overtaken = recipients[11]!
    // This one's send is not recorded yet: its event goes one by one, and waits.
    await ctx.t.app.db.db.execute(sql`update campaign_recipients set status = 'sending', provider_id = null where id = ${overtaken.id}`)
    const svixIds: string[] = []
    const post = async (type: string, r: SentRecipient | { providerId: string; email: string }, campaign: string | null, data: Record<string, unknown> = {}) => {
      const res = await postWebhook(ctx.t, resendEvent(type, r, campaign, data))
      expect(res.statusCode).toBe(200)
      svixIds.push(res.svixId)
    }
    // What each batch settled (a batch that fails falls back to one by one, with the same end state).
    const batches: string[][] = []
    await heldBack(
      async () => {
        for (const r of recipients) await post('email.delivered', r, campaignId)
        await post('email.failed', recipients[0]!, campaignId, { failed: { reason: 'reached_daily_quota' } })
        await post('email.failed', recipients[1]!, campaignId, { failed: { reason: 'reached_daily_quota' } })
        // The same event again under another svix id: no state change, still a raw event.
        await post('email.delivered', recipients[2]!, campaignId)
        // Mail that is no campaign's.
        await post('email.delivered', { providerId: 'transactional-batch', email: 'someone@example.com' }, null)
      },
      (original) => async (items, within) => {
        const outcomes = await original(items, within)
        batches.push(outcomes.map((o) => o.status))
        return outcomes
      },
    )
    // Every event with a provider id went in the one batch; the overtaken and the transactional one
    // matched no recipient by it and were then tried one by one.
    expect(batches).toEqual([[...Array(11).fill('changed'), 'unknown', 'changed', 'changed', 'unchanged', 'unknown']])

    expect(await recipientStatus(ctx.t, recipients[0]!.id)).toBe('failed')
    expect(await recipientStatus(ctx.t, recipients[2]!.id)).toBe('delivered')
    expect(await recipientStatus(ctx.t, overtaken.id)).toBe('sending')
    // 12 accepted (the overtaken one's counters were left as sent), 2 of them failed after all.
    expect(await campaignStats(ctx, campaignId)).toMatchObject({ sent: 10, delivered: 9, failed: 2, bounced: 0 })
    expect(await countEvents(ctx.t, campaignId, EventType.delivered)).toBe(12)
    expect(await countEvents(ctx.t, campaignId, EventType.failed)).toBe(2)
    // Rollups: every raw event counted, a unique only where it changed the state.
    expect(await rollupCount(campaignId, EventType.delivered)).toEqual({ count: 12, uniques: 11 })
    expect(await rollupCount(campaignId, EventType.failed)).toEqual({ count: 2, uniques: 2 })
    expect(await webhookStatuses(svixIds)).toEqual([...Array(11).fill('done'), 'pending', 'done', 'done', 'done', 'ignored'])
    const reason = await ctx.t.app.db.db.execute<{ reason: string | null }>(sql`select reason from campaign_recipients where id = ${recipients[0]!.id}`)
    expect(reason.rows[0]!.reason).toMatch(/reached_daily_quota/)

    // Draining again applies nothing twice.
    await drain()
    expect(await campaignStats(ctx, campaignId)).toMatchObject({ sent: 10, delivered: 9, failed: 2 })
    expect(await countEvents(ctx.t, campaignId, EventType.delivered)).toBe(12)
  })

  it('rolls a batch back whole when another worker took over one of its rows, then applies the others one by one, once', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['fenced1@example.com', 'fenced2@example.com', 'fenced3@example.com'])
    const svixIds: string[] = []
    let batches = 0
    await heldBack(
      async () => {
        for (const r of recipients) svixIds.push((await postWebhook(ctx.t, resendEvent('email.delivered', r, campaignId))).svixId)
      },
      (original) => (items, within) => {
        batches++
        return original(items, async (tx, outcomes) => {
          // After the batch moved states and counters: another worker's claim of the first row (its lease ran out).
          await ctx.t.app.db.db.execute(sql`update webhook_events set attempts = attempts + 1 where svix_id = ${svixIds[0]!}`)
          await within(tx, outcomes)
        })
      },
    )
    expect(batches).toBe(1)
    // The taken-over row is left to its new owner; the others were applied exactly once.
    expect(await webhookStatuses(svixIds)).toEqual(['pending', 'done', 'done'])
    expect(await recipientStatus(ctx.t, recipients[0]!.id)).toBe('accepted')
    expect(await campaignStats(ctx, campaignId)).toMatchObject({ sent: 3, delivered: 2 })
    expect(await countEvents(ctx.t, campaignId, EventType.delivered)).toBe(2)
    expect(await rollupCount(campaignId, EventType.delivered)).toEqual({ count: 2, uniques: 2 })
  })

  it('applies the rows one by one when a batch fails, and each once', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['fallback1@example.com', 'fallback2@example.com', 'fallback3@example.com'])
    let calls = 0
    await heldBack(
      async () => {
        for (const r of recipients) await postWebhook(ctx.t, resendEvent('email.delivered', r, campaignId))
      },
      () => async () => {
        calls++
        throw new Error('connection reset')
      },
    )
    expect(calls).toBe(1)
    expect(await campaignStats(ctx, campaignId)).toMatchObject({ sent: 3, delivered: 3 })
    expect(await countEvents(ctx.t, campaignId, EventType.delivered)).toBe(3)
  })
})

describe('POST /webhooks/resend: signed events the database would refuse', () => {
  async function storedRow(svixId: string) {
    const rows = await ctx.t.app.db.db.execute<{ provider_id: string; email: string | null; detail: string | null; occurred_at: Date | string }>(
      sql`select provider_id, email, detail, occurred_at from webhook_events where svix_id = ${svixId}`,
    )
    return rows.rows[0] ? { ...rows.rows[0], occurred_at: new Date(rows.rows[0].occurred_at) } : undefined
  }

  it('stores an event with NUL or a lone surrogate in its text, cleaned, instead of answering 503 on every retry', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['nul-bounce@example.com', 'nul-failed@example.com'])
    const [bounced, failed] = recipients as [SentRecipient, SentRecipient]
    const bounce = resendEvent('email.bounced', bounced, campaignId, { bounce: { type: 'Permanent', subType: 'General', message: '550 user\u0000unknown \ud800' } })
    const first = await postWebhook(ctx.t, bounce, { svixId: 'msg_nul_bounce' })
    expect(first).toMatchObject({ statusCode: 200, body: { status: 'accepted' } })
    expect(await postWebhook(ctx.t, bounce, { svixId: 'msg_nul_bounce' })).toMatchObject({ statusCode: 200, body: { status: 'duplicate' } })
    expect((await storedRow('msg_nul_bounce'))?.detail).toBe('Permanent: General: 550 userunknown \ufffd')

    const failure = await postWebhook(ctx.t, resendEvent('email.failed', failed, campaignId, { failed: { reason: 'quota\u0000reached' } }), { svixId: 'msg_nul_failed' })
    expect(failure).toMatchObject({ statusCode: 200, body: { status: 'accepted' } })
    expect((await storedRow('msg_nul_failed'))?.detail).toBe('quotareached')

    // An id is replaced, not shortened (it must not become another message's id); an address with a NUL is not one.
    const odd = await postWebhook(ctx.t, resendEvent('email.bounced', { providerId: 'nul-id\u0000', email: 'nul\u0000@example.com' }, null, { bounce: { type: 'Permanent' } }), { svixId: 'msg_nul_id' })
    expect(odd).toMatchObject({ statusCode: 200, body: { status: 'accepted' } })
    expect(await storedRow('msg_nul_id')).toMatchObject({ provider_id: 'nul-id\ufffd', email: null })

    await drain()
    expect(await recipientStatus(ctx.t, bounced.id)).toBe('bounced')
    expect(await recipientStatus(ctx.t, failed.id)).toBe('failed')
    expect(await suppression('nul-bounce@example.com')).toBe('bounced')
  })

  it('uses the receipt time for an event time PostgreSQL cannot store or that is not believable', async () => {
    for (const [i, created] of ['0000-01-01T00:00:00Z', '-000001-01-01T00:00:00Z', '275760-09-13T00:00:00Z', '1970-01-01T00:00:00Z', '2999-01-01T00:00:00Z'].entries()) {
      const event = { type: 'email.delivered', created_at: created, data: { email_id: `odd-date-${i}`, created_at: created, to: ['odd-date@example.com'] } }
      const before = Date.now()
      const res = await postWebhook(ctx.t, event, { svixId: `msg_odd_date_${i}` })
      const after = Date.now()
      expect(res, created).toMatchObject({ statusCode: 200, body: { status: 'accepted' } })
      const at = (await storedRow(`msg_odd_date_${i}`))!.occurred_at.getTime()
      // The column keeps milliseconds, rounded.
      expect(at, created).toBeGreaterThanOrEqual(before - 1)
      expect(at, created).toBeLessThanOrEqual(after + 1)
    }
    // A bad top-level time falls back to data.created_at; a bad click time to the event's.
    const good = '2024-05-06T07:08:09.000Z'
    await postWebhook(ctx.t, { type: 'email.delivered', created_at: '0000-01-01T00:00:00Z', data: { email_id: 'odd-date-x', created_at: good } }, { svixId: 'msg_odd_date_x' })
    expect((await storedRow('msg_odd_date_x'))!.occurred_at.toISOString()).toBe(good)
    await postWebhook(ctx.t, { type: 'email.clicked', created_at: good, data: { email_id: 'odd-date-y', click: { link: 'https://shop.example.com/', timestamp: '-000001-01-01T00:00:00Z' } } }, { svixId: 'msg_odd_date_y' })
    expect((await storedRow('msg_odd_date_y'))!.occurred_at.toISOString()).toBe(good)
  })

  it('answers 422 when the database refuses the row for its content and 500, not 503, for any other failure', async () => {
    const db = ctx.t.app.db.db
    const event = resendEvent('email.delivered', { providerId: 'refused-1', email: 'refused@example.com' }, null)
    const post = () => {
      const { body, headers } = signedWebhook(event, { svixId: 'msg_refused_1' })
      return ctx.t.app.inject({ method: 'POST', url: '/webhooks/resend', headers, payload: body })
    }
    // Content the database refuses (a constraint stands in for whatever the payload parser does not clean).
    await db.execute(sql`alter table webhook_events add constraint refuse_test check (provider_id <> 'refused-1')`)
    try {
      const refused = await post()
      expect(refused.statusCode).toBe(422)
      expect(refused.json()).toMatchObject({ error: { code: 'WEBHOOK_UNSTORABLE' } })
    } finally {
      await db.execute(sql`alter table webhook_events drop constraint refuse_test`)
    }
    // Not an outage and not the content: a bug. Still non-2xx, so the provider's retry finds the fix.
    await db.execute(sql`create function refuse_test() returns trigger language plpgsql as $$ begin raise exception 'broken trigger'; end $$`)
    await db.execute(sql`create trigger refuse_test before insert on webhook_events for each row execute function refuse_test()`)
    try {
      const broken = await post()
      expect(broken.statusCode).toBe(500)
      expect(broken.headers['retry-after']).toBeUndefined()
      expect(broken.json()).toMatchObject({ error: { code: 'INTERNAL_SERVER_ERROR' } })
    } finally {
      await db.execute(sql`drop trigger refuse_test on webhook_events`)
      await db.execute(sql`drop function refuse_test()`)
    }
    expect(await storedRow('msg_refused_1')).toBeUndefined()
    const retried = await post()
    expect(retried.statusCode).toBe(200)
    expect(retried.json()).toEqual({ status: 'accepted' })
  })
})
