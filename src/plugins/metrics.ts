import { timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyRequest, onResponseHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { bearerToken } from '../lib/bearer-token'
import { hookList } from '../lib/route-hooks'
import { BoundedMap } from '../lib/bounded-map'

export interface Metrics {
  registry: Registry
  graphqlDuration: Histogram<'operation' | 'type' | 'outcome'>
  subscriptions: Gauge
  /** Metrics read from a service at scrape time (cache counters, queue depths): run before each scrape is serialised; a failure is counted and logged. */
  addCollector(collect: () => Promise<void> | void): void
  /**
   * Whether the request may read operational detail (/metrics, the checks of /readyz): with
   * METRICS_TOKEN set, only with it as a bearer token; without, anyone outside production and no one in it.
   */
  canRead(request: FastifyRequest): boolean
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
  interface FastifyContextConfig {
    /** 'count': the route's requests are counted (http_requests_counted_total) instead of timed, for hot routes like the tracking pixel. */
    metrics?: 'count'
    /** false: the answer carries no x-request-id header (src/app.ts). */
    requestIdHeader?: boolean
  }
}

/** Operation names come from clients: cap how many distinct ones become label values. */
const MAX_OPERATION_LABELS = 200
const OPERATION_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/

/**
 * Prometheus metrics on GET /metrics. In production it needs METRICS_TOKEN as a bearer token;
 * without one there it is not served at all. Labels are bounded: route patterns (not URLs),
 * status classes, and at most MAX_OPERATION_LABELS operation names, each claimed as OperationLabels
 * allows.
 */
export const metricsPlugin = fp(
  async (app: FastifyInstance) => {
    const registry = new Registry()
    registry.setDefaultLabels({ service: 'groundwork' })
    collectDefaultMetrics({ register: registry })

    const httpDuration = new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration by route pattern, method and status class.',
      labelNames: ['method', 'route', 'status_class'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    })
    const graphqlDuration = new Histogram({
      name: 'graphql_operation_duration_seconds',
      help: 'GraphQL operation duration by operation name, type and outcome.',
      labelNames: ['operation', 'type', 'outcome'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    })
    const subscriptions = new Gauge({ name: 'graphql_subscription_connections', help: 'Open GraphQL WebSocket connections.', registers: [registry] })
    const collectors: (() => Promise<void> | void)[] = []
    new Gauge({
      name: 'groundwork_scrape_collectors',
      help: 'Collectors run per scrape.',
      registers: [registry],
      collect() {
        this.set(collectors.length)
      },
    })
    const collectorFailures = new Counter({ name: 'groundwork_scrape_collector_failures_total', help: 'Scrape-time collectors that failed; their metrics kept their previous values.', registers: [registry] })
    // Run before serialising rather than in a metric's collect(): registry.metrics() reads the metrics
    // concurrently, so what an async collector sets there would only show at the next scrape.
    const runCollectors = async () => {
      const results = await Promise.allSettled(collectors.map(async (c) => c()))
      for (const r of results) {
        if (r.status === 'fulfilled') continue
        collectorFailures.inc()
        app.log.warn({ err: r.reason }, 'a metrics collector failed')
      }
    }

    const token = app.config.metrics.token
    const canRead = (request: FastifyRequest) => (token ? bearerMatches(request, token) : app.config.nodeEnv !== 'production')
    app.decorate('metrics', { registry, graphqlDuration, subscriptions, addCollector: (c: () => Promise<void> | void) => collectors.push(c), canRead })

    const httpCounted = new Counter({
      name: 'http_requests_counted_total',
      help: 'Requests of the hot routes that are counted rather than timed (tracking pixel and redirect), by route pattern, method and status class.',
      labelNames: ['method', 'route', 'status_class'] as const,
      registers: [registry],
    })
    // Each route gets its own hook, made once for its pattern (a counted route keeps its labelled
    // counters at hand, so a pixel costs one increment); requests that match no route are timed by a
    // global hook. Callback hooks: an async one costs every request a promise.
    app.addHook('onRoute', (route) => {
      const url = route.url ?? route.path
      const measure: onResponseHookHandler =
        route.config?.metrics === 'count'
          ? countedBy((method, statusClass) => httpCounted.labels(method, url, statusClass))
          : (request, reply, done) => {
              httpDuration.observe({ method: request.method, route: url, status_class: statusClassOf(reply.statusCode) }, reply.elapsedTime / 1000)
              done()
            }
      route.onResponse = [...hookList(route.onResponse), measure]
    })
    app.addHook('onResponse', (request, reply, done) => {
      if (request.is404) httpDuration.observe({ method: request.method, route: 'unmatched', status_class: statusClassOf(reply.statusCode) }, reply.elapsedTime / 1000)
      done()
    })

    const exposed = Boolean(token) || app.config.nodeEnv !== 'production'
    if (exposed) {
      app.get('/metrics', async (request, reply) => {
        if (!canRead(request)) {
          return reply.code(401).send({ error: { message: 'A valid METRICS_TOKEN bearer token is required', code: 'UNAUTHENTICATED', requestId: request.id } })
        }
        await runCollectors()
        reply.header('content-type', registry.contentType)
        return registry.metrics()
      })
    }
  },
  { name: 'metrics' },
)

function statusClassOf(status: number): string {
  return `${Math.floor(status / 100)}xx`
}

/** An onResponse hook counting a route's requests, with each (method, status class) counter looked up once. */
function countedBy(counter: (method: string, statusClass: string) => { inc(): void }): onResponseHookHandler {
  const byMethod = new Map<string, { inc(): void }[]>()
  return (request, reply, done) => {
    let classes = byMethod.get(request.method)
    if (classes === undefined) byMethod.set(request.method, (classes = []))
    const index = Math.floor(reply.statusCode / 100)
    ;(classes[index] ??= counter(request.method, statusClassOf(reply.statusCode))).inc()
    done()
  }
}

/** Who sent an operation, as far as its label is concerned. */
export interface LabelClaimant {
  /** The verified token's subject. */
  id: string
  /** An admin or service token: the app's own backend and its operators. */
  privileged: boolean
}

/**
 * The `operation` labels of GraphQL operations, at most MAX_OPERATION_LABELS for the process's life.
 * `label` is `anonymous` for an operation without a usable name; its name when that already has a
 * label; else a new label while there is room, but only when the caller may claim one: an admin or
 * service token at once, a user token once a second subject has sent the same name (the app's real
 * operations are sent by many users, names made up by one are not). An anonymous caller never
 * claims. Everything else is `other`, so one caller, with a token or without, cannot take every label.
 */
export class OperationLabels {
  private readonly labels = new Set<string>()
  /** Names sent by one subject so far, with that subject (bounded: a made-up name is forgotten in time). */
  private readonly candidates = new BoundedMap<string, string>(4 * MAX_OPERATION_LABELS)

  label(name: string | undefined | null, claimant: LabelClaimant | undefined): string {
    if (!name || !OPERATION_NAME.test(name)) return 'anonymous'
    if (this.labels.has(name)) return name
    if (!claimant || this.labels.size >= MAX_OPERATION_LABELS) return 'other'
    if (!claimant.privileged) {
      const first = this.candidates.get(name)
      if (first === undefined) this.candidates.set(name, claimant.id)
      if (first === undefined || first === claimant.id) return 'other'
      this.candidates.delete(name)
    }
    this.labels.add(name)
    return name
  }
}

function bearerMatches(request: FastifyRequest, token: string): boolean {
  const given = bearerToken(request.headers.authorization) ?? ''
  const a = Buffer.from(given)
  const b = Buffer.from(token)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** A counter that mirrors a monotonically increasing value read at scrape time. */
export function mirroredCounter(registry: Registry, name: string, help: string, labelNames: string[] = []) {
  const counter = new Counter({ name, help, labelNames, registers: [registry] })
  const last = new Map<string, number>()
  return (value: number, labels: Record<string, string> = {}) => {
    const key = JSON.stringify(labels)
    const delta = value - (last.get(key) ?? 0)
    // An increment of 0 still creates the series, so it reads 0 instead of being absent.
    counter.inc(labels, Math.max(0, delta))
    last.set(key, value)
  }
}
