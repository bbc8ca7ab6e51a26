/**
 * `produce()` at once and then every `intervalMs`, until returned. Not an async generator: one
 * waiting out its interval would take a return only after the wait, so a completed subscription
 * would hold its timer for up to a minute; this one stops at once.
 */
export function ticker<T>(intervalMs: number, produce: () => T): AsyncIterableIterator<T> {
  let timer: NodeJS.Timeout | undefined
  let wake: ((result: IteratorResult<T>) => void) | undefined
  let started = false
  let done = false
  const finished: IteratorResult<T> = { done: true, value: undefined }
  return {
    next() {
      if (done) return Promise.resolve(finished)
      if (!started) {
        started = true
        return Promise.resolve({ done: false, value: produce() })
      }
      return new Promise((resolve) => {
        wake = resolve
        timer = setTimeout(() => {
          wake = undefined
          resolve(done ? finished : { done: false, value: produce() })
        }, intervalMs)
      })
    },
    return() {
      done = true
      clearTimeout(timer)
      wake?.(finished)
      wake = undefined
      return Promise.resolve(finished)
    },
    [Symbol.asyncIterator]() {
      return this
    },
  }
}
