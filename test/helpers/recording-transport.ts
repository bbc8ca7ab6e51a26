/**
 * A MailTransport that records every call and behaves like Resend with respect to idempotency:
 * a second send with a key it has already accepted returns the first result and delivers nothing.
 * `failNext` makes the next calls throw, to stand in for 429s, 5xx and rejections.
 */
import { MailProviderError, type MailMessage, type MailTransport, type SendOptions, type SendResult } from '../../src/infra/mail/types'

export interface RecordedCall {
  message: MailMessage
  idempotencyKey?: string
  outcome: 'delivered' | 'deduplicated' | 'failed'
  error?: Error
}

export class RecordingTransport implements MailTransport {
  readonly kind = 'outbox' as const
  readonly calls: RecordedCall[] = []
  private readonly failures: Error[] = []
  private readonly accepted = new Map<string, SendResult>()
  private nextId = 1

  constructor(private readonly latencyMs = 0) {}

  /** The messages that actually reached a mailbox. */
  get delivered(): RecordedCall[] {
    return this.calls.filter((c) => c.outcome === 'delivered')
  }

  failNext(...errors: Error[]): this {
    this.failures.push(...errors)
    return this
  }

  static error(statusCode: number, retryAfterMs?: number): MailProviderError {
    const retryable = statusCode === 429 || statusCode >= 500
    return new MailProviderError(`Provider answered ${statusCode}`, retryable, statusCode, retryAfterMs)
  }

  async send(message: MailMessage, options?: SendOptions): Promise<SendResult> {
    if (this.latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, this.latencyMs))
    const key = options?.idempotencyKey
    const failure = this.failures.shift()
    if (failure) {
      this.calls.push({ message, idempotencyKey: key, outcome: 'failed', error: failure })
      throw failure
    }
    const previous = key ? this.accepted.get(key) : undefined
    if (previous) {
      this.calls.push({ message, idempotencyKey: key, outcome: 'deduplicated' })
      return previous
    }
    const result = { providerId: `rec_${this.nextId++}` }
    if (key) this.accepted.set(key, result)
    this.calls.push({ message, idempotencyKey: key, outcome: 'delivered' })
    return result
  }

  async sendBatch(messages: MailMessage[], options?: SendOptions): Promise<SendResult[]> {
    const results: SendResult[] = []
    for (const [i, m] of messages.entries()) {
      results.push(await this.send(m, options?.idempotencyKey ? { idempotencyKey: `${options.idempotencyKey}/${i}` } : undefined))
    }
    return results
  }

  async check(): Promise<void> {}
  async close(): Promise<void> {}
}
