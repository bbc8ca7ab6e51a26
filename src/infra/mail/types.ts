export interface MailTag {
  name: string
  value: string
}

export interface MailMessage {
  from: string
  to: string[]
  subject: string
  html: string
  text: string
  replyTo?: string
  headers?: Record<string, string>
  tags?: MailTag[]
}

export interface SendOptions {
  /** Passed to the provider so a retried call never sends twice (Resend keeps keys for 24 h). */
  idempotencyKey?: string
}

export interface SendResult {
  providerId: string
}

export interface BatchSendOptions extends SendOptions {
  /**
   * Send the valid messages and report the invalid ones per item (Resend's permissive batch
   * validation), instead of refusing the whole batch for one bad address.
   */
  permissive?: boolean
}

/** One item of a batch, in input order: accepted with its provider id, or refused with a reason. */
export type BatchItemResult = { providerId: string; error?: undefined } | { providerId?: undefined; error: string }

/** The provider's rate-limit window as its last response described it (IETF RateLimit headers). */
export interface RateLimitState {
  limit?: number
  remaining: number
  /** Epoch ms when the window resets. */
  resetAt: number
}

export interface MailTransport {
  readonly kind: 'resend' | 'outbox'
  /** The latest rate-limit window the provider reported, if it reports one. */
  rateLimit?(): RateLimitState | undefined
  send(message: MailMessage, options?: SendOptions): Promise<SendResult>
  /** Up to 100 messages; results are in input order. Without `permissive`, every item has a providerId. */
  sendBatch(messages: MailMessage[], options?: BatchSendOptions): Promise<BatchItemResult[]>
  check(): Promise<void>
  close(): Promise<void>
}

/**
 * The longest wait a provider's `retry-after` can impose. It is the provider's word, not ours: a
 * month-long value would park a password reset past its token's life and the provider's idempotency window.
 */
export const MAX_RETRY_AFTER_MS = 60 * 60_000

/**
 * A provider failure. `retryable` is true for 429, 5xx and network errors: the caller
 * tries again later (after `retryAfterMs` when the provider said so) and never counts it as a failure.
 */
export class MailProviderError extends Error {
  /** No answer within the deadline (as opposed to a connection that failed). */
  readonly timedOut: boolean
  /** The provider's `retry-after`, within 0..MAX_RETRY_AFTER_MS; undefined when it gave none. */
  readonly retryAfterMs?: number

  constructor(
    message: string,
    readonly retryable: boolean,
    readonly statusCode?: number,
    retryAfterMs?: number,
    options?: { cause?: unknown; timedOut?: boolean },
  ) {
    super(message, options)
    this.timedOut = options?.timedOut ?? false
    if (retryAfterMs !== undefined && !Number.isNaN(retryAfterMs)) this.retryAfterMs = Math.min(Math.max(0, retryAfterMs), MAX_RETRY_AFTER_MS)
  }
}

/** How a provider call ended, in a closed set fit for a metric label. */
export type MailResponseClass = '2xx' | '4xx' | '429' | '5xx' | 'timeout' | 'network'

/** The class of a failed send: the HTTP status when there was an answer, else a timeout or a network (or local) failure. */
export function mailResponseClass(err: unknown): MailResponseClass {
  if (!(err instanceof MailProviderError)) return 'network'
  const status = err.statusCode
  if (status === undefined) return err.timedOut ? 'timeout' : 'network'
  if (status === 429) return '429'
  if (status >= 500) return '5xx'
  if (status >= 400) return '4xx'
  // A 2xx or 3xx the SDK still turned into an error: the body was unusable, as good as a network failure.
  return 'network'
}
