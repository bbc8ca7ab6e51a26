/** HTTP load with autocannon, typed here for the calls the benches make (no declarations ship with it). */
import { createRequire } from 'node:module'

export interface AutocannonResult {
  duration: number
  errors: number
  timeouts: number
  non2xx: number
  '2xx': number
  '3xx': number
  latency: { p50: number; p99: number }
}

type Autocannon = (options: Record<string, unknown>) => Promise<AutocannonResult>
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon

export interface LoadOptions {
  url: string
  connections: number
  seconds: number
  requests: { method: string; path: string; body?: string; headers?: Record<string, string> }[]
  headers?: Record<string, string>
  /**
   * Each connection starts at its own offset of `requests` (connection i at i/connections of the way
   * through), so the connections spread over the list. Without it every connection walks the same
   * list from its start, nearly in step, and each entry arrives `connections` times within moments.
   */
  spread?: boolean
}

interface AutocannonClient {
  setRequests(requests: LoadOptions['requests']): void
}

/** Requests per second answered 2xx or 3xx, and autocannon's own result. */
export async function load(options: LoadOptions): Promise<{ rps: number; failed: number; result: AutocannonResult }> {
  const result = await autocannon({
    url: options.url,
    connections: options.connections,
    duration: options.seconds,
    headers: options.headers,
    // With spread, each connection's list is set once, by setupClient: autocannon builds every request
    // of a connection's list as it creates the connection, so the option's list is one request long.
    requests: options.spread ? options.requests.slice(0, 1) : options.requests,
    setupClient: options.spread ? spreader(options.requests, options.connections) : undefined,
  })
  const ok = result['2xx'] + result['3xx']
  // Over the load's own seconds: autocannon's duration also counts the time it takes to build every
  // connection's requests, before its timer starts and before any request is answered.
  return { rps: ok / options.seconds, failed: result.errors + result.non2xx - result['3xx'], result }
}

/** autocannon's setupClient for `spread`: the next connection's rotation of the list. */
function spreader(requests: LoadOptions['requests'], connections: number): (client: AutocannonClient) => void {
  let next = 0
  return (client) => {
    const offset = Math.floor((next++ % connections) * (requests.length / connections))
    // Copies: autocannon stores each built request on its object.
    client.setRequests([...requests.slice(offset), ...requests.slice(0, offset)].map((r) => ({ ...r })))
  }
}
