import { parse } from 'graphql'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'

describe('metrics endpoint', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ redis: false })
  })
  afterAll(() => t.close())

  it('exposes HTTP and per-operation GraphQL metrics with bounded labels', async () => {
    await t.gql('query Me { viewer { id } }', {}, t.token('service'))
    await t.gql('query { viewer { id } }', {}, t.token('user'))
    const res = await t.app.inject({ method: 'GET', url: '/metrics' })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toMatch(/text\/plain/)
    expect(res.body).toMatch(/http_request_duration_seconds_count\{[^}]*route="\/graphql"[^}]*\} \d+/)
    expect(res.body).toMatch(/graphql_operation_duration_seconds_count\{[^}]*operation="Me"[^}]*type="query"[^}]*outcome="ok"[^}]*\} 1/)
    expect(res.body).toMatch(/operation="anonymous"/)
    expect(res.body).toContain('graphql_subscription_connections')
    expect(res.body).toContain('process_resident_memory_bytes')
  })

  it('gives an operation name a label of its own only when an admin or service token, or a second user, sends it', async () => {
    const labels = async () => {
      const res = await t.app.inject({ method: 'GET', url: '/metrics' })
      return new Set([...res.body.matchAll(/^graphql_operation_duration_seconds_count\{[^}]*operation="([^"]*)"/gm)].map((m) => m[1]))
    }
    // More made-up names than there are labels, from anonymous clients: none takes one.
    for (let i = 0; i < 210; i++) {
      const res = await t.app.inject({ method: 'POST', url: '/graphql', payload: { query: `query Junk${i} { __typename }` } })
      expect(res.statusCode).toBe(200)
    }
    // A token that does not verify is no better.
    await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: 'Bearer forged' }, payload: { query: 'query ForgedJunk { __typename }' } })
    let seen = await labels()
    expect([...seen].filter((l) => /Junk/.test(l!))).toEqual([])
    expect(seen.has('other')).toBe(true)

    // One user's made-up names take no label either, however many; a name a second user sends does.
    const mallory = t.token('user', 'mallory')
    for (let i = 0; i < 210; i++) await t.gql(`query UserJunk${i} { __typename }`, {}, mallory)
    await t.gql('query ListFiles { __typename }', {}, t.token('user', 'ann'))
    seen = await labels()
    expect([...seen].filter((l) => /UserJunk|ListFiles/.test(l!))).toEqual([])
    await t.gql('query ListFiles { __typename }', {}, t.token('user', 'bob'))
    expect((await labels()).has('ListFiles')).toBe(true)

    await t.gql('query AdminDashboard { viewer { id } }', {}, t.token('admin'))
    // Once labelled, the name is counted under it whoever sends it.
    await t.gql('query AdminDashboard { __typename }')
    const res = await t.app.inject({ method: 'GET', url: '/metrics' })
    expect(res.body).toMatch(/graphql_operation_duration_seconds_count\{[^}]*operation="AdminDashboard"[^}]*\} 2/)
    seen = await labels()
    expect(seen.has('AdminDashboard')).toBe(true)
  })
})

describe('metrics in production', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ redis: false, env: { NODE_ENV: 'production', METRICS_TOKEN: 'scrape-token-123' } })
  })
  afterAll(() => t.close())

  it('requires the METRICS_TOKEN bearer token', async () => {
    expect((await t.app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(401)
    expect((await t.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer wrong-token-123' } })).statusCode).toBe(401)
    expect((await t.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer scrape-token-123' } })).statusCode).toBe(200)
  })
})

describe.each([
  { name: 'in process', redis: false },
  { name: 'on Redis', redis: true },
])('mutation rate limit $name', ({ redis }) => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ redis, env: { RATE_LIMIT_MAX: '3' } })
  })
  afterAll(() => t.close())

  it('answers 429 RATE_LIMITED past the limit for mutations, per token, and never limits queries', async () => {
    const token = t.token('admin', 'limited')
    const mutation = 'mutation { invalidateCache(input: { keys: ["a"] }) { __typename } }'
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const res = await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: `Bearer ${token}` }, payload: { query: mutation } })
      statuses.push(res.statusCode)
      if (res.statusCode === 429) {
        // /graphql keeps the GraphQL response shape, with a real 429 and Retry-After.
        expect(res.json().errors[0].extensions.code).toBe('RATE_LIMITED')
        expect(Number(res.headers['retry-after'])).toBeGreaterThan(0)
      }
    }
    expect(statuses).toEqual([200, 200, 200, 429])
    const other = await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: `Bearer ${t.token('admin', 'someone-else')}` }, payload: { query: mutation } })
    expect(other.statusCode).toBe(200)
    for (let i = 0; i < 5; i++) {
      const q = await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: `Bearer ${token}` }, payload: { query: '{ viewer { id } }' } })
      expect(q.statusCode).toBe(200)
    }
  })

  it('gives a subject one budget however its header is spelled, and made-up tokens none of their own', async () => {
    const token = t.token('admin', 'respelled')
    const mutation = 'mutation { invalidateCache(input: { keys: ["a"] }) { __typename } }'
    const statuses: number[] = []
    for (const authorization of [`Bearer ${token}`, `bearer  ${token}`, `BEARER\t${token}`, `Bearer    ${token}`]) {
      statuses.push((await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization }, payload: { query: mutation } })).statusCode)
    }
    expect(statuses).toEqual([200, 200, 200, 429])
    // recordConversion is public: a new made-up token each time still counts against the address.
    const conversion = 'mutation { recordConversion(token: "1.0.1.x") { __typename } }'
    const forged: number[] = []
    for (let i = 0; i < 4; i++) {
      const res = await t.app.inject({ method: 'POST', url: '/graphql', remoteAddress: '198.51.100.7', headers: { authorization: `Bearer made-up-${i}` }, payload: { query: conversion } })
      forged.push(res.statusCode)
    }
    expect(forged).toEqual([200, 200, 200, 429])
  })

  it('refuses a mutation sent as a JSON syntax tree instead of GraphQL text, uncounted by the text checks', async () => {
    const token = t.token('admin', 'json-ast')
    // What mercurius would run when the text does not parse: a tree, its keyword escaped out of sight.
    const tree = JSON.stringify(parse('mutation { invalidateCache(input: { keys: ["a"] }) { __typename } }', { noLocation: true })).replace('"mutation"', '"\\u006dutation"')
    for (const query of [tree, '{}', '123', '[1]', '"text"']) {
      const res = await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: `Bearer ${token}` }, payload: { query } })
      expect(res.statusCode, query).toBe(400)
      expect(JSON.stringify(res.json().errors), query).not.toContain('INTERNAL_SERVER_ERROR')
    }
    const res = await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: `Bearer ${token}` }, payload: { query: tree } })
    expect(res.json()).toEqual({ data: null, errors: [expect.objectContaining({ message: 'The query must be a GraphQL document (text)', extensions: { code: 'GRAPHQL_PARSE_FAILED' } })] })
  })

  it('counts any document holding a mutation, whichever operation it names; a query that only mentions the word is not counted', async () => {
    const token = t.token('admin', 'two-operations')
    // mercurius caches the compiled document by its text alone: once "Drop" was compiled, a request
    // naming "Look" runs Drop too. So the document counts, whichever operation is named.
    const doc = 'query Look { viewer { id } } mutation Drop { invalidateCache(input: { keys: ["a"] }) { __typename } }'
    const statuses: number[] = []
    for (const operationName of ['Drop', 'Drop', 'Look', 'Look']) {
      const res = await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: `Bearer ${token}` }, payload: { query: doc, operationName } })
      statuses.push(res.statusCode)
    }
    expect(statuses).toEqual([200, 200, 200, 429])
    const res = await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: `Bearer ${token}` }, payload: { query: '# no mutation here\nquery { viewer { id } }' } })
    expect(res.statusCode).toBe(200)
  })

  it('refuses over GET a document holding a mutation, whichever operation it names, and answers GET queries', async () => {
    const doc = 'query Look { __typename } mutation Drop { invalidateCache(input: { keys: ["a"] }) { __typename } }'
    for (const operationName of ['Look', 'Drop']) {
      const res = await t.app.inject({ method: 'GET', url: `/graphql?${new URLSearchParams({ query: doc, operationName })}` })
      expect(res.statusCode).toBe(405)
      expect(res.headers.allow).toBe('POST')
      expect(res.json().errors[0].extensions.code).toBe('METHOD_NOT_ALLOWED')
    }
    const ok = await t.app.inject({ method: 'GET', url: `/graphql?${new URLSearchParams({ query: '{ __typename }' })}` })
    expect(ok.statusCode).toBe(200)
    expect(ok.json().data.__typename).toBe('Query')
  })

  it('does not count uploadChunk, whose parts are bounded by their session', async () => {
    const token = t.token('user', 'chunker')
    const chunk = 'mutation($file: Upload!) { uploadChunk(sessionId: "00000000-0000-0000-0000-000000000000", partNumber: 1, chunk: $file) { __typename } }'
    for (let i = 0; i < 5; i++) {
      const res = await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: `Bearer ${token}` }, payload: { query: chunk, variables: { file: null } } })
      expect(res.statusCode).not.toBe(429)
    }
    const mixed = `mutation($file: Upload!) { uploadChunk(sessionId: "x", partNumber: 1, chunk: $file) { __typename } invalidateCache(input: { keys: ["a"] }) { __typename } }`
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const res = await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: `Bearer ${token}` }, payload: { query: mixed, variables: { file: null } } })
      statuses.push(res.statusCode)
    }
    expect(statuses.at(-1)).toBe(429)
  })
})

describe('overload shedding', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ redis: false, env: { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '20' } })
  })
  afterAll(() => t.close())

  it('answers 503 OVERLOADED with Retry-After once the event loop lags, keeps health probes up, and recovers', async () => {
    // Blocks the loop well past the limit, as a CPU-bound burst would; the lag is sampled about once a second.
    const stall = () => {
      const until = Date.now() + 300
      while (Date.now() < until) {
        // busy
      }
    }
    let shed: Awaited<ReturnType<typeof t.app.inject>> | undefined
    let spared: Awaited<ReturnType<typeof t.app.inject>>[] = []
    for (let i = 0; i < 40 && !shed; i++) {
      stall()
      await new Promise((resolve) => setTimeout(resolve, 50))
      // Sent together, so they meet the same verdict (the lag is sampled about once a second).
      const [res, ...others] = await Promise.all(
        ['/no/such/route', '/readyz?probe=1', '/metrics', '/healthz?x'].map((url) => t.app.inject({ method: 'GET', url })),
      )
      if (res!.statusCode === 503) [shed, spared] = [res, others]
    }
    expect(shed?.statusCode).toBe(503)
    // Exempt by route, whatever the query string: the probes, and the metrics that show the overload.
    expect(spared.map((r) => r.statusCode)).toEqual([200, 200, 200])
    expect(shed!.headers['retry-after']).toBe('5')
    expect(shed!.json()).toMatchObject({ error: { code: 'OVERLOADED', requestId: shed!.headers['x-request-id'] } })
    expect((await t.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200)
    // Once the loop is idle again, requests go through.
    await expect
      .poll(async () => (await t.app.inject({ method: 'GET', url: '/no/such/route' })).statusCode, { timeout: 5_000, interval: 200 })
      .toBe(404)
  })
})
