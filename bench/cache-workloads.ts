/** Workload generators and reference policies for bench/cache.bench.ts. */

/** Zipf(s) ranks 0..n-1 by inverse CDF, with a seeded LCG so every run draws the same sequence. */
export function zipfSampler(n: number, s: number, seed = 42): { next: () => number; topMass: (k: number) => number } {
  const cdf = new Float64Array(n)
  let sum = 0
  for (let i = 0; i < n; i++) cdf[i] = sum += 1 / (i + 1) ** s
  for (let i = 0; i < n; i++) cdf[i] = (cdf[i] as number) / sum
  let state = seed >>> 0
  const next = (): number => {
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
  // The ideal top-k cache holds the k most probable keys: its hit rate is their probability mass.
  return { next, topMass: (k) => cdf[Math.min(k, n) - 1] as number }
}

/** Textbook LRU over Map insertion order: the baseline the admission policy must beat. */
export function lruHitRate(capacity: number, draws: Int32Array, warmup: number): number {
  const map = new Map<number, true>()
  let hits = 0
  for (let i = 0; i < draws.length; i++) {
    const k = draws[i] as number
    if (map.delete(k)) {
      if (i >= warmup) hits++
    } else if (map.size >= capacity) map.delete(map.keys().next().value as number)
    map.set(k, true)
  }
  return hits / (draws.length - warmup)
}

/** Seeded Fisher-Yates permutation, so Zipf ranks map to ids that are not sorted by popularity. */
export function permutation(n: number, seed = 7): Int32Array {
  const out = new Int32Array(n)
  for (let i = 0; i < n; i++) out[i] = i
  let state = seed >>> 0
  for (let i = n - 1; i > 0; i--) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    const j = state % (i + 1)
    const t = out[i] as number
    out[i] = out[j] as number
    out[j] = t
  }
  return out
}
