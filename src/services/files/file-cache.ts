import type { FileRepository, FileRow, FileVersionRow } from '../../infra/db/file-repository'
import type { CacheService, CacheWarmer, WarmEntry } from '../cache/cache-service'

const FILE_CACHE_TTL = 300
const fileTag = (id: string) => `file:${id}`
/** How many of the newest files the warmer preloads. */
export const FILE_WARM_LIMIT = 1000
const settledFile = (row: FileRow) => row.status !== 'processing' && row.latestVersion === row.currentVersion

/**
 * File and version rows are read by every File resolver. Only settled rows are cached: a row still
 * processing changes when processing ends (on whichever instance), while a settled row changes only
 * through a write that invalidates the file's tag. Keeping unsettled rows out also keeps them out of
 * the window where a read racing an invalidation could store a stale copy.
 */
export class FileCache {
  constructor(
    private readonly repo: FileRepository,
    private readonly cache: CacheService | undefined,
    private readonly logger: { warn(obj: object, msg?: string): void },
  ) {}

  findFile(id: string): Promise<FileRow | undefined> {
    // A newer version in flight (latest above current) changes the row when it finishes, possibly on another instance.
    return this.cached(id, fileTag(id), () => this.repo.findById(id), settledFile)
  }

  /**
   * Preloads the newest files and their current versions under the keys, tags, TTL and settledness
   * rule the reads use; versions come through the reads' own loader. Register it on the same cache.
   */
  warmer(limit = FILE_WARM_LIMIT): CacheWarmer {
    return { name: 'files.recent', pattern: '*', load: () => this.recentEntries(limit) }
  }

  private async *recentEntries(limit: number): AsyncIterable<WarmEntry> {
    for (const row of await this.repo.list({ limit })) {
      if (!settledFile(row)) continue
      const tags = [fileTag(row.id)]
      yield { key: row.id, value: row, ttlSeconds: FILE_CACHE_TTL, tags }
      const version = await this.repo.findVersion(row.id, row.currentVersion)
      if (version && version.status !== 'processing') yield { key: `${row.id}:v${row.currentVersion}`, value: version, ttlSeconds: FILE_CACHE_TTL, tags }
    }
  }

  findVersion(fileId: string, number: number): Promise<FileVersionRow | undefined> {
    return this.cached(`${fileId}:v${number}`, fileTag(fileId), () => this.repo.findVersion(fileId, number), (row) => row.status !== 'processing')
  }

  /** The write is committed already: a cache failure must not fail it; the TTL bounds what it leaves stale. */
  async invalidate(fileId: string): Promise<void> {
    if (!this.cache) return
    try {
      await this.cache.invalidateTags([fileTag(fileId)])
      await this.cache.del(fileId)
    } catch (err) {
      this.logger.warn({ err, fileId }, 'file cache invalidation failed')
    }
  }

  private async cached<T>(key: string, tag: string, load: () => Promise<T | undefined>, settled: (row: T) => boolean): Promise<T | undefined> {
    if (!this.cache) return load()
    let fresh: T | undefined
    const hit = await this.cache.getMultiLevel<T | undefined>(
      key,
      async () => {
        fresh = await load()
        // undefined is never cached: an unsettled row goes back to the caller below instead.
        return fresh !== undefined && settled(fresh) ? fresh : undefined
      },
      { ttlSeconds: FILE_CACHE_TTL, tags: [tag] },
    )
    // Another caller's single-flight load may have found it unsettled: read it directly then.
    return hit ?? fresh ?? load()
  }
}
