import { ValidationError } from '../../lib/errors'
import { globHasLiteral } from './glob'

export const MAX_KEY_LENGTH = 1024
export const MAX_PATTERN_LENGTH = 512
const MAX_TAG_LENGTH = 256
const MAX_TAGS = 64
const CONTROL_CHARS = /\p{Cc}/u
const NAMESPACE = /^[A-Za-z0-9_.-]{1,64}$/

export interface InvalidateOptions {
  /**
   * Required for a pattern with no literal character (`*`, `?*`, `*[^]`, `[a-z]*`: only `*`, `?` and
   * classes), which can clear the whole cache (or namespace). See `globHasLiteral`.
   */
  confirm?: boolean
}

export function validateKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw ValidationError.field('key', 'Cache key must not be empty')
  if (key.length > MAX_KEY_LENGTH) {
    throw ValidationError.field('key', `Cache key must be at most ${MAX_KEY_LENGTH} characters`)
  }
  if (CONTROL_CHARS.test(key)) throw ValidationError.field('key', 'Cache key must not contain control characters')
}

export function validatePattern(pattern: string, options: InvalidateOptions): void {
  if (typeof pattern !== 'string' || pattern.length === 0) {
    throw ValidationError.field('pattern', 'Pattern must not be empty')
  }
  if (pattern.length > MAX_PATTERN_LENGTH) {
    throw ValidationError.field('pattern', `Pattern must be at most ${MAX_PATTERN_LENGTH} characters`)
  }
  if (CONTROL_CHARS.test(pattern)) {
    throw ValidationError.field('pattern', 'Pattern must not contain control characters')
  }
  if (options.confirm !== true && !globHasLiteral(pattern)) {
    throw ValidationError.field('pattern', 'A pattern with no literal character (only *, ? and [classes]) can clear the whole cache; pass { confirm: true }')
  }
}

export function validateTags(tags: readonly string[]): void {
  if (!Array.isArray(tags)) throw ValidationError.field('tags', 'Tags must be a list')
  if (tags.length > MAX_TAGS) throw ValidationError.field('tags', `At most ${MAX_TAGS} tags per entry`)
  for (const tag of tags) {
    if (typeof tag !== 'string' || tag.length === 0 || tag.length > MAX_TAG_LENGTH || CONTROL_CHARS.test(tag)) {
      throw ValidationError.field('tags', `A tag must be 1-${MAX_TAG_LENGTH} characters without control characters`)
    }
  }
}

export function validateNamespace(name: string): void {
  if (typeof name !== 'string' || !NAMESPACE.test(name)) {
    throw ValidationError.field('namespace', 'A namespace is 1-64 letters, digits, ".", "_" or "-"')
  }
}

/** Ten years: anything longer is a mistake, and Redis refuses an expiry past 2^63 ms (an entry would live in L1 alone). */
export const MAX_TTL_SECONDS = 10 * 365 * 24 * 60 * 60

export function toTtlMs(ttlSeconds: number, field = 'ttlSeconds'): number {
  if (typeof ttlSeconds !== 'number' || !Number.isFinite(ttlSeconds) || ttlSeconds <= 0 || ttlSeconds > MAX_TTL_SECONDS) {
    throw ValidationError.field(field, `TTL must be a positive number of seconds, at most ${MAX_TTL_SECONDS} (ten years)`)
  }
  return Math.max(1, Math.round(ttlSeconds * 1000))
}

export function toGraceMs(graceSeconds: number | undefined): number {
  if (graceSeconds === undefined || graceSeconds === 0) return 0
  if (typeof graceSeconds !== 'number' || !Number.isFinite(graceSeconds) || graceSeconds < 0 || graceSeconds > MAX_TTL_SECONDS) {
    throw ValidationError.field('graceSeconds', `Grace must be zero or a positive number of seconds, at most ${MAX_TTL_SECONDS} (ten years)`)
  }
  return Math.round(graceSeconds * 1000)
}
