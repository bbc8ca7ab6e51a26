import type { FastifyInstance } from 'fastify'

type Status = 'up' | 'down' | 'disabled'

const CHECK_TIMEOUT_MS = 2_000
/** How long an unanswered check is waited on again before a new one is sent (see probe). */
export const ABANDON_AFTER_MS = 3 * CHECK_TIMEOUT_MS
/** How long a readiness verdict, good or bad, is reused: from when its probes finished. */
export const READINESS_CACHE_MS = 1_000

interface Readiness {
  ready: boolean
  status: 'ready' | 'degraded' | 'unavailable'
  checks: { database: Status; redis: Status; storage: Status; mail: Status }
}

/**
 * /healthz: the process is alive. /readyz: each dependency, probed with a timeout. Only the
 * database and storage make the instance unready: without Redis it still serves (from memory
 * and the database), so pulling it from the load balancer would turn a degradation into an outage.
 *
 * /readyz is public, so what it costs does not grow with how often it is called: callers arriving
 * while the probes run share them, and their verdict (a failure as much as a success) answers for
 * READINESS_CACHE_MS after they finish. A probe that is still waiting (a ping queued behind a busy
 * pool) is waited on again rather than sent a second time, so timed-out probes do not pile up.
 * Anyone gets the status code and `status`; which dependency is down, and what kind each one is,
 * only a caller who may read /metrics (see Metrics.canRead).
 */
export async function healthRoutes(app: FastifyInstance) {
  app.get('/healthz', async () => ({ status: 'ok' }))

  const readiness = cachedReadiness(app)
  app.get('/readyz', async (request, reply) => {
    const { ready, status, checks } = await readiness()
    reply.code(ready ? 200 : 503)
    if (!app.metrics.canRead(request)) return { status }
    return {
      status,
      checks: {
        database: { status: checks.database, driver: app.db.driver },
        redis: { status: checks.redis },
        storage: { status: checks.storage, kind: app.storage.kind },
        mail: { status: checks.mail, kind: app.mail.kind },
      },
    }
  })
}

function cachedReadiness(app: FastifyInstance): () => Promise<Readiness> {
  const database = probe(() => app.db.ping())
  const redis = app.redis ? probe(() => app.redis!.ping()) : async (): Promise<Status> => 'disabled'
  const storage = probe(() => app.storage.check())
  const mail = probe(() => app.mail.check())

  let last: { at: number; readiness: Readiness } | undefined
  let running: Promise<Readiness> | undefined
  const run = async (): Promise<Readiness> => {
    try {
      const [db, r, s, m] = await Promise.all([database(), redis(), storage(), mail()])
      const ready = db === 'up' && s === 'up'
      const degraded = r === 'down' || m === 'down'
      const readiness: Readiness = { ready, status: ready ? (degraded ? 'degraded' : 'ready') : 'unavailable', checks: { database: db, redis: r, storage: s, mail: m } }
      last = { at: performance.now(), readiness }
      return readiness
    } finally {
      running = undefined
    }
  }
  return () => {
    if (last && performance.now() - last.at < READINESS_CACHE_MS) return Promise.resolve(last.readiness)
    return (running ??= run())
  }
}

/**
 * A dependency check with a timeout that never has two calls outstanding: while one has neither
 * resolved nor failed (even past its timeout), the next probe waits on it again instead of calling,
 * for up to ABANDON_AFTER_MS. A call older than that is given up (a ping on a half-open socket may
 * hang for minutes): the next probe asks afresh, so a dependency that is back is seen as up.
 */
function probe(check: () => Promise<unknown>): () => Promise<Status> {
  let outstanding: { call: Promise<unknown>; since: number } | undefined
  return async () => {
    if (!outstanding || performance.now() - outstanding.since > ABANDON_AFTER_MS) {
      const call = Promise.resolve().then(check)
      const current = { call, since: performance.now() }
      outstanding = current
      const clear = () => {
        if (outstanding === current) outstanding = undefined
      }
      call.then(clear, clear)
    }
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([outstanding.call, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), CHECK_TIMEOUT_MS)))])
      return 'up'
    } catch {
      return 'down'
    } finally {
      clearTimeout(timer)
    }
  }
}
