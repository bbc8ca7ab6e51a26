/**
 * One delivery attempt: a POST with a hard deadline from connect to the last byte read. Built on
 * node:http rather than fetch because the connection's address has to be checked after DNS
 * (publicOnlyLookup), which fetch only allows through an undici dispatcher the project does not
 * depend on. Redirects are not followed: a 3xx is a failed attempt, as with Svix.
 */
import http from 'node:http'
import https from 'node:https'
import { isIP } from 'node:net'
import { isPublicAddress, publicOnlyLookup } from './address-policy'

export interface PostOptions {
  timeoutMs: number
  allowPrivate: boolean
  /** Aborts the request (shutdown). */
  signal?: AbortSignal
}

export interface PostResult {
  /** A 2xx answer. */
  ok: boolean
  statusCode: number | null
  /** Why it failed: the status line and the start of the body, or the network error. */
  error: string | null
  /** The worker is stopping: the attempt does not count. */
  aborted: boolean
}

/** Enough of an error page to say what went wrong, not enough to store a whole page per attempt. */
const MAX_ERROR_BODY = 512
const USER_AGENT = 'Groundwork-Webhooks/1.0'
/** Under Node's and most servers' keep-alive timeout (5 s), so we never write to a socket the receiver is closing. */
const IDLE_SOCKET_MS = 4_000

/** Shared keep-alive agents: most deliveries go to a few endpoints, so connections (and TLS sessions) are reused. */
export function createAgents(maxSockets: number) {
  const options = { keepAlive: true, maxSockets, maxFreeSockets: Math.min(maxSockets, 16), timeout: IDLE_SOCKET_MS }
  const agents = { http: new http.Agent(options), https: new https.Agent(options) }
  return {
    ...agents,
    destroy() {
      agents.http.destroy()
      agents.https.destroy()
    },
  }
}

export type Agents = ReturnType<typeof createAgents>

export function postWebhook(url: string, body: string, headers: Record<string, string>, options: PostOptions, agents?: Agents): Promise<PostResult> {
  const target = new URL(url)
  const host = target.hostname.replace(/^\[|\]$/g, '')
  // An IP literal is connected to without a lookup: judge it here.
  if (!options.allowPrivate && isIP(host) && !isPublicAddress(host)) {
    return Promise.resolve({ ok: false, statusCode: null, error: `${host} is a private, loopback or link-local address`, aborted: false })
  }
  const secure = target.protocol === 'https:'
  return new Promise((resolve) => {
    let settled = false
    const finish = (result: Omit<PostResult, 'aborted'>, aborted = false) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      resolve({ ...result, aborted })
    }
    const request = (secure ? https : http).request(target, {
      method: 'POST',
      agent: agents ? (secure ? agents.https : agents.http) : undefined,
      headers: { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'user-agent': USER_AGENT },
      ...(options.allowPrivate ? {} : { lookup: publicOnlyLookup }),
    })
    const timer = setTimeout(() => {
      finish({ ok: false, statusCode: null, error: `No complete answer within ${options.timeoutMs} ms` })
      request.destroy()
    }, options.timeoutMs)
    const onAbort = () => {
      finish({ ok: false, statusCode: null, error: 'Stopped' }, true)
      request.destroy()
    }
    if (options.signal?.aborted) onAbort()
    options.signal?.addEventListener('abort', onAbort, { once: true })

    request.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, statusCode: null, error: describe(err) }))
    request.on('response', (response) => {
      const status = response.statusCode ?? 0
      const ok = status >= 200 && status < 300
      const chunks: Buffer[] = []
      let kept = 0
      response.on('data', (chunk: Buffer) => {
        if (ok || kept >= MAX_ERROR_BODY) return
        chunks.push(chunk)
        kept += chunk.length
      })
      // The body is read to its end (within the deadline) so the keep-alive connection can be reused.
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8').slice(0, MAX_ERROR_BODY).trim()
        finish({ ok, statusCode: status, error: ok ? null : `HTTP ${status}${text ? `: ${text}` : ''}` })
      })
      response.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, statusCode: status, error: describe(err) }))
    })
    request.end(body)
  })
}

function describe(err: NodeJS.ErrnoException): string {
  return err.code && !err.message.includes(err.code) ? `${err.code}: ${err.message}` : err.message
}
