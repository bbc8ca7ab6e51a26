/**
 * TinyLFU's popularity estimate: a count-min sketch of 4-bit counters (one byte
 * each here, capped at 15) with periodic halving, so the history ages and a key
 * that was hot yesterday does not squat the cache forever. Sized like Caffeine's:
 * 16 counters per unit of capacity, sample period 10x the capacity.
 */
const DEPTH = 4
const MAX_COUNT = 15
const SEEDS = [0x97cb3127, 0xb3e1b0ad, 0x2bd1ae63, 0xe67e2e6d] as const

export class FrequencySketch {
  private readonly table: Uint8Array
  private readonly width: number
  private readonly mask: number
  private readonly sampleSize: number
  private additions = 0

  constructor(capacity: number) {
    const cap = Math.max(16, Math.min(capacity, 1 << 24))
    this.width = nextPowerOfTwo(cap * 4)
    this.mask = this.width - 1
    this.table = new Uint8Array(this.width * DEPTH)
    this.sampleSize = 10 * cap
  }

  /** Records one access and resolves to the key's new estimate. */
  increment(hash: number): number {
    let min = MAX_COUNT
    let added = false
    for (let i = 0; i < DEPTH; i++) {
      const index = this.indexOf(hash, i)
      const count = this.table[index] as number
      if (count < MAX_COUNT) {
        this.table[index] = count + 1
        added = true
      }
      if (count + 1 < min) min = count + 1
    }
    if (added && ++this.additions >= this.sampleSize) this.reset()
    return min
  }

  frequency(hash: number): number {
    let min = MAX_COUNT
    for (let i = 0; i < DEPTH; i++) {
      const count = this.table[this.indexOf(hash, i)] as number
      if (count < min) min = count
    }
    return min
  }

  clear(): void {
    this.table.fill(0)
    this.additions = 0
  }

  private indexOf(hash: number, row: number): number {
    let h = Math.imul(hash, SEEDS[row] as number)
    h ^= h >>> 15
    return row * this.width + (h & this.mask)
  }

  private reset(): void {
    const table = this.table
    for (let i = 0; i < table.length; i++) table[i] = (table[i] as number) >>> 1
    this.additions = this.additions >>> 1
  }
}

function nextPowerOfTwo(n: number): number {
  let p = 1
  while (p < n) p *= 2
  return p
}
