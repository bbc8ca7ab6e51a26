import type { RedisClient } from './redis-level'

/** Keys, patterns and tags are relative to the cache's key prefix; a message never carries a value. */
export interface BusMessage {
  keys?: string[]
  pattern?: string
  tags?: string[]
  clear?: boolean
}

interface WireMessage extends BusMessage {
  /** Sender id: an instance ignores its own messages, its L1 is already right. */
  s: string
}

export interface InvalidationBusOptions {
  /** Duplicated for the subscriber connection, which cannot send ordinary commands. */
  redis: RedisClient
  channel: string
  senderId: string
  /** Publishing goes through the caller, so it obeys the same timeouts and breaker as other Redis calls. */
  publish: (channel: string, message: string) => Promise<void>
  onMessage: (message: BusMessage) => void
  /** Runs once the subscription is live again: anything published while it was down is lost. */
  onResubscribed: () => void
}

// Bounded so one message stays small however many keys a setMany or del touches.
const MAX_KEYS_PER_MESSAGE = 1000

/** Cross-instance L1 invalidation over Redis pub/sub, one channel per key prefix. */
export class InvalidationBus {
  received = 0
  published = 0
  publishErrors = 0
  resubscribes = 0
  private readonly subscriber: RedisClient
  private closed = false

  constructor(private readonly options: InvalidationBusOptions) {
    this.subscriber = options.redis.duplicate()
    this.subscriber.on('error', () => {})
    this.subscriber.on('ready', () => void this.subscribe())
    this.subscriber.on('message', (channel: string, text: string) => {
      if (channel === options.channel) this.receive(text)
    })
  }

  get connected(): boolean {
    return this.subscriber.status === 'ready'
  }

  async publish(message: BusMessage): Promise<void> {
    const parts: BusMessage[] = []
    if (message.keys && message.keys.length > MAX_KEYS_PER_MESSAGE) {
      for (let i = 0; i < message.keys.length; i += MAX_KEYS_PER_MESSAGE) parts.push({ keys: message.keys.slice(i, i + MAX_KEYS_PER_MESSAGE) })
    } else {
      parts.push(message)
    }
    for (const part of parts) {
      try {
        await this.options.publish(this.options.channel, JSON.stringify({ ...part, s: this.options.senderId }))
        this.published++
      } catch {
        // Subscribers that miss it keep a stale copy at most until their L1 TTL cap.
        this.publishErrors++
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true
    this.subscriber.removeAllListeners('ready')
    this.subscriber.disconnect()
  }

  private async subscribe(): Promise<void> {
    if (this.closed) return
    try {
      await this.subscriber.subscribe(this.options.channel)
    } catch {
      // The next 'ready' retries; until then nothing arrives and nothing is flushed.
      return
    }
    this.resubscribes++
    this.options.onResubscribed()
  }

  private receive(text: string): void {
    let message: WireMessage
    try {
      message = JSON.parse(text) as WireMessage
    } catch {
      return
    }
    if (typeof message !== 'object' || message === null || message.s === this.options.senderId) return
    this.received++
    this.options.onMessage(message)
  }
}
