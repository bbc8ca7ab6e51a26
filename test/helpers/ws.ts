import { createClient, type Client } from 'graphql-ws'
import WebSocket from 'ws'

/** A real graphql-ws (graphql-transport-ws) client, as Apollo's GraphQLWsLink and urql use. */
export function wsClient(url: string, token?: string): Client {
  return createClient({
    url,
    webSocketImpl: WebSocket,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    retryAttempts: 0,
    lazy: true,
  })
}

/** Collects events of one subscription until `until` returns true or the timeout passes. */
export function collect<T>(client: Client, query: string, variables: Record<string, unknown>, until: (events: T[]) => boolean, timeoutMs = 10_000) {
  const events: T[] = []
  let ready!: () => void
  const subscribed = new Promise<void>((r) => (ready = r))
  const done = new Promise<T[]>((resolve, reject) => {
    const timer = setTimeout(() => {
      dispose()
      reject(new Error(`subscription timed out after ${events.length} events`))
    }, timeoutMs)
    const dispose = client.subscribe<T>(
      { query, variables },
      {
        next: (msg) => {
          if (msg.errors) {
            clearTimeout(timer)
            dispose()
            reject(new Error(JSON.stringify(msg.errors)))
            return
          }
          events.push(msg.data as T)
          if (until(events)) {
            clearTimeout(timer)
            dispose()
            resolve(events)
          }
        },
        error: (err) => {
          clearTimeout(timer)
          reject(err instanceof Error ? err : new Error(JSON.stringify(err)))
        },
        complete: () => {
          clearTimeout(timer)
          resolve(events)
        },
      },
    )
    // The server has no "subscribed" acknowledgement; give the subscribe message time to land.
    setTimeout(ready, 300)
  })
  return { events: done, subscribed }
}
