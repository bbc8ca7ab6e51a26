import type { FileStatsRepository, MimeStatusTotal } from '../../infra/db/file-stats-repository'
import { ValidationError } from '../../lib/errors'

/** Mime categories: a fixed set, so a type breakdown stays small whatever the allowlist holds. */
export const FILE_TYPE_CATEGORIES = ['image', 'pdf', 'video', 'audio', 'text', 'archive', 'document', 'other'] as const
export type FileTypeCategory = (typeof FILE_TYPE_CATEGORIES)[number]

const ARCHIVES = new Set(['application/zip', 'application/gzip', 'application/x-tar', 'application/x-7z-compressed', 'application/vnd.rar', 'application/x-bzip2', 'application/x-xz', 'application/zstd'])
const TEXTS = new Set(['application/json', 'application/xml'])

export function fileTypeCategory(mimeType: string): FileTypeCategory {
  const [top = '', sub = ''] = mimeType.split('/')
  if (top === 'image' || top === 'video' || top === 'audio') return top
  if (mimeType === 'application/pdf') return 'pdf'
  if (top === 'text' || TEXTS.has(mimeType)) return 'text'
  if (ARCHIVES.has(mimeType)) return 'archive'
  if (mimeType === 'application/msword' || mimeType === 'application/rtf' || /^(vnd\.openxmlformats-officedocument|vnd\.oasis\.opendocument|vnd\.ms-)/.test(sub)) return 'document'
  return 'other'
}

export interface FileTypeStats {
  type: FileTypeCategory
  /** Versions that did not fail. */
  versions: number
  /** Their bytes, as the quota counts them (a deduplicated version counts in full). */
  bytes: number
}

export interface FileStatusStats {
  status: string
  files: number
  versions: number
  /** Sizes of the versions in this status; for `failed`, what they had received (their bytes were deleted). */
  bytes: number
}

export interface FileTotals {
  files: number
  versions: number
  /** Bytes of every version that did not fail: the sum of every owner's usage. */
  storedBytes: number
  byType: FileTypeStats[]
  byStatus: FileStatusStats[]
}

export interface UploadsInProgress {
  /** Chunked upload sessions still receiving parts or completing, not expired. */
  sessions: number
  /** Their declared sizes. */
  sessionBytes: number
  /** Bytes of the parts they have received so far. */
  sessionReceivedBytes: number
  /** Single-request uploads receiving bytes on this instance right now. */
  receiving: number
  /** Versions in the processing pipeline. */
  processing: number
}

export interface FailureReason {
  /** The error code the version failed with (VALIDATION_FAILED, PROCESSING_FAILED...). */
  code: string
  /** The step it stopped at; '' when unknown. */
  step: string
  runs: number
}

export interface ProcessingStats {
  windowHours: number
  finished: number
  succeeded: number
  failed: number
  /** succeeded / finished; null while nothing finished in the window. */
  successRate: number | null
  /** The most frequent failures, at most MAX_REASONS. */
  failureReasons: FailureReason[]
}

export interface UserStorage {
  ownerId: string
  versions: number
  usedBytes: number
  /** Declared sizes of the user's open upload sessions, which the quota also reserves. */
  reservedBytes: number
  quotaBytes: number | null
  /** (usedBytes + reservedBytes) / quotaBytes; null without a quota. */
  quotaUsed: number | null
}

export interface FileStatsDeps {
  repo: FileStatsRepository
  /** Single-request uploads in flight on this instance. */
  receiving: () => number
  /** 0 = unlimited. */
  quotaBytes: number
}

export const MAX_WINDOW_HOURS = 720
export const MAX_TOP_USERS = 100
const MAX_REASONS = 10

/**
 * Files figures for infrastructureStats. Every figure comes from the trigger-kept totals (see
 * FileStatsRepository) or an index range: no aggregate over files or versions. Reads compact the
 * pending deltas first, so they include every committed change. No caching here: the caller
 * (InfrastructureStats) keeps each section for a few seconds.
 */
export class FileStats {
  private compacting: Promise<number> | undefined

  constructor(private readonly deps: FileStatsDeps) {}

  /** Folds pending changes into the totals; concurrent callers share one run. The sweeper calls it too. */
  compact(): Promise<number> {
    this.compacting ??= this.deps.repo.compact().finally(() => {
      this.compacting = undefined
    })
    return this.compacting
  }

  async totals(): Promise<FileTotals> {
    await this.compact()
    const { versions, files } = await this.deps.repo.totals()
    const byType = new Map<FileTypeCategory, FileTypeStats>()
    const byStatus = new Map<string, FileStatusStats>()
    const statusOf = (status: string) => byStatus.get(status) ?? byStatus.set(status, { status, files: 0, versions: 0, bytes: 0 }).get(status)!
    for (const row of versions) {
      const s = statusOf(row.status)
      s.versions += row.versions
      s.bytes += row.bytes
      if (row.status === 'failed') continue
      const type = fileTypeCategory(row.mimeType)
      const t = byType.get(type) ?? byType.set(type, { type, versions: 0, bytes: 0 }).get(type)!
      t.versions += row.versions
      t.bytes += row.bytes
    }
    for (const row of files) statusOf(row.status).files += row.files
    const stored = versions.filter((r: MimeStatusTotal) => r.status !== 'failed')
    return {
      files: files.reduce((n, r) => n + r.files, 0),
      versions: versions.reduce((n, r) => n + r.versions, 0),
      storedBytes: stored.reduce((n, r) => n + r.bytes, 0),
      byType: [...byType.values()].sort((a, b) => b.bytes - a.bytes || a.type.localeCompare(b.type)),
      byStatus: [...byStatus.values()].sort((a, b) => a.status.localeCompare(b.status)),
    }
  }

  async uploadsInProgress(): Promise<UploadsInProgress> {
    const [open, totals] = await Promise.all([this.deps.repo.openSessions(), this.totals()])
    return {
      sessions: open.sessions,
      sessionBytes: open.declaredBytes,
      sessionReceivedBytes: open.receivedBytes,
      receiving: this.deps.receiving(),
      processing: totals.byStatus.find((s) => s.status === 'processing')?.versions ?? 0,
    }
  }

  async processing(windowHours: number): Promise<ProcessingStats> {
    if (!Number.isInteger(windowHours) || windowHours < 1 || windowHours > MAX_WINDOW_HOURS) {
      throw ValidationError.field(['windowHours'], `windowHours must be between 1 and ${MAX_WINDOW_HOURS}`)
    }
    await this.compact()
    const rows = await this.deps.repo.pipelineRuns(windowHours)
    const succeeded = rows.filter((r) => r.outcome === 'ready').reduce((n, r) => n + r.runs, 0)
    const failures = rows.filter((r) => r.outcome === 'failed')
    const failed = failures.reduce((n, r) => n + r.runs, 0)
    const finished = succeeded + failed
    return {
      windowHours,
      finished,
      succeeded,
      failed,
      successRate: finished > 0 ? succeeded / finished : null,
      failureReasons: failures
        .map(({ code, step, runs }) => ({ code, step, runs }))
        .sort((a, b) => b.runs - a.runs || a.code.localeCompare(b.code) || a.step.localeCompare(b.step))
        .slice(0, MAX_REASONS),
    }
  }

  async topUsers(limit: number): Promise<UserStorage[]> {
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_TOP_USERS) throw ValidationError.field(['limit'], `limit must be between 1 and ${MAX_TOP_USERS}`)
    await this.compact()
    const quota = this.deps.quotaBytes > 0 ? this.deps.quotaBytes : null
    return (await this.deps.repo.topOwners(limit)).map((r) => ({
      ownerId: r.ownerId,
      versions: r.versions,
      usedBytes: r.bytes,
      reservedBytes: r.reservedBytes,
      quotaBytes: quota,
      quotaUsed: quota === null ? null : (r.bytes + r.reservedBytes) / quota,
    }))
  }
}
