/**
 * When a failed delivery is tried again. The default schedule is Svix's (5 s, 5 min, 30 min, 2 h,
 * 5 h, 10 h, 10 h: a little over a day in all), so a receiver that is down for a deploy or
 * an afternoon still gets everything. Each delay is spread by ±10%, so deliveries that failed
 * together (an endpoint outage) do not all come back in the same second.
 */
export interface RetryPolicy {
  /** Delay before retry n (ms) at index n - 1; past the end the last one repeats. */
  schedule: readonly number[]
  /** Attempts in all, the first included. */
  maxAttempts: number
}

const JITTER = 0.1

/** The delay before the next attempt after attempt `attempt` failed, or null when that was the last one. */
export function nextRetryDelay(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number | null {
  if (attempt >= policy.maxAttempts || policy.schedule.length === 0) return null
  const base = policy.schedule[Math.min(attempt, policy.schedule.length) - 1]!
  return Math.round(base * (1 - JITTER + 2 * JITTER * random()))
}
