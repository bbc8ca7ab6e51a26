/**
 * Builds the real app against the real services: a fresh PostgreSQL database, a unique Redis
 * prefix, and optionally fauxqs (S3) and the fake Resend server. Tests talk to it through
 * app.inject (queries, mutations, multipart) or a real WebSocket (subscriptions).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app'
import { loadConfig, type Env } from '../../src/config'
import { createTokenSigner, type Role } from '../../src/services/auth/jwt'
import { createEmptyDatabase, TEST_REDIS_URL, uniqueRedisPrefix, type TestDatabase } from './services'

export const TEST_JWT_SECRET = 'test-secret-test-secret-test-secret-0123'
export const TEST_SIGNING_SECRET = 'signing-secret-signing-secret-signing-0123'

export interface TestAppOptions {
  /** Extra or overriding environment variables. */
  env?: Env
  /** Use PostgreSQL (default true). False: embedded PGlite in DATA_DIR. */
  postgres?: boolean
  /** Use Redis (default true). */
  redis?: boolean
  /** Share an existing database (multi-instance tests). */
  database?: TestDatabase
  /** Share a Redis prefix (multi-instance tests). */
  redisPrefix?: string
  /** Share a data directory (restart and multi-instance tests on disk storage); close() leaves it in place. */
  dataDir?: string
  /** Capture logs here instead of silencing them. */
  logStream?: NodeJS.WritableStream
}

export interface TestApp {
  app: FastifyInstance
  dataDir: string
  database?: TestDatabase
  redisPrefix: string
  token(role: Role | Role[], sub?: string, extra?: { email?: string; name?: string; expiresInSeconds?: number }): string
  gql<T = Record<string, unknown>>(query: string, variables?: Record<string, unknown>, token?: string): Promise<GqlResponse<T>>
  close(): Promise<void>
}

export interface GqlResponse<T> {
  statusCode: number
  data: T
  errors?: { message: string; path?: string[]; extensions?: Record<string, unknown> }[]
}

const sign = createTokenSigner(TEST_JWT_SECRET)

export async function buildTestApp(options: TestAppOptions = {}): Promise<TestApp> {
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(tmpdir(), 'gw-test-')))
  const ownsDatabase = options.postgres !== false && !options.database
  const database = options.postgres === false ? undefined : (options.database ?? (await createEmptyDatabase()))
  const redisPrefix = options.redisPrefix ?? uniqueRedisPrefix()
  const config = loadConfig({
    DATA_DIR: dataDir,
    JWT_SECRET: TEST_JWT_SECRET,
    SIGNING_SECRET: TEST_SIGNING_SECRET,
    PUBLIC_URL: 'http://groundwork.test',
    WORKERS_ENABLED: 'false',
    ...(database ? { DATABASE_URL: database.url } : {}),
    ...(options.redis === false ? {} : { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: redisPrefix }),
    ...options.env,
  })
  const app = await buildApp(config, options.logStream ? { logStream: options.logStream } : { logger: false })
  await app.ready()
  return {
    app,
    dataDir,
    database,
    redisPrefix,
    token: (role, sub, extra = {}) => {
      const roles = Array.isArray(role) ? role : [role]
      const id = sub ?? `${roles[0]}-1`
      return sign({ id, roles, email: extra.email ?? `${id}@example.com`, name: extra.name ?? id }, extra.expiresInSeconds ?? 3600)
    },
    gql: async (query, variables, token) => {
      const res = await app.inject({
        method: 'POST',
        url: '/graphql',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        payload: { query, variables },
      })
      const body = res.json()
      return { statusCode: res.statusCode, data: body.data, errors: body.errors }
    },
    close: async () => {
      await app.close()
      if (ownsDatabase) await database!.drop()
      if (!options.dataDir) await rm(dataDir, { recursive: true, force: true })
    },
  }
}

/** A GraphQL multipart request body (jaydenseric spec) for app.inject. */
export function multipartBody(
  operations: { query: string; variables: Record<string, unknown> },
  files: { path: string; filename: string; contentType: string; content: Buffer }[],
): { payload: Buffer; contentType: string } {
  const boundary = `----gwtest${Math.random().toString(16).slice(2)}`
  const map: Record<string, string[]> = {}
  files.forEach((f, i) => (map[String(i)] = [f.path]))
  const parts: Buffer[] = []
  const field = (name: string, value: string) =>
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`))
  field('operations', JSON.stringify(operations))
  field('map', JSON.stringify(map))
  files.forEach((f, i) => {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${i}"; filename="${f.filename}"\r\nContent-Type: ${f.contentType}\r\n\r\n`))
    parts.push(f.content)
    parts.push(Buffer.from('\r\n'))
  })
  parts.push(Buffer.from(`--${boundary}--\r\n`))
  return { payload: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` }
}

/** Sends one file through a GraphQL multipart request with the preflight header. */
export async function uploadThroughGraphql(
  t: TestApp,
  token: string,
  query: string,
  variables: Record<string, unknown>,
  file: { filename: string; contentType: string; content: Buffer; path?: string },
  headers: Record<string, string> = { 'graphql-require-preflight': '1' },
) {
  const { payload, contentType } = multipartBody({ query, variables }, [{ path: file.path ?? 'variables.file', ...file }])
  const res = await t.app.inject({ method: 'POST', url: '/graphql', headers: { 'content-type': contentType, authorization: `Bearer ${token}`, ...headers }, payload })
  return { statusCode: res.statusCode, body: res.json() as { data?: Record<string, unknown>; errors?: { message: string; extensions?: Record<string, unknown> }[] } }
}
