import { ValidationError } from '../../lib/errors'
import type { CacheMemory, CacheService, CacheStats, PopularKey } from '../cache/cache-service'
import type { FileStats, FileTotals, ProcessingStats, UploadsInProgress, UserStorage } from '../files/file-stats'
import { TtlMemo } from './ttl-memo'

export interface InfrastructureStatsDeps {
  cache: CacheService
  files: FileStats
  /** How long a computed section is reused; 0 computes every time. */
  cacheMs: number
}

const MAX_POPULAR_KEYS = 100

/**
 * The cache and files sections of infrastructureStats, and what each figure costs:
 *
 *   - live on every read: the cache counters (plain numbers this process keeps);
 *   - kept for `cacheMs` in this process: Redis memory (INFO plus a SCAN sample with MEMORY USAGE),
 *     popular keys (a pass over the resident L1 keys), and every files figure (a compaction of the
 *     trigger-kept deltas, then a few rows or an index range: see FileStats).
 *
 * An in-process memo rather than the cache's own getOrSet: reading the figures through the cache
 * would add the stats queries to the very hit and miss counters they report.
 */
export class InfrastructureStats {
  private readonly memo: TtlMemo

  constructor(private readonly deps: InfrastructureStatsDeps) {
    this.memo = new TtlMemo(deps.cacheMs)
  }

  cacheCounters(): CacheStats {
    return this.deps.cache.stats()
  }

  cacheMemory(): Promise<CacheMemory> {
    return this.memo.get('cache.memory', () => this.deps.cache.memory())
  }

  popularKeys(limit: number): Promise<PopularKey[]> {
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_POPULAR_KEYS) throw ValidationError.field(['limit'], `limit must be between 1 and ${MAX_POPULAR_KEYS}`)
    return this.memo.get(`cache.popular.${limit}`, async () => this.deps.cache.popularKeys(limit))
  }

  fileTotals(): Promise<FileTotals> {
    return this.memo.get('files.totals', () => this.deps.files.totals())
  }

  uploadsInProgress(): Promise<UploadsInProgress> {
    return this.memo.get('files.inProgress', () => this.deps.files.uploadsInProgress())
  }

  fileProcessing(windowHours: number): Promise<ProcessingStats> {
    return this.memo.get(`files.processing.${windowHours}`, () => this.deps.files.processing(windowHours))
  }

  topStorageUsers(limit: number): Promise<UserStorage[]> {
    return this.memo.get(`files.topUsers.${limit}`, () => this.deps.files.topUsers(limit))
  }
}
