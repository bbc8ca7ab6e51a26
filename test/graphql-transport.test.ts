/**
 * Requests the GraphQL endpoint must refuse with the right status and a typed error, never an
 * internal error, and keep serving afterwards.
 */
import { getIntrospectionQuery } from 'graphql'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { INTROSPECTION_COST } from '../src/graphql/complexity'
import { buildTestApp, type TestApp } from './helpers/app'

let t: TestApp
beforeAll(async () => {
  t = await buildTestApp({ redis: false })
})
afterAll(() => t.close())
// Every refusal leaves the endpoint serving.
afterEach(async () => {
  const res = await t.app.inject({ method: 'POST', url: '/graphql', payload: { query: '{ __typename }' } })
  expect(res.json()).toEqual({ data: { __typename: 'Query' } })
})

const post = (payload: string | Record<string, unknown>, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  t.app.inject({ method: 'POST', url: '/graphql', headers, payload: typeof payload === 'string' ? payload : JSON.stringify(payload) })

function expectRefused(res: Awaited<ReturnType<typeof post>>, status: number, code?: string): void {
  expect(res.statusCode, res.body).toBe(status)
  const body = res.json() as { errors: { message: string; extensions?: { code?: string } }[] }
  expect(body.errors.length).toBeGreaterThan(0)
  expect(JSON.stringify(body)).not.toContain('INTERNAL_SERVER_ERROR')
  if (code) expect(body.errors[0]!.extensions?.code).toBe(code)
}

describe('HTTP status of a refused request', () => {
  it('answers a malformed, empty or query-less JSON body with 400', async () => {
    expectRefused(await post('{"query": '), 400)
    expectRefused(await post(''), 400)
    expectRefused(await post({}), 400)
  })

  it('answers a body over the limit with 413 and an unknown content type with 415', async () => {
    expectRefused(await post({ query: `{ __typename }${' '.repeat(1024 * 1024)}` }), 413)
    expectRefused(await post('query={__typename}', { 'content-type': 'application/x-www-form-urlencoded' }), 415)
  })

  it('answers a document refused for several reasons with 400, as for one', async () => {
    expectRefused(await post({ query: '{ nope1 }' }), 400)
    const res = await post({ query: '{ nope1 nope2 }' })
    expectRefused(res, 400)
    expect(res.json().errors).toHaveLength(2)
  })

  it('answers variables that do not coerce with 400, the time the query is compiled included', async () => {
    const authorization = `Bearer ${t.token('user')}`
    // mercurius compiles a query (graphql-jit) on its second run, whose errors carried no status.
    for (let i = 0; i < 3; i++) {
      const res = await post({ query: 'query($id: ID!) { file(id: $id) { id } }', variables: { id: { a: 1 } } }, { 'content-type': 'application/json', authorization })
      expectRefused(res, 400)
      expect(res.json().errors[0].message).toMatch(/Variable "\$id" got invalid value/)
    }
  })

  it('answers GET variables that are not JSON with 400', async () => {
    expectRefused(await t.app.inject({ method: 'GET', url: `/graphql?${new URLSearchParams({ query: 'query($n: Int) { __typename }', variables: 'not json' })}` }), 400)
  })
})

describe('which operation runs', () => {
  it('answers a GET naming no operation of its document with 400', async () => {
    const named = await t.app.inject({ method: 'GET', url: `/graphql?${new URLSearchParams({ query: '{ __typename }', operationName: 'Zed' })}` })
    expectRefused(named, 400, 'BAD_REQUEST')
    expect(named.json().errors[0].message).toBe('The document has no operation named "Zed"')
    const unnamed = await t.app.inject({ method: 'GET', url: `/graphql?${new URLSearchParams({ query: 'query A { __typename } query B { __typename }' })}` })
    expectRefused(unnamed, 400, 'BAD_REQUEST')
    const ok = await t.app.inject({ method: 'GET', url: `/graphql?${new URLSearchParams({ query: 'query A { __typename } query B { __typename }', operationName: 'B' })}` })
    expect(ok.json()).toEqual({ data: { __typename: 'Query' } })
  })

  it('refuses a subscription over HTTP, which would skip its own checks', async () => {
    for (const token of [undefined, t.token('admin')]) {
      const res = await post({ query: 'subscription { cacheStats { hits } }' }, { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) })
      expectRefused(res, 400, 'SUBSCRIPTION_REQUIRES_WEBSOCKET')
      expect(res.json().data).toBeNull()
    }
  })
})

describe('documents built to be slow or to pass for something else', () => {
  it('checks a document whose fragments spread twice at each of 26 levels at once (each fragment is walked once)', async () => {
    const levels = 26
    const fragments = Array.from({ length: levels }, (_, i) => `fragment F${i} on Query { __typename ...F${i + 1} ...F${i + 1} }`).join(' ')
    const res = await post({ query: `query { ...F0 } ${fragments} fragment F${levels} on Query { __typename }` })
    expectRefused(res, 400, 'QUERY_TOO_COMPLEX')
  })

  it('refuses a JSON syntax tree dressed with a location', async () => {
    const tree = { kind: 'Document', loc: [], definitions: [{ kind: 'OperationDefinition', operation: 'query', selectionSet: { kind: 'SelectionSet', selections: [{ kind: 'Field', name: { kind: 'Name', value: '__typename' } }] } }] }
    expectRefused(await post({ query: JSON.stringify(tree) }), 400, 'GRAPHQL_PARSE_FAILED')
    expectRefused(await post({ query: JSON.stringify({ ...tree, loc: { start: 0, end: 1 } }) }), 400, 'GRAPHQL_PARSE_FAILED')
  })
})

describe('introspection in the query cost', () => {
  it("answers a tool's introspection query", async () => {
    const res = await post({ query: getIntrospectionQuery() })
    expect(res.statusCode).toBe(200)
    expect(res.json().data.__schema.queryType.name).toBe('Query')
  })

  it('refuses many aliased copies of the schema, and thousands of __typename', async () => {
    const copies = Math.ceil(1000 / INTROSPECTION_COST) + 1
    const schemas = `{ ${Array.from({ length: copies }, (_, i) => `s${i}: __schema { types { name } }`).join(' ')} }`
    expectRefused(await post({ query: schemas }), 400, 'QUERY_TOO_COMPLEX')
    const typenames = `{ ${Array.from({ length: 2000 }, (_, i) => `t${i}: __typename`).join(' ')} }`
    expectRefused(await post({ query: typenames }), 400, 'QUERY_TOO_COMPLEX')
  })
})

describe('GRAPHQL_INTROSPECTION=false', () => {
  let closed: TestApp
  beforeAll(async () => {
    closed = await buildTestApp({ redis: false, env: { GRAPHQL_INTROSPECTION: 'false' } })
  })
  afterAll(() => closed.close())

  it('refuses __schema and __type, and still answers __typename', async () => {
    for (const query of [getIntrospectionQuery(), '{ __type(name: "Query") { name } }']) {
      const res = await closed.app.inject({ method: 'POST', url: '/graphql', payload: { query } })
      expect(res.statusCode).toBe(400)
      expect(res.json().errors[0].message).toMatch(/introspection has been disabled/i)
    }
    const res = await closed.app.inject({ method: 'POST', url: '/graphql', payload: { query: '{ __typename }' } })
    expect(res.json()).toEqual({ data: { __typename: 'Query' } })
  })
})

