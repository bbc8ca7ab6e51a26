/** Wall-clock timing helpers for benchmarks. */

/** Milliseconds from a monotonic clock. */
export function nowMs(): number {
  return performance.now()
}

/** Runs fn once and returns its result with the elapsed milliseconds. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; result: T }> {
  const start = nowMs()
  const result = await fn()
  return { ms: nowMs() - start, result }
}

export interface RepeatOptions {
  /** Measured runs (default 5). */
  runs?: number
  /** Unmeasured runs first, to warm JIT, pools and caches (default 1). */
  warmup?: number
  /** Called after every run, warm-up included, outside the measured time (cleanup). */
  after?: (run: number) => Promise<void> | void
}

/** Runs fn warmup + runs times, one after the other, and returns the measured durations in ms. */
export async function repeat(fn: (run: number) => Promise<unknown>, options: RepeatOptions = {}): Promise<number[]> {
  const runs = options.runs ?? 5
  const warmup = options.warmup ?? 1
  const samples: number[] = []
  for (let i = 0; i < warmup + runs; i++) {
    const start = nowMs()
    await fn(i)
    const ms = nowMs() - start
    if (i >= warmup) samples.push(ms)
    await options.after?.(i)
  }
  return samples
}

/** Bytes per MB in every bench figure: SI megabytes. */
export const MB = 1_000_000

/** Milliseconds per MB for `bytes` moved in `ms`. */
export function msPerMB(ms: number, bytes: number): number {
  return ms / (bytes / MB)
}

export interface Case {
  name: string
  run: () => Promise<unknown>
  /** Cleanup after each run, outside the measured time. */
  after?: () => Promise<void> | void
}

/**
 * Runs every case once per round, round after round, and returns each case's measured durations
 * in ms by name. Interleaving spreads slow drift (page-cache writeback, GC, thermal) over all cases
 * alike, so ratios between cases measured in the same run stay fair.
 */
export async function interleave(
  cases: readonly Case[],
  options: { runs?: number; warmup?: number; /** Pause after each case's cleanup, so its leftovers (GC, writeback) settle. */ settleMs?: number } = {},
): Promise<Map<string, number[]>> {
  const runs = options.runs ?? 5
  const warmup = options.warmup ?? 1
  const settleMs = options.settleMs ?? 0
  const samples = new Map<string, number[]>(cases.map((c) => [c.name, []]))
  for (let round = 0; round < warmup + runs; round++) {
    for (const c of cases) {
      const start = nowMs()
      await c.run()
      const ms = nowMs() - start
      if (round >= warmup) samples.get(c.name)!.push(ms)
      await c.after?.()
      if (settleMs > 0) await sleep(settleMs)
    }
  }
  return samples
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
