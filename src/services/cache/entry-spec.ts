import { ValidationError } from '../../lib/errors'

export type Loader = () => Promise<unknown>

/** Resolved per call: ms, validated by the facade. */
export interface WriteSpec {
  ttlMs: number
  graceMs: number
  tags: readonly string[] | undefined
}

export interface LoadSpec extends WriteSpec {
  lock: boolean
  loaderTimeoutMs: number
}

/** How a popular entry is recomputed when re-warming. */
export interface EntryOrigin {
  loader: Loader
  spec: LoadSpec
}

export class EntryTooLargeError extends ValidationError {
  constructor(bytes: number, max: number) {
    super(`The value is ${bytes} bytes, over the cache's maximum entry size of ${max}`, [
      { path: ['value'], message: `At most ${max} bytes` },
    ])
  }
}
