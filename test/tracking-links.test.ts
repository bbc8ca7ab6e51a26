import { describe, expect, it } from 'vitest'
import { EventType } from '../src/services/tracking/event-types'
import { rewriteHtml } from '../src/services/tracking/link-rewriter'
import { campaignStats, countEvents, HUMAN_UA, pathOf, pixelPath, sendTrackedCampaign, sentLongAgo, trackedLinks, useTrackingApp, type TrackingContext } from './tracking-fixtures'

let ctx: TrackingContext
useTrackingApp((c) => (ctx = c))

describe('link rewriting at render time', () => {
  it('sends campaign HTML with every web link tracked, the unsubscribe, mailto and data-notrack links untouched, and the pixel before </body>', async () => {
    const { recipients } = await sendTrackedCampaign(ctx, ['render@example.com'])
    const { message } = recipients[0]!
    const links = trackedLinks(message.html!)
    expect(links).toHaveLength(2)
    expect(message.html).toContain('href="mailto:help@example.com"')
    expect(message.html).toContain('href="https://docs.example.com/" data-notrack')
    expect(message.html).toMatch(/href="http:\/\/groundwork\.test\/t\/u\/[^"]+"/)
    expect(message.html).toMatch(/<img src="http:\/\/groundwork\.test\/t\/o\/[^"]+\.gif" width="1" height="1" alt=""[^>]*><\/body>/)
    // The text part and the List-Unsubscribe header are not rewritten.
    expect(message.text).toContain('https://shop.example.com/sale')
    expect(message.headers!['List-Unsubscribe']).toMatch(/\/t\/u\//)
  })

  it('binds the real URL (entities decoded) and leaves javascript: and credential URLs alone', () => {
    const bound: string[] = []
    const html = rewriteHtml(
      '<a href="https://a.example/?x=1&amp;y&#x3D;2">a</a><a href="javascript:alert(1)">b</a><a href="https://bank.example@evil.example/">c</a><a href=https://c.example/p>d</a>',
      { clickUrl: (i, url) => (bound.push(url), `https://t.example/${i}`) },
    )
    expect(bound).toEqual(['https://a.example/?x=1&y=2', 'https://c.example/p'])
    expect(html).toContain('href="javascript:alert(1)"')
    expect(html).toContain('href="https://bank.example@evil.example/"')
    expect(html).toContain('<a href="https://t.example/1">d</a>')
  })

  it('does not track transactional mail', async () => {
    ctx.fake.reset()
    const res = await ctx.t.gql(
      'mutation($input: WelcomeEmailInput!) { sendWelcomeEmail(input: $input) { __typename } }',
      { input: { user: { id: 'u1', email: 'welcome@example.com', name: 'W' } } },
      ctx.t.token('service'),
    )
    expect(res.errors).toBeUndefined()
    const html = ctx.fake.sent.find((m) => m.to === 'welcome@example.com' || (Array.isArray(m.to) && m.to[0] === 'welcome@example.com'))?.html ?? ''
    expect(html).not.toContain('/t/o/')
    expect(html).not.toContain('/t/c/')
  })
})

describe('GET /t/c/<token>: the click redirect', () => {
  it('redirects to exactly the URL bound in the token, plus the click token for conversions, and counts the click', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['clicker@example.com'])
    await sentLongAgo(ctx.t, campaignId)
    const [sale, blog] = trackedLinks(recipients[0]!.message.html!)
    const first = await ctx.t.app.inject({ method: 'GET', url: pathOf(sale!), headers: { 'user-agent': HUMAN_UA } })
    expect(first.statusCode).toBe(302)
    expect(first.headers.location).toMatch(/^https:\/\/shop\.example\.com\/sale\?x=1&y=2&gw_click=\d+\.0\.\d+\.[\w-]{43}$/)
    expect(first.headers['referrer-policy']).toBe('no-referrer')
    expect(first.headers['cache-control']).toBe('no-store')
    // Hot routes skip the x-request-id header that every other answer carries.
    expect(first.headers['x-request-id']).toBeUndefined()
    // The fragment stays last.
    const second = await ctx.t.app.inject({ method: 'GET', url: pathOf(blog!), headers: { 'user-agent': HUMAN_UA } })
    expect(second.headers.location).toMatch(/^https:\/\/blog\.example\.com\/post\?gw_click=\d+\.1\.\d+\.[\w-]{43}#top$/)
    await ctx.t.app.inject({ method: 'GET', url: pathOf(sale!), headers: { 'user-agent': HUMAN_UA } })

    await ctx.t.app.services.tracking.flush()
    const stats = await campaignStats(ctx, campaignId)
    expect(stats.clicks).toEqual({ total: 3, human: 3, machine: 0, unique: 1, uniqueHuman: 1 })
    expect(stats).toMatchObject({ uniqueClicks: 1, clickRate: 1, uniqueOpens: 1, clickToOpenRate: 1 })
    const links = await ctx.t.gql<{ campaign: { links: { index: number; url: string; clicks: number; humanClicks: number }[] } }>(
      'query($id: ID!) { campaign(id: $id) { links { index url clicks humanClicks } } }',
      { id: campaignId },
      ctx.admin,
    )
    expect(links.data.campaign.links).toEqual([
      { index: 0, url: 'https://shop.example.com/sale?x=1&y=2', clicks: 2, humanClicks: 2 },
      { index: 1, url: 'https://blog.example.com/post#top', clicks: 1, humanClicks: 1 },
    ])
  })

  it('answers a forged, altered or expired token with a 400 page and never a redirect', async () => {
    const { recipients } = await sendTrackedCampaign(ctx, ['forger@example.com'])
    const path = new URL(trackedLinks(recipients[0]!.message.html!)[0]!).pathname
    const [r, l, exp, sig, url] = path.slice('/t/c/'.length).split('.')
    const flip = (s: string) => (s[0] === 'A' ? 'B' : 'A') + s.slice(1)
    const tokens = sign(Number(r))
    const cases = {
      forged: `${r}.${l}.${exp}.${'x'.repeat(43)}.${url}`,
      otherRecipient: `${Number(r) + 1}.${l}.${exp}.${sig}.${url}`,
      otherLink: `${r}.${Number(l) + 1}.${exp}.${sig}.${url}`,
      longerLife: `${r}.${l}.${Number(exp) + 1}.${sig}.${url}`,
      alteredSignature: `${r}.${l}.${exp}.${flip(sig!)}.${url}`,
      truncated: `${r}.${l}.${exp}.${sig}`,
      garbage: 'not-a-token',
      openTokenAsClick: tokens.open,
      expired: tokens.expiredClick,
    }
    for (const [name, token] of Object.entries(cases)) {
      const res = await ctx.t.app.inject({ method: 'GET', url: `/t/c/${token}` })
      expect(res.statusCode, name).toBe(400)
      expect(res.headers.location, name).toBeUndefined()
      expect(res.headers['content-type'], name).toContain('text/html')
    }
    const expired = await ctx.t.app.inject({ method: 'GET', url: `/t/c/${tokens.expiredClick}` })
    expect(expired.body).toContain('Link expired')
  })

  it('never redirects elsewhere than its token: a URL swapped in or passed as a parameter is refused or ignored', async () => {
    const { recipients } = await sendTrackedCampaign(ctx, ['openredirect@example.com'])
    const path = new URL(trackedLinks(recipients[0]!.message.html!)[0]!).pathname
    const parts = path.slice('/t/c/'.length).split('.')
    parts[4] = Buffer.from('https://evil.example/phish').toString('base64url')
    const swapped = await ctx.t.app.inject({ method: 'GET', url: `/t/c/${parts.join('.')}` })
    expect(swapped.statusCode).toBe(400)
    expect(swapped.headers.location).toBeUndefined()

    for (const query of ['?u=https://evil.example/', '?url=https://evil.example/&redirect=https://evil.example/', '?next=//evil.example']) {
      const res = await ctx.t.app.inject({ method: 'GET', url: `${path}${query}` })
      expect(res.statusCode).toBe(302)
      expect(res.headers.location).toMatch(/^https:\/\/shop\.example\.com\/sale\?x=1&y=2&gw_click=/)
    }
  })

  it('marks scanner clicks as machine: seconds after the send, HEAD requests, scanner user agents', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['scanned@example.com'])
    const sale = pathOf(trackedLinks(recipients[0]!.message.html!)[0]!)
    // Sent a moment ago: a click now is a gateway following the link on delivery.
    expect((await ctx.t.app.inject({ method: 'GET', url: sale, headers: { 'user-agent': HUMAN_UA } })).statusCode).toBe(302)
    await ctx.t.app.services.tracking.flush()
    await sentLongAgo(ctx.t, campaignId)
    expect((await ctx.t.app.inject({ method: 'HEAD', url: sale, headers: { 'user-agent': HUMAN_UA } })).statusCode).toBe(302)
    await ctx.t.app.inject({ method: 'GET', url: sale, headers: { 'user-agent': 'Mozilla/5.0 (compatible; Barracuda Sentinel)' } })
    await ctx.t.app.inject({ method: 'GET', url: sale, headers: { 'user-agent': 'python-requests/2.31' } })
    await ctx.t.app.services.tracking.flush()

    let stats = await campaignStats(ctx, campaignId)
    expect(stats.clicks).toEqual({ total: 4, human: 0, machine: 4, unique: 1, uniqueHuman: 0 })
    expect(stats).toMatchObject({ uniqueClicks: 0, uniqueOpens: 0, clickRate: 0 })

    await ctx.t.app.inject({ method: 'GET', url: sale, headers: { 'user-agent': HUMAN_UA } })
    await ctx.t.app.services.tracking.flush()
    stats = await campaignStats(ctx, campaignId)
    expect(stats.clicks).toEqual({ total: 5, human: 1, machine: 4, unique: 1, uniqueHuman: 1 })
    expect(await countEvents(ctx.t, campaignId, EventType.click)).toBe(5)
  })
})

describe('GET /t/o/<token>.gif: the open pixel', () => {
  it('answers a 1x1 GIF that no cache may keep, and counts human and machine opens apart', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['opener@example.com', 'mpp@example.com'])
    const [human, apple] = recipients.map((r) => pixelPath(r.message.html!))
    // Apple Mail Privacy Protection prefetches first, then the person opens; the Gmail proxy fetches on open.
    const res = await ctx.t.app.inject({ method: 'GET', url: human!, headers: { 'user-agent': 'Mozilla/5.0' } })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toBe('image/gif')
    expect(res.headers['cache-control']).toContain('no-store')
    expect(res.rawPayload.subarray(0, 6).toString()).toBe('GIF89a')
    expect(res.rawPayload.length).toBe(Number(res.headers['content-length']))
    await ctx.t.app.inject({ method: 'GET', url: human!, headers: { 'user-agent': 'Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)' } })
    await ctx.t.app.inject({ method: 'GET', url: human!, headers: { 'user-agent': HUMAN_UA } })
    await ctx.t.app.inject({ method: 'GET', url: apple!, headers: { 'user-agent': 'Mozilla/5.0' } })
    await ctx.t.app.inject({ method: 'GET', url: apple!, headers: { 'user-agent': HUMAN_UA }, remoteAddress: '17.58.100.1' })
    await ctx.t.app.inject({ method: 'HEAD', url: apple!, headers: { 'user-agent': HUMAN_UA } })
    await ctx.t.app.services.tracking.flush()

    const stats = await campaignStats(ctx, campaignId)
    expect(stats.opens).toEqual({ total: 6, human: 2, machine: 4, unique: 2, uniqueHuman: 1 })
    expect(stats).toMatchObject({ uniqueOpens: 1, openRate: 0.5 })
  })

  it('answers the GIF to a forged, altered or expired token but records nothing', async () => {
    const { campaignId, recipients } = await sendTrackedCampaign(ctx, ['pixelforger@example.com'])
    const path = pixelPath(recipients[0]!.message.html!)
    const [r, exp, sig] = path.slice('/t/o/'.length, -'.gif'.length).split('.')
    const tokens = sign(Number(r))
    for (const token of [`${r}.${exp}.${'A'.repeat(43)}`, `${Number(r) + 1}.${exp}.${sig}`, `${r}.${Number(exp) + 5}.${sig}`, tokens.expiredOpen]) {
      const res = await ctx.t.app.inject({ method: 'GET', url: `/t/o/${token}.gif`, headers: { 'user-agent': HUMAN_UA } })
      expect(res.statusCode).toBe(200)
      expect(res.headers['content-type']).toBe('image/gif')
    }
    // Without the .gif suffix the token is not read either.
    await ctx.t.app.inject({ method: 'GET', url: `/t/o/${r}.${exp}.${sig}`, headers: { 'user-agent': HUMAN_UA } })
    await ctx.t.app.services.tracking.flush()
    expect(await countEvents(ctx.t, campaignId, EventType.open)).toBe(0)
    expect((await campaignStats(ctx, campaignId)).opens).toMatchObject({ total: 0 })
  })
})

/** Tokens signed with the app's key but not by the renderer: another kind, or already expired. */
function sign(recipientId: number) {
  const { tokens } = ctx.t.app.services.tracking
  const past = Math.floor(Date.now() / 1000) - 60
  const future = Math.floor(Date.now() / 1000) + 3600
  return {
    open: tokens.openToken(recipientId, future),
    expiredOpen: tokens.openToken(recipientId, past),
    expiredClick: tokens.clickToken(recipientId, 0, 'https://shop.example.com/sale?x=1&y=2', past),
  }
}
