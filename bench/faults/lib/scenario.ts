/**
 * The frame every fault script runs in: a cleanup stack that runs whatever happens (children killed,
 * servers closed, databases dropped), a verdict printed for people, and the figures printed as a
 * `BENCH_RESULT` line for bench/run.ts. A scenario that ran to the end exits 0 even when a check is not
 * met (the verdict and RESULTS.md say so); one that crashed exits 1.
 */
import { reportResult, type Figure } from '../../lib/result'
import { round } from '../../lib/stats'

export interface Scenario {
  /** Runs `fn` at the end, last registered first, even when the scenario throws. */
  defer(fn: () => Promise<unknown> | unknown): void
  log(message: string): void
  /** Milliseconds since the scenario started: the time line the log lines share. */
  elapsed(): number
}

/** A figure with a verdict: `ok` says whether `target` was met. */
export function check(name: string, value: number, unit: string, target: string, ok: boolean, note?: string): Figure {
  return { name, value, unit, target, met: ok, ...(note ? { note } : {}) }
}

/** A figure reported for context, with no target. */
export function measure(name: string, value: number, unit: string, note?: string): Figure {
  return { name, value, unit, ...(note ? { note } : {}) }
}

export async function runScenario(bench: string, summary: string, body: (s: Scenario) => Promise<Figure[]>): Promise<never> {
  const cleanups: (() => Promise<unknown> | unknown)[] = []
  const started = performance.now()
  const elapsed = () => performance.now() - started
  const scenario: Scenario = {
    defer: (fn) => void cleanups.push(fn),
    log: (message) => console.log(`[${(elapsed() / 1000).toFixed(2).padStart(7)} s] ${message}`),
    elapsed,
  }
  console.log(`# ${bench}: ${summary}`)
  let figures: Figure[] | undefined
  try {
    figures = await body(scenario)
  } catch (err) {
    console.error(`${bench} crashed:`, err)
  } finally {
    for (const fn of cleanups.reverse()) {
      try {
        await fn()
      } catch (err) {
        console.error(`${bench}: cleanup failed:`, err)
      }
    }
  }
  // Exit rather than wait: a client library's reconnect timer must not keep a finished script alive.
  if (!figures) process.exit(1)
  const checks = figures.filter((f) => f.met !== undefined)
  const failed = checks.filter((f) => !f.met)
  console.log('')
  for (const f of figures) {
    const mark = f.met === undefined ? '  ' : f.met ? 'ok' : 'NO'
    console.log(`${mark} ${f.name}: ${round(f.value, 4)} ${f.unit}${f.target ? ` (target ${f.target})` : ''}${f.note ? ` — ${f.note}` : ''}`)
  }
  console.log(`VERDICT ${bench}: ${failed.length === 0 ? 'PASS' : 'FAIL'} (${checks.length - failed.length}/${checks.length} checks met)`)
  reportResult({ bench, figures })
  process.exit(0)
}
