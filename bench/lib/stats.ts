/** Small statistics helpers for benchmarks. All take raw samples and never mutate them. */

/** Ascending copy of the samples. */
export function sorted(samples: readonly number[]): number[] {
  return [...samples].sort((a, b) => a - b)
}

/**
 * The p-th percentile (0-100) with linear interpolation between the closest ranks,
 * the same definition as numpy's default. Throws on an empty sample.
 */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) throw new RangeError('percentile of an empty sample')
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be between 0 and 100 (got ${p})`)
  const s = sorted(samples)
  const rank = (p / 100) * (s.length - 1)
  const lo = Math.floor(rank)
  const hi = Math.ceil(rank)
  return s[lo]! + (s[hi]! - s[lo]!) * (rank - lo)
}

export function median(samples: readonly number[]): number {
  return percentile(samples, 50)
}

export function mean(samples: readonly number[]): number {
  if (samples.length === 0) throw new RangeError('mean of an empty sample')
  return samples.reduce((a, b) => a + b, 0) / samples.length
}

/** Sample standard deviation (n - 1); 0 for a single sample. */
export function stddev(samples: readonly number[]): number {
  if (samples.length < 2) return 0
  const m = mean(samples)
  return Math.sqrt(samples.reduce((a, b) => a + (b - m) ** 2, 0) / (samples.length - 1))
}

export interface Summary {
  n: number
  min: number
  median: number
  p90: number
  max: number
  mean: number
  stddev: number
}

export function summarize(samples: readonly number[]): Summary {
  const s = sorted(samples)
  return { n: s.length, min: s[0]!, median: median(s), p90: percentile(s, 90), max: s[s.length - 1]!, mean: mean(s), stddev: stddev(s) }
}

/** Rounds to a number of significant digits, for printing figures without false precision. */
export function round(value: number, significant = 3): number {
  if (value === 0 || !Number.isFinite(value)) return value
  return Number(value.toPrecision(significant))
}
