/** A counting semaphore: at most `limit` tasks run at once, the rest wait in FIFO order. */
export function createLimiter(limit: number) {
  let active = 0
  const queue: (() => void)[] = []
  const next = () => {
    if (active >= limit) return
    const run = queue.shift()
    if (run) {
      active++
      run()
    }
  }
  return {
    get active() {
      return active
    },
    get pending() {
      return queue.length
    },
    run<T>(task: () => Promise<T>): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        queue.push(() => {
          task()
            .then(resolve, reject)
            .finally(() => {
              active--
              next()
            })
        })
        next()
      })
    },
  }
}
