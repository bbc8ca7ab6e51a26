import { mkdir, open, readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sql } from 'drizzle-orm'
import type { NodePgDatabase } from 'drizzle-orm/node-postgres'

/**
 * Typed as the node-postgres flavour for both drivers: PGlite's drizzle database has the same
 * query API and also answers `execute()` with `{ rows }`.
 */
export type Database = NodePgDatabase

export interface DatabaseHandle {
  db: Database
  driver: 'pglite' | 'postgres'
  /** Runs `select 1`; for readiness. */
  ping(): Promise<void>
  close(): Promise<void>
}

export interface DatabaseOptions {
  databaseUrl?: string
  /** Directory for PGlite when databaseUrl is unset; `memory://` keeps it in memory (tests). */
  pgliteDir: string
  poolMax?: number
  /** Fail fast when PostgreSQL is down instead of queueing requests forever. */
  connectionTimeoutMs?: number
  statementTimeoutMs?: number
}

const migrationsFolder = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../drizzle')
/** Arbitrary constant: serialises boot-time migrations across instances. */
const MIGRATION_LOCK_ID = 727_001

export async function createDatabase(options: DatabaseOptions): Promise<DatabaseHandle> {
  return options.databaseUrl ? createPostgres(options.databaseUrl, options) : createPglite(options.pgliteDir)
}

async function createPostgres(url: string, options: DatabaseOptions): Promise<DatabaseHandle> {
  const { default: pg } = await import('pg')
  const { drizzle } = await import('drizzle-orm/node-postgres')
  const { migrate } = await import('drizzle-orm/node-postgres/migrator')
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolMax ?? 10,
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 5_000,
    statement_timeout: options.statementTimeoutMs ?? 30_000,
  })
  // An idle client that loses its connection emits 'error' on the pool; without a listener that kills the process.
  pool.on('error', () => {})
  // A client checked out for a transaction has no pool listener: a dropped connection would kill the process. Its queries still fail.
  pool.on('connect', (client) => client.on('error', () => {}))
  const db: Database = drizzle(pool)

  const lockClient = await pool.connect()
  try {
    await lockClient.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_ID])
    await migrate(drizzle(pool), { migrationsFolder })
  } finally {
    await lockClient.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]).catch(() => {})
    lockClient.release()
  }

  return {
    db,
    driver: 'postgres',
    ping: async () => {
      await db.execute(sql`select 1`)
    },
    close: () => pool.end(),
  }
}

async function createPglite(dir: string): Promise<DatabaseHandle> {
  const { PGlite } = await import('@electric-sql/pglite')
  const { drizzle } = await import('drizzle-orm/pglite')
  const { migrate } = await import('drizzle-orm/pglite/migrator')
  const inMemory = dir.startsWith('memory://')
  const releaseLock = inMemory ? async () => {} : await lockDirectory(dir)
  try {
    const client = inMemory ? new PGlite() : new PGlite(dir)
    await client.waitReady
    const db = drizzle(client)
    await migrate(db, { migrationsFolder })
    return {
      db: db as unknown as Database,
      driver: 'pglite',
      ping: async () => {
        await client.query('select 1')
      },
      close: async () => {
        await client.close()
        await releaseLock()
      },
    }
  } catch (err) {
    await releaseLock()
    throw err
  }
}

/** PGlite has no directory lock of its own: two processes on one directory corrupt it. */
async function lockDirectory(dir: string): Promise<() => Promise<void>> {
  await mkdir(dir, { recursive: true })
  const lockPath = path.join(dir, '..', `${path.basename(dir)}.lock`)
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(lockPath, 'wx')
      await handle.writeFile(String(process.pid))
      await handle.close()
      return () => rm(lockPath, { force: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = Number((await readFile(lockPath, 'utf8').catch(() => '')).trim())
      if (pid && pid !== process.pid && isAlive(pid)) {
        throw new Error(`The embedded database at ${dir} is in use by process ${pid}. Stop it, or set DATABASE_URL to share PostgreSQL between instances.`)
      }
      await rm(lockPath, { force: true })
    }
  }
  throw new Error(`Could not lock the embedded database at ${dir}`)
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
