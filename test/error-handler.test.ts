import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { registerErrorHandler } from '../src/http/error-handler'
import { isDatabaseUnavailable } from '../src/lib/database-unavailable'
import { NotFoundError, ServiceUnavailableError, ValidationError } from '../src/lib/errors'

interface LogLine {
  level: number
  msg: string
  reqId?: string
  err?: { message: string; stack: string }
  [key: string]: unknown
}

const INFO = 30
const ERROR = 50

describe('registerErrorHandler', () => {
  let app: FastifyInstance
  let logs: LogLine[] = []

  beforeAll(async () => {
    app = Fastify({
      logger: { level: 'info', stream: { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) } },
    })
    registerErrorHandler(app)
    app.get('/files/:id', async (request) => {
      throw new NotFoundError('File', (request.params as { id: string }).id)
    })
    app.post('/users', async () => {
      throw ValidationError.field('email', 'email is invalid')
    })
    app.get('/boom', async () => {
      throw new Error('secret db password leaked')
    })
    app.get('/unavailable', async () => {
      throw new ServiceUnavailableError('Storage is unavailable, try again shortly', { cause: new Error('ECONNREFUSED 10.0.0.7') })
    })
    app.get('/db-down', async () => {
      // What drizzle throws when node-postgres cannot reach the server: the driver error as `cause`.
      throw new Error('Failed query: select * from files where id = $1', { cause: Object.assign(new Error('connect ECONNREFUSED 10.0.0.9:5432'), { code: 'ECONNREFUSED' }) })
    })
    app.get('/teapot', async () => {
      throw Object.assign(new Error('upstream said: token abc123 rejected'), { statusCode: 418 })
    })
    app.get('/throws-string', async () => {
      throw 'not an error object'
    })
    app.post('/echo', async (request) => request.body)
    app.post('/small', { bodyLimit: 16 }, async (request) => request.body)
    app.post(
      '/schema',
      { schema: { body: { type: 'object', required: ['name'], properties: { name: { type: 'string' } } } } },
      async (request) => request.body,
    )
    await app.ready()
  })

  afterAll(() => app.close())

  beforeEach(() => {
    logs = []
  })

  it('answers an AppError with its status, code and message', async () => {
    const res = await app.inject({ method: 'GET', url: '/files/42' })
    expect(res.statusCode).toBe(404)
    expect(res.headers['content-type']).toMatch(/^application\/json/)
    expect(res.json()).toEqual({ error: { message: 'File not found', code: 'NOT_FOUND', requestId: expect.any(String) } })
  })

  it('answers a ValidationError with 400 VALIDATION_FAILED', async () => {
    const res = await app.inject({ method: 'POST', url: '/users', payload: {} })
    expect(res.statusCode).toBe(400)
    expect(res.json().error).toMatchObject({ message: 'email is invalid', code: 'VALIDATION_FAILED' })
  })

  it('hides the message and stack of an unexpected error but returns the request id', async () => {
    const res = await app.inject({ method: 'GET', url: '/boom' })
    expect(res.statusCode).toBe(500)
    const body = res.json()
    expect(body).toEqual({
      error: { message: 'Internal server error', code: 'INTERNAL_SERVER_ERROR', requestId: expect.any(String) },
    })
    expect(res.body).not.toContain('secret')
    expect(res.body).not.toMatch(/at .*\.ts:\d+/)
    expect(res.body).not.toContain('stack')

    const logged = logs.find((l) => l.reqId === body.error.requestId && l.level === ERROR)
    expect(logged?.err?.message).toBe('secret db password leaked')
    expect(logged?.err?.stack).toContain('error-handler.test.ts')
  })

  it('gives each failed request its own id', async () => {
    const [a, b] = await Promise.all([app.inject('/boom'), app.inject('/boom')])
    expect(a.json().error.requestId).not.toBe(b.json().error.requestId)
  })

  it('keeps the user-facing message of a 5xx AppError but logs its cause', async () => {
    const res = await app.inject({ method: 'GET', url: '/unavailable' })
    expect(res.statusCode).toBe(503)
    expect(res.json().error).toMatchObject({
      message: 'Storage is unavailable, try again shortly',
      code: 'SERVICE_UNAVAILABLE',
    })
    expect(res.body).not.toContain('ECONNREFUSED')
    expect(logs.some((l) => l.level === ERROR && JSON.stringify(l).includes('ECONNREFUSED'))).toBe(true)
  })

  it('answers a bad JSON body with 400 and Fastify’s code', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/echo',
      headers: { 'content-type': 'application/json' },
      payload: '{"name": ',
    })
    expect(res.statusCode).toBe(400)
    expect(res.json().error).toMatchObject({
      code: 'FST_ERR_CTP_INVALID_JSON_BODY',
      message: expect.stringContaining('not valid JSON'),
      requestId: expect.any(String),
    })
  })

  it('answers an oversized body with 413', async () => {
    const res = await app.inject({ method: 'POST', url: '/small', payload: { text: 'x'.repeat(100) } })
    expect(res.statusCode).toBe(413)
    expect(res.json().error).toMatchObject({ code: 'FST_ERR_CTP_BODY_TOO_LARGE', message: 'Request body is too large' })
  })

  it('answers a schema validation failure with 400 VALIDATION_FAILED and the reason', async () => {
    const res = await app.inject({ method: 'POST', url: '/schema', payload: {} })
    expect(res.statusCode).toBe(400)
    expect(res.json().error).toMatchObject({ code: 'VALIDATION_FAILED', message: expect.stringContaining("'name'") })
  })

  it('keeps the status of a foreign 4xx error but replaces its message with the reason phrase', async () => {
    const res = await app.inject({ method: 'GET', url: '/teapot' })
    expect(res.statusCode).toBe(418)
    expect(res.json().error).toMatchObject({ message: "I'm a Teapot", code: 'I_M_A_TEAPOT' })
    expect(res.body).not.toContain('abc123')
  })

  it('treats a thrown non-Error as an internal error', async () => {
    const res = await app.inject({ method: 'GET', url: '/throws-string' })
    expect(res.statusCode).toBe(500)
    expect(res.json().error.code).toBe('INTERNAL_SERVER_ERROR')
    expect(res.body).not.toContain('not an error object')
  })

  it('answers an unknown route with 404 NOT_FOUND in the same shape', async () => {
    const res = await app.inject({ method: 'GET', url: '/nope?token=abc' })
    expect(res.statusCode).toBe(404)
    expect(res.json()).toEqual({
      error: { message: 'Route GET /nope not found', code: 'NOT_FOUND', requestId: expect.any(String) },
    })
    expect(res.headers['x-request-id']).toBe(res.json().error.requestId)
  })

  it('logs client errors at info level without a stack', async () => {
    await app.inject({ method: 'POST', url: '/users', payload: {} })
    const line = logs.find((l) => l.msg === 'request rejected')
    expect(line).toMatchObject({ level: INFO, statusCode: 400, code: 'VALIDATION_FAILED' })
    expect(JSON.stringify(logs)).not.toContain('"stack"')
  })

  it('answers a database outage with 503 SERVICE_UNAVAILABLE and a retry message, without the driver detail', async () => {
    const res = await app.inject({ method: 'GET', url: '/db-down' })
    expect(res.statusCode).toBe(503)
    expect(res.json()).toMatchObject({ error: { code: 'SERVICE_UNAVAILABLE', message: 'The database is unavailable at the moment; retry shortly' } })
    expect(res.body).not.toContain('10.0.0.9')
    expect(res.body).not.toContain('select')
  })
})

describe('isDatabaseUnavailable', () => {
  const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code })
  it.each([
    ['a refused connection', withCode('ECONNREFUSED')],
    ['a reset connection, wrapped by drizzle', new Error('Failed query', { cause: withCode('ECONNRESET') })],
    ['the server shutting down (57P01)', withCode('57P01', 'terminating connection due to administrator command')],
    ['the server starting up (57P03)', withCode('57P03', 'the database system is starting up')],
    ['a connection exception (class 08)', withCode('08006')],
    ['too many connections (53300)', withCode('53300')],
    ['the server out of memory (53200)', withCode('53200')],
    ['a statement timeout under load (57014)', withCode('57014', 'canceling statement due to statement timeout')],
    ['a serialization failure (40001)', withCode('40001')],
    ['a deadlock (40P01)', new Error('Failed query', { cause: withCode('40P01', 'deadlock detected') })],
    ['a lock not available (55P03)', withCode('55P03')],
    ['a read-only server during a failover (25006)', withCode('25006', 'cannot execute INSERT in a read-only transaction')],
    ['a dropped connection without a code', new Error('Connection terminated unexpectedly')],
    ['the pool timing out', new Error('timeout exceeded when trying to connect')],
  ])('recognises %s', (_name, err) => {
    expect(isDatabaseUnavailable(err)).toBe(true)
  })

  it.each([
    ['a unique violation', withCode('23505', 'duplicate key value violates unique constraint')],
    ['a syntax error', withCode('42601', 'syntax error at or near "selec"')],
    ['a data exception (22P05)', withCode('22P05', 'unsupported Unicode escape sequence')],
    ['a plain bug', new TypeError("Cannot read properties of undefined (reading 'id')")],
    ['a non-error', 'ECONNREFUSED'],
  ])('does not mistake %s for an outage', (_name, err) => {
    expect(isDatabaseUnavailable(err)).toBe(false)
  })
})
