import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { campaignStats, pathOf, sendTrackedCampaign, startTrackingApp, trackedLinks, type TrackingContext } from './tracking-fixtures'

let ctx: TrackingContext

beforeAll(async () => {
  ctx = await startTrackingApp({ TRACKING_ATTRIBUTION_WINDOW_HOURS: '168', TRACKING_DEFAULT_CURRENCY: 'EUR' })
})
afterAll(async () => {
  await ctx.t.close()
  await ctx.fake.close()
})

const RECORD = `mutation($token: String!, $value: Float, $currency: String) {
  recordConversion(token: $token, value: $value, currency: $currency) {
    __typename
    ... on RecordConversionSuccess { conversion { campaignId counted } }
    ... on Error { message }
  }
}`

type Recorded = { recordConversion: { __typename: string; conversion?: { campaignId: string; counted: boolean }; message?: string } }

/** Clicks the first tracked link of the recipient's email and returns the click token the landing page receives. */
async function clickToken(c: TrackingContext, html: string): Promise<string> {
  const res = await c.t.app.inject({ method: 'GET', url: pathOf(trackedLinks(html)[0]!), headers: { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0' } })
  expect(res.statusCode).toBe(302)
  return new URL(res.headers.location as string).searchParams.get('gw_click')!
}

const record = (token: string, value?: number, currency?: string) => ctx.t.gql<Recorded>(RECORD, { token, value, currency })

describe('recordConversion', () => {
  it('counts a conversion once per recipient with its value, without authentication', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['buyer@example.com', 'buyer2@example.com'])
    const token = await clickToken(ctx, recipients[0]!.message.html!)
    const first = await record(token, 49.9)
    expect(first.data.recordConversion).toEqual({ __typename: 'RecordConversionSuccess', conversion: { campaignId, counted: true } })
    const again = await record(token, 20)
    expect(again.data.recordConversion.conversion).toEqual({ campaignId, counted: false })

    const other = await clickToken(ctx, recipients[1]!.message.html!)
    expect((await record(other, 10.1, 'eur')).data.recordConversion.conversion?.counted).toBe(true)

    const stats = await campaignStats(ctx, campaignId)
    expect(stats).toMatchObject({ conversions: 2, conversionRate: 1, conversionValue: 60, conversionCurrency: 'EUR', conversionValues: [{ currency: 'EUR', conversions: 2, value: 60 }] })
  })

  it('keeps currencies apart', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['usd@example.com', 'gbp@example.com'])
    await record(await clickToken(ctx, recipients[0]!.message.html!), 10, 'USD')
    await record(await clickToken(ctx, recipients[1]!.message.html!), 5, 'GBP')
    const stats = await campaignStats(ctx, campaignId)
    expect(stats).toMatchObject({ conversions: 2, conversionValue: null, conversionCurrency: null })
    expect(stats.conversionValues).toEqual([
      { currency: 'GBP', conversions: 1, value: 5 },
      { currency: 'USD', conversions: 1, value: 10 },
    ])
  })

  it('refuses a forged or altered token, and a click older than the attribution window', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['late-buyer@example.com'])
    const token = await clickToken(ctx, recipients[0]!.message.html!)
    const [r, l, clickedAt, sig] = token.split('.')
    const { tokens } = ctx.t.app.services.tracking
    const eightDaysAgo = Math.floor(Date.now() / 1000) - 8 * 24 * 3600
    const cases = {
      forged: `${r}.${l}.${clickedAt}.${'A'.repeat(43)}`,
      otherRecipient: `${Number(r) + 1}.${l}.${clickedAt}.${sig}`,
      olderClick: `${r}.${l}.${Number(clickedAt) - 10}.${sig}`,
      garbage: 'hello',
      linkToken: pathOf(trackedLinks(recipients[0]!.message.html!)[0]!).slice('/t/c/'.length),
      outsideWindow: tokens.conversionToken(Number(r), 0, eightDaysAgo),
    }
    for (const [name, bad] of Object.entries(cases)) {
      const res = await record(bad)
      expect(res.data.recordConversion.__typename, name).toBe('InvalidTokenError')
    }
    expect((await record(cases.outsideWindow)).data.recordConversion.message).toContain('attribution window')
    // Just inside the window still counts.
    const sixDaysAgo = tokens.conversionToken(Number(r), 0, Math.floor(Date.now() / 1000) - 6 * 24 * 3600)
    expect((await record(sixDaysAgo)).data.recordConversion.conversion).toEqual({ campaignId, counted: true })
  })

  it('refuses a bad value or currency with a ValidationError', async () => {
    const { recipients } = await sendTrackedCampaign(ctx, ['badvalue@example.com'])
    const token = await clickToken(ctx, recipients[0]!.message.html!)
    expect((await record(token, -1)).data.recordConversion.__typename).toBe('ValidationError')
    expect((await record(token, 5, 'EURO')).data.recordConversion.__typename).toBe('ValidationError')
    expect((await ctx.t.gql<Recorded>(RECORD, { token, currency: 'EUR' })).data.recordConversion.__typename).toBe('ValidationError')
  })
})

describe('POST /t/conv', () => {
  it('records a conversion from JSON or a text/plain beacon, with CORS for landing pages', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['beacon@example.com'])
    const token = await clickToken(ctx, recipients[0]!.message.html!)
    const preflight = await ctx.t.app.inject({ method: 'OPTIONS', url: '/t/conv', headers: { origin: 'https://shop.example.com', 'access-control-request-method': 'POST' } })
    expect(preflight.statusCode).toBe(204)
    expect(preflight.headers['access-control-allow-origin']).toBe('*')

    const beacon = await ctx.t.app.inject({ method: 'POST', url: '/t/conv', headers: { 'content-type': 'text/plain;charset=UTF-8' }, payload: JSON.stringify({ token, value: 12.5 }) })
    expect(beacon.statusCode).toBe(200)
    expect(beacon.json()).toEqual({ counted: true, campaignId })
    expect(beacon.headers['access-control-allow-origin']).toBe('*')
    const json = await ctx.t.app.inject({ method: 'POST', url: '/t/conv', payload: { token } })
    expect(json.json()).toEqual({ counted: false, campaignId })
    expect((await campaignStats(ctx, campaignId)).conversionValue).toBe(12.5)
  })

  it('answers 400 to a forged, altered or expired token, and to a body without one', async () => {
    const { recipients } = await sendTrackedCampaign(ctx, ['beacon-bad@example.com'])
    const token = await clickToken(ctx, recipients[0]!.message.html!)
    const [r] = token.split('.')
    const expired = ctx.t.app.services.tracking.tokens.conversionToken(Number(r), 0, Math.floor(Date.now() / 1000) - 30 * 24 * 3600)
    for (const bad of [token.slice(0, -2) + 'xx', `9${token}`, expired]) {
      const res = await ctx.t.app.inject({ method: 'POST', url: '/t/conv', payload: { token: bad } })
      expect(res.statusCode).toBe(400)
      expect(res.json().error.code).toBe('INVALID_TOKEN')
    }
    expect((await ctx.t.app.inject({ method: 'POST', url: '/t/conv', payload: {} })).statusCode).toBe(400)
    expect((await ctx.t.app.inject({ method: 'POST', url: '/t/conv', headers: { 'content-type': 'text/plain' }, payload: 'not json' })).statusCode).toBe(400)
    const rows = await ctx.t.app.db.db.execute<{ n: string }>(sql`select count(*) as n from email_events where recipient_id = ${Number(r)} and type = 11`)
    expect(Number(rows.rows[0]!.n)).toBe(0)
  })
})

describe('TRACKING_CONVERSION_ONCE=false', () => {
  it('counts every conversion of a recipient', async () => {
    const every = await startTrackingApp({ TRACKING_CONVERSION_ONCE: 'false' })
    try {
      const { campaignId, recipients } = await sendTrackedCampaign(every, ['repeat@example.com'])
      const token = await clickToken(every, recipients[0]!.message.html!)
      for (let i = 0; i < 3; i++) {
        const res = await every.t.gql<Recorded>(RECORD, { token, value: 10, currency: 'USD' })
        expect(res.data.recordConversion.conversion?.counted).toBe(true)
      }
      expect(await campaignStats(every, campaignId)).toMatchObject({ conversions: 3, conversionValue: 30 })
    } finally {
      await every.t.close()
      await every.fake.close()
    }
  })
})
