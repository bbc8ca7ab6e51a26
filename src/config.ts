/**
 * The only module that reads process.env. `loadConfig` validates every variable at once and
 * throws one ConfigError listing each bad one, so a misconfigured deploy fails at boot with
 * the whole story instead of at the first request.
 */
import os from 'node:os'
import path from 'node:path'
import { parseAddress } from './lib/email-address'

export type Env = Record<string, string | undefined>

export interface S3Config {
  bucket: string
  endpoint?: string
  region: string
  accessKeyId?: string
  secretAccessKey?: string
  forcePathStyle: boolean
}

export interface Config {
  nodeEnv: string
  host: string
  port: number
  logLevel: string
  dataDir: string
  publicUrl: string
  trustProxy: boolean
  databaseUrl?: string
  redisUrl?: string
  /** REDIS_URL is a seed node of a Redis Cluster. */
  redisCluster: boolean
  redisKeyPrefix: string
  s3?: S3Config
  resendApiKey?: string
  emailFrom: string
  /** Transactional email templates to use instead of the bundled ones; checked at boot. */
  emailTemplatesDir?: string
  auth: {
    jwtSecret?: string
    jwtPublicKey?: string
    jwtIssuer?: string
    jwtAudience?: string
  }
  /** HMAC key for signed download and email links; generated into DATA_DIR in embedded mode. */
  signingSecret?: string
  links: {
    verifyEmailUrl: string
    resetPasswordUrl: string
  }
  uploads: {
    maxFileBytes: number
    maxImageBytes: number
    maxFiles: number
    allowedTypes: string[]
    imageMaxEdge: number
    imageMaxPixels: number
  }
  cache: {
    /** False: resolvers read file metadata, templates and campaign stats straight from the database. */
    resolvers: boolean
    defaultTtlSeconds: number
    /** L1 (in-process) bounds: entries and bytes. */
    l1MaxItems: number
    l1MaxBytes: number
    /** Longest a copy stays in L1 while Redis holds the entry: bounds a lost bus message. */
    l1MaxTtlSeconds: number
    maxEntryBytes: number
    /** No request waits longer for Redis; past the hard timeout a call counts against the breaker. */
    softTimeoutMs: number
    hardTimeoutMs: number
    /** TTLs vary by ±this many percent. */
    jitterPercent: number
    /** Default stale-while-revalidate grace for getMultiLevel. */
    graceSeconds: number
    loaderTimeoutMs: number
    lockWaitMs: number
    breakerThreshold: number
    breakerCooldownMs: number
    /** Cross-instance L1 invalidation over Redis pub/sub. */
    bus: boolean
    /** Warmers (by name) run once the app is ready. */
    warmOnBoot: string[]
    warmConcurrency: number
  }
  graphql: {
    graphiql: boolean
    /** Whether `__schema` and `__type` are answered (`__typename` always is). */
    introspection: boolean
    maxDepth: number
    maxComplexity: number
    /** Subscriptions one WebSocket connection may run at once. */
    maxSubscriptionsPerConnection: number
  }
  metrics: {
    /** Bearer token for GET /metrics; required to serve it when NODE_ENV=production. */
    token?: string
  }
  protection: {
    /** Shed load with 503 when the event loop lags more than this (0 disables). */
    maxEventLoopDelayMs: number
    /** Mutations per user (or IP when anonymous) per window. */
    rateLimitMax: number
    rateLimitWindowMs: number
  }
  shutdownGraceMs: number
  /** infrastructureStats reuses a computed section (Redis memory, popular keys, file figures) this long. */
  statsCacheMs: number
  /** Run background workers (email dispatch) in this process. */
  workers: boolean
  workerPollMs: number
  files: FilesConfig
  campaigns: CampaignConfig
  tracking: TrackingConfig
  webhooks: WebhooksConfig
}

/** Outgoing webhooks (src/services/webhooks): signed event callbacks to the app's endpoints. */
export interface WebhooksConfig {
  /** One delivery attempt, connection to last byte of the answer. */
  timeoutMs: number
  /** Attempts per delivery, the first included, before it is `failed`. */
  maxAttempts: number
  /** Delay before each retry (ms); past its end the last one repeats. */
  retrySchedule: number[]
  /** Deliveries one instance has in flight at once. */
  concurrency: number
  /** An endpoint is disabled after this many deliveries in a row failed for good (attempts exhausted); retried attempts do not count. */
  disableAfterFailures: number
  /** Endpoints may be (or resolve to) loopback, private and link-local addresses. */
  allowPrivateUrls: boolean
  /** Only https endpoints (NODE_ENV=production). */
  requireHttps: boolean
  /** Delivered and failed deliveries are deleted after this many days; 0 keeps them. */
  deliveryRetentionDays: number
}

/** `global`: the suppression list and every contact with the address; `audience`: the contacts in the campaign's audiences only. */
export type UnsubscribeScope = 'global' | 'audience'
const UNSUBSCRIBE_SCOPES: readonly string[] = ['global', 'audience'] satisfies UnsubscribeScope[]

/** Email tracking (src/services/tracking): campaign (marketing) mail only; transactional mail is never tracked. */
export interface TrackingConfig {
  /** Open pixel in campaign mail. */
  opens: boolean
  /** Click redirects for the web links of campaign mail. */
  clicks: boolean
  /** Tracking links work this long after the campaign started. */
  linkTtlDays: number
  /** A conversion counts when it comes this long after the click, at most. */
  attributionWindowHours: number
  /** Count a recipient's first conversion per campaign only. */
  conversionOnce: boolean
  /** Query parameter the click redirect adds with the token for recordConversion; empty: not added. */
  conversionParam: string
  /** Currency of a conversion value sent without one. */
  defaultCurrency: string
  /** Clicks within this many seconds of the send are a security scanner's. */
  scannerWindowSeconds: number
  /** More user-agent substrings that mark a hit as machine. */
  machineUserAgents: string[]
  /** Hits held in memory at most per instance; past it new hits are dropped and counted. */
  bufferMax: number
  /** Hits per database write. */
  flushBatch: number
  flushMs: number
  /** Raw events older than this are deleted (the rollups stay); 0 keeps them. */
  eventRetentionDays: number
  /** Processed webhook rows (and so svix-id de-duplication) are kept this long. */
  webhookRetentionDays: number
  pruneIntervalMs: number
  /** Requests per IP per RATE_LIMIT_WINDOW_MS on the pixel, redirect and conversion endpoints. */
  rateLimitMax: number
  /** Most of an IP's quota one instance reserves from Redis at once (see hit-rate-limiter.ts). */
  rateLimitChunk: number
  /** RESEND_WEBHOOK_SECRET (whsec_...): without it POST /webhooks/resend answers 404. */
  webhookSecret?: string
  /** Webhook rows one instance applies in parallel. */
  webhookConcurrency: number
  /** What a one-click unsubscribe applies to. */
  unsubscribeScope: UnsubscribeScope
}

export interface CampaignConfig {
  /** Provider requests per second across all instances (a batch is one request); 0 = unlimited. */
  rateLimitPerSecond: number
  /** Recipients per provider request, at most 100 (Resend's batch limit). */
  batchSize: number
  /** Batches one instance sends in parallel. */
  concurrency: number
  /** How long a claimed batch stays an instance's; a dead instance's batches are taken over after it. */
  leaseMs: number
  /** Auto-pause once bounced / sent passes this fraction. */
  pauseBounceRate: number
  /** Auto-pause once complained / sent passes this fraction. */
  pauseComplaintRate: number
  /** Rates are only judged after this many accepted emails, so one early bounce does not stop a campaign. */
  pauseMinSent: number
  /** The mailto: in List-Unsubscribe; defaults to unsubscribe@<campaign from domain>. */
  unsubscribeMailto?: string
}

/** Chunked upload sessions, versions, quotas and the processing pipeline (src/services/files). */
export interface FilesConfig {
  /** A session expires this long after it last received a part. */
  sessionTtlHours: number
  /** Largest file a chunked upload session accepts. */
  sessionMaxBytes: number
  /** Preferred part size; raised for big files so that no upload needs more than 10,000 parts. */
  partBytes: number
  /** Bytes one user may store, every version counted; 0 = unlimited. */
  quotaBytes: number
  /** uploadFile waits this long for processing before answering with a PROCESSING file. */
  processingWaitMs: number
  /** Retention: a version is kept while it is among the newest `versionsKeep` or younger than `versionsMaxAgeDays` (0 = that rule is off). */
  versionsKeep: number
  versionsMaxAgeDays: number
  /** How often expired sessions and retention are swept. */
  sweepIntervalMs: number
  pipelineMaxAttempts: number
  pipelineLeaseMs: number
  /** First retry delay; doubles per attempt. */
  pipelineBackoffMs: number
  /** Uploads one instance processes at once. */
  pipelineConcurrency: number
  /** Images decoded at once per instance (sharp holds whole images in memory). */
  imageConcurrency: number
  imageVariants: ImageVariantSpec[]
  imageMaxFrames: number
  allowSvg: boolean
}

export interface ImageVariantSpec {
  name: string
  maxEdge: number
  format: 'webp' | 'jpeg' | 'png' | 'avif'
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`)
  }
}

export const DEFAULT_ALLOWED_TYPES = ['image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/avif', 'application/pdf']

const MiB = 1024 * 1024

export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = []
  const str = (name: string): string | undefined => {
    const v = env[name]?.trim()
    return v === '' ? undefined : v
  }
  const int = (name: string, fallback: number, min: number, max: number): number => {
    const raw = str(name)
    if (raw === undefined) return fallback
    const n = Number(raw)
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name} must be an integer between ${min} and ${max} (got "${raw}")`)
      return fallback
    }
    return n
  }
  const bool = (name: string, fallback: boolean): boolean => {
    const raw = str(name)?.toLowerCase()
    if (raw === undefined) return fallback
    if (['1', 'true', 'yes', 'on'].includes(raw)) return true
    if (['0', 'false', 'no', 'off'].includes(raw)) return false
    problems.push(`${name} must be true or false (got "${raw}")`)
    return fallback
  }
  const fraction = (name: string, fallback: number): number => {
    const raw = str(name)
    if (raw === undefined) return fallback
    const n = Number(raw)
    if (!Number.isFinite(n) || n < 0 || n > 1) {
      problems.push(`${name} must be a fraction between 0 and 1, e.g. 0.02 for 2% (got "${raw}")`)
      return fallback
    }
    return n
  }
  const url = (name: string, protocols: string[]): string | undefined => {
    const raw = str(name)
    if (raw === undefined) return undefined
    try {
      const u = new URL(raw)
      if (!protocols.includes(u.protocol)) throw new Error('protocol')
      return raw
    } catch {
      problems.push(`${name} must be a ${protocols.join(' or ')} URL (got "${redactUrl(raw)}")`)
      return undefined
    }
  }

  const nodeEnv = str('NODE_ENV') ?? 'development'
  const port = int('PORT', 4000, 0, 65535)
  const host = str('HOST') ?? '127.0.0.1'
  const logLevel = str('LOG_LEVEL') ?? 'info'
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    problems.push(`LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent (got "${logLevel}")`)
  }
  const dataDir = path.resolve(str('DATA_DIR') ?? './data')
  const publicUrl = (url('PUBLIC_URL', ['http:', 'https:']) ?? `http://localhost:${port}`).replace(/\/+$/, '')

  const databaseUrl = url('DATABASE_URL', ['postgres:', 'postgresql:'])
  const redisUrl = url('REDIS_URL', ['redis:', 'rediss:'])

  let s3: S3Config | undefined
  const bucket = str('S3_BUCKET')
  if (bucket) {
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) problems.push(`S3_BUCKET is not a valid bucket name (got "${bucket}")`)
    const accessKeyId = str('S3_ACCESS_KEY_ID')
    const secretAccessKey = str('S3_SECRET_ACCESS_KEY')
    if (Boolean(accessKeyId) !== Boolean(secretAccessKey)) problems.push('S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together')
    s3 = {
      bucket,
      endpoint: url('S3_ENDPOINT', ['http:', 'https:']),
      region: str('S3_REGION') ?? 'us-east-1',
      accessKeyId,
      secretAccessKey,
      forcePathStyle: bool('S3_FORCE_PATH_STYLE', false),
    }
  } else if (str('S3_ENDPOINT')) {
    problems.push('S3_ENDPOINT is set but S3_BUCKET is not')
  }

  const emailFrom = str('EMAIL_FROM') ?? 'Groundwork <no-reply@groundwork.localhost>'
  if (!parseAddress(emailFrom)) problems.push(`EMAIL_FROM must be an address like "Name <user@example.com>" (got "${emailFrom}")`)
  const emailTemplatesDir = str('EMAIL_TEMPLATES_DIR')

  const jwtSecret = str('JWT_SECRET')
  const jwtPublicKey = str('JWT_PUBLIC_KEY')?.replace(/\\n/g, '\n')
  if (jwtSecret && jwtPublicKey) problems.push('Set JWT_SECRET (HS256) or JWT_PUBLIC_KEY (RS256), not both')
  if (jwtSecret && jwtSecret.length < 32) problems.push('JWT_SECRET must be at least 32 characters')
  if (jwtPublicKey && !jwtPublicKey.includes('BEGIN PUBLIC KEY')) problems.push('JWT_PUBLIC_KEY must be a PEM public key')
  const signingSecret = str('SIGNING_SECRET')
  if (signingSecret && signingSecret.length < 32) problems.push('SIGNING_SECRET must be at least 32 characters')
  if (nodeEnv === 'production') {
    if (!jwtSecret && !jwtPublicKey) problems.push('JWT_SECRET or JWT_PUBLIC_KEY is required when NODE_ENV=production')
    if (!signingSecret) problems.push('SIGNING_SECRET is required when NODE_ENV=production')
  }

  const allowedTypes = (str('UPLOAD_ALLOWED_TYPES')?.split(',').map((t) => t.trim().toLowerCase()).filter(Boolean)) ?? DEFAULT_ALLOWED_TYPES
  for (const t of allowedTypes) if (!/^[a-z0-9.+-]+\/[a-z0-9.+-]+$/.test(t)) problems.push(`UPLOAD_ALLOWED_TYPES has an invalid MIME type "${t}"`)

  const config: Config = {
    nodeEnv,
    host,
    port,
    logLevel,
    dataDir,
    publicUrl,
    trustProxy: bool('TRUST_PROXY', false),
    databaseUrl,
    redisUrl,
    redisCluster: bool('REDIS_CLUSTER', false),
    redisKeyPrefix: str('REDIS_KEY_PREFIX') ?? 'gw:',
    s3,
    resendApiKey: str('RESEND_API_KEY'),
    emailFrom,
    emailTemplatesDir: emailTemplatesDir ? path.resolve(emailTemplatesDir) : undefined,
    auth: { jwtSecret, jwtPublicKey, jwtIssuer: str('JWT_ISSUER'), jwtAudience: str('JWT_AUDIENCE') },
    signingSecret,
    links: {
      verifyEmailUrl: url('VERIFY_EMAIL_URL', ['http:', 'https:']) ?? `${publicUrl}/verify-email`,
      resetPasswordUrl: url('RESET_PASSWORD_URL', ['http:', 'https:']) ?? `${publicUrl}/reset-password`,
    },
    uploads: {
      maxFileBytes: int('UPLOAD_MAX_BYTES', 100 * MiB, 1, Number.MAX_SAFE_INTEGER),
      maxImageBytes: int('UPLOAD_MAX_IMAGE_BYTES', 5 * MiB, 1, Number.MAX_SAFE_INTEGER),
      maxFiles: int('UPLOAD_MAX_FILES', 10, 1, 100),
      allowedTypes,
      imageMaxEdge: int('IMAGE_MAX_EDGE', 2048, 16, 16384),
      imageMaxPixels: int('IMAGE_MAX_PIXELS', 50_000_000, 1, 1_000_000_000),
    },
    cache: {
      resolvers: bool('CACHE_RESOLVERS', true),
      defaultTtlSeconds: int('CACHE_DEFAULT_TTL', 3600, 1, 365 * 24 * 3600),
      l1MaxItems: int('CACHE_L1_MAX_ITEMS', 100_000, 1, 100_000_000),
      l1MaxBytes: int('CACHE_L1_MAX_BYTES', 64 * MiB, 1024, Number.MAX_SAFE_INTEGER),
      l1MaxTtlSeconds: int('CACHE_L1_MAX_TTL', 300, 1, 24 * 3600),
      maxEntryBytes: int('CACHE_MAX_ENTRY_BYTES', MiB, 1, Number.MAX_SAFE_INTEGER),
      softTimeoutMs: int('CACHE_SOFT_TIMEOUT_MS', 75, 1, 60_000),
      hardTimeoutMs: int('CACHE_HARD_TIMEOUT_MS', 1_000, 1, 600_000),
      jitterPercent: int('CACHE_TTL_JITTER_PERCENT', 10, 0, 50),
      graceSeconds: int('CACHE_GRACE', 0, 0, 7 * 24 * 3600),
      loaderTimeoutMs: int('CACHE_LOADER_TIMEOUT_MS', 10_000, 1, 600_000),
      lockWaitMs: int('CACHE_LOCK_WAIT_MS', 1_000, 0, 60_000),
      breakerThreshold: int('CACHE_BREAKER_THRESHOLD', 5, 1, 1_000),
      breakerCooldownMs: int('CACHE_BREAKER_COOLDOWN_MS', 2_000, 10, 600_000),
      bus: bool('CACHE_BUS', true),
      warmOnBoot: str('CACHE_WARM_ON_BOOT')?.split(',').map((n) => n.trim()).filter(Boolean) ?? [],
      warmConcurrency: int('CACHE_WARM_CONCURRENCY', 4, 1, 64),
    },
    graphql: {
      graphiql: bool('GRAPHIQL', true),
      introspection: bool('GRAPHQL_INTROSPECTION', true),
      maxDepth: int('GRAPHQL_MAX_DEPTH', 10, 2, 100),
      maxComplexity: int('GRAPHQL_MAX_COMPLEXITY', 1000, 10, 1_000_000),
      maxSubscriptionsPerConnection: int('GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION', 100, 1, 10_000),
    },
    metrics: { token: str('METRICS_TOKEN') },
    protection: {
      maxEventLoopDelayMs: int('OVERLOAD_MAX_EVENT_LOOP_DELAY_MS', 1000, 0, 60_000),
      rateLimitMax: int('RATE_LIMIT_MAX', 600, 1, 1_000_000),
      rateLimitWindowMs: int('RATE_LIMIT_WINDOW_MS', 60_000, 1000, 3_600_000),
    },
    shutdownGraceMs: int('SHUTDOWN_GRACE_MS', 10_000, 0, 600_000),
    statsCacheMs: int('STATS_CACHE_MS', 5_000, 0, 600_000),
    workers: bool('WORKERS_ENABLED', true),
    workerPollMs: int('WORKER_POLL_MS', 1_000, 10, 60_000),
    files: {
      sessionTtlHours: int('UPLOAD_SESSION_TTL_HOURS', 24, 1, 24 * 30),
      sessionMaxBytes: int('UPLOAD_SESSION_MAX_BYTES', 10 * 1024 * MiB, 1, 5 * 1024 * 1024 * MiB),
      partBytes: int('UPLOAD_PART_BYTES', 8 * MiB, 5 * MiB, 5 * 1024 * MiB),
      quotaBytes: int('UPLOAD_QUOTA_BYTES', 10 * 1024 * MiB, 0, Number.MAX_SAFE_INTEGER),
      processingWaitMs: int('UPLOAD_PROCESSING_WAIT_MS', 30_000, 0, 600_000),
      versionsKeep: int('FILE_VERSIONS_KEEP', 20, 0, 1_000_000),
      versionsMaxAgeDays: int('FILE_VERSIONS_MAX_AGE_DAYS', 0, 0, 36_500),
      sweepIntervalMs: int('FILE_SWEEP_INTERVAL_MS', 60_000, 100, 24 * 3600_000),
      pipelineMaxAttempts: int('FILE_PIPELINE_MAX_ATTEMPTS', 5, 1, 100),
      pipelineLeaseMs: int('FILE_PIPELINE_LEASE_MS', 60_000, 200, 3600_000),
      pipelineBackoffMs: int('FILE_PIPELINE_BACKOFF_MS', 1_000, 1, 600_000),
      pipelineConcurrency: int('FILE_PIPELINE_CONCURRENCY', 16, 1, 1_000),
      imageConcurrency: int('IMAGE_CONCURRENCY', os.availableParallelism(), 1, 256),
      imageVariants: imageVariants(str('IMAGE_VARIANTS') ?? 'thumb:256:webp,preview:1280:webp', problems),
      imageMaxFrames: int('IMAGE_MAX_FRAMES', 100, 1, 10_000),
      allowSvg: bool('UPLOAD_ALLOW_SVG', false),
    },
    campaigns: {
      rateLimitPerSecond: int('CAMPAIGN_RATE_LIMIT_PER_SECOND', 5, 0, 10_000),
      batchSize: int('CAMPAIGN_BATCH_SIZE', 100, 1, 100),
      concurrency: int('CAMPAIGN_CONCURRENCY', 2, 1, 32),
      leaseMs: int('CAMPAIGN_LEASE_MS', 60_000, 5_000, 3_600_000),
      pauseBounceRate: fraction('CAMPAIGN_PAUSE_BOUNCE_RATE', 0.02),
      pauseComplaintRate: fraction('CAMPAIGN_PAUSE_COMPLAINT_RATE', 0.0005),
      pauseMinSent: int('CAMPAIGN_PAUSE_MIN_SENT', 100, 0, 10_000_000),
      unsubscribeMailto: str('CAMPAIGN_UNSUBSCRIBE_MAILTO'),
    },
    tracking: {
      opens: bool('TRACKING_OPENS', true),
      clicks: bool('TRACKING_CLICKS', true),
      linkTtlDays: int('TRACKING_LINK_TTL_DAYS', 400, 1, 3650),
      attributionWindowHours: int('TRACKING_ATTRIBUTION_WINDOW_HOURS', 168, 1, 24 * 365),
      conversionOnce: bool('TRACKING_CONVERSION_ONCE', true),
      conversionParam: env.TRACKING_CONVERSION_PARAM === undefined ? 'gw_click' : env.TRACKING_CONVERSION_PARAM.trim(),
      defaultCurrency: (str('TRACKING_DEFAULT_CURRENCY') ?? 'USD').toUpperCase(),
      scannerWindowSeconds: int('TRACKING_SCANNER_WINDOW_SECONDS', 10, 0, 3600),
      machineUserAgents: str('TRACKING_MACHINE_USER_AGENTS')?.split(',').map((a) => a.trim()).filter(Boolean) ?? [],
      bufferMax: int('TRACKING_BUFFER_MAX', 50_000, 100, 10_000_000),
      flushBatch: int('TRACKING_FLUSH_BATCH', 1_000, 1, 50_000),
      flushMs: int('TRACKING_FLUSH_MS', 1_000, 10, 600_000),
      eventRetentionDays: int('TRACKING_EVENT_RETENTION_DAYS', 90, 0, 36_500),
      webhookRetentionDays: int('TRACKING_WEBHOOK_RETENTION_DAYS', 7, 1, 365),
      pruneIntervalMs: int('TRACKING_PRUNE_INTERVAL_MS', 3_600_000, 1_000, 7 * 24 * 3_600_000),
      rateLimitMax: int('TRACKING_RATE_LIMIT_MAX', 6_000, 1, 10_000_000),
      rateLimitChunk: int('TRACKING_RATE_LIMIT_CHUNK', 100, 1, 100_000),
      webhookSecret: str('RESEND_WEBHOOK_SECRET'),
      webhookConcurrency: int('TRACKING_WEBHOOK_CONCURRENCY', 4, 1, 64),
      unsubscribeScope: (str('TRACKING_UNSUBSCRIBE_SCOPE')?.toLowerCase() ?? 'global') as UnsubscribeScope,
    },
    webhooks: {
      timeoutMs: int('WEBHOOKS_TIMEOUT_MS', 10_000, 100, 60_000),
      maxAttempts: int('WEBHOOKS_MAX_ATTEMPTS', 8, 1, 50),
      retrySchedule: durations('WEBHOOKS_RETRY_SCHEDULE', str('WEBHOOKS_RETRY_SCHEDULE') ?? '5s,5m,30m,2h,5h,10h,10h', problems),
      concurrency: int('WEBHOOKS_CONCURRENCY', 8, 1, 256),
      disableAfterFailures: int('WEBHOOKS_DISABLE_AFTER_FAILURES', 100, 1, 1_000_000),
      allowPrivateUrls: bool('WEBHOOKS_ALLOW_PRIVATE_URLS', false),
      requireHttps: nodeEnv === 'production',
      deliveryRetentionDays: int('WEBHOOKS_DELIVERY_RETENTION_DAYS', 30, 0, 36_500),
    },
  }
  const mailto = config.campaigns.unsubscribeMailto
  const { tracking } = config
  if (!/^[A-Za-z0-9_-]{0,32}$/.test(tracking.conversionParam)) problems.push(`TRACKING_CONVERSION_PARAM must be 0-32 characters of A-Z a-z 0-9 _ - (got "${tracking.conversionParam}")`)
  if (!/^[A-Z]{3}$/.test(tracking.defaultCurrency)) problems.push(`TRACKING_DEFAULT_CURRENCY must be a three-letter ISO 4217 code (got "${tracking.defaultCurrency}")`)
  if (tracking.flushBatch > tracking.bufferMax) problems.push('TRACKING_FLUSH_BATCH must not exceed TRACKING_BUFFER_MAX')
  if (!UNSUBSCRIBE_SCOPES.includes(tracking.unsubscribeScope)) problems.push(`TRACKING_UNSUBSCRIBE_SCOPE must be one of global, audience (got "${tracking.unsubscribeScope}")`)
  if (tracking.webhookSecret !== undefined && !/^(whsec_)?[A-Za-z0-9+/]{16,}={0,2}$/.test(tracking.webhookSecret)) {
    problems.push('RESEND_WEBHOOK_SECRET must be the signing secret Resend shows for the webhook (whsec_ followed by base64)')
  }
  if (mailto !== undefined && !parseAddress(mailto)) problems.push(`CAMPAIGN_UNSUBSCRIBE_MAILTO must be an email address (got "${mailto}")`)
  if (config.cache.maxEntryBytes > config.cache.l1MaxBytes) problems.push('CACHE_MAX_ENTRY_BYTES must not exceed CACHE_L1_MAX_BYTES')
  if (config.cache.hardTimeoutMs < config.cache.softTimeoutMs) problems.push('CACHE_HARD_TIMEOUT_MS must be at least CACHE_SOFT_TIMEOUT_MS')
  if (problems.length > 0) throw new ConfigError(problems)
  return config
}

/** `name:maxEdge:format,...`, e.g. `thumb:256:webp,preview:1280:webp`; `none` for no variants. */
function imageVariants(raw: string, problems: string[]): ImageVariantSpec[] {
  if (raw.toLowerCase() === 'none') return []
  const specs: ImageVariantSpec[] = []
  for (const item of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [name = '', edge = '', format = 'webp'] = item.split(':')
    const maxEdge = Number(edge)
    if (!/^[a-z0-9-]{1,32}$/.test(name) || !Number.isInteger(maxEdge) || maxEdge < 16 || maxEdge > 8192 || !['webp', 'jpeg', 'png', 'avif'].includes(format) || specs.some((s) => s.name === name)) {
      problems.push(`IMAGE_VARIANTS must be a list of unique name:maxEdge:format (webp, jpeg, png or avif), e.g. thumb:256:webp (got "${item}")`)
      continue
    }
    specs.push({ name, maxEdge, format: format as ImageVariantSpec['format'] })
  }
  return specs
}

/** A comma-separated list of durations such as `5s,5m,30m,2h` (units ms, s, m, h, d), each at most 7 days; in milliseconds. */
function durations(name: string, raw: string, problems: string[]): number[] {
  const unit: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }
  const items = raw.split(',').map((s) => s.trim())
  const ms = items.map((item) => {
    const m = /^(\d+)(ms|s|m|h|d)$/.exec(item)
    return m ? Number(m[1]) * unit[m[2]!]! : NaN
  })
  if (items.length > 50 || ms.some((n) => !(n >= 1 && n <= 7 * 86_400_000))) {
    problems.push(`${name} must be 1-50 comma-separated durations of 1ms to 7d with a unit (ms, s, m, h, d), e.g. 5s,5m,30m,2h (got "${raw}")`)
    return [5_000]
  }
  return ms
}

function redactUrl(raw: string): string {
  return raw.replace(/\/\/[^@/]*@/, '//***@')
}
