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

export interface MailTransport {
  readonly kind: 'resend' | 'outbox'
  send(message: MailMessage, options?: SendOptions): Promise<SendResult>
  /** Up to 100 messages; results are in input order. */
  sendBatch(messages: MailMessage[], options?: SendOptions): Promise<SendResult[]>
  check(): Promise<void>
  close(): Promise<void>
}

/**
 * A provider failure. `retryable` is true for 429, 5xx and network errors: the caller
 * tries again later (after `retryAfterMs` when the provider said so) and never counts it as a failure.
 */
export class MailProviderError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly statusCode?: number,
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}
