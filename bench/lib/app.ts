import { randomUUID } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { buildApp } from '../../src/app'
import { loadConfig, type Env } from '../../src/config'
import { createTokenSigner } from '../../src/services/auth/jwt'
import { TEST_REDIS_URL, uniqueRedisPrefix, type TestDatabase } from '../../test/helpers/services'

const JWT_SECRET = 'bench-secret-bench-secret-bench-secret-01'
const SIGNING_SECRET = 'bench-signing-bench-signing-bench-signing'

export interface RunningApp {
  url: string
  ws: string
  /** A user token for the app. */
  token: string
  /** Idempotent. */
  close(): Promise<void>
}

/** The real app as the tests build it (PostgreSQL, Redis), listening on an ephemeral port. */
export async function startBenchApp(dataDir: string, database: TestDatabase, extraEnv: Env): Promise<RunningApp> {
  await mkdir(dataDir, { recursive: true })
  const config = loadConfig({
    DATA_DIR: dataDir,
    JWT_SECRET,
    SIGNING_SECRET,
    PUBLIC_URL: 'http://groundwork.bench',
    WORKERS_ENABLED: 'false',
    GRAPHIQL: 'false',
    LOG_LEVEL: 'error',
    DATABASE_URL: database.url,
    REDIS_URL: TEST_REDIS_URL,
    REDIS_KEY_PREFIX: uniqueRedisPrefix(),
    // One client sends every request here; the per-client mutation limit is not what is measured.
    RATE_LIMIT_MAX: '1000000',
    ...extraEnv,
  })
  const app = await buildApp(config, { logger: false })
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  const token = createTokenSigner(JWT_SECRET)({ id: `bench-${randomUUID()}`, roles: ['user'], email: 'bench@example.com', name: 'bench' })
  let closed: Promise<void> | undefined
  return { url: `${address}/graphql`, ws: `${address.replace(/^http/, 'ws')}/graphql`, token, close: () => (closed ??= app.close()) }
}
