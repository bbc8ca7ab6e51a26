/**
 * A bounded in-memory queue between the tracking endpoints and the database: a hit costs a push,
 * and a single writer stores what accumulated in batches, on a timer or as soon as a batch is full.
 * When the database is away, batches go back to the front and wait; past `max` new hits are dropped
 * and counted, so a flood or an outage costs bounded memory, never the process.
 */
export interface EventBufferOptions<T> {
  /** Most items held at once. */
  max: number
  /** Most items written in one call. */
  batchSize: number
  intervalMs: number
  write: (batch: T[]) => Promise<void>
  logger?: { warn(obj: Record<string, unknown>, msg?: string): void }
}

export interface EventBufferStats {
  buffered: number
  /** Most items ever held at once. */
  highWater: number
  dropped: number
  written: number
  batches: number
  failures: number
}

export class EventBuffer<T> {
  private items: T[] = []
  private flushing: Promise<void> | null = null
  private timer: NodeJS.Timeout | null = null
  private soon = false
  /** After a failed write, full batches wait for the timer instead of hammering a database that is away. */
  private backoffUntil = 0
  private closed = false
  private readonly counters = { highWater: 0, dropped: 0, written: 0, batches: 0, failures: 0 }

  constructor(private readonly options: EventBufferOptions<T>) {}

  /** Buffers one item; false when it was dropped because the buffer is full. */
  push(item: T): boolean {
    if (this.items.length >= this.options.max) {
      this.counters.dropped++
      return false
    }
    this.items.push(item)
    if (this.items.length > this.counters.highWater) this.counters.highWater = this.items.length
    if (this.items.length >= this.options.batchSize && !this.soon && !this.flushing && !this.closed && Date.now() >= this.backoffUntil) {
      this.soon = true
      setImmediate(() => {
        this.soon = false
        void this.flush()
      })
    }
    return true
  }

  start(): void {
    if (this.timer || this.closed) return
    this.timer = setInterval(() => void this.flush(), this.options.intervalMs)
    this.timer.unref()
  }

  /**
   * Writes everything buffered when called, batch by batch, and resolves when done or when a
   * write failed (the failed batch is kept for the next flush). One flush runs at a time.
   */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing.then(() => this.flush())
    if (this.items.length === 0) return Promise.resolve()
    this.flushing = this.drain().finally(() => {
      this.flushing = null
    })
    return this.flushing
  }

  /** Stops the timer and writes what is left (once; what still fails is lost with the process). */
  async close(): Promise<void> {
    this.closed = true
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    await this.flush()
  }

  stats(): EventBufferStats {
    return { buffered: this.items.length, ...this.counters }
  }

  private async drain(): Promise<void> {
    let pending = this.items.length
    while (pending > 0 && this.items.length > 0) {
      const batch = this.items.splice(0, Math.min(this.options.batchSize, this.items.length))
      pending -= batch.length
      try {
        await this.options.write(batch)
        this.counters.written += batch.length
        this.counters.batches++
        this.backoffUntil = 0
      } catch (err) {
        this.counters.failures++
        this.backoffUntil = Date.now() + this.options.intervalMs
        this.requeue(batch)
        this.options.logger?.warn({ err, events: batch.length, buffered: this.items.length }, 'tracking events not stored yet; kept for the next flush')
        return
      }
    }
  }

  private requeue(batch: T[]): void {
    const room = this.options.max - this.items.length
    if (room < batch.length) this.counters.dropped += batch.length - Math.max(0, room)
    // Oldest first, so order survives; what does not fit is the newest of the failed batch.
    this.items = batch.slice(0, Math.max(0, room)).concat(this.items)
  }
}
