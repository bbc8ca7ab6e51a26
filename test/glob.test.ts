/**
 * The in-process glob matcher (L1) against Redis's own SCAN MATCH (L2): the same keys, or an
 * invalidatePattern would leave stale copies in L1 or in Redis.
 */
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { closeRedis, createRedis, whenReady } from '../src/infra/redis'
import { escapeGlob, globMatcher, globStartsWithLiteral } from '../src/services/cache/glob'
import { TEST_REDIS_URL, uniqueRedisPrefix } from './helpers/services'

const prefix = uniqueRedisPrefix()
const KEYS = ['a', 'b', 'ab', 'ba', 'abc', 'a-c', 'a]c', 'a[c', 'a\\c', 'a*c', 'a?c', 'aéc', 'é', 'ée', 'zürich', 'z', ']', '[', '-', '^', '^a', 'x:y', 'A', 'aaa', '€', '日本', '']
let redis: Redis

beforeAll(async () => {
  redis = createRedis({ url: TEST_REDIS_URL })
  if (!(await whenReady(redis, 5_000))) throw new Error('Redis is not reachable')
  await redis.mset(...KEYS.flatMap((k) => [prefix + k, '1']))
})
afterAll(async () => {
  await redis.unlink(...KEYS.map((k) => prefix + k))
  await closeRedis(redis)
})

async function redisMatches(pattern: string): Promise<string[]> {
  const found: string[] = []
  let cursor = '0'
  do {
    const [next, keys] = await redis.scanBuffer(cursor, 'MATCH', escapeGlob(prefix) + pattern, 'COUNT', 1000)
    cursor = next.toString()
    for (const key of keys) found.push(key.toString('utf8').slice(prefix.length))
  } while (cursor !== '0')
  return found.sort()
}

const local = (pattern: string) => KEYS.filter(globMatcher(pattern)).sort()

describe('globMatcher', () => {
  it('matches what Redis matches, on patterns with every corner of its syntax', async () => {
    const patterns = ['?', '??', 'a?c', 'a??c', 'z?rich', 'z??rich', '*', 'a*', '*c', 'a[b-c]*', 'a[c-b]*', '[a-]c', 'a[-]c', 'a[]]c', 'a[^a-z]c', '[^]', '[]', 'a[', 'a[bc', 'a[\\]]c', 'a\\*c', 'a\\', '\\a', 'é', '?e', '€', '???', '[^a]', '[é]', '*[', '[*', 'a[\\-]c', '[a-c-e]', '^*']
    for (const pattern of patterns) expect(local(pattern), pattern).toEqual(await redisMatches(pattern))
  })

  it('matches what Redis matches, on 400 random patterns', async () => {
    // A fixed sequence (xorshift), so a failure names a pattern that fails again.
    let state = 0x9e3779b9
    const random = () => ((state ^= state << 13), (state ^= state >>> 17), (state ^= state << 5), (state >>> 0) / 2 ** 32)
    const alphabet = ['a', 'b', 'c', 'e', 'é', 'z', '€', '*', '?', '[', ']', '^', '-', '\\', ':']
    for (let n = 0; n < 400; n++) {
      const length = 1 + Math.floor(random() * 6)
      const pattern = Array.from({ length }, () => alphabet[Math.floor(random() * alphabet.length)]).join('')
      expect(local(pattern), pattern).toEqual(await redisMatches(pattern))
    }
  })

  it('matches a pattern of many stars against a long key without backtracking over it', () => {
    // A RegExp of these backtracks exponentially: six `*a` against 200 `a`s ran for minutes.
    const key = 'a'.repeat(10_000)
    expect(globMatcher('*a*a*a*a*a*a*a*a b')(key)).toBe(false)
    expect(globMatcher('*a*a*a*a*a*a*a*a')(key)).toBe(true)
    expect(globMatcher('*?*?*?*[b]')(key)).toBe(false)
  })
})

describe('globStartsWithLiteral', () => {
  it('is false for a pattern that starts with a star, ? or a class, however it is spelled', () => {
    for (const pattern of ['*', '??', '*[^]', '[^]*', '?*', '*?', '[^]', '[a-z]*', '[a]', '[*]', '[\\a]*', '*[', '[abc', '[]', '[^a-]*', '**?[?]', '*:*', '*[^]*:*', '*\\*', '*é*', '[a]b', '*]', '?user:*', '']) {
      expect(globStartsWithLiteral(pattern), pattern).toBe(false)
    }
  })

  it('is true for a plain or escaped first character, a trailing backslash included', () => {
    for (const pattern of ['a*', 'user:*', '\\*', '\\?', '\\[*', 'a\\', 'é*', ']*', 'files:list:*']) {
      expect(globStartsWithLiteral(pattern), pattern).toBe(true)
    }
  })

  it('is never true of a pattern that matches a key not starting with its first byte, on 400 random patterns', () => {
    // Soundness: a pattern that starts with a literal only matches keys that start with it.
    let state = 0x2545f491
    const random = () => ((state ^= state << 13), (state ^= state >>> 17), (state ^= state << 5), (state >>> 0) / 2 ** 32)
    const alphabet = ['a', 'é', 'q', ':', '*', '?', '[', ']', '^', '-', '\\']
    const keys = Array.from({ length: 12 }, (_, n) => 'q:a'.repeat(n).slice(1))
    for (let n = 0; n < 400; n++) {
      const pattern = Array.from({ length: 1 + Math.floor(random() * 7) }, () => alphabet[Math.floor(random() * alphabet.length)]).join('')
      if (!globStartsWithLiteral(pattern)) continue
      const first = pattern.startsWith('\\') ? (pattern[1] ?? '\\') : pattern[0]!
      expect(keys.filter(globMatcher(pattern)).filter((k) => !k.startsWith(first)), pattern).toEqual([])
    }
  })
})
