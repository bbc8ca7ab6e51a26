import { describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../src/config'

describe('config', () => {
  it('boots on embedded defaults with no environment', () => {
    const c = loadConfig({})
    expect(c.port).toBe(4000)
    expect(c.databaseUrl).toBeUndefined()
    expect(c.redisUrl).toBeUndefined()
    expect(c.s3).toBeUndefined()
    expect(c.resendApiKey).toBeUndefined()
    expect(c.publicUrl).toBe('http://localhost:4000')
    expect(c.uploads.maxImageBytes).toBe(5 * 1024 * 1024)
  })

  it('lists every bad variable in one error', () => {
    let error: unknown
    try {
      loadConfig({ PORT: 'abc', DATABASE_URL: 'mysql://x', EMAIL_FROM: 'not an address', JWT_SECRET: 'short', S3_BUCKET: 'Bad_Bucket', UPLOAD_ALLOWED_TYPES: 'image/png,nonsense' })
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(ConfigError)
    const problems = (error as ConfigError).problems.join('\n')
    for (const name of ['PORT', 'DATABASE_URL', 'EMAIL_FROM', 'JWT_SECRET', 'S3_BUCKET', 'UPLOAD_ALLOWED_TYPES']) expect(problems).toContain(name)
  })

  it('does not echo credentials of a bad URL', () => {
    expect(() => loadConfig({ REDIS_URL: 'http://user:hunter2@host' })).toThrow(/\*\*\*@host/)
    expect(() => loadConfig({ REDIS_URL: 'http://user:hunter2@host' })).not.toThrow(/hunter2/)
  })

  it('requires real secrets in production', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/JWT_SECRET or JWT_PUBLIC_KEY.*\n.*SIGNING_SECRET/s)
  })

  it('switches each part to its real service by its variable', () => {
    const c = loadConfig({
      DATABASE_URL: 'postgres://u@h/db',
      REDIS_URL: 'redis://h:6379',
      S3_BUCKET: 'my-bucket',
      S3_ENDPOINT: 'http://127.0.0.1:9000',
      S3_FORCE_PATH_STYLE: 'true',
      RESEND_API_KEY: 're_123',
      EMAIL_FROM: 'Acme <hello@acme.dev>',
    })
    expect(c.databaseUrl).toBe('postgres://u@h/db')
    expect(c.redisUrl).toBe('redis://h:6379')
    expect(c.s3).toMatchObject({ bucket: 'my-bucket', endpoint: 'http://127.0.0.1:9000', forcePathStyle: true, region: 'us-east-1' })
    expect(c.resendApiKey).toBe('re_123')
  })

  it('takes the campaign batch lease from CAMPAIGN_LEASE_MS, within bounds', () => {
    expect(loadConfig({}).campaigns.leaseMs).toBe(60_000)
    expect(loadConfig({ CAMPAIGN_LEASE_MS: '15000' }).campaigns.leaseMs).toBe(15_000)
    expect(() => loadConfig({ CAMPAIGN_LEASE_MS: '100' })).toThrow(/CAMPAIGN_LEASE_MS/)
  })
})
