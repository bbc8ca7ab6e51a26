/**
 * Results kept in this process for `ttlMs`, per key; concurrent callers share a load in flight
 * (with `ttlMs` 0 too: then nothing is kept once it settles). A failed load is not kept. Keys must
 * come from a bounded set (section names, validated arguments): nothing is evicted but by being
 * replaced.
 */
export class TtlMemo {
  private readonly entries = new Map<string, { at: number; pending: boolean; value: Promise<unknown> }>()

  constructor(private readonly ttlMs: number) {}

  get<T>(key: string, load: () => Promise<T>): Promise<T> {
    const hit = this.entries.get(key)
    if (hit && (hit.pending || Date.now() - hit.at < this.ttlMs)) return hit.value as Promise<T>
    // Aged from the start of the load: a slow load does not stretch how old an answer may be.
    const entry = { at: Date.now(), pending: true, value: load() as Promise<unknown> }
    this.entries.set(key, entry)
    const forget = () => {
      if (this.entries.get(key) === entry) this.entries.delete(key)
    }
    entry.value.then(
      () => {
        entry.pending = false
        if (this.ttlMs <= 0) forget()
      },
      forget,
    )
    return entry.value as Promise<T>
  }
}
