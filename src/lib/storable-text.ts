/**
 * Text PostgreSQL can store: no U+0000 (text and jsonb refuse it) and no unpaired surrogate (not
 * Unicode; UTF-8 cannot encode it, and jsonb refuses its escape). Input holding either is refused
 * where it enters, with the place named, rather than failing a write halfway with an internal error.
 */
export const UNSTORABLE_TEXT = 'must not contain the NUL character (U+0000) or an unpaired surrogate'

/** An unpaired surrogate, as a pattern source (escape.ts replaces them in normalised text). */
export const UNPAIRED_SURROGATE = '[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])[\\uDC00-\\uDFFF]'
const UNPAIRED = new RegExp(UNPAIRED_SURROGATE)
const UNSTORABLE = new RegExp(`\\u0000|${UNPAIRED_SURROGATE}`, 'g')

export function isStorableText(text: string): boolean {
  return !text.includes('\0') && !UNPAIRED.test(text)
}

/** The text with each NUL and unpaired surrogate replaced (by U+FFFD unless told otherwise). */
export function replaceUnstorable(text: string, by = '\ufffd'): string {
  return text.replace(UNSTORABLE, by)
}

/** The path to the first string (a value or an object key) that is not storable text, or undefined. */
export function unstorableAt(value: unknown): string[] | undefined {
  // Depth-first with an explicit stack, however deep the input nests (JSON variables have no depth limit).
  type Entry = { value: unknown; key: string; parent: Entry | undefined }
  const pathOf = (entry: Entry | undefined, last?: string): string[] => {
    const path = last === undefined ? [] : [last]
    for (let e = entry; e?.parent !== undefined; e = e.parent) path.push(e.key)
    return path.reverse()
  }
  const stack: Entry[] = [{ value, key: '', parent: undefined }]
  while (stack.length > 0) {
    const entry = stack.pop()!
    const current = entry.value
    if (typeof current === 'string') {
      if (!isStorableText(current)) return pathOf(entry)
      continue
    }
    if (current === null || typeof current !== 'object') continue
    if (Array.isArray(current)) {
      for (let i = current.length - 1; i >= 0; i--) stack.push({ value: current[i], key: String(i), parent: entry })
      continue
    }
    // Plain data only: an upload (a promise of a stream) is not text.
    const proto: unknown = Object.getPrototypeOf(current)
    if (proto !== Object.prototype && proto !== null) continue
    const entries = Object.entries(current)
    for (const [key] of entries) if (!isStorableText(key)) return pathOf(entry, key)
    for (let i = entries.length - 1; i >= 0; i--) stack.push({ value: entries[i]![1], key: entries[i]![0], parent: entry })
  }
  return undefined
}
