/**
 * Outgoing webhooks: what one claim of due deliveries costs as the backlog grows. A receiver that is
 * down for a day leaves its deliveries pending (retried for hours), and every claim, on every
 * instance, every poll, must still be cheap. Figures: the median claim (32 rows, at most 8 in flight
 * per endpoint, rolled back so each run claims the same rows) for backlogs of 100k and 1M rows, spread
 * over 5 endpoints or all on one endpoint whose backlog is older than everyone else's rows, against
 * the same claim over a backlog of 1,000 rows.
 *
 * Real services: a temporary PostgreSQL database, dropped afterwards. Run it with `npm run bench -- webhooks`.
 */
import { sql } from 'drizzle-orm'
import type { Database } from '../src/infra/db/client'
import { claimDeliveries } from '../src/services/webhooks/delivery-queue'
import { createTestDatabase } from '../test/helpers/services'
import { reportResult, versus, type Figure } from './lib/result'
import { median, round } from './lib/stats'

const RUNS = 9
const ENDPOINTS = 5
const CLAIM = 32
const PER_ENDPOINT = 8

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`)

class Rollback extends Error {
  constructor(readonly claimed: number) {
    super('rollback')
  }
}

async function claimMs(db: Database): Promise<{ ms: number; claimed: number }> {
  const times: number[] = []
  let claimed = 0
  for (let i = 0; i < RUNS; i++) {
    const started = performance.now()
    try {
      await db.transaction(async (tx) => {
        const rows = await claimDeliveries(tx as unknown as Database, CLAIM, 30_000, new Date(), PER_ENDPOINT)
        throw new Rollback(rows.length)
      })
    } catch (err) {
      if (!(err instanceof Rollback)) throw err
      claimed = err.claimed
    }
    times.push(performance.now() - started)
  }
  return { ms: median(times), claimed }
}

async function fill(db: Database, endpoints: string[], backlog: number, oneEndpoint: boolean): Promise<void> {
  await db.execute(sql`truncate webhook_deliveries`)
  if (oneEndpoint) {
    // Down for hours: its rows are the oldest; the other endpoints have a few recent ones each.
    await db.execute(sql`insert into webhook_deliveries (endpoint_id, event_type, payload, next_attempt_at)
      select ${endpoints[0]}::uuid, 'email.delivered', '{"type":"email.delivered"}'::jsonb, now() - interval '3 hours' + g * interval '1 millisecond'
      from generate_series(1, ${backlog}) g`)
    await db.execute(sql`insert into webhook_deliveries (endpoint_id, event_type, payload, next_attempt_at)
      select (${sql.param(endpoints.slice(1))}::uuid[])[1 + g % ${endpoints.length - 1}], 'email.delivered', '{"type":"email.delivered"}'::jsonb, now() - interval '1 minute'
      from generate_series(1, 40) g`)
  } else {
    await db.execute(sql`insert into webhook_deliveries (endpoint_id, event_type, payload, next_attempt_at)
      select (${sql.param(endpoints)}::uuid[])[1 + g % ${endpoints.length}], 'email.delivered', '{"type":"email.delivered"}'::jsonb, now() - interval '3 hours' + g * interval '1 millisecond'
      from generate_series(1, ${backlog}) g`)
  }
  await db.execute(sql`analyze webhook_deliveries`)
}

async function main(): Promise<void> {
  const database = await createTestDatabase()
  try {
    const db = database.handle.db
    const created = await db.execute<{ id: string }>(sql`
      insert into webhook_endpoints (url, secret) select 'https://hooks' || g || '.example.com/in', 'whsec_' || md5(g::text)
      from generate_series(1, ${ENDPOINTS}) g returning id`)
    const endpoints = created.rows.map((r) => r.id)
    const cases = [
      { name: '1,000 pending over 5 endpoints', backlog: 1_000, one: false },
      { name: '100,000 pending over 5 endpoints', backlog: 100_000, one: false },
      { name: '1,000,000 pending over 5 endpoints', backlog: 1_000_000, one: false },
      { name: '1,000,000 pending on one endpoint, the oldest rows', backlog: 1_000_000, one: true },
    ]
    const measured: { name: string; ms: number; claimed: number }[] = []
    for (const c of cases) {
      await fill(db, endpoints, c.backlog, c.one)
      const { ms, claimed } = await claimMs(db)
      log(`${c.name}: ${round(ms, 2)} ms per claim, ${claimed} rows claimed`)
      measured.push({ name: c.name, ms, claimed })
    }
    const [small, ...large] = measured
    const baseline: Figure = { name: `baseline: claim with ${small!.name}`, value: small!.ms, unit: 'ms', note: `${small!.claimed} rows claimed; median of ${RUNS}` }
    const figures: Figure[] = [baseline]
    for (const m of large) {
      const f = versus({ name: `claim with ${m.name}`, value: m.ms, unit: 'ms', note: `${m.claimed} rows claimed (${CLAIM} at most, ${PER_ENDPOINT} per endpoint); median of ${RUNS}` }, baseline)
      figures.push({ ...f, target: '≤ 5× the 1,000-row claim (bounded, whatever the backlog)', met: (f.ratio ?? Infinity) <= 5 })
    }
    reportResult({ bench: 'webhooks', figures })
  } finally {
    await database.drop()
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`)
  process.exit(1)
})
