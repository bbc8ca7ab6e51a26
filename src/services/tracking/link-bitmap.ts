/**
 * The bitmaps of recipient_engagement.links and human_links: bit i says link i was clicked. Bits
 * are numbered the way PostgreSQL's get_bit(bytea, i) numbers them (byte i / 8, least significant
 * bit first), so SQL can read the same bits. A bitmap is only as long as its highest bit needs.
 */

function checkIndex(index: number): void {
  if (!Number.isInteger(index) || index < 0) throw new RangeError(`Not a bit index: ${index}`)
}

export function hasBit(bitmap: Uint8Array | null, index: number): boolean {
  checkIndex(index)
  const byte = index >> 3
  return bitmap !== null && byte < bitmap.length && (bitmap[byte]! & (1 << (index & 7))) !== 0
}

/**
 * The bitmap with bit `index` set, grown as needed. A copy: the given one may be shared (the
 * writer's memory of committed bits) and must not change before its transaction commits.
 */
export function withBit(bitmap: Uint8Array | null, index: number): Buffer {
  checkIndex(index)
  const byte = index >> 3
  const out = Buffer.alloc(Math.max(bitmap?.length ?? 0, byte + 1))
  if (bitmap) out.set(bitmap)
  out[byte] = out[byte]! | (1 << (index & 7))
  return out
}
