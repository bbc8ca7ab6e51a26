/**
 * A cheap upper-bound-ish estimate of a value's heap footprint, for the L1 byte
 * bound when there is no serialised form to measure (memory-only mode). It walks
 * the value once; exactness is not the point, ranking big values above small is.
 */
const OBJECT_OVERHEAD = 32
const SLOT = 8

export function estimateBytes(value: unknown, seen: Set<object> = new Set()): number {
  switch (typeof value) {
    case 'string':
      return 16 + value.length
    case 'number':
      return SLOT
    case 'boolean':
    case 'undefined':
      return 4
    case 'bigint':
      return 16 + Math.ceil(value.toString(16).length / 2)
    case 'object':
      break
    default:
      return SLOT
  }
  if (value === null) return 4
  if (seen.has(value)) return SLOT
  seen.add(value)
  if (ArrayBuffer.isView(value)) return OBJECT_OVERHEAD + value.byteLength
  if (value instanceof Date) return OBJECT_OVERHEAD
  let total = OBJECT_OVERHEAD
  if (Array.isArray(value)) {
    for (const item of value) total += SLOT + estimateBytes(item, seen)
    return total
  }
  if (value instanceof Map) {
    for (const [k, v] of value) total += 2 * SLOT + estimateBytes(k, seen) + estimateBytes(v, seen)
    return total
  }
  if (value instanceof Set) {
    for (const v of value) total += SLOT + estimateBytes(v, seen)
    return total
  }
  const record = value as Record<string, unknown>
  for (const key in record) total += SLOT + 16 + key.length + estimateBytes(record[key], seen)
  return total
}
