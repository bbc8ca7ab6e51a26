export interface Serializer {
  serialize(value: unknown): string
  deserialize(raw: string): unknown
}

/*
 * Format. A value made only of JSON types is stored as its plain JSON, so the
 * common case costs one type-checking walk plus JSON.stringify, and stays
 * readable in redis-cli. Anything else is stored as TAGGED_MARKER followed by
 * JSON in which special values are `{"$t": tag, "v": payload}`; a user object
 * that itself owns a "$t" key is escaped as tag "O". The marker cannot start a
 * JSON text, so the two forms never collide.
 */
const TAGGED_MARKER = '~'
const TAG_KEY = '$t'
// Deeper values take the tagged path, whose walk detects cycles; the fast check does not.
const MAX_FAST_DEPTH = 64

type Tagged = { [TAG_KEY]: string; v?: unknown }

export const typedJsonSerializer: Serializer = {
  serialize(value) {
    if (isPlainJson(value, 0)) return JSON.stringify(value)
    const encoded = encode(value, new Set())
    if (encoded === undefined) throw new TypeError(`Cannot serialize a value of type ${typeof value}`)
    return TAGGED_MARKER + JSON.stringify(encoded)
  },
  deserialize(raw) {
    if (raw.startsWith(TAGGED_MARKER)) return decode(JSON.parse(raw.slice(TAGGED_MARKER.length)))
    return JSON.parse(raw)
  },
}

function isPlainJson(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true
    case 'number':
      return isPlainNumber(value)
    case 'object': {
      if (value === null) return true
      if (depth >= MAX_FAST_DEPTH) return false
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          if (!isPlainJson(value[i], depth + 1)) return false
        }
        return true
      }
      const proto: unknown = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) return false
      const record = value as Record<string, unknown>
      for (const key in record) {
        if (!isPlainJson(record[key], depth + 1)) return false
      }
      return true
    }
    default:
      return false
  }
}

function isPlainNumber(n: number): boolean {
  return Number.isFinite(n) && !(n === 0 && 1 / n < 0)
}

function tag(name: string, v?: unknown): Tagged {
  return v === undefined ? { [TAG_KEY]: name } : { [TAG_KEY]: name, v }
}

/** Returns a JSON-safe tree; `undefined` means "omit", as JSON.stringify does for functions and symbols. */
function encode(value: unknown, ancestors: Set<object>): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value
    case 'number':
      if (isPlainNumber(value)) return value
      return tag('N', Object.is(value, -0) ? '-0' : String(value))
    case 'bigint':
      return tag('I', value.toString())
    case 'undefined':
      return tag('u')
    case 'function':
    case 'symbol':
      return undefined
  }
  if (value === null) return null
  const obj = value as object
  if (ancestors.has(obj)) throw new TypeError('Cannot serialize a circular structure')
  ancestors.add(obj)
  try {
    return encodeObject(obj, ancestors)
  } finally {
    ancestors.delete(obj)
  }
}

function encodeObject(obj: object, ancestors: Set<object>): unknown {
  if (Array.isArray(obj)) {
    const out: unknown[] = new Array(obj.length)
    for (let i = 0; i < obj.length; i++) out[i] = encode(obj[i], ancestors)
    return out
  }
  if (obj instanceof Date) {
    const time = obj.getTime()
    return tag('D', Number.isNaN(time) ? null : time)
  }
  if (obj instanceof Map) {
    return tag('M', Array.from(obj, ([k, v]) => [encode(k, ancestors), encode(v, ancestors)]))
  }
  if (obj instanceof Set) return tag('S', Array.from(obj, (v) => encode(v, ancestors)))
  if (Buffer.isBuffer(obj)) return tag('B', obj.toString('base64'))
  if (obj instanceof Uint8Array) {
    return tag('U8', Buffer.from(obj.buffer, obj.byteOffset, obj.byteLength).toString('base64'))
  }
  const withToJson = obj as { toJSON?: unknown }
  if (typeof withToJson.toJSON === 'function') {
    return encode((withToJson.toJSON as (key: string) => unknown)(''), ancestors)
  }
  const source = obj as Record<string, unknown>
  const keys = Object.keys(source)
  if (Object.hasOwn(source, TAG_KEY)) {
    const entries: [string, unknown][] = []
    for (const key of keys) {
      const v = encode(source[key], ancestors)
      if (v !== undefined) entries.push([key, v])
    }
    return tag('O', entries)
  }
  // A null prototype makes a "__proto__" key an own property rather than a prototype change.
  const out = Object.create(null) as Record<string, unknown>
  for (const key of keys) {
    const v = encode(source[key], ancestors)
    if (v !== undefined) out[key] = v
  }
  return out
}

function decode(node: unknown): unknown {
  if (typeof node !== 'object' || node === null) return node
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) node[i] = decode(node[i])
    return node
  }
  const record = node as Record<string, unknown>
  if (Object.hasOwn(record, TAG_KEY)) return decodeTagged(record as Tagged)
  for (const key of Object.keys(record)) setOwn(record, key, decode(record[key]))
  return record
}

function decodeTagged(node: Tagged): unknown {
  const v = node.v
  switch (node[TAG_KEY]) {
    case 'u':
      return undefined
    case 'N':
      return v === '-0' ? -0 : Number(v)
    case 'I':
      return BigInt(v as string)
    case 'D':
      return new Date(v === null ? Number.NaN : (v as number))
    case 'M':
      return new Map((v as [unknown, unknown][]).map(([k, val]) => [decode(k), decode(val)]))
    case 'S':
      return new Set((v as unknown[]).map(decode))
    case 'B':
      return Buffer.from(v as string, 'base64')
    case 'U8': {
      const buf = Buffer.from(v as string, 'base64')
      return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength).slice()
    }
    case 'O': {
      const out: Record<string, unknown> = {}
      for (const [key, val] of v as [string, unknown][]) setOwn(out, key, decode(val))
      return out
    }
    default:
      throw new TypeError(`Unknown serialized tag ${String(node[TAG_KEY])}`)
  }
}

function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') {
    Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true })
  } else {
    target[key] = value
  }
}
