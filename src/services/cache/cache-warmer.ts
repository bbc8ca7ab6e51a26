import { ValidationError } from '../../lib/errors'
import { validatePattern } from './cache-input'
import type { WarmProgress } from './cache-stats'
import { escapeGlob, globMatcher } from './glob'

export interface WarmEntry {
  key: string
  value: unknown
  ttlSeconds?: number
  graceSeconds?: number
  tags?: string[]
}

export interface CacheWarmer {
  /** Unique; what warmCache(['name']) and CACHE_WARM_ON_BOOT refer to. */
  name: string
  /** The keys it fills, as a glob relative to the namespace it was registered on, e.g. "file:*". */
  pattern: string
  /** Yields entries; pulled lazily, so a warmer can stream millions of rows. */
  load: () => AsyncIterable<WarmEntry> | Iterable<WarmEntry>
}

export interface WarmResult {
  warmers: string[]
  entries: number
  failed: number
  popularKeys: number
  durationMs: number
}

export interface WarmTarget {
  /** Resolves to how many entries were stored; the rest failed (too large, or Redis refused the batch). */
  setMany(entries: readonly WarmEntry[]): Promise<number>
  /** The namespace the warmer was registered on, as a key prefix ('' for the root): its pattern is relative to it. */
  keyPrefix: string
}

export interface PopularSource {
  /** Resident keys by estimated popularity that know how to recompute themselves. */
  list(limit: number): { key: string; rewarm: () => Promise<void> }[]
}

export interface WarmOptions {
  batchSize: number
  concurrency: number
  popularLimit: number
}

/**
 * Runs registered warmers: entries are written in batches (one pipeline each) with
 * at most `concurrency` batches in flight, then the currently popular keys are
 * recomputed through their loaders. One run at a time; a second call joins it.
 */
export class WarmingRegistry {
  private readonly warmers = new Map<string, { warmer: CacheWarmer; target: WarmTarget }>()
  private running: Promise<WarmResult> | null = null
  private state: WarmProgress = { running: false, warmers: [], current: null, entries: 0, failed: 0, popularKeys: 0, startedAt: null, finishedAt: null, error: null }

  constructor(
    private readonly popular: PopularSource,
    private readonly options: WarmOptions,
  ) {}

  register(warmer: CacheWarmer, target: WarmTarget): void {
    if (!warmer.name || typeof warmer.load !== 'function') throw ValidationError.field('warmer', 'A warmer needs a name and a load function')
    validatePattern(warmer.pattern, { confirm: true })
    if (this.warmers.has(warmer.name)) throw ValidationError.field('warmer', `A warmer named "${warmer.name}" is already registered`)
    this.warmers.set(warmer.name, { warmer, target })
  }

  names(): string[] {
    return [...this.warmers.keys()]
  }

  progress(): WarmProgress {
    return { ...this.state, warmers: [...this.state.warmers] }
  }

  /** Without patterns: every warmer and the popular keys. A pattern selects warmers by name, by equal pattern or by glob. */
  warm(patterns?: readonly string[], options: { popular?: boolean } = {}): Promise<WarmResult> {
    if (patterns) for (const p of patterns) validatePattern(p, { confirm: true })
    if (this.running) return this.running
    const run = this.run(patterns, options.popular ?? true).finally(() => {
      this.running = null
    })
    this.running = run
    return run
  }

  private async run(patterns: readonly string[] | undefined, popular: boolean): Promise<WarmResult> {
    const started = Date.now()
    const matchers = patterns?.map((p) => ({ p, matches: globMatcher(p) }))
    const selected = [...this.warmers.values()].filter(({ warmer }) =>
      matchers === undefined || matchers.some(({ p, matches }) => p === warmer.name || p === warmer.pattern || matches(warmer.pattern)),
    )
    this.state = { running: true, warmers: selected.map((s) => s.warmer.name), current: null, entries: 0, failed: 0, popularKeys: 0, startedAt: new Date(started), finishedAt: null, error: null }
    try {
      for (const { warmer, target } of selected) {
        this.state.current = warmer.name
        await this.runWarmer(warmer, target)
      }
      if (popular) {
        this.state.current = 'popular keys'
        // Popular keys are full keys: those a selected warmer's pattern covers in its namespace, or a pattern given whole.
        const filters = matchers && [...matchers.map((m) => m.matches), ...selected.map(({ warmer, target }) => globMatcher(escapeGlob(target.keyPrefix) + warmer.pattern))]
        await this.rewarmPopular(filters)
      }
    } catch (err) {
      this.state.error = err instanceof Error ? err.message : String(err)
      throw err
    } finally {
      this.state.running = false
      this.state.current = null
      this.state.finishedAt = new Date()
    }
    const { warmers, entries, failed, popularKeys } = this.state
    return { warmers, entries, failed, popularKeys, durationMs: Date.now() - started }
  }

  private async runWarmer(warmer: CacheWarmer, target: WarmTarget): Promise<void> {
    const inflight = new Set<Promise<void>>()
    const flush = async (batch: WarmEntry[]): Promise<void> => {
      try {
        const stored = await target.setMany(batch)
        this.state.entries += stored
        this.state.failed += batch.length - stored
      } catch {
        this.state.failed += batch.length
      }
    }
    let batch: WarmEntry[] = []
    for await (const entry of warmer.load()) {
      batch.push(entry)
      if (batch.length < this.options.batchSize) continue
      const p = flush(batch).finally(() => inflight.delete(p))
      inflight.add(p)
      batch = []
      if (inflight.size >= this.options.concurrency) await Promise.race(inflight)
    }
    if (batch.length > 0) await flush(batch)
    await Promise.all(inflight)
  }

  private async rewarmPopular(filters: ((key: string) => boolean)[] | undefined): Promise<void> {
    const candidates = this.popular.list(this.options.popularLimit).filter(({ key }) => !filters || filters.some((matches) => matches(key)))
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < candidates.length) {
        const candidate = candidates[next++]!
        try {
          await candidate.rewarm()
          this.state.popularKeys++
        } catch {
          this.state.failed++
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(this.options.concurrency, candidates.length) }, worker))
  }
}
