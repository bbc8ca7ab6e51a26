/**
 * Dotted variable paths (`event.title`) read from and written into template data. Shared by the
 * campaign and the transactional data builders, so both treat a missing or blank value the same way.
 */

/**
 * Segments that would reach an object's prototype instead of its own data. Declared names are
 * refused at save (template-engine.ts); these functions refuse them again, because writing through
 * `__proto__` would change every object in the process.
 */
const UNSAFE_SEGMENTS = new Set(['__proto__', 'prototype', 'constructor'])

export function isUnsafeSegment(part: string): boolean {
  return UNSAFE_SEGMENTS.has(part)
}

/** `badParent` is the path of the first value on the way that is not an object (a string where `event` should be). */
export function lookupPath(data: Record<string, unknown>, parts: string[]): { value: unknown } | { badParent: string[] } {
  let current: unknown = data
  for (let i = 0; i < parts.length; i++) {
    if (current === undefined || current === null) return { value: undefined }
    if (typeof current !== 'object' || Array.isArray(current)) return { badParent: parts.slice(0, i) }
    const part = parts[i]!
    // Own properties only: an inherited one (toString, __proto__) is not data the caller sent.
    current = isUnsafeSegment(part) || !Object.hasOwn(current, part) ? undefined : (current as Record<string, unknown>)[part]
  }
  return { value: current }
}

/** Creates the objects on the way, replacing any non-object in the way. */
export function assignPath(target: Record<string, unknown>, parts: string[], value: unknown): void {
  if (parts.some(isUnsafeSegment)) throw new TypeError(`Refusing to write the template variable path ${parts.join('.')}`)
  let node = target
  for (const part of parts.slice(0, -1)) {
    const next = Object.hasOwn(node, part) ? node[part] : undefined
    if (next === null || typeof next !== 'object' || Array.isArray(next)) node[part] = {}
    node = node[part] as Record<string, unknown>
  }
  node[parts[parts.length - 1]!] = value
}

/** A blank string counts as missing: a form's empty field should get the fallback, not an empty greeting. */
export function isMissing(value: unknown): boolean {
  return value === undefined || value === null || (typeof value === 'string' && value.trim() === '')
}
