import type { FastifyInstance } from 'fastify'

type Status = 'up' | 'down' | 'disabled'

const CHECK_TIMEOUT_MS = 2_000

/**
 * /healthz: the process is alive. /readyz: each dependency, probed with a timeout. Only the
 * database and storage make the instance unready: without Redis it still serves (from memory
 * and the database), so pulling it from the load balancer would turn a degradation into an outage.
 */
export async function healthRoutes(app: FastifyInstance) {
  app.get('/healthz', async () => ({ status: 'ok' }))

  app.get('/readyz', async (_req, reply) => {
    const [database, redis, storage, mail] = await Promise.all([
      probe(() => app.db.ping()),
      app.redis ? probe(() => app.redis!.ping()) : Promise.resolve<Status>('disabled'),
      probe(() => app.storage.check()),
      probe(() => app.mail.check()),
    ])
    const ready = database === 'up' && storage === 'up'
    const degraded = redis === 'down' || mail === 'down'
    reply.code(ready ? 200 : 503)
    return {
      status: ready ? (degraded ? 'degraded' : 'ready') : 'unavailable',
      checks: {
        database: { status: database, driver: app.db.driver },
        redis: { status: redis },
        storage: { status: storage, kind: app.storage.kind },
        mail: { status: mail, kind: app.mail.kind },
      },
    }
  })
}

async function probe(check: () => Promise<unknown>): Promise<Status> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([check(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), CHECK_TIMEOUT_MS)))])
    return 'up'
  } catch {
    return 'down'
  } finally {
    clearTimeout(timer)
  }
}
