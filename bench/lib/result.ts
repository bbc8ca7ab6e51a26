/**
 * The contract between a bench file and bench/run.ts: a bench prints one line
 * `BENCH_RESULT {json}` per result on stdout; everything else it prints is passed through.
 */

export const RESULT_PREFIX = 'BENCH_RESULT '

export interface BaselineRef {
  name: string
  value: number
  unit: string
}

export interface Figure {
  name: string
  value: number
  unit: string
  baseline?: BaselineRef
  /** value / baseline.value: how many times the baseline's cost. */
  ratio?: number
  /** Human-readable target, e.g. "≤ 100 ms/MB". */
  target?: string
  met?: boolean
  note?: string
}

export interface BenchResult {
  bench: string
  figures: Figure[]
}

/** Prints a result for the runner. */
export function reportResult(result: BenchResult): void {
  process.stdout.write(`${RESULT_PREFIX}${JSON.stringify(result)}\n`)
}

/** The result on one output line, or undefined when the line is not a result line. Throws on a malformed one. */
export function parseResultLine(line: string): BenchResult | undefined {
  if (!line.startsWith(RESULT_PREFIX)) return undefined
  const parsed = JSON.parse(line.slice(RESULT_PREFIX.length)) as unknown
  if (!isBenchResult(parsed)) throw new Error(`Malformed ${RESULT_PREFIX.trim()} line: ${line.slice(0, 200)}`)
  return parsed
}

function isBenchResult(value: unknown): value is BenchResult {
  if (!value || typeof value !== 'object') return false
  const r = value as Partial<BenchResult>
  return typeof r.bench === 'string' && Array.isArray(r.figures) && r.figures.every(isFigure)
}

function isFigure(value: unknown): value is Figure {
  if (!value || typeof value !== 'object') return false
  const f = value as Partial<Figure>
  return typeof f.name === 'string' && typeof f.value === 'number' && typeof f.unit === 'string'
}

/** A figure compared to a baseline figure measured in the same run: fills baseline and ratio. */
export function versus(figure: Figure, baseline: Figure): Figure {
  return {
    ...figure,
    baseline: { name: baseline.name, value: baseline.value, unit: baseline.unit },
    ratio: baseline.value === 0 ? undefined : figure.value / baseline.value,
  }
}

/** "At most" targets; met only when every one is. The note lists each target's outcome. */
export function atMost(figure: Figure, targets: { label: string; max: number }[]): Figure {
  const outcomes = targets.map((t) => ({ ...t, met: figure.value <= t.max }))
  return {
    ...figure,
    target: outcomes.map((t) => `≤ ${t.max} ${figure.unit} (${t.label})`).join(', '),
    met: outcomes.every((t) => t.met),
    note: [figure.note, outcomes.map((t) => `${t.label} ${t.met ? 'met' : 'not met'}`).join(', ')].filter(Boolean).join('; '),
  }
}
