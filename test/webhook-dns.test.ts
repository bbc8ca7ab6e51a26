/**
 * Webhook DNS lookups run on libuv's shared thread pool: an endpoint whose DNS hangs must not take
 * every thread. dns.lookup is replaced by a slow fake that records how many run at once.
 */
import type * as Dns from 'node:dns'
import { describe, expect, it, vi } from 'vitest'

const state = vi.hoisted(() => ({ active: 0, peak: 0 }))

vi.mock('node:dns', async (importOriginal) => {
  const real = await importOriginal<typeof Dns>()
  const lookup = (_host: string, _options: unknown, callback: (err: Error | null, addresses: { address: string; family: number }[]) => void) => {
    state.active++
    state.peak = Math.max(state.peak, state.active)
    setTimeout(() => {
      state.active--
      callback(null, [{ address: '93.184.216.34', family: 4 }])
    }, 30)
  }
  return { ...real, default: { ...real, lookup }, lookup }
})

describe('webhook DNS lookups', () => {
  it('run at most two at a time, the rest waiting their turn', async () => {
    const { lookupAll, publicOnlyLookup } = await import('../src/services/webhooks/address-policy')
    const viaHttp = (host: string) =>
      new Promise<string>((resolve, reject) => publicOnlyLookup(host, {}, (err, address) => (err ? reject(err) : resolve(address as string))))
    const results = await Promise.all([
      ...Array.from({ length: 4 }, (_, i) => lookupAll(`hook${i}.example.com`)),
      ...Array.from({ length: 4 }, (_, i) => viaHttp(`conn${i}.example.com`)),
    ])
    expect(results).toHaveLength(8)
    expect(results.slice(4)).toEqual(Array(4).fill('93.184.216.34'))
    expect(state.peak).toBe(2)
  })
})
