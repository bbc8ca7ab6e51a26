import { describe, expect, it } from 'vitest'
import { BoundedMap } from '../src/lib/bounded-map'

describe('BoundedMap', () => {
  it('keeps at most max entries and forgets the oldest first, whatever the churn', () => {
    const map = new BoundedMap<number, number>(3)
    for (let i = 0; i < 10_000; i++) {
      map.set(i, i * 2)
      expect(map.size).toBe(Math.min(i + 1, 3))
    }
    expect([...map.keys()]).toEqual([9997, 9998, 9999])
    expect(map.get(9999)).toBe(19998)
    expect(map.has(9996)).toBe(false)
  })

  it('updates a present key in place, without moving it or evicting anything', () => {
    const map = new BoundedMap<string, number>(2)
    map.set('a', 1).set('b', 2).set('a', 3)
    expect([...map.entries()]).toEqual([['a', 3], ['b', 2]])
    map.set('c', 4)
    expect([...map.keys()]).toEqual(['b', 'c'])
  })

  it('stays bounded and correct when keys are deleted and added again by hand', () => {
    const map = new BoundedMap<number, number>(4)
    for (let i = 0; i < 1_000; i++) {
      map.set(i % 6, i)
      if (i % 3 === 0) map.delete(i % 6)
      expect(map.size).toBeLessThanOrEqual(4)
    }
    // The ring of keys never outgrows a few times the bound.
    expect((map as unknown as { order: unknown[] }).order.length).toBeLessThanOrEqual(8 + 1024)
    map.clear()
    expect(map.size).toBe(0)
    map.set(1, 1)
    expect([...map.keys()]).toEqual([1])
  })

  it('gives a key deleted and added again its new place: the oldest live entry goes first', () => {
    const map = new BoundedMap<string, number>(3)
    map.set('a', 1).set('b', 2).set('c', 3)
    map.delete('a')
    map.set('a', 4).set('d', 5)
    expect([...map.keys()]).toEqual(['c', 'a', 'd'])
    map.delete('c')
    map.delete('a')
    map.set('e', 6).set('f', 7).set('g', 8)
    expect([...map.keys()]).toEqual(['e', 'f', 'g'])
  })

  it('holds nothing with a bound of 0', () => {
    const map = new BoundedMap<string, number>(0)
    map.set('a', 1)
    expect(map.size).toBe(0)
  })
})
