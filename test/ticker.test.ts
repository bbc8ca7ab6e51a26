import { describe, expect, it } from 'vitest'
import { ticker } from '../src/graphql/ticker'

describe('ticker', () => {
  it('yields at once, then every interval, and ends a pending wait at once when returned', async () => {
    let n = 0
    const ticks = ticker(60_000, () => ++n)
    expect(await ticks.next()).toEqual({ done: false, value: 1 })
    const waiting = ticks.next()
    // A minute to the next tick, yet return() ends the wait now (an async generator would sleep it out).
    await ticks.return!()
    expect(await waiting).toEqual({ done: true, value: undefined })
    expect(await ticks.next()).toEqual({ done: true, value: undefined })
    expect(n).toBe(1)
  })

  it('ticks on its interval', async () => {
    let n = 0
    const ticks = ticker(5, () => ++n)
    const seen = []
    for await (const value of ticks) {
      seen.push(value)
      if (seen.length === 3) break
    }
    expect(seen).toEqual([1, 2, 3])
  })
})
