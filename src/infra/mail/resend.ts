import { Resend } from 'resend'
import type { CreateEmailOptions, ErrorResponse } from 'resend'
import { MailProviderError } from './types'
import type { BatchItemResult, BatchSendOptions, MailMessage, MailTransport, RateLimitState, SendOptions, SendResult } from './types'

export interface ResendTransportOptions {
  apiKey: string
  /** Upper bound for one API call, including reading the response body. */
  timeoutMs?: number
}

const DEFAULT_TIMEOUT_MS = 15_000
/** Resend's limit for POST /emails/batch. */
const MAX_BATCH = 100

/**
 * Resend through its SDK. The SDK never throws on HTTP or network failures: it returns
 * `{ data, error, headers }`, and we turn `error` into a MailProviderError.
 *
 * Base URL: resend 6.x reads `process.env.RESEND_BASE_URL` inside the `Resend` constructor
 * (`options.baseUrl ?? (process.env.RESEND_BASE_URL || 'https://api.resend.com')`), not when the
 * module loads. So the variable counts at the moment createResendTransport runs, and changing it
 * afterwards does not move an existing transport. RESEND_USER_AGENT and RESEND_DEBUG are read there
 * too. We leave this to the SDK on purpose: only config.ts reads the environment in our code.
 */
export function createResendTransport(opts: ResendTransportOptions): MailTransport {
  // Without a key the SDK would fall back to process.env.RESEND_API_KEY behind our back.
  if (!opts.apiKey) throw new Error('createResendTransport needs an API key')
  const resend = new Resend(opts.apiKey)
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
  let window: RateLimitState | undefined
  const observe = (headers: Record<string, string> | null) => {
    window = parseRateLimit(headers) ?? window
  }

  return {
    kind: 'resend',
    rateLimit: () => window,

    async send(message: MailMessage, options: SendOptions = {}): Promise<SendResult> {
      const result = await withDeadline(timeoutMs, (signal) =>
        resend.emails.send(toPayload(message), { idempotencyKey: options.idempotencyKey, signal }),
      )
      observe(result.headers)
      if (result.error) throw toProviderError(result.error, result.headers)
      return { providerId: result.data.id }
    },

    async sendBatch(messages: MailMessage[], options: BatchSendOptions = {}): Promise<BatchItemResult[]> {
      if (messages.length === 0) return []
      if (messages.length > MAX_BATCH) {
        throw new MailProviderError(`A Resend batch holds at most ${MAX_BATCH} messages, got ${messages.length}`, false)
      }
      const result = await withDeadline(timeoutMs, (signal) =>
        resend.batch.send(messages.map(toPayload), {
          idempotencyKey: options.idempotencyKey,
          signal,
          ...(options.permissive ? { batchValidation: 'permissive' as const } : {}),
        }),
      )
      observe(result.headers)
      if (result.error) throw toProviderError(result.error, result.headers)
      const ids = result.data.data.map((d) => d.id)
      // Permissive answers list the accepted ids in input order with the refused indexes left out.
      const refused = new Map(('errors' in result.data ? (result.data.errors as { index: number; message: string }[]) : []).map((e) => [e.index, e.message]))
      if (ids.length + refused.size !== messages.length) {
        throw new MailProviderError(`Resend answered ${ids.length} ids and ${refused.size} errors for a batch of ${messages.length}`, false)
      }
      let next = 0
      return messages.map((_m, index) => (refused.has(index) ? { error: refused.get(index)! } : { providerId: ids[next++]! }))
    },

    // Every Resend endpoint counts against the rate limit or quota, so readiness only checks configuration.
    check: async () => {},
    close: async () => {},
  }
}

function toPayload(message: MailMessage): CreateEmailOptions {
  return {
    from: message.from,
    to: message.to,
    subject: message.subject,
    text: message.text,
    html: message.html,
    replyTo: message.replyTo,
    headers: message.headers,
    tags: message.tags,
  }
}

/**
 * Aborts the request after timeoutMs and also races it, so a stalled body read or an SDK that
 * swallows the abort still cannot hold a worker's lease forever.
 */
async function withDeadline<T>(timeoutMs: number, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController()
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new MailProviderError(`Resend did not answer within ${timeoutMs} ms`, true, undefined, undefined, { timedOut: true })
      controller.abort(error)
      reject(error)
    }, timeoutMs)
  })
  try {
    return await Promise.race([run(controller.signal), deadline])
  } catch (err) {
    if (err instanceof MailProviderError) throw err
    throw new MailProviderError(`Resend call failed: ${(err as Error).message}`, true, undefined, undefined, { cause: err })
  } finally {
    clearTimeout(timer)
  }
}

function toProviderError(error: ErrorResponse, headers: Record<string, string> | null): MailProviderError {
  const status = typeof error.statusCode === 'number' ? error.statusCode : undefined
  const retryable =
    status === undefined
      ? // The SDK reports network failures and unreadable responses as application_error without a status.
        error.name === 'application_error'
      : status === 429 ||
        status >= 500 ||
        // The first request with this key is still running; a retry later gets its result.
        error.name === 'concurrent_idempotent_requests'
  const retryAfterMs = retryable ? parseRetryAfter(headers?.['retry-after']) : undefined
  const where = status === undefined ? error.name : `${error.name}, HTTP ${status}`
  return new MailProviderError(`Resend refused the request (${where}): ${error.message}`, retryable, status, retryAfterMs)
}

/**
 * Resend sends `ratelimit-limit`, `ratelimit-remaining` and `ratelimit-reset` (seconds until the
 * window resets) on every response: callers can slow down before a 429 rather than after.
 */
function parseRateLimit(headers: Record<string, string> | null): RateLimitState | undefined {
  const remaining = Number(headers?.['ratelimit-remaining'])
  const reset = Number(headers?.['ratelimit-reset'])
  if (!headers?.['ratelimit-remaining'] || !Number.isFinite(remaining) || !Number.isFinite(reset)) return undefined
  const limit = Number(headers['ratelimit-limit'])
  return { limit: Number.isFinite(limit) ? limit : undefined, remaining, resetAt: Date.now() + reset * 1000 }
}

/** retry-after is either delay-seconds or an HTTP date (RFC 9110). */
function parseRetryAfter(value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === '') return undefined
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now())
}
