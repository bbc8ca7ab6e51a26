import type { TagStamp } from './tiny-lfu-cache'

/*
 * L2 format: \u0001<freshUntil>,<staleUntil>|<tag stamp JSON or empty>\u0001<payload>.
 * The header tells another instance how long its L1 copy may live and which tag
 * versions the entry belongs to; Redis's PX is staleUntil. JSON escapes control
 * characters and tags refuse them, so \u0001 cannot occur inside the header, and
 * the serializer's output after it is never scanned. A value without the header
 * (written before it existed) is served from Redis but never copied into L1.
 */
const MARK = '\u0001'

export interface DecodedEntry {
  payload: string
  /** Epoch ms; NaN for a headerless value. */
  freshUntil: number
  staleUntil: number
  tags: TagStamp | undefined
}

export function encodeEntry(payload: string, freshUntil: number, staleUntil: number, tags: TagStamp | undefined): string {
  return `${MARK}${freshUntil},${staleUntil}|${tags === undefined ? '' : JSON.stringify(tags)}${MARK}${payload}`
}

export function decodeEntry(raw: string): DecodedEntry {
  if (raw.charCodeAt(0) !== 1) return { payload: raw, freshUntil: Number.NaN, staleUntil: Number.NaN, tags: undefined }
  const end = raw.indexOf(MARK, 1)
  const bar = raw.indexOf('|', 1)
  const comma = raw.indexOf(',', 1)
  if (end === -1 || bar === -1 || bar > end || comma === -1 || comma > bar) throw new TypeError('Malformed cache entry header')
  const tags = raw.slice(bar + 1, end)
  return {
    payload: raw.slice(end + 1),
    freshUntil: Number(raw.slice(1, comma)),
    staleUntil: Number(raw.slice(comma + 1, bar)),
    tags: tags === '' ? undefined : (JSON.parse(tags) as TagStamp),
  }
}
