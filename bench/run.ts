/**
 * `npm run bench [-- name ...]`: runs every bench/*.bench.ts and fault script bench/faults/*.ts (or the
 * named ones; `faults` names every fault script), each in its own child process with jemalloc preloaded
 * when installed, collects their `BENCH_RESULT {json}` lines and regenerates bench/RESULTS.md. Exits
 * non-zero if any bench failed.
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readdir, readFile, rename, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { gitRevision } from './lib/git'
import { JEMALLOC_PATH, machineInfo, withJemalloc } from './lib/machine'
import { parseReport, renderReport, type BenchRecord } from './lib/report'
import { parseResultLine, type BenchResult } from './lib/result'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const BENCH_DIR = path.join(ROOT, 'bench')
const RESULTS = path.join(BENCH_DIR, 'RESULTS.md')
const SUFFIX = '.bench.ts'
/** Fault scripts: bench/faults/<name>.ts, run as `faults/<name>`; their helpers live in bench/faults/lib/. */
const FAULTS = 'faults'
/** Per bench; override with BENCH_TIMEOUT_MS. */
const TIMEOUT_MS = Number(process.env.BENCH_TIMEOUT_MS) || 10 * 60_000

async function main(): Promise<number> {
  const benches = (await readdir(BENCH_DIR)).filter((f) => f.endsWith(SUFFIX)).map((f) => f.slice(0, -SUFFIX.length))
  const faults = (await readdir(path.join(BENCH_DIR, FAULTS)).catch(() => [])).filter((f) => f.endsWith('.ts')).map((f) => `${FAULTS}/${f.slice(0, -3)}`)
  const available = [...benches, ...faults].sort()
  const wanted = process.argv.slice(2).flatMap((arg) => {
    const name = benchName(arg)
    return name === FAULTS ? faults : [name]
  })
  const unknown = wanted.filter((w) => !available.includes(w))
  if (unknown.length > 0) {
    console.error(`Unknown bench ${unknown.map((u) => `"${u}"`).join(', ')}. Available: ${available.join(', ') || '(none)'}`)
    return 2
  }
  const names = wanted.length > 0 ? [...new Set(wanted)] : available
  if (names.length === 0) {
    console.error(`No bench/*${SUFFIX} files found.`)
    return 2
  }

  const { env, used: jemalloc } = withJemalloc(process.env)
  console.log(
    jemalloc
      ? `jemalloc: preloaded into bench processes (LD_PRELOAD=${env.LD_PRELOAD})`
      : `jemalloc: not preloaded (${JEMALLOC_PATH} not found); sharp runs with concurrency 1 under glibc`,
  )
  const date = new Date().toISOString()
  const machine = machineInfo()
  const revision = gitRevision(ROOT)
  const records: BenchRecord[] = []
  const failures: Record<string, string> = {}
  /** Benches that succeeded in this run: their earlier results are replaced. */
  const ran = new Set<string>()

  for (const name of names) {
    console.log(`\n=== bench: ${name} ===`)
    const started = performance.now()
    const outcome = await runBench(path.join(BENCH_DIR, name.startsWith(`${FAULTS}/`) ? `${name}.ts` : `${name}${SUFFIX}`), env)
    const seconds = (performance.now() - started) / 1000
    if (outcome.error) {
      failures[name] = outcome.error
      console.error(`=== ${name} FAILED after ${seconds.toFixed(1)} s: ${outcome.error}`)
    } else {
      console.log(`=== ${name}: ${outcome.results.length} result(s) in ${seconds.toFixed(1)} s`)
    }
    if (outcome.error) continue
    ran.add(name)
    for (const result of outcome.results) records.push({ file: name, result, date, machine, jemalloc, revision, seconds })
  }

  // Keep the last results of benches not run (or failed) this time, as long as their file still exists.
  const previous = existsSync(RESULTS) ? parseReport(await readFile(RESULTS, 'utf8')) : []
  for (const old of previous) if (!ran.has(old.file) && available.includes(old.file)) records.push(old)
  const markdown = renderReport({ date, machine, jemalloc, revision, records, failures })
  const tmp = `${RESULTS}.${process.pid}.tmp`
  await writeFile(tmp, markdown)
  await rename(tmp, RESULTS)
  console.log(`\nWrote ${path.relative(process.cwd(), RESULTS) || RESULTS}`)
  return Object.keys(failures).length > 0 ? 1 : 0
}

/** `upload`, `upload.bench.ts`, `bench/upload.bench.ts` -> `upload`; `bench/faults/x.ts` -> `faults/x`. */
function benchName(arg: string): string {
  const inside = path.relative(BENCH_DIR, path.resolve(arg))
  const name = inside.startsWith('..') || path.isAbsolute(inside) ? arg : inside
  return name.split(path.sep).join('/').replace(/\.bench\.ts$|\.ts$/, '')
}

/** Runs one bench file in a child process; stdout lines that are results are collected, the rest passed through. */
function runBench(file: string, env: NodeJS.ProcessEnv): Promise<{ results: BenchResult[]; error?: string }> {
  return new Promise((resolve) => {
    const results: BenchResult[] = []
    let parseError: string | undefined
    const child = spawn(process.execPath, ['--import', 'tsx', file], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'inherit'] })
    const timer = setTimeout(() => {
      parseError = `timed out after ${TIMEOUT_MS / 1000} s`
      child.kill('SIGKILL')
    }, TIMEOUT_MS)
    const lines = createInterface({ input: child.stdout })
    lines.on('line', (line) => {
      try {
        const result = parseResultLine(line)
        if (result) {
          results.push(result)
          console.log(`  collected ${result.bench}: ${result.figures.length} figure(s)`)
        } else {
          console.log(line)
        }
      } catch (err) {
        parseError = (err as Error).message
      }
    })
    child.on('error', (err) => {
      parseError = err.message
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      let error = parseError
      if (!error && (code !== 0 || signal)) error = signal ? `killed by ${signal}` : `exited with code ${code}`
      if (!error && results.length === 0) error = 'printed no BENCH_RESULT line'
      resolve({ results, error })
    })
  })
}

main().then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    console.error(err)
    process.exitCode = 1
  },
)
