/**
 * The only module that reads process.env. `loadConfig` validates every variable at once and
 * throws one ConfigError listing each bad one, so a misconfigured deploy fails at boot with
 * the whole story instead of at the first request.
 */
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
  redisKeyPrefix: string
  s3?: S3Config
  resendApiKey?: string
  emailFrom: string
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
    defaultTtlSeconds: number
  }
  graphql: {
    graphiql: boolean
    maxDepth: number
    maxComplexity: number
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
  /** Run background workers (email dispatch) in this process. */
  workers: boolean
  workerPollMs: number
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
    redisKeyPrefix: str('REDIS_KEY_PREFIX') ?? 'gw:',
    s3,
    resendApiKey: str('RESEND_API_KEY'),
    emailFrom,
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
    cache: { defaultTtlSeconds: int('CACHE_DEFAULT_TTL', 3600, 1, 365 * 24 * 3600) },
    graphql: {
      graphiql: bool('GRAPHIQL', true),
      maxDepth: int('GRAPHQL_MAX_DEPTH', 10, 2, 100),
      maxComplexity: int('GRAPHQL_MAX_COMPLEXITY', 1000, 10, 1_000_000),
    },
    metrics: { token: str('METRICS_TOKEN') },
    protection: {
      maxEventLoopDelayMs: int('OVERLOAD_MAX_EVENT_LOOP_DELAY_MS', 1000, 0, 60_000),
      rateLimitMax: int('RATE_LIMIT_MAX', 600, 1, 1_000_000),
      rateLimitWindowMs: int('RATE_LIMIT_WINDOW_MS', 60_000, 1000, 3_600_000),
    },
    shutdownGraceMs: int('SHUTDOWN_GRACE_MS', 10_000, 0, 600_000),
    workers: bool('WORKERS_ENABLED', true),
    workerPollMs: int('WORKER_POLL_MS', 1_000, 10, 60_000),
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return config
}

function redactUrl(raw: string): string {
  return raw.replace(/\/\/[^@/]*@/, '//***@')
}
