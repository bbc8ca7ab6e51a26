import type { Redis } from 'ioredis'
import { ServiceUnavailableError, ValidationError } from '../../lib/errors'
import { typedJsonSerializer, type Serializer } from './serializer'

export interface CacheServiceOptions {
  /** Without a client, entries live in this process only. */
  redis?: Redis | null
  /** Namespaces every key, e.g. 'groundwork:'. */
  keyPrefix: string
  defaultTtlSeconds?: number
  /** A Redis call slower than this counts as a miss or a skipped write. */
  timeoutMs?: number
  serializer?: Serializer
  memory?: { maxItems?: number }
}

export interface InvalidateOptions {
  /** Required for a pattern with no literal character, which clears the whole cache. */
  confirm?: boolean
}

export interface CacheStats {
  backend: 'redis' | 'memory'
  hits: number
  misses: number
  errors: number
  sets: number
  deletes: number
  /** getOrSet callers served by a loader another caller had already started. */
  dedupes: number
  hitRate: number
  /** Entries held, expired ones not yet swept included (memory backend only). */
  items?: number
}

/**
 * Holds serialized entries under full keys. Implementations throw on failure;
 * CacheService decides what a failure means. A process-local L1 can later wrap
 * another store behind this same interface.
 */
export interface CacheStore {
  readonly backend: 'redis' | 'memory'
  get(key: string): Promise<string | undefined>
  set(key: string, raw: string, ttlMs: number): Promise<void>
  has(key: string): Promise<boolean>
  delete(keys: readonly string[]): Promise<number>
  /** `glob` is already prefixed and escaped: it matches full keys, Redis glob syntax. */
  deleteMatching(glob: string): Promise<number>
  size(): number | undefined
}

const DEFAULT_TTL_SECONDS = 3600
const DEFAULT_TIMEOUT_MS = 100
const DEFAULT_MAX_ITEMS = 100_000
const MAX_KEY_LENGTH = 1024
const MAX_PATTERN_LENGTH = 512
const SCAN_COUNT = 1000
const UNLINK_CHUNK = 500
// A SCAN or UNLINK batch is an admin path, not a request path: a tight request timeout would abort it half-way.
const MIN_BULK_STEP_TIMEOUT_MS = 1000
const CONTROL_CHARS = /\p{Cc}/u
const WILDCARD_ONLY = /^[*?]+$/

export class CacheService {
  private readonly store: CacheStore
  private readonly prefix: string
  private readonly defaultTtlMs: number
  private readonly serializer: Serializer
  private readonly inflight = new Map<string, Promise<unknown>>()
  private readonly counters = { hits: 0, misses: 0, errors: 0, sets: 0, deletes: 0, dedupes: 0 }

  constructor(options: CacheServiceOptions) {
    this.prefix = `${options.keyPrefix}cache:`
    this.defaultTtlMs = toTtlMs(options.defaultTtlSeconds ?? DEFAULT_TTL_SECONDS)
    this.serializer = options.serializer ?? typedJsonSerializer
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    this.store = options.redis
      ? new RedisStore(options.redis, timeoutMs)
      : new MemoryStore(options.memory?.maxItems ?? DEFAULT_MAX_ITEMS)
  }

  /** `undefined` is a miss; every other value, including 0, '', false and null, is a hit. */
  async get<T>(key: string): Promise<T | undefined> {
    const fullKey = this.fullKey(key)
    let raw: string | undefined
    try {
      raw = await this.store.get(fullKey)
    } catch {
      this.counters.errors++
      this.counters.misses++
      return undefined
    }
    if (raw === undefined) {
      this.counters.misses++
      return undefined
    }
    try {
      const value = this.serializer.deserialize(raw) as T
      this.counters.hits++
      return value
    } catch {
      // An entry written by an incompatible serializer is as good as absent.
      this.counters.errors++
      this.counters.misses++
      return undefined
    }
  }

  /** Storing `undefined` removes the key, since a later get could only report it as a miss. */
  async set(key: string, value: unknown, ttlSeconds?: number): Promise<void> {
    const fullKey = this.fullKey(key)
    const ttlMs = ttlSeconds === undefined ? this.defaultTtlMs : toTtlMs(ttlSeconds)
    if (value === undefined) {
      await this.deleteFullKeys([fullKey])
      return
    }
    // Serializer errors (a circular value) are the caller's bug, so they propagate.
    const raw = this.serializer.serialize(value)
    try {
      await this.store.set(fullKey, raw, ttlMs)
      this.counters.sets++
    } catch {
      this.counters.errors++
    }
  }

  /** Resolves to the number of keys removed; 0 when the backend is unreachable. */
  async del(keys: string | readonly string[]): Promise<number> {
    const list = typeof keys === 'string' ? [keys] : keys
    const fullKeys = list.map((k) => this.fullKey(k))
    if (fullKeys.length === 0) return 0
    return this.deleteFullKeys(fullKeys)
  }

  async has(key: string): Promise<boolean> {
    const fullKey = this.fullKey(key)
    try {
      return await this.store.has(fullKey)
    } catch {
      this.counters.errors++
      return false
    }
  }

  /**
   * Deletes every key matching a Redis-style glob (`*`, `?`, `[a-z]`, `\` escapes)
   * and resolves to how many went. Unlike the other methods it throws when Redis
   * is unreachable, because the caller relies on the stale entries being gone.
   */
  async invalidatePattern(pattern: string, options: InvalidateOptions = {}): Promise<number> {
    validatePattern(pattern, options)
    try {
      const deleted = await this.store.deleteMatching(escapeGlob(this.prefix) + pattern)
      this.counters.deletes += deleted
      return deleted
    } catch (err) {
      this.counters.errors++
      throw new ServiceUnavailableError('The cache could not be invalidated', { cause: err })
    }
  }

  /**
   * Concurrent callers for one key share a single loader call. A loader error
   * reaches every waiter and is not cached; an `undefined` result is not cached.
   */
  async getOrSet<T>(key: string, loader: () => Promise<T>, ttlSeconds?: number): Promise<T> {
    const fullKey = this.fullKey(key)
    if (ttlSeconds !== undefined) toTtlMs(ttlSeconds)
    const pending = this.inflight.get(fullKey)
    if (pending) {
      this.counters.dedupes++
      return pending as Promise<T>
    }
    const load = this.loadThrough(key, loader, ttlSeconds)
    this.inflight.set(fullKey, load)
    try {
      return await load
    } finally {
      if (this.inflight.get(fullKey) === load) this.inflight.delete(fullKey)
    }
  }

  stats(): CacheStats {
    const { hits, misses } = this.counters
    const stats: CacheStats = {
      backend: this.store.backend,
      ...this.counters,
      hitRate: hits + misses === 0 ? 0 : hits / (hits + misses),
    }
    const items = this.store.size()
    if (items !== undefined) stats.items = items
    return stats
  }

  private async loadThrough<T>(key: string, loader: () => Promise<T>, ttlSeconds?: number): Promise<T> {
    const cached = await this.get<T>(key)
    if (cached !== undefined) return cached
    const value = await loader()
    if (value !== undefined) await this.set(key, value, ttlSeconds)
    return value
  }

  private async deleteFullKeys(fullKeys: readonly string[]): Promise<number> {
    try {
      const deleted = await this.store.delete(fullKeys)
      this.counters.deletes += deleted
      return deleted
    } catch {
      this.counters.errors++
      return 0
    }
  }

  private fullKey(key: string): string {
    if (typeof key !== 'string' || key.length === 0) throw ValidationError.field('key', 'Cache key must not be empty')
    if (key.length > MAX_KEY_LENGTH) {
      throw ValidationError.field('key', `Cache key must be at most ${MAX_KEY_LENGTH} characters`)
    }
    if (CONTROL_CHARS.test(key)) throw ValidationError.field('key', 'Cache key must not contain control characters')
    return this.prefix + key
  }
}

function toTtlMs(ttlSeconds: number): number {
  if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0) {
    throw ValidationError.field('ttlSeconds', 'TTL must be a positive number of seconds')
  }
  return Math.max(1, Math.round(ttlSeconds * 1000))
}

function validatePattern(pattern: string, options: InvalidateOptions): void {
  if (typeof pattern !== 'string' || pattern.length === 0) {
    throw ValidationError.field('pattern', 'Pattern must not be empty')
  }
  if (pattern.length > MAX_PATTERN_LENGTH) {
    throw ValidationError.field('pattern', `Pattern must be at most ${MAX_PATTERN_LENGTH} characters`)
  }
  if (CONTROL_CHARS.test(pattern)) {
    throw ValidationError.field('pattern', 'Pattern must not contain control characters')
  }
  if (WILDCARD_ONLY.test(pattern) && options.confirm !== true) {
    throw ValidationError.field('pattern', 'A wildcard-only pattern clears the whole cache; pass { confirm: true }')
  }
}

function escapeGlob(literal: string): string {
  return literal.replace(/[*?[\]\\]/g, '\\$&')
}

/** Translates Redis glob syntax (as in its stringmatchlen) so both backends match the same keys. */
export function globToRegExp(glob: string): RegExp {
  let out = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string
    if (c === '*') out += '[\\s\\S]*'
    else if (c === '?') out += '[\\s\\S]'
    else if (c === '\\' && i + 1 < glob.length) out += escapeRegExp(glob[++i] as string)
    else if (c === '[') {
      const close = findClassEnd(glob, i + 1)
      if (close === -1) {
        out += escapeRegExp(c)
        continue
      }
      let body = glob.slice(i + 1, close)
      const negate = body.startsWith('^')
      if (negate) body = body.slice(1)
      out += `[${negate ? '^' : ''}${classBody(body)}]`
      i = close
    } else out += escapeRegExp(c)
  }
  return new RegExp(`^${out}$`)
}

function findClassEnd(glob: string, from: number): number {
  for (let i = from; i < glob.length; i++) {
    if (glob[i] === '\\') i++
    else if (glob[i] === ']') return i
  }
  return -1
}

function classBody(body: string): string {
  let out = ''
  let i = 0
  const next = (): string => {
    const c = body[i++] as string
    return c === '\\' && i < body.length ? (body[i++] as string) : c
  }
  while (i < body.length) {
    const from = next()
    if (body[i] === '-' && i + 1 < body.length) {
      i++
      const to = next()
      // Redis accepts a reversed range such as [z-a]; a RegExp would throw.
      const [lo, hi] = from <= to ? [from, to] : [to, from]
      out += `${escapeRegExp(lo)}-${escapeRegExp(hi)}`
    } else {
      out += escapeRegExp(from)
    }
  }
  return out
}

function escapeRegExp(c: string): string {
  return /[\\^$.*+?()[\]{}|/-]/.test(c) ? `\\${c}` : c
}

interface MemoryEntry {
  raw: string
  expiresAt: number
}

/** LRU by Map insertion order: a read re-inserts the entry at the young end. */
class MemoryStore implements CacheStore {
  readonly backend = 'memory' as const
  private readonly entries = new Map<string, MemoryEntry>()

  constructor(private readonly maxItems: number) {
    if (!Number.isInteger(maxItems) || maxItems < 1) {
      throw ValidationError.field('memory.maxItems', 'maxItems must be a positive integer')
    }
  }

  async get(key: string): Promise<string | undefined> {
    const entry = this.live(key)
    if (!entry) return undefined
    this.entries.delete(key)
    this.entries.set(key, entry)
    return entry.raw
  }

  async set(key: string, raw: string, ttlMs: number): Promise<void> {
    this.entries.delete(key)
    this.entries.set(key, { raw, expiresAt: Date.now() + ttlMs })
    while (this.entries.size > this.maxItems) {
      const oldest = this.entries.keys().next()
      if (oldest.done) break
      this.entries.delete(oldest.value)
    }
  }

  async has(key: string): Promise<boolean> {
    return this.live(key) !== undefined
  }

  async delete(keys: readonly string[]): Promise<number> {
    let deleted = 0
    for (const key of keys) {
      if (this.live(key) && this.entries.delete(key)) deleted++
    }
    return deleted
  }

  async deleteMatching(glob: string): Promise<number> {
    const re = globToRegExp(glob)
    const now = Date.now()
    let deleted = 0
    for (const [key, entry] of this.entries) {
      if (!re.test(key)) continue
      this.entries.delete(key)
      if (entry.expiresAt > now) deleted++
    }
    return deleted
  }

  size(): number {
    return this.entries.size
  }

  private live(key: string): MemoryEntry | undefined {
    const entry = this.entries.get(key)
    if (!entry) return undefined
    if (entry.expiresAt <= Date.now()) {
      this.entries.delete(key)
      return undefined
    }
    return entry
  }
}

class CacheTimeoutError extends Error {
  constructor(timeoutMs: number) {
    super(`Redis did not answer within ${timeoutMs} ms`)
  }
}

class RedisStore implements CacheStore {
  readonly backend = 'redis' as const

  constructor(
    private readonly redis: Redis,
    private readonly timeoutMs: number,
  ) {}

  async get(key: string): Promise<string | undefined> {
    const raw = await this.timed(this.redis.get(key))
    return raw ?? undefined
  }

  async set(key: string, raw: string, ttlMs: number): Promise<void> {
    await this.timed(this.redis.set(key, raw, 'PX', ttlMs))
  }

  async has(key: string): Promise<boolean> {
    return (await this.timed(this.redis.exists(key))) > 0
  }

  async delete(keys: readonly string[]): Promise<number> {
    return this.timed(this.redis.unlink(...keys))
  }

  async deleteMatching(glob: string): Promise<number> {
    const stepTimeoutMs = Math.max(this.timeoutMs, MIN_BULK_STEP_TIMEOUT_MS)
    let cursor = '0'
    let deleted = 0
    do {
      const [next, keys] = await this.timed(this.redis.scan(cursor, 'MATCH', glob, 'COUNT', SCAN_COUNT), stepTimeoutMs)
      cursor = next
      if (keys.length > 0) deleted += await this.unlinkAll(keys, stepTimeoutMs)
    } while (cursor !== '0')
    return deleted
  }

  size(): undefined {
    return undefined
  }

  private async unlinkAll(keys: string[], stepTimeoutMs: number): Promise<number> {
    const pipeline = this.redis.pipeline()
    for (let i = 0; i < keys.length; i += UNLINK_CHUNK) pipeline.unlink(...keys.slice(i, i + UNLINK_CHUNK))
    const results = await this.timed(pipeline.exec(), stepTimeoutMs)
    if (!results) throw new Error('UNLINK pipeline was discarded')
    let deleted = 0
    for (const [err, count] of results) {
      if (err) throw err
      deleted += Number(count)
    }
    return deleted
  }

  /** The client's own commandTimeout may be longer or absent; this bound is the cache's contract. */
  private timed<T>(promise: Promise<T>, timeoutMs = this.timeoutMs): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new CacheTimeoutError(timeoutMs)), timeoutMs)
      promise.then(
        (value) => {
          clearTimeout(timer)
          resolve(value)
        },
        (err: unknown) => {
          clearTimeout(timer)
          reject(err)
        },
      )
    })
  }
}
