export type BreakerState = 'closed' | 'open' | 'half-open'

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the breaker. */
  threshold: number
  /** How long it stays open before one probe call is let through. */
  cooldownMs: number
}

/**
 * Stops sending calls to a Redis that keeps failing, so callers fall back at once
 * instead of each paying a timeout. After the cooldown one probe goes through;
 * its success closes the breaker. `reset()` closes it early when the connection
 * reports it is ready again.
 */
export class CircuitBreaker {
  opened = 0
  private failures = 0
  private openUntil = 0
  private probing = false
  private current: BreakerState = 'closed'

  constructor(private readonly options: CircuitBreakerOptions) {}

  get state(): BreakerState {
    return this.current
  }

  /** Whether a call may go out now; in half-open state only one probe at a time. */
  allow(now = Date.now()): boolean {
    if (this.current === 'closed') return true
    if (this.current === 'open') {
      if (now < this.openUntil) return false
      this.current = 'half-open'
    }
    if (this.probing) return false
    this.probing = true
    return true
  }

  success(): void {
    this.failures = 0
    this.probing = false
    this.current = 'closed'
  }

  failure(now = Date.now()): void {
    this.probing = false
    this.failures++
    if (this.current === 'half-open' || this.failures >= this.options.threshold) {
      if (this.current !== 'open') this.opened++
      this.current = 'open'
      this.openUntil = now + this.options.cooldownMs
    }
  }

  reset(): void {
    this.success()
  }
}
