import { describe, expect, it } from 'vitest'
import { CircuitBreaker } from '../src/services/cache/circuit-breaker'
import { FrequencySketch } from '../src/services/cache/frequency-sketch'
import { hashKey } from '../src/lib/hash-key'
import { LatencyHistogram } from '../src/services/cache/latency-histogram'
import { estimateBytes } from '../src/services/cache/size-estimate'
import { TinyLfuCache, type L1Meta } from '../src/services/cache/tiny-lfu-cache'

const FOREVER: L1Meta = { bytes: 1, freshUntil: Number.POSITIVE_INFINITY, staleUntil: Number.POSITIVE_INFINITY }

/** Deterministic Zipf(s) sampler over n keys (inverse CDF by binary search). */
function zipf(n: number, s: number, seed = 7): () => number {
  const cdf = new Float64Array(n)
  let sum = 0
  for (let i = 0; i < n; i++) cdf[i] = sum += 1 / (i + 1) ** s
  for (let i = 0; i < n; i++) cdf[i] = (cdf[i] as number) / sum
  let state = seed
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    const u = state / 2 ** 32
    let lo = 0
    let hi = n - 1
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((cdf[mid] as number) < u) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

/** Map insertion order as recency: the textbook LRU the policy must beat. */
function lruHitRate(capacity: number, next: () => number, ops: number, warm: number): number {
  const map = new Map<number, true>()
  let hits = 0
  for (let i = 0; i < ops; i++) {
    const k = next()
    if (map.delete(k)) {
      if (i >= warm) hits++
    } else if (map.size >= capacity) map.delete(map.keys().next().value as number)
    map.set(k, true)
  }
  return hits / (ops - warm)
}

function tinyLfuHitRate(capacity: number, next: () => number, ops: number, warm: number): number {
  const cache = new TinyLfuCache({ maxItems: capacity, maxBytes: Number.MAX_SAFE_INTEGER })
  let hits = 0
  for (let i = 0; i < ops; i++) {
    const k = `k${next()}`
    if (cache.get(k, 0)) {
      if (i >= warm) hits++
    } else cache.set(k, 1, FOREVER, 0)
  }
  return hits / (ops - warm)
}

describe('TinyLfuCache (W-TinyLFU L1)', () => {
  it('returns the stored object itself, not a copy', () => {
    const cache = new TinyLfuCache({ maxItems: 10, maxBytes: 1000 })
    const value = { n: 1 }
    cache.set('k', value, FOREVER, 0)
    expect(cache.get('k', 0)?.value).toBe(value)
  })

  it('keeps frequently used keys through a scan of one-hit wonders ten times its size', () => {
    const cache = new TinyLfuCache({ maxItems: 100, maxBytes: Number.MAX_SAFE_INTEGER })
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 50; i++) {
        if (!cache.get(`hot${i}`, 0)) cache.set(`hot${i}`, i, FOREVER, 0)
      }
    }
    for (let i = 0; i < 1000; i++) cache.set(`scan${i}`, i, FOREVER, 0)

    const survivors = Array.from({ length: 50 }, (_, i) => cache.peek(`hot${i}`, 0)).filter(Boolean).length
    expect(survivors).toBeGreaterThanOrEqual(48)
    expect(cache.size).toBe(100)
    expect(cache.evictions).toBe(950)
  })

  it('stays within its item bound and its byte bound', () => {
    const byItems = new TinyLfuCache({ maxItems: 10, maxBytes: 1_000_000 })
    const byBytes = new TinyLfuCache({ maxItems: 1000, maxBytes: 1000 })
    for (let i = 0; i < 100; i++) {
      byItems.set(`k${i}`, i, { ...FOREVER, bytes: 10 }, 0)
      byBytes.set(`k${i}`, i, { ...FOREVER, bytes: 100 }, 0)
    }
    expect(byItems.size).toBe(10)
    expect(byBytes.bytes).toBeLessThanOrEqual(1000)
    expect(byBytes.size).toBe(10)
  })

  it('refuses an entry bigger than the whole byte bound and drops the older copy of that key', () => {
    const cache = new TinyLfuCache({ maxItems: 10, maxBytes: 100 })
    cache.set('k', 'small', { ...FOREVER, bytes: 10 }, 0)
    expect(cache.set('k', 'huge', { ...FOREVER, bytes: 101 }, 0)).toBe(false)
    expect(cache.peek('k', 0)).toBeUndefined()
    expect(cache.bytes).toBe(0)
  })

  it('drops an entry at its stale deadline or the local TTL cap, whichever comes first', () => {
    const cache = new TinyLfuCache({ maxItems: 10, maxBytes: 1000, maxLocalTtlMs: 500 })
    cache.set('grace', 1, { bytes: 1, freshUntil: 100, staleUntil: 200 }, 0)
    cache.set('long', 2, { bytes: 1, freshUntil: 10_000, staleUntil: 10_000 }, 0)
    expect(cache.get('grace', 150)?.value).toBe(1)
    expect(cache.get('grace', 200)).toBeUndefined()
    expect(cache.get('long', 499)?.value).toBe(2)
    expect(cache.get('long', 500)).toBeUndefined()
    expect(cache.expirations).toBe(2)
  })

  it('ranks popular keys by the frequency sketch', () => {
    const cache = new TinyLfuCache({ maxItems: 100, maxBytes: 1_000_000 })
    for (let i = 0; i < 20; i++) cache.set(`k${i}`, i, FOREVER, 0)
    for (let n = 0; n < 10; n++) cache.get('k7', 0)
    for (let n = 0; n < 5; n++) cache.get('k3', 0)

    const top = cache.topK(2)
    expect(top.map((t) => t.key)).toEqual(['k7', 'k3'])
    expect(top[0]!.frequency).toBeGreaterThan(top[1]!.frequency)
  })

  it('beats LRU on a Zipf 0.99 workload at 1% capacity', () => {
    const n = 100_000
    const ops = 400_000
    const warm = 100_000
    const policy = tinyLfuHitRate(n / 100, zipf(n, 0.99), ops, warm)
    const lru = lruHitRate(n / 100, zipf(n, 0.99), ops, warm)
    expect(policy).toBeGreaterThan(lru + 0.03)
  })
})

describe('FrequencySketch', () => {
  it('counts up to 15 and halves every counter once the sample period is reached', () => {
    const sketch = new FrequencySketch(16)
    const hot = hashKey('hot')
    for (let i = 0; i < 20; i++) sketch.increment(hot)
    expect(sketch.frequency(hot)).toBe(15)
    // Sample period is 10 x capacity = 160 additions; distinct keys fill it up.
    for (let i = 0; i < 200; i++) sketch.increment(hashKey(`cold${i}`))
    expect(sketch.frequency(hot)).toBeLessThanOrEqual(7)
  })
})

describe('LatencyHistogram', () => {
  it('reports percentiles within one bucket of the truth', () => {
    const h = new LatencyHistogram()
    for (let i = 1; i <= 1000; i++) h.record(i / 10)
    expect(h.percentile(0.5)).toBeGreaterThanOrEqual(50)
    expect(h.percentile(0.5)).toBeLessThan(50 * 1.2)
    expect(h.percentile(0.99)).toBeGreaterThanOrEqual(99)
    expect(h.count).toBe(1000)
    expect(new LatencyHistogram().percentile(0.5)).toBe(0)
  })
})

describe('CircuitBreaker', () => {
  it('opens after the threshold, lets one probe through after the cooldown, and closes on its success', () => {
    const breaker = new CircuitBreaker({ threshold: 3, cooldownMs: 100 })
    for (let i = 0; i < 3; i++) breaker.failure(0)
    expect(breaker.state).toBe('open')
    expect(breaker.allow(50)).toBe(false)
    expect(breaker.allow(100)).toBe(true)
    expect(breaker.allow(100)).toBe(false)
    breaker.success()
    expect(breaker.state).toBe('closed')
    expect(breaker.opened).toBe(1)
  })

  it('reopens when the probe fails', () => {
    const breaker = new CircuitBreaker({ threshold: 1, cooldownMs: 100 })
    breaker.failure(0)
    expect(breaker.allow(100)).toBe(true)
    breaker.failure(100)
    expect(breaker.state).toBe('open')
    expect(breaker.allow(150)).toBe(false)
  })
})

describe('estimateBytes', () => {
  it('grows with the value and survives cycles', () => {
    const small = estimateBytes({ a: 'x' })
    const big = estimateBytes({ a: 'x'.repeat(10_000) })
    expect(big - small).toBeGreaterThanOrEqual(9_999)
    const loop: Record<string, unknown> = { n: 1 }
    loop.self = loop
    expect(estimateBytes(loop)).toBeGreaterThan(0)
    expect(estimateBytes(Buffer.alloc(4096))).toBeGreaterThanOrEqual(4096)
  })
})
