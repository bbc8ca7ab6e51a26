/**
 * Closed-loop load: `concurrency` loops, each sending its next request as soon as the last one
 * answered, every request recorded with its start time, so a script can look at any time window
 * (before, during and after a fault) afterwards.
 */
import { percentile } from '../../lib/stats'

export interface Sample {
  /** Milliseconds on the scenario's clock (performance.now()). */
  start: number
  ms: number
  ok: boolean
  /** What the client saw when the request failed: an error code, an HTTP status, an exception. */
  error?: string
}

export interface Load {
  readonly samples: Sample[]
  stop(): Promise<Sample[]>
}

/** `request` resolves to undefined on success, or to what the client saw on failure; a throw counts as a failure too. */
export function startLoad(concurrency: number, request: (i: number) => Promise<string | undefined>): Load {
  const samples: Sample[] = []
  let running = true
  let n = 0
  const loop = async () => {
    while (running) {
      const start = performance.now()
      let error: string | undefined
      try {
        error = await request(n++)
      } catch (err) {
        error = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
      }
      samples.push({ start, ms: performance.now() - start, ok: error === undefined, ...(error === undefined ? {} : { error }) })
    }
  }
  const loops = Array.from({ length: concurrency }, loop)
  return {
    samples,
    stop: async () => {
      running = false
      await Promise.all(loops)
      return samples
    },
  }
}

/** The samples that started in [from, to). */
export function during(samples: readonly Sample[], from: number, to: number): Sample[] {
  return samples.filter((s) => s.start >= from && s.start < to)
}

export interface LoadSummary {
  requests: number
  failed: number
  p50: number
  p99: number
  max: number
  /** Distinct failures with their counts, most frequent first. */
  errors: [string, number][]
}

export function summarizeLoad(samples: readonly Sample[]): LoadSummary {
  const ms = samples.map((s) => s.ms)
  const errors = new Map<string, number>()
  for (const s of samples) if (s.error) errors.set(s.error, (errors.get(s.error) ?? 0) + 1)
  return {
    requests: samples.length,
    failed: samples.filter((s) => !s.ok).length,
    p50: ms.length ? percentile(ms, 50) : 0,
    p99: ms.length ? percentile(ms, 99) : 0,
    max: ms.reduce((a, b) => Math.max(a, b), 0),
    errors: [...errors].sort((a, b) => b[1] - a[1]),
  }
}

export function formatLoad(s: LoadSummary): string {
  return `${s.requests} requests, ${s.failed} failed, p50 ${s.p50.toFixed(1)} ms, p99 ${s.p99.toFixed(1)} ms, max ${s.max.toFixed(1)} ms`
}
