import { type FieldError, ValidationError } from '../../lib/errors'
import { globStartsWithLiteral } from './glob'

export const MAX_KEY_LENGTH = 1024
export const MAX_PATTERN_LENGTH = 512
const MAX_TAG_LENGTH = 256
/** Tags on one entry, and tags in one invalidation. */
export const MAX_TAGS = 64
/** Keys in one invalidation (`invalidate`, the invalidateCache mutation). */
export const MAX_INVALIDATE_KEYS = 1000
const CONTROL_CHARS = /\p{Cc}/u
const NAMESPACE = /^[A-Za-z0-9_.-]{1,64}$/

export interface InvalidateOptions {
  /**
   * Required for a pattern that does not start with a literal character (`*`, `*:*`, `?*`, `*[^]`,
   * `[a-z]*`), which can clear the whole cache (or namespace). See `globStartsWithLiteral`.
   */
  confirm?: boolean
}

/** Where a field error points: `['key']` for a service argument, `['input', 'keys', '3']` for a GraphQL one. */
type FieldPath = readonly string[]

export function validateKey(key: string, path: FieldPath = ['key']): void {
  if (typeof key !== 'string' || key.length === 0) throw ValidationError.field([...path], 'Cache key must not be empty')
  if (key.length > MAX_KEY_LENGTH) {
    throw ValidationError.field([...path], `Cache key must be at most ${MAX_KEY_LENGTH} characters`)
  }
  if (CONTROL_CHARS.test(key)) throw ValidationError.field([...path], 'Cache key must not contain control characters')
}

export function validatePattern(pattern: string, options: InvalidateOptions, path: FieldPath = ['pattern']): void {
  if (typeof pattern !== 'string' || pattern.length === 0) {
    throw ValidationError.field([...path], 'Pattern must not be empty')
  }
  if (pattern.length > MAX_PATTERN_LENGTH) {
    throw ValidationError.field([...path], `Pattern must be at most ${MAX_PATTERN_LENGTH} characters`)
  }
  if (CONTROL_CHARS.test(pattern)) {
    throw ValidationError.field([...path], 'Pattern must not contain control characters')
  }
  if (options.confirm !== true && !globStartsWithLiteral(pattern)) {
    throw ValidationError.field([...path], 'A pattern that does not start with a literal character (it starts with *, ? or a [class]) can clear the whole cache; pass { confirm: true }')
  }
}

/** `use` words the limit: the tags of one entry (set, getMultiLevel) or of one invalidation. */
export function validateTags(tags: readonly string[], use: 'entry' | 'invalidation' = 'entry', path: FieldPath = ['tags']): void {
  if (!Array.isArray(tags)) throw ValidationError.field([...path], 'Tags must be a list')
  if (tags.length > MAX_TAGS) {
    throw ValidationError.field([...path], use === 'entry' ? `At most ${MAX_TAGS} tags per entry` : `At most ${MAX_TAGS} tags at once`)
  }
  for (const tag of tags) {
    if (typeof tag !== 'string' || tag.length === 0 || tag.length > MAX_TAG_LENGTH || CONTROL_CHARS.test(tag)) {
      throw ValidationError.field([...path], `A tag must be 1-${MAX_TAG_LENGTH} characters without control characters`)
    }
  }
}

/** One invalidation of keys, a pattern and tags together (see `CacheService.invalidate`). */
export interface InvalidateRequest {
  keys?: readonly string[] | null
  pattern?: string | null
  /** As `InvalidateOptions.confirm`, for the pattern. */
  confirm?: boolean | null
  tags?: readonly string[] | null
}

/**
 * Every check of an invalidation, made before any part of it runs, so an invalid part leaves the
 * cache untouched. Reports one error per invalid field (keys, pattern, tags), each with its path
 * under `at` (`['input']` for the GraphQL argument).
 */
export function validateInvalidation(request: InvalidateRequest, at: FieldPath = []): void {
  const { pattern } = request
  const keys = request.keys ?? []
  const tags = request.tags ?? []
  if (keys.length === 0 && pattern == null && tags.length === 0) throw ValidationError.field([...at], 'Give keys, a pattern or tags')
  const errors: FieldError[] = []
  const check = (validate: () => void): void => {
    try {
      validate()
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err
      errors.push(...err.fieldErrors)
    }
  }
  check(() => {
    if (!Array.isArray(keys)) throw ValidationError.field([...at, 'keys'], 'Keys must be a list')
    if (keys.length > MAX_INVALIDATE_KEYS) throw ValidationError.field([...at, 'keys'], `At most ${MAX_INVALIDATE_KEYS} keys at once`)
    keys.forEach((key, i) => validateKey(key, [...at, 'keys', String(i)]))
  })
  if (pattern != null) check(() => validatePattern(pattern, { confirm: request.confirm === true }, [...at, 'pattern']))
  check(() => validateTags(tags, 'invalidation', [...at, 'tags']))
  if (errors.length > 0) throw new ValidationError(errors.map((e) => e.message).join('; '), errors)
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
