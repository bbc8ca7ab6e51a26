import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { ABANDON_AFTER_MS, READINESS_CACHE_MS } from '../src/http/health'
import { buildTestApp, type TestApp } from './helpers/app'

/** Counts the calls each /readyz probe makes, calling through to the real check. */
function countProbes(t: TestApp) {
  return {
    database: vi.spyOn(t.app.db, 'ping'),
    redis: vi.spyOn(t.app.redis!, 'ping'),
    storage: vi.spyOn(t.app.storage, 'check'),
    mail: vi.spyOn(t.app.mail, 'check'),
  }
}

describe('GET /readyz: what a caller can make it cost', () => {
  let t: TestApp
  const readyz = () => t.app.inject({ method: 'GET', url: '/readyz' })
  /** Moves the clock the readiness cache reads past its lifetime, so the next call probes again. */
  const expireCache = () => vi.advanceTimersByTime(READINESS_CACHE_MS)

  beforeAll(async () => {
    t = await buildTestApp()
    // Only performance.now() is faked, on one clock for every test: timers, and so the probes' own timeout, run for real.
    vi.useFakeTimers({ toFake: ['performance'] })
  })
  afterAll(async () => {
    vi.useRealTimers()
    await t.close()
  })
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it('answers a burst of concurrent calls with one run of the probes', async () => {
    expireCache()
    const probes = countProbes(t)
    const answers = await Promise.all(Array.from({ length: 300 }, readyz))
    expect(new Set(answers.map((r) => r.statusCode))).toEqual(new Set([200]))
    expect(answers[299]!.json()).toMatchObject({ status: 'ready', checks: { database: { status: 'up' }, storage: { status: 'up' } } })
    for (const spy of Object.values(probes)) expect(spy).toHaveBeenCalledTimes(1)
  })

  it('reuses a verdict, a failure as much as a success, for READINESS_CACHE_MS and no longer', async () => {
    expireCache()
    const probes = countProbes(t)
    probes.database.mockRejectedValue(new Error('connection refused'))
    const down = await readyz()
    expect(down.statusCode).toBe(503)
    expect(down.json()).toMatchObject({ status: 'unavailable', checks: { database: { status: 'down' } } })

    // The database is back: the failure is still the answer within its lifetime, without probing again...
    probes.database.mockRestore()
    const database = vi.spyOn(t.app.db, 'ping')
    vi.advanceTimersByTime(READINESS_CACHE_MS - 1)
    expect((await readyz()).statusCode).toBe(503)
    expect(database).not.toHaveBeenCalled()
    // ...and not past it.
    vi.advanceTimersByTime(1)
    expect((await readyz()).statusCode).toBe(200)
    expect(database).toHaveBeenCalledTimes(1)

    // The same holds the other way: an outage shows once the last good verdict expires.
    database.mockRejectedValue(new Error('connection refused'))
    expect((await readyz()).statusCode).toBe(200)
    expireCache()
    expect((await readyz()).statusCode).toBe(503)
    expect(database).toHaveBeenCalledTimes(2)
  })

  it('does not send a dependency another probe while its previous one is still waiting', async () => {
    expireCache()
    const probes = countProbes(t)
    let answerPing!: () => void
    // A ping stuck behind a busy pool: it outlives the probe's timeout.
    probes.database.mockImplementation(() => new Promise<void>((resolve) => (answerPing = resolve)))
    const timedOut = await readyz()
    expect(timedOut.statusCode).toBe(503)
    expect(timedOut.json()).toMatchObject({ checks: { database: { status: 'down' }, storage: { status: 'up' } } })

    expireCache()
    const next = readyz()
    // The probes of the second call have started (they start together) while the first ping still waits.
    await expect.poll(() => probes.storage.mock.calls.length).toBe(2)
    answerPing()
    expect((await next).statusCode).toBe(200)
    expect(probes.database).toHaveBeenCalledTimes(1)
  })

  it('gives up waiting on a check that never answers after ABANDON_AFTER_MS, so a dependency that is back shows up', async () => {
    expireCache()
    const probes = countProbes(t)
    // A ping on a half-open socket: it never settles. The next ones go through to the real database.
    probes.database.mockImplementationOnce(() => new Promise<void>(() => {}))
    expect((await readyz()).statusCode).toBe(503)
    expireCache()
    expect((await readyz()).statusCode).toBe(503)
    expect(probes.database).toHaveBeenCalledTimes(1)
    vi.advanceTimersByTime(ABANDON_AFTER_MS)
    expect((await readyz()).statusCode).toBe(200)
    expect(probes.database).toHaveBeenCalledTimes(2)
  })
})

describe('GET /readyz: what it tells whom', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ redis: false, env: { NODE_ENV: 'production', METRICS_TOKEN: 'scrape-token-123' } })
  })
  afterAll(() => t.close())

  it('gives anyone the status, and the checks with their kinds only to a METRICS_TOKEN bearer', async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong-token-123' }]) {
      const res = await t.app.inject({ method: 'GET', url: '/readyz', headers })
      expect(res.statusCode).toBe(200)
      expect(res.json()).toEqual({ status: 'ready' })
    }
    const res = await t.app.inject({ method: 'GET', url: '/readyz', headers: { authorization: 'Bearer scrape-token-123' } })
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({
      status: 'ready',
      checks: { database: { status: 'up', driver: 'postgres' }, redis: { status: 'disabled' }, storage: { status: 'up', kind: 'disk' }, mail: { status: 'up', kind: expect.any(String) } },
    })
  })
})
