/** A fast 32-bit string hash for in-memory tables (the cache's frequency sketch, the tracking doorkeeper); not for security. */

/** FNV-1a, then a final avalanche so the sketch rows see well-spread bits. */
export function hashKey(key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  return h | 0
}
