import type { CacheStats } from '../services/cache/cache-service'
import { FILE_TYPE_CATEGORIES, type FailureReason, type FileTypeCategory, type FileStatusStats, type FileTypeStats, type ProcessingStats, type UploadsInProgress, type UserStorage } from '../services/files/file-stats'
import type { InstanceInfo, SystemStats } from '../services/system/system-monitor'
import { builder } from './builder'
import { CacheLevelStatsRef, CacheMemoryRef, PopularKeyRef } from './cache'
import { EmailInfrastructureStatsRef } from './tracking'

const InstanceRef = builder.objectRef<InstanceInfo>('Instance').implement({
  description: 'A running instance, as its heartbeat reports it.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'hostname-pid-random.' }),
    hostname: t.exposeString('hostname', { description: 'Host it runs on.' }),
    pid: t.exposeInt('pid', { description: 'Process id.' }),
    version: t.exposeString('version', { description: 'Groundwork version it runs.' }),
    startedAt: t.expose('startedAt', { type: 'DateTime', description: 'When it started.' }),
    lastSeenAt: t.expose('lastSeenAt', { type: 'DateTime', description: 'Its latest heartbeat.' }),
    self: t.exposeBoolean('self', { description: 'True for the instance answering this query.' }),
  }),
})

const LagRef = builder.objectRef<SystemStats['eventLoopLagMs']>('EventLoopLag').implement({
  description: 'Event-loop delay of the answering instance since it started, in milliseconds.',
  fields: (t) => ({
    p50: t.exposeFloat('p50', { description: 'Median.' }),
    p99: t.exposeFloat('p99', { description: '99th percentile.' }),
    max: t.exposeFloat('max', { description: 'Worst seen.' }),
  }),
})

const MemoryRef = builder.objectRef<SystemStats['memory']>('ProcessMemory').implement({
  description: 'Memory of the answering instance.',
  fields: (t) => ({
    rssBytes: t.exposeFloat('rssBytes', { description: 'Resident set size.' }),
    heapUsedBytes: t.exposeFloat('heapUsedBytes', { description: 'V8 heap in use.' }),
  }),
})

const SystemStatsRef = builder.objectRef<SystemStats>('SystemStats').implement({
  description: 'The process and the cluster of instances.',
  fields: (t) => ({
    version: t.exposeString('version', { description: 'Groundwork version of the answering instance.' }),
    nodeVersion: t.exposeString('nodeVersion', { description: 'Node.js version.' }),
    uptimeSeconds: t.exposeFloat('uptimeSeconds', { description: 'Seconds since the answering instance started.' }),
    instanceId: t.exposeID('instanceId', { description: 'The answering instance.' }),
    instances: t.field({ type: [InstanceRef], description: 'Instances with a heartbeat in the last 30 s, newest first.', resolve: (s) => s.instances }),
    eventLoopLagMs: t.field({ type: LagRef, description: 'Event-loop delay.', resolve: (s) => s.eventLoopLagMs }),
    memory: t.field({ type: MemoryRef, description: 'Process memory.', resolve: (s) => s.memory }),
  }),
})

const CacheInfrastructureStatsRef = builder.objectRef<CacheStats>('CacheInfrastructureStats').implement({
  description: 'The cache of the answering instance, compact (cacheStats has every counter). Counters are raw: sum them across instances, then divide.',
  fields: (t) => ({
    backend: t.exposeString('backend', { description: '"redis" (L1 + L2) or "memory" (L1 only).' }),
    hits: t.exposeFloat('hits', { description: 'Reads answered by any level, stale ones included.' }),
    staleHits: t.exposeFloat('staleHits', { description: 'Hits served past the fresh TTL, within grace.' }),
    misses: t.exposeFloat('misses', { description: 'Reads no level could answer.' }),
    hitRate: t.exposeFloat('hitRate', { description: 'Overall hits / (hits + misses), 0 before the first read.' }),
    evictions: t.exposeFloat('evictions', { description: 'L1 entries evicted to stay within its bounds.' }),
    levels: t.field({ type: [CacheLevelStatsRef], description: 'Hits, stale hits, misses and hit rate of L1 (process) and L2 (Redis).', resolve: (s) => s.levels }),
    memory: t.field({
      type: CacheMemoryRef,
      description: `L1 items and bytes, and Redis memory. Kept for STATS_CACHE_MS: Redis memory takes a SCAN sample.`,
      resolve: (_s, _a, ctx) => ctx.services.infrastructure.cacheMemory(),
    }),
    popularKeys: t.field({
      type: [PopularKeyRef],
      description: 'The most popular resident keys by the admission sketch (top-k). Kept for STATS_CACHE_MS.',
      args: { limit: t.arg.int({ required: false, description: 'How many, 1-100 (default 10).' }) },
      resolve: (_s, args, ctx) => ctx.services.infrastructure.popularKeys(args.limit ?? 10),
    }),
  }),
})

const CATEGORY_DESCRIPTIONS: Record<FileTypeCategory, string> = {
  image: 'Images (image/*).',
  pdf: 'PDF documents.',
  video: 'Video (video/*).',
  audio: 'Audio (audio/*).',
  text: 'Text, JSON and XML.',
  archive: 'Zip, gzip, tar and other archives.',
  document: 'Office documents (Word, OpenDocument, RTF...).',
  other: 'Anything else, and chunked uploads not identified yet (application/octet-stream).',
}

const FileTypeCategoryEnum = builder.enumType('FileTypeCategory', {
  description: 'MIME types grouped into a fixed set of categories.',
  values: Object.fromEntries(FILE_TYPE_CATEGORIES.map((c) => [c.toUpperCase(), { value: c, description: CATEGORY_DESCRIPTIONS[c] }])) as Record<string, { value: FileTypeCategory; description: string }>,
})

const FileTypeStatsRef = builder.objectRef<FileTypeStats>('FileTypeStats').implement({
  description: 'Stored versions of one type category (failed ones excluded).',
  fields: (t) => ({
    type: t.field({ type: FileTypeCategoryEnum, description: 'The category.', resolve: (s) => s.type }),
    versions: t.exposeFloat('versions', { description: 'Versions that did not fail.' }),
    bytes: t.exposeFloat('bytes', { description: 'Their bytes, counted as the quota counts them (a deduplicated version counts in full).' }),
  }),
})

const FileStatusStatsRef = builder.objectRef<FileStatusStats>('FileStatusStats').implement({
  description: 'Files and versions in one status.',
  fields: (t) => ({
    status: t.exposeString('status', { description: '"processing", "ready" or "failed".' }),
    files: t.exposeFloat('files', { description: 'Files in this status (a file is ready once one version is).' }),
    versions: t.exposeFloat('versions', { description: 'Versions in this status.' }),
    bytes: t.exposeFloat('bytes', { description: 'Sizes of those versions; for "failed", what they had received (the bytes were deleted).' }),
  }),
})

const UploadsInProgressRef = builder.objectRef<UploadsInProgress>('UploadsInProgress').implement({
  description: 'Uploads not finished yet.',
  fields: (t) => ({
    sessions: t.exposeFloat('sessions', { description: 'Chunked upload sessions receiving parts or completing, not expired (all instances).' }),
    sessionBytes: t.exposeFloat('sessionBytes', { description: 'Their declared sizes.' }),
    sessionReceivedBytes: t.exposeFloat('sessionReceivedBytes', { description: 'Bytes of the parts they received so far.' }),
    receiving: t.exposeInt('receiving', { description: 'Single-request uploads receiving bytes on the answering instance.' }),
    processing: t.exposeFloat('processing', { description: 'Versions in the processing pipeline (all instances).' }),
  }),
})

const FailureReasonRef = builder.objectRef<FailureReason>('FileProcessingFailureReason').implement({
  description: 'Processing runs that failed with one error code at one step.',
  fields: (t) => ({
    code: t.exposeString('code', { description: 'The error code, e.g. VALIDATION_FAILED, or PROCESSING_FAILED when retries ran out.' }),
    step: t.exposeString('step', { description: 'The step it stopped at (validate, checksum, optimize, variants, finalize); empty when unknown.' }),
    runs: t.exposeFloat('runs', { description: 'How many runs.' }),
  }),
})

const ProcessingStatsRef = builder.objectRef<ProcessingStats>('FileProcessingStats').implement({
  description: 'Processing runs (one per uploaded version) that finished in a window of hourly buckets.',
  fields: (t) => ({
    windowHours: t.exposeInt('windowHours', { description: 'The window: the last N hourly buckets (UTC), the current one included.' }),
    finished: t.exposeFloat('finished', { description: 'Runs that ended, ready or failed.' }),
    succeeded: t.exposeFloat('succeeded', { description: 'Runs that made their version ready.' }),
    failed: t.exposeFloat('failed', { description: 'Runs that failed.' }),
    successRate: t.exposeFloat('successRate', { nullable: true, description: 'succeeded / finished (the target is > 0.995); null when nothing finished.' }),
    failureReasons: t.field({ type: [FailureReasonRef], description: 'The 10 most frequent failures, grouped by code and step.', resolve: (s) => s.failureReasons }),
  }),
})

const UserStorageRef = builder.objectRef<UserStorage>('UserStorage').implement({
  description: 'What one user stores against the quota.',
  fields: (t) => ({
    ownerId: t.exposeID('ownerId', { description: 'The user (token subject).' }),
    versions: t.exposeFloat('versions', { description: 'Versions stored (failed ones excluded).' }),
    usedBytes: t.exposeFloat('usedBytes', { description: 'Their bytes, every version counted.' }),
    reservedBytes: t.exposeFloat('reservedBytes', { description: 'Declared sizes of open upload sessions, which the quota also holds.' }),
    quotaBytes: t.exposeFloat('quotaBytes', { nullable: true, description: 'UPLOAD_QUOTA_BYTES; null when unlimited.' }),
    quotaUsed: t.exposeFloat('quotaUsed', { nullable: true, description: '(usedBytes + reservedBytes) / quotaBytes; null when unlimited.' }),
  }),
})

const FileInfrastructureStatsRef = builder.objectRef<Record<string, never>>('FileInfrastructureStats').implement({
  description: 'Files, from counters kept by database triggers: never a scan of the files. Each figure is kept for STATS_CACHE_MS.',
  fields: (t) => ({
    files: t.float({ description: 'Files, every status.', resolve: async (_s, _a, ctx) => (await ctx.services.infrastructure.fileTotals()).files }),
    versions: t.float({ description: 'Versions, every status.', resolve: async (_s, _a, ctx) => (await ctx.services.infrastructure.fileTotals()).versions }),
    storedBytes: t.float({ description: 'Bytes of the versions that did not fail: every user\'s usage together.', resolve: async (_s, _a, ctx) => (await ctx.services.infrastructure.fileTotals()).storedBytes }),
    byType: t.field({ type: [FileTypeStatsRef], description: 'Stored versions and bytes per type category, largest first.', resolve: async (_s, _a, ctx) => (await ctx.services.infrastructure.fileTotals()).byType }),
    byStatus: t.field({ type: [FileStatusStatsRef], description: 'Files, versions and bytes per status.', resolve: async (_s, _a, ctx) => (await ctx.services.infrastructure.fileTotals()).byStatus }),
    uploadsInProgress: t.field({ type: UploadsInProgressRef, description: 'Chunked sessions, single uploads and processing in progress.', resolve: (_s, _a, ctx) => ctx.services.infrastructure.uploadsInProgress() }),
    processing: t.field({
      type: ProcessingStatsRef,
      description: 'Processing success rate and failure reasons over a window.',
      args: { windowHours: t.arg.int({ required: false, description: 'Hours, 1-720 (default 24; 168 for a week).' }) },
      resolve: (_s, args, ctx) => ctx.services.infrastructure.fileProcessing(args.windowHours ?? 24),
    }),
    topUsers: t.field({
      type: [UserStorageRef],
      description: 'The users storing the most, largest first, with their quota.',
      args: { limit: t.arg.int({ required: false, description: 'How many, 1-100 (default 10).' }) },
      resolve: (_s, args, ctx) => ctx.services.infrastructure.topStorageUsers(args.limit ?? 10),
    }),
  }),
})

/** Each section resolves lazily, so a client pays only for what it selects. */
const InfrastructureStatsRef = builder.objectRef<Record<string, never>>('InfrastructureStats').implement({
  description: 'Operational figures in one place (admin). Everything is read from counters and rollups, never a full scan.',
  fields: (t) => ({
    cache: t.field({ type: CacheInfrastructureStatsRef, description: 'Hit rates per level, memory and popular keys of the answering instance.', resolve: (_s, _a, ctx) => ctx.services.infrastructure.cacheCounters() }),
    files: t.field({ type: FileInfrastructureStatsRef, description: 'Counts and bytes by type and status, uploads in progress, processing success rate, usage per user.', resolve: () => ({}) }),
    system: t.field({ type: SystemStatsRef, description: 'Uptime, version, instances and event-loop lag.', resolve: (_s, _a, ctx) => ctx.services.system.stats() }),
    email: t.field({ type: EmailInfrastructureStatsRef, description: 'Campaign email: sent, delivered and failed over 1, 7 and 30 days, delivery rate, campaign success, queue and webhook backlog.', resolve: (_s, _a, ctx) => ctx.services.tracking.analytics.infrastructureStats() }),
  }),
})

builder.queryField('infrastructureStats', (t) =>
  t.field({
    type: InfrastructureStatsRef,
    description: 'Cache, files, email and system figures (admin).',
    authScopes: { admin: true },
    resolve: () => ({}),
  }),
)
