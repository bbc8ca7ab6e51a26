import { isTerminal, type UploadProgressEvent } from './upload-progress'

/**
 * The uploadProgress subscription: the saved current state first (if any), then live events, ending
 * after a terminal one. Live events of the same run that would move percent backwards are dropped:
 * parallel parts and a late snapshot can deliver them out of order.
 *
 * Written by hand rather than as an async generator: a generator parked on `await live.next()`
 * cannot be returned until the next event arrives, which would leak the subscription of a client
 * that disconnects from an idle upload.
 */
export function progressStream(initial: UploadProgressEvent | undefined, live: AsyncIterator<unknown>): AsyncIterableIterator<UploadProgressEvent> {
  let pending = initial
  let last: UploadProgressEvent | undefined
  let done = false

  const finish = async (): Promise<IteratorResult<UploadProgressEvent>> => {
    if (!done) {
      done = true
      await live.return?.()
    }
    return { done: true, value: undefined }
  }

  const accept = (event: UploadProgressEvent): boolean => {
    if (last && !isTerminal(event) && event.runId === last.runId && event.percent < last.percent) return false
    last = event
    return true
  }

  const iterator: AsyncIterableIterator<UploadProgressEvent> = {
    async next() {
      if (done) return { done: true, value: undefined }
      if (last && isTerminal(last)) return finish()
      if (pending) {
        const event = pending
        pending = undefined
        if (accept(event)) return { done: false, value: event }
      }
      for (;;) {
        const result = await live.next()
        if (result.done || done) return finish()
        const event = result.value as UploadProgressEvent
        if (accept(event)) return { done: false, value: event }
      }
    },
    return: finish,
    async throw(err?: unknown) {
      await finish()
      throw err
    },
    [Symbol.asyncIterator]() {
      return iterator
    },
  }
  return iterator
}
