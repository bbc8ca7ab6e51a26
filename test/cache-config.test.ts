import { describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../src/config'

describe('CACHE_* configuration', () => {
  it('defaults to a 75 ms soft timeout, ±10% jitter, the bus on and no boot warming', () => {
    expect(loadConfig({}).cache).toMatchObject({
      softTimeoutMs: 75,
      hardTimeoutMs: 1000,
      jitterPercent: 10,
      l1MaxItems: 100_000,
      maxEntryBytes: 1024 * 1024,
      bus: true,
      warmOnBoot: [],
    })
  })

  it('parses the warmers to run on boot', () => {
    expect(loadConfig({ CACHE_WARM_ON_BOOT: 'files, templates,' }).cache.warmOnBoot).toEqual(['files', 'templates'])
  })

  it('lists every bad cache variable in one error', () => {
    let error: unknown
    try {
      loadConfig({ CACHE_SOFT_TIMEOUT_MS: '0', CACHE_TTL_JITTER_PERCENT: '80', CACHE_BUS: 'maybe', CACHE_L1_MAX_BYTES: '2048', CACHE_MAX_ENTRY_BYTES: '4096' })
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(ConfigError)
    const problems = (error as ConfigError).problems.join('\n')
    for (const name of ['CACHE_SOFT_TIMEOUT_MS', 'CACHE_TTL_JITTER_PERCENT', 'CACHE_BUS', 'CACHE_MAX_ENTRY_BYTES must not exceed']) expect(problems).toContain(name)
  })

  it('refuses a hard timeout shorter than the soft one', () => {
    expect(() => loadConfig({ CACHE_SOFT_TIMEOUT_MS: '500', CACHE_HARD_TIMEOUT_MS: '100' })).toThrow(/CACHE_HARD_TIMEOUT_MS/)
  })
})
