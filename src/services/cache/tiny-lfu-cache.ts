import { FrequencySketch } from './frequency-sketch'
import { hashKey } from '../../lib/hash-key'

/** Tag name -> the tag's version when the entry was written. */
export type TagStamp = Record<string, number>

export interface L1Meta {
  bytes: number
  /** Epoch ms: fresh before, stale (served only within grace) after. */
  freshUntil: number
  /** Epoch ms: gone after; equals freshUntil without grace. */
  staleUntil: number
  tags?: TagStamp
  /** Opaque to L1: how to recompute the entry (loader and options), for re-warming. */
  origin?: unknown
}

export interface L1Node {
  key: string
  /** The caller's object itself: L1 never copies, so callers must treat cached values as immutable. */
  value: unknown
  hash: number
  bytes: number
  freshUntil: number
  staleUntil: number
  /** Epoch ms after which this copy is dropped even if the entry lives on in L2: bounds a missed bus message. */
  evictAt: number
  tags: TagStamp | undefined
  origin: unknown
  queue: number
  prev: L1Node
  next: L1Node
}

export interface TinyLfuOptions {
  maxItems: number
  maxBytes: number
  /** Cap on how long one copy stays in this process. */
  maxLocalTtlMs?: number
}

const WINDOW = 0
const PROBATION = 1
const PROTECTED = 2
const WINDOW_RATIO = 0.01
const PROTECTED_RATIO = 0.8
// Caffeine's guard against an attacker who makes a cold key look warm: a warm candidate sometimes wins a tie.
const WARM_CANDIDATE = 6

/**
 * W-TinyLFU (Einziger, Friedman, Manes): new entries land in a small LRU window;
 * an entry leaving the window must beat the main space's LRU victim on estimated
 * frequency to stay. The main space is a segmented LRU (probation, protected), so
 * one-hit wonders never push out the working set. Bounded by count and by bytes.
 */
export class TinyLfuCache {
  evictions = 0
  expirations = 0
  private readonly map = new Map<string, L1Node>()
  private readonly sketch: FrequencySketch
  private readonly window = new Deque()
  private readonly probation = new Deque()
  private readonly protectedQ = new Deque()
  private readonly windowMax: number
  private readonly protectedMax: number
  private readonly maxItems: number
  private readonly maxBytes: number
  private readonly maxLocalTtlMs: number
  private totalBytes = 0

  constructor(options: TinyLfuOptions) {
    this.maxItems = options.maxItems
    this.maxBytes = options.maxBytes
    this.maxLocalTtlMs = options.maxLocalTtlMs ?? Number.POSITIVE_INFINITY
    this.windowMax = Math.max(1, Math.floor(this.maxItems * WINDOW_RATIO))
    this.protectedMax = Math.max(1, Math.floor((this.maxItems - this.windowMax) * PROTECTED_RATIO))
    this.sketch = new FrequencySketch(this.maxItems)
  }

  get size(): number {
    return this.map.size
  }

  get bytes(): number {
    return this.totalBytes
  }

  /** A live node (fresh or within grace), recording the access; undefined when absent or past evictAt. */
  get(key: string, now: number): L1Node | undefined {
    const node = this.map.get(key)
    if (node === undefined) return undefined
    if (now >= node.evictAt) {
      this.remove(node)
      this.expirations++
      return undefined
    }
    this.onAccess(node)
    return node
  }

  /** Like get, without touching recency, frequency or expiry. */
  peek(key: string, now: number): L1Node | undefined {
    const node = this.map.get(key)
    return node !== undefined && now < node.evictAt ? node : undefined
  }

  /** Inserts or replaces. Returns false, storing nothing, when the entry alone exceeds the byte bound. */
  set(key: string, value: unknown, meta: L1Meta, now: number): boolean {
    if (meta.bytes > this.maxBytes) {
      this.delete(key)
      return false
    }
    const evictAt = Math.min(meta.staleUntil, now + this.maxLocalTtlMs)
    const existing = this.map.get(key)
    if (existing !== undefined) {
      this.totalBytes += meta.bytes - existing.bytes
      existing.value = value
      existing.bytes = meta.bytes
      existing.freshUntil = meta.freshUntil
      existing.staleUntil = meta.staleUntil
      existing.evictAt = evictAt
      existing.tags = meta.tags
      existing.origin = meta.origin
      this.onAccess(existing)
    } else {
      const node = newNode(key, hashKey(key))
      node.value = value
      node.bytes = meta.bytes
      node.freshUntil = meta.freshUntil
      node.staleUntil = meta.staleUntil
      node.evictAt = evictAt
      node.tags = meta.tags
      node.origin = meta.origin
      this.map.set(key, node)
      this.totalBytes += meta.bytes
      this.sketch.increment(node.hash)
      this.window.pushFront(node)
    }
    this.maintain()
    return true
  }

  delete(key: string): boolean {
    const node = this.map.get(key)
    if (node === undefined) return false
    this.remove(node)
    return true
  }

  /** Deletes every key the predicate accepts; resolves to how many were live. */
  deleteWhere(predicate: (key: string) => boolean, now: number): number {
    let live = 0
    for (const node of this.map.values()) {
      if (!predicate(node.key)) continue
      if (now < node.evictAt) live++
      this.remove(node)
    }
    return live
  }

  clear(): void {
    this.map.clear()
    this.window.clear()
    this.probation.clear()
    this.protectedQ.clear()
    this.totalBytes = 0
  }

  nodes(): IterableIterator<L1Node> {
    return this.map.values()
  }

  /**
   * The k resident keys the sketch rates most popular, ties broken by recency in
   * the protected segment. Costs O(items) and runs only when asked, so the hit path
   * pays nothing for it.
   */
  topK(k: number): { key: string; frequency: number; node: L1Node }[] {
    const scored: { key: string; frequency: number; node: L1Node; rank: number }[] = []
    let rank = 0
    for (const queue of [this.protectedQ, this.probation, this.window]) {
      for (let n = queue.sentinel.next; n !== queue.sentinel; n = n.next) {
        scored.push({ key: n.key, frequency: this.sketch.frequency(n.hash), node: n, rank: rank++ })
      }
    }
    scored.sort((a, b) => b.frequency - a.frequency || a.rank - b.rank)
    return scored.slice(0, k).map(({ key, frequency, node }) => ({ key, frequency, node }))
  }

  frequencyOf(key: string): number {
    return this.sketch.frequency(hashKey(key))
  }

  private onAccess(node: L1Node): void {
    this.sketch.increment(node.hash)
    if (node.queue === WINDOW) {
      this.window.moveToFront(node)
    } else if (node.queue === PROBATION) {
      this.probation.unlink(node)
      node.queue = PROTECTED
      this.protectedQ.pushFront(node)
      if (this.protectedQ.size > this.protectedMax) {
        const demoted = this.protectedQ.back()!
        this.protectedQ.unlink(demoted)
        demoted.queue = PROBATION
        this.probation.pushFront(demoted)
      }
    } else {
      this.protectedQ.moveToFront(node)
    }
  }

  private maintain(): void {
    while (this.window.size > this.windowMax) {
      const candidate = this.window.back()!
      this.window.unlink(candidate)
      candidate.queue = PROBATION
      this.probation.pushFront(candidate)
    }
    while (this.map.size > this.maxItems || this.totalBytes > this.maxBytes) {
      this.evictOne()
      this.evictions++
    }
  }

  /** Candidates sit at probation's young end (fresh from the window), victims at its old end. */
  private evictOne(): void {
    const { probation, protectedQ, window } = this
    if (probation.size >= 2) {
      const candidate = probation.front()!
      const victim = probation.back()!
      this.remove(this.admit(candidate, victim) ? victim : candidate)
    } else if (probation.size === 1 && protectedQ.size > 0) {
      const candidate = probation.front()!
      const victim = protectedQ.back()!
      this.remove(this.admit(candidate, victim) ? victim : candidate)
    } else if (probation.size === 1) {
      this.remove(probation.front()!)
    } else if (protectedQ.size > 0) {
      this.remove(protectedQ.back()!)
    } else {
      this.remove(window.back()!)
    }
  }

  private admit(candidate: L1Node, victim: L1Node): boolean {
    const candidateFreq = this.sketch.frequency(candidate.hash)
    const victimFreq = this.sketch.frequency(victim.hash)
    if (candidateFreq > victimFreq) return true
    if (candidateFreq < WARM_CANDIDATE) return false
    return (Math.random() * 128) < 1
  }

  private remove(node: L1Node): void {
    this.map.delete(node.key)
    this.totalBytes -= node.bytes
    if (node.queue === WINDOW) this.window.unlink(node)
    else if (node.queue === PROBATION) this.probation.unlink(node)
    else this.protectedQ.unlink(node)
  }
}

function newNode(key: string, hash: number): L1Node {
  const node = {
    key,
    value: undefined,
    hash,
    bytes: 0,
    freshUntil: 0,
    staleUntil: 0,
    evictAt: 0,
    tags: undefined,
    origin: undefined,
    queue: WINDOW,
    prev: null,
    next: null,
  } as unknown as L1Node
  node.prev = node
  node.next = node
  return node
}

/** Circular doubly linked list around a sentinel: O(1) moves without allocation. */
class Deque {
  readonly sentinel = newNode('', 0)
  size = 0

  front(): L1Node | undefined {
    return this.size === 0 ? undefined : this.sentinel.next
  }

  back(): L1Node | undefined {
    return this.size === 0 ? undefined : this.sentinel.prev
  }

  pushFront(node: L1Node): void {
    const head = this.sentinel.next
    node.prev = this.sentinel
    node.next = head
    head.prev = node
    this.sentinel.next = node
    this.size++
  }

  unlink(node: L1Node): void {
    node.prev.next = node.next
    node.next.prev = node.prev
    node.prev = node
    node.next = node
    this.size--
  }

  moveToFront(node: L1Node): void {
    if (this.sentinel.next === node) return
    this.unlink(node)
    this.pushFront(node)
  }

  clear(): void {
    this.sentinel.next = this.sentinel
    this.sentinel.prev = this.sentinel
    this.size = 0
  }
}
