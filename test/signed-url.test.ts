import { afterEach, describe, expect, it, vi } from 'vitest'
import { createUrlSigner } from '../src/infra/storage/signed-url'

const signer = createUrlSigner('signed-url-test-secret-signed-url-test')
const future = () => Math.floor(Date.now() / 1000) + 3600

// Values that need encoding, and some that do not: every character class the canonical form treats apart.
const VALUES = ['', '0', '123456789012345678', 'tracking-click', 'https://shop.example.com/sale?x=1&y=2#top', 'a=b&c=d', 'ü €', '😀', "-_.!~*'()", '%41', 'a b+c', 'line\nbreak']

describe('fixed-layout signatures', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('are the very signatures of the generic signer, both ways, whatever the values', () => {
    const fixed = signer.fixed({ purpose: 'tracking-click' }, ['r', 'l', 'u'])
    const exp = future()
    for (const r of VALUES) {
      for (const u of VALUES) {
        const values = [r, '3', u]
        const generic = signer.signature({ purpose: 'tracking-click', r, l: '3', u }, exp)
        expect(fixed.signature(values, exp)).toBe(generic)
        expect(fixed.verify(values, String(exp), generic)).toEqual({ ok: true })
        expect(signer.verify({ purpose: 'tracking-click', r, l: '3', u, exp: String(exp), sig: fixed.signature(values, exp) }).ok).toBe(true)
      }
    }
  })

  it('lays the parameters out in name order, wherever the constants fall among them', () => {
    const exp = future()
    const fixed = signer.fixed({ m: 'middle', a: 'first' }, ['z', 'b'])
    expect(fixed.signature(['last', 'second'], exp)).toBe(signer.signature({ a: 'first', b: 'second', m: 'middle', z: 'last' }, exp))
  })

  it('refuses changed values, a changed exp, another purpose, malformed signatures; expiry only once the signature holds', () => {
    const exp = future()
    const click = signer.fixed({ purpose: 'tracking-click' }, ['r'])
    const open = signer.fixed({ purpose: 'tracking-open' }, ['r'])
    const sig = click.signature(['7'], exp)
    expect(click.verify(['8'], String(exp), sig)).toEqual({ ok: false, reason: 'invalid' })
    expect(click.verify(['7'], String(exp + 1), sig)).toEqual({ ok: false, reason: 'invalid' })
    expect(open.verify(['7'], String(exp), sig)).toEqual({ ok: false, reason: 'invalid' })
    for (const bad of ['', sig.slice(1), `${sig}A`, `${sig.slice(0, -1)}!`, sig.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'))]) {
      expect(click.verify(['7'], String(exp), bad)).toEqual({ ok: false, reason: 'invalid' })
    }
    for (const badExp of ['', 'abc', '-1', '1'.repeat(16)]) expect(click.verify(['7'], badExp, sig).ok).toBe(false)

    vi.useFakeTimers()
    vi.setSystemTime((exp + 1) * 1000)
    expect(click.verify(['7'], String(exp), sig)).toEqual({ ok: false, reason: 'expired' })
    // A forged signature says invalid, not expired: the expiry is only told to the key's holder.
    expect(click.verify(['8'], String(exp), sig)).toEqual({ ok: false, reason: 'invalid' })
  })

  it('rejects a layout that names a parameter twice or uses a reserved name, and a call with the wrong number of values', () => {
    expect(() => signer.fixed({ r: '1' }, ['r'])).toThrow(/once/)
    expect(() => signer.fixed({}, ['exp'])).toThrow(/reserved/)
    expect(() => signer.fixed({ sig: 'x' }, [])).toThrow(/reserved/)
    expect(() => signer.fixed({}, ['a', 'b']).signature(['1'], future())).toThrow(/2 values/)
    expect(() => signer.fixed({}, ['a']).signature(['1'], -1)).toThrow(/non-negative/)
  })
})
