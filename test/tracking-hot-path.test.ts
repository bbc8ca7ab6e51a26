import { afterEach, describe, expect, it, vi } from 'vitest'
import { createUrlSigner, type UrlSigner } from '../src/infra/storage/signed-url'
import { createMachineDetector } from '../src/services/tracking/machine-detection'
import { createTrackingTokens } from '../src/services/tracking/tracking-tokens'

const URL = 'https://shop.example.com/sale?x=1'

/** The real signer, counting its checks. */
function countingSigner(secret = 'hot-path-secret-hot-path-secret-0123'): UrlSigner & { checks: number } {
  const signer = createUrlSigner(secret)
  const counted = {
    checks: 0,
    sign: signer.sign,
    signature: signer.signature,
    verify(query: Record<string, unknown>) {
      counted.checks++
      return signer.verify(query)
    },
    fixed(constants: Record<string, string>, names: readonly string[]) {
      const fixed = signer.fixed(constants, names)
      return {
        signature: fixed.signature,
        verify(values: readonly string[], exp: string, sig: string) {
          counted.checks++
          return fixed.verify(values, exp, sig)
        },
      }
    },
  }
  return counted
}

describe('verified tracking tokens remembered', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('checks a genuine open or click token on its first two sights, then answers it from memory', () => {
    const signer = countingSigner()
    const tokens = createTrackingTokens(signer)
    const exp = Math.floor(Date.now() / 1000) + 3600
    const open = tokens.openToken(7, exp)
    const click = tokens.clickToken(7, 2, URL, exp)
    const checksAfter: number[] = []
    for (let i = 0; i < 4; i++) {
      expect(tokens.verifyOpen(open)).toEqual({ ok: true, recipientId: 7 })
      expect(tokens.verifyClick(click)).toEqual({ ok: true, recipientId: 7, linkIndex: 2, url: URL })
      checksAfter.push(signer.checks)
    }
    // Seen once, a token takes no memory (most are opened once); seen again, it is remembered.
    expect(checksAfter).toEqual([2, 4, 4, 4])
  })

  it('never remembers a forged or altered token: each one is checked and refused', () => {
    const signer = countingSigner()
    const tokens = createTrackingTokens(signer)
    const exp = Math.floor(Date.now() / 1000) + 3600
    const genuine = tokens.openToken(7, exp)
    expect(tokens.verifyOpen(genuine).ok).toBe(true)
    const [r, e, sig] = genuine.split('.')
    const altered = [`8.${e}.${sig}`, `${r}.${Number(e) + 1}.${sig}`, `${r}.${e}.${sig!.slice(0, -1)}${sig!.endsWith('A') ? 'B' : 'A'}`]
    const forged = createTrackingTokens(createUrlSigner('another-secret-another-secret-0123')).openToken(7, exp)
    for (let i = 0; i < 2; i++) {
      for (const token of [...altered, forged]) expect(tokens.verifyOpen(token)).toEqual({ ok: false, reason: 'invalid' })
    }
    expect(signer.checks).toBe(1 + 2 * 4)
  })

  it('still lets a remembered token expire', () => {
    vi.useFakeTimers({ now: Date.UTC(2030, 0, 1) })
    const tokens = createTrackingTokens(countingSigner())
    const exp = Math.floor(Date.now() / 1000) + 60
    const open = tokens.openToken(7, exp)
    const click = tokens.clickToken(7, 0, URL, exp)
    for (let i = 0; i < 2; i++) {
      expect(tokens.verifyOpen(open).ok).toBe(true)
      expect(tokens.verifyClick(click).ok).toBe(true)
    }
    vi.setSystemTime(Date.UTC(2030, 0, 1) + 60_000)
    expect(tokens.verifyOpen(open)).toEqual({ ok: false, reason: 'expired' })
    expect(tokens.verifyClick(click)).toEqual({ ok: false, reason: 'expired' })
  })

  it('forgets the oldest past its bound and checks it again; with 0 it checks every time', () => {
    const signer = countingSigner()
    const tokens = createTrackingTokens(signer, { remembered: 2 })
    const exp = Math.floor(Date.now() / 1000) + 3600
    const [t1, t2, t3] = [1, 2, 3].map((id) => tokens.openToken(id, exp))
    // Each seen twice (so remembered); t3 pushes t1 out.
    for (const t of [t1, t1, t2, t2, t3, t3]) expect(tokens.verifyOpen(t!).ok).toBe(true)
    expect(signer.checks).toBe(6)
    for (const t of [t3, t2]) expect(tokens.verifyOpen(t!).ok).toBe(true)
    expect(signer.checks).toBe(6)
    expect(tokens.verifyOpen(t1!).ok).toBe(true)
    expect(signer.checks).toBe(7)

    const uncached = countingSigner()
    const none = createTrackingTokens(uncached, { remembered: 0 })
    for (let i = 0; i < 3; i++) expect(none.verifyOpen(none.openToken(1, exp)).ok).toBe(true)
    expect(uncached.checks).toBe(3)
  })

  it('checks a click token with a long destination every time, so memory stays bounded', () => {
    const signer = countingSigner()
    const tokens = createTrackingTokens(signer)
    const long = `https://shop.example.com/${'a'.repeat(600)}`
    const click = tokens.clickToken(7, 0, long, Math.floor(Date.now() / 1000) + 3600)
    expect(tokens.verifyClick(click)).toEqual({ ok: true, recipientId: 7, linkIndex: 0, url: long })
    expect(tokens.verifyClick(click).ok).toBe(true)
    expect(signer.checks).toBe(2)
  })
})

describe('machine detection with remembered user agents', () => {
  const FIREFOX = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0'

  it('remembers the verdict of an agent but still judges the method and address of every request', () => {
    const isMachine = createMachineDetector()
    expect(isMachine({ method: 'GET', userAgent: FIREFOX, ip: '203.0.113.5' })).toBe(false)
    expect(isMachine({ method: 'HEAD', userAgent: FIREFOX, ip: '203.0.113.5' })).toBe(true)
    expect(isMachine({ method: 'GET', userAgent: FIREFOX, ip: '17.58.1.2' })).toBe(true)
    expect(isMachine({ method: 'GET', userAgent: FIREFOX, ip: '::ffff:17.58.1.2' })).toBe(true)
    expect(isMachine({ method: 'GET', userAgent: FIREFOX, ip: '203.0.113.5' })).toBe(false)
    for (let i = 0; i < 2; i++) {
      expect(isMachine({ method: 'GET', userAgent: 'Mozilla/5.0', ip: '203.0.113.5' })).toBe(true)
      expect(isMachine({ method: 'GET', userAgent: undefined, ip: '203.0.113.5' })).toBe(true)
      expect(isMachine({ method: 'GET', userAgent: ' Mozilla/5.0 ', ip: '203.0.113.5' })).toBe(true)
      expect(isMachine({ method: 'GET', userAgent: 'Mozilla/5.0 (compatible; Barracuda Sentinel)', ip: '203.0.113.5' })).toBe(true)
    }
  })

  it('keeps judging correctly past its bound of remembered agents, and for very long agents', () => {
    const isMachine = createMachineDetector(['acme-scanner'])
    for (let i = 0; i < 2_500; i++) {
      expect(isMachine({ method: 'GET', userAgent: `${FIREFOX} build/${i}`, ip: '203.0.113.5' })).toBe(false)
      if (i % 500 === 0) expect(isMachine({ method: 'GET', userAgent: `ACME-Scanner/${i}`, ip: '203.0.113.5' })).toBe(true)
    }
    expect(isMachine({ method: 'GET', userAgent: `${FIREFOX} ${'x'.repeat(1000)}`, ip: '203.0.113.5' })).toBe(false)
    expect(isMachine({ method: 'GET', userAgent: `${'x'.repeat(1000)} python-requests/2.31`, ip: '203.0.113.5' })).toBe(true)
  })
})
