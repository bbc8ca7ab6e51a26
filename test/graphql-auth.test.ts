import { generateKeyPairSync } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, TEST_JWT_SECRET, type TestApp } from './helpers/app'

describe('GraphQL authentication and roles', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp()
  })
  afterAll(() => t.close())

  it('answers viewer with the token claims', async () => {
    const res = await t.gql('{ viewer { id email roles } }', {}, t.token('user', 'alice'))
    expect(res.data).toEqual({ viewer: { id: 'alice', email: 'alice@example.com', roles: ['USER'] } })
  })

  it('runs the operation each request names in a document with several, even once mercurius has compiled one', async () => {
    const doc = 'query A { a: __typename } query B { b: __typename }'
    const run = async (operationName: string) =>
      (await t.app.inject({ method: 'POST', url: '/graphql', payload: { query: doc, operationName } })).json() as { data: Record<string, string> }
    // Enough runs of A for mercurius to compile it (jit: 1), then B, then A again.
    for (let i = 0; i < 3; i++) expect((await run('A')).data).toEqual({ a: 'Query' })
    expect((await run('B')).data).toEqual({ b: 'Query' })
    expect((await run('A')).data).toEqual({ a: 'Query' })
  })

  it('answers viewer null without a token', async () => {
    const res = await t.gql('{ viewer { id } }')
    expect(res.data).toEqual({ viewer: null })
  })

  it('gives UNAUTHENTICATED for a protected field without a token', async () => {
    const res = await t.gql('{ files { edges { node { id } } } }')
    expect(res.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
    expect(res.statusCode).toBeLessThan(500)
  })

  it('gives UNAUTHENTICATED with a clear message for an expired token', async () => {
    const expired = createSigner({ key: TEST_JWT_SECRET })({ sub: 'bob', roles: ['admin'], exp: Math.floor(Date.now() / 1000) - 60 })
    const res = await t.gql('{ cacheStats { hits } }', {}, expired)
    expect(res.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
    expect(res.errors?.[0]?.message).toMatch(/expired/)
  })

  it('gives UNAUTHENTICATED for a well-signed token that never expires (no exp)', async () => {
    const forever = createSigner({ key: TEST_JWT_SECRET, noTimestamp: true })({ sub: 'ops', roles: ['admin'] })
    const res = await t.gql('{ viewer { id } }', {}, forever)
    expect(res.errors?.[0]).toMatchObject({ extensions: { code: 'UNAUTHENTICATED' }, message: expect.stringMatching(/no expiry/) })
  })

  it('gives UNAUTHENTICATED for a token signed with another secret', async () => {
    const forged = createSigner({ key: 'another-secret-another-secret-another-1' })({ sub: 'eve', roles: ['admin'] })
    const res = await t.gql('{ cacheStats { hits } }', {}, forged)
    expect(res.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
  })

  it('gives UNAUTHENTICATED for a token with an unknown role', async () => {
    const odd = createSigner({ key: TEST_JWT_SECRET })({ sub: 'eve', roles: ['root'] })
    const res = await t.gql('{ viewer { id } }', {}, odd)
    expect(res.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
  })

  it('gives UNAUTHENTICATED for a malformed Authorization header', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/graphql', headers: { authorization: 'Basic abc' }, payload: { query: '{ viewer { id } }' } })
    expect(res.json().errors[0].extensions.code).toBe('UNAUTHENTICATED')
  })

  it('gives FORBIDDEN for the wrong role', async () => {
    const res = await t.gql('{ cacheStats { hits } }', {}, t.token('user'))
    expect(res.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
    const mail = await t.gql('mutation { verifyEmail(token: "x") { __typename } }', {}, t.token('user'))
    expect(mail.errors?.[0]?.extensions?.code).toBe('FORBIDDEN')
  })

  it('refuses a query over the depth limit', async () => {
    const deep = '{ files { edges { node { currentVersion { variants { name } } versions { id } } } pageInfo { endCursor } } }'
    const ok = await t.gql(deep, {}, t.token('user'))
    expect(ok.errors).toBeUndefined()
    // Introspection has a limit of its own (tools nest ofType to depth 15), past which it is refused too.
    const tooDeep = `{ __schema { types { fields { type ${'{ ofType '.repeat(20)}{ name }${' }'.repeat(20)} } } } }`
    const res = await t.gql(tooDeep, {}, t.token('user'))
    expect(res.errors?.[0]).toMatchObject({ message: 'The query is too deep: depth 25 exceeds the limit of 20', extensions: { code: 'QUERY_TOO_DEEP' } })
  })

  it('refuses a query whose cost exceeds the limit', async () => {
    const res = await t.gql('{ files(first: 100) { edges { node { versions { id number size sha256 mimeType createdAt url } } } } }', {}, t.token('user'))
    expect(res.errors?.[0]?.extensions?.code).toBe('QUERY_TOO_COMPLEX')
  })

  it('masks unexpected errors as INTERNAL_SERVER_ERROR with a request id', async () => {
    const original = t.app.services.cache.stats.bind(t.app.services.cache)
    t.app.services.cache.stats = () => {
      throw new Error('connection string postgres://secret@db leaked')
    }
    try {
      const res = await t.gql('{ cacheStats { hits } }', {}, t.token('admin'))
      const err = res.errors?.[0]
      expect(err?.message).toBe('Internal server error')
      expect(err?.extensions?.code).toBe('INTERNAL_SERVER_ERROR')
      expect(err?.extensions?.requestId).toEqual(expect.any(String))
      expect(JSON.stringify(res)).not.toContain('secret')
    } finally {
      t.app.services.cache.stats = original
    }
  })

  it('serves the GraphiQL page', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/graphiql' })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toMatch(/html/)
  })
})

describe('RS256 tokens from an identity provider', () => {
  let t: TestApp
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
  beforeAll(async () => {
    t = await buildTestApp({ redis: false, env: { JWT_SECRET: '', JWT_PUBLIC_KEY: publicKey, JWT_ISSUER: 'https://id.example.com' } })
  })
  afterAll(() => t.close())

  it('accepts a token signed with the private key and the right issuer', async () => {
    const token = createSigner({ key: privateKey, algorithm: 'RS256', iss: 'https://id.example.com', expiresIn: 60_000 })({ sub: 'idp-user', roles: ['user'] })
    expect((await t.gql('{ viewer { id } }', {}, token)).data).toEqual({ viewer: { id: 'idp-user' } })
  })

  it('refuses a wrong issuer and an HS256 token signed with the public key (algorithm confusion)', async () => {
    const wrongIssuer = createSigner({ key: privateKey, algorithm: 'RS256', iss: 'https://evil.example.com' })({ sub: 'x', roles: ['admin'] })
    expect((await t.gql('{ viewer { id } }', {}, wrongIssuer)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
    const confused = createSigner({ key: publicKey, algorithm: 'HS256', iss: 'https://id.example.com' })({ sub: 'x', roles: ['admin'] })
    expect((await t.gql('{ viewer { id } }', {}, confused)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
  })
})
