/**
 * Fixed log-spaced buckets (4 per doubling, 10 µs to ~10 min): recording is one
 * Math.log2 and an increment, percentiles are read within about 19% of the true value.
 */
const MIN_MS = 0.01
const BUCKETS_PER_DOUBLING = 4
const BUCKETS = 104

export class LatencyHistogram {
  count = 0
  private readonly buckets = new Float64Array(BUCKETS)

  record(ms: number): void {
    const index = ms <= MIN_MS ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log2(ms / MIN_MS) * BUCKETS_PER_DOUBLING))
    this.buckets[index]!++
    this.count++
  }

  /** Upper bound of the bucket holding quantile q (0..1); 0 before the first sample. */
  percentile(q: number): number {
    if (this.count === 0) return 0
    const target = Math.max(1, Math.ceil(q * this.count))
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.buckets[i] as number
      if (seen >= target) return MIN_MS * 2 ** (i / BUCKETS_PER_DOUBLING)
    }
    return MIN_MS * 2 ** ((BUCKETS - 1) / BUCKETS_PER_DOUBLING)
  }
}
