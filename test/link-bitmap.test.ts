import { describe, expect, it } from 'vitest'
import { hasBit, withBit } from '../src/services/tracking/link-bitmap'

describe('link bitmaps', () => {
  it('has no bit set in a null or empty bitmap, even far past its end', () => {
    expect(hasBit(null, 0)).toBe(false)
    expect(hasBit(Buffer.alloc(0), 7)).toBe(false)
    expect(hasBit(Buffer.from([0xff]), 8)).toBe(false)
    expect(hasBit(Buffer.from([0xff]), 4_000)).toBe(false)
  })

  it('numbers bits least significant first within each byte, the way PostgreSQL get_bit does', () => {
    expect([...withBit(null, 0)]).toEqual([0b0000_0001])
    expect([...withBit(null, 7)]).toEqual([0b1000_0000])
    expect([...withBit(null, 9)]).toEqual([0, 0b0000_0010])
    expect(hasBit(Buffer.from([0, 0b1000_0000]), 15)).toBe(true)
    expect(hasBit(Buffer.from([0, 0b1000_0000]), 14)).toBe(false)
  })

  it('grows only as far as the highest bit needs and keeps the bits already set', () => {
    let bitmap: Buffer | null = null
    for (const i of [3, 0, 17, 3, 499]) bitmap = withBit(bitmap, i)
    expect(bitmap!.length).toBe(63)
    for (let i = 0; i < 504; i++) expect(hasBit(bitmap, i), `bit ${i}`).toBe([0, 3, 17, 499].includes(i))
    // A lower bit does not shrink it.
    expect(withBit(bitmap, 1).length).toBe(63)
  })

  it('returns a copy and never changes the bitmap it was given', () => {
    const before = Buffer.from([0b0000_0100])
    const after = withBit(before, 0)
    expect([...before]).toEqual([0b0000_0100])
    expect([...after]).toEqual([0b0000_0101])
    expect(after).not.toBe(before)
  })

  it('refuses negative, fractional and non-numeric indexes', () => {
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => withBit(null, bad), String(bad)).toThrow(RangeError)
      expect(() => hasBit(Buffer.from([1]), bad), String(bad)).toThrow(RangeError)
    }
  })
})
