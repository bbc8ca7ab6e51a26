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
}

/** Requests per second answered 2xx or 3xx, and autocannon's own result. */
export async function load(options: LoadOptions): Promise<{ rps: number; failed: number; result: AutocannonResult }> {
  const result = await autocannon({
    url: options.url,
    connections: options.connections,
    duration: options.seconds,
    headers: options.headers,
    requests: options.requests,
  })
  const ok = result['2xx'] + result['3xx']
  return { rps: ok / result.duration, failed: result.errors + result.non2xx - result['3xx'], result }
}
