/** Applies drizzle/ migrations to the configured database (they also run on every boot). */
import path from 'node:path'
import { loadConfig } from '../src/config'
import { createDatabase } from '../src/infra/db/client'

const config = loadConfig()
const db = await createDatabase({ databaseUrl: config.databaseUrl, pgliteDir: path.join(config.dataDir, 'pglite') })
await db.close()
console.log(`migrations applied (${db.driver})`)
