/**
 * Text PostgreSQL can store: no U+0000 (text and jsonb refuse it) and no unpaired surrogate (not
 * Unicode; UTF-8 cannot encode it, and jsonb refuses its escape). Input holding either is refused
 * where it enters, with the place named, rather than failing a write halfway with an internal error.
 */
export const UNSTORABLE_TEXT = 'must not contain the NUL character (U+0000) or an unpaired surrogate'

const UNPAIRED_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

export function isStorableText(text: string): boolean {
  return !text.includes('\0') && !UNPAIRED_SURROGATE.test(text)
}

/** The path to the first string (a value or an object key) that is not storable text, or undefined. */
export function unstorableAt(value: unknown, path: string[] = [], depth = 0): string[] | undefined {
  if (typeof value === 'string') return isStorableText(value) ? undefined : path
  // Deeper than JSON input goes (GraphQL's depth limit, the attributes' size limit): nothing to look at.
  if (value === null || typeof value !== 'object' || depth > 64) return undefined
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = unstorableAt(value[i], [...path, String(i)], depth + 1)
      if (found) return found
    }
    return undefined
  }
  // Plain data only: an upload (a promise of a stream) is not text.
  const proto: unknown = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return undefined
  for (const [key, item] of Object.entries(value)) {
    if (!isStorableText(key)) return [...path, key]
    const found = unstorableAt(item, [...path, key], depth + 1)
    if (found) return found
  }
  return undefined
}
