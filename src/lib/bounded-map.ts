/**
 * A Map that forgets its oldest entries (by first insertion) past `max`: a bounded memo.
 *
 * The insertion order is kept in a ring of keys beside the Map, not read off the Map: a V8 Map leaves
 * a hole for each deleted entry until it rehashes, and finding its first key (`keys().next()`) walks
 * over every hole, so evicting that way costs up to `max` steps per insert once the map is full.
 */
export class BoundedMap<K, V> extends Map<K, V> {
  /** Keys in insertion order, oldest at `head`. A key deleted by hand leaves its slot behind, counted in `stale`. */
  private readonly order: (K | undefined)[] = []
  private head = 0
  /** Slots per key left behind by a deletion: eviction skips them, so a key deleted and added again keeps its new place. */
  private readonly stale = new Map<K, number>()

  constructor(private readonly max: number) {
    super()
  }

  override set(key: K, value: V): this {
    if (this.max <= 0) return this
    if (!this.has(key)) {
      while (this.size >= this.max) this.evictOldest()
      // Keys deleted by hand leave their slots behind: past twice the bound, the ring is rebuilt from the Map.
      if (this.order.length - this.head >= 2 * this.max) this.rebuildOrder()
      this.order.push(key)
    }
    return super.set(key, value)
  }

  override delete(key: K): boolean {
    if (!super.delete(key)) return false
    this.stale.set(key, (this.stale.get(key) ?? 0) + 1)
    return true
  }

  override clear(): void {
    super.clear()
    this.order.length = 0
    this.head = 0
    this.stale.clear()
  }

  private rebuildOrder(): void {
    this.order.length = 0
    this.head = 0
    this.stale.clear()
    for (const key of super.keys()) this.order.push(key)
  }

  private evictOldest(): void {
    const key = this.order[this.head]
    this.order[this.head] = undefined
    this.head++
    // Compacted once the consumed front is half the ring: amortised O(1) per insert.
    if (this.head > 1024 && this.head * 2 > this.order.length) {
      this.order.splice(0, this.head)
      this.head = 0
    }
    const left = this.stale.get(key as K)
    if (left === undefined) {
      super.delete(key as K)
    } else if (left > 1) {
      this.stale.set(key as K, left - 1)
    } else {
      this.stale.delete(key as K)
    }
  }
}
