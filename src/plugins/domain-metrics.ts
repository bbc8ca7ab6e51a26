/**
 * The domain's Prometheus metrics: the Instrumentation port implemented with prom-client (events
 * the services report as they happen), and the figures read at scrape time from counters the
 * services keep anyway (cache, tracking buffer) or from cheap cached queries (queue depths).
 * Every label takes its values from a closed set, and every series exists from the start at 0.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { MailResponseClass } from '../infra/mail/types'
import type { CacheStats } from '../services/cache/cache-service'
import { STEP_NAMES, type StepName } from '../services/files/processing-steps'
import type { Instrumentation } from '../services/instrumentation'
import type { QueueDepthSnapshot } from '../services/system/queue-depths'
import type { EventBufferStats } from '../services/tracking/event-buffer'
import { mirroredCounter, type Metrics } from './metrics'

const UPLOAD_KINDS = ['file', 'part'] as const
const MAIL_KINDS = ['transactional', 'campaign'] as const
const FAILURE_CLASSES: Exclude<MailResponseClass, '2xx'>[] = ['4xx', '429', '5xx', 'timeout', 'network']
const STEP_OUTCOMES = ['success', 'retry', 'failed'] as const
const ENGAGEMENT_KINDS = ['open', 'click', 'unsubscribe'] as const
const INTAKE_OUTCOMES = ['accepted', 'duplicate', 'rejected', 'malformed', 'ignored', 'unconfigured', 'unstorable', 'error'] as const
const APPLY_OUTCOMES = ['applied', 'unmatched', 'failed'] as const
const DELIVERY_OUTCOMES = ['delivered', 'retry', 'failed'] as const
const UPLOAD_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]

/** Every combination of the given label values, for series that should read 0 rather than be absent. */
function combinations(labels: Record<string, readonly string[]>): Record<string, string>[] {
  return Object.entries(labels).reduce<Record<string, string>[]>((acc, [name, values]) => acc.flatMap((l) => values.map((v) => ({ ...l, [name]: v }))), [{}])
}

function counter<L extends string>(registry: Registry, name: string, help: string, labels: Record<L, readonly string[]>): Counter<L> {
  const c = new Counter({ name, help, labelNames: Object.keys(labels) as L[], registers: [registry] })
  for (const l of combinations(labels)) c.inc(l as Partial<Record<L, string>>, 0)
  return c
}

/** Events reported by the services as they happen. */
export function createInstrumentation(registry: Registry): Instrumentation {
  const uploadBytes = counter(registry, 'groundwork_upload_bytes_total', 'Upload bytes received from clients, by kind (file: one-request upload, part: a chunk of a session).', { kind: UPLOAD_KINDS })
  const uploadDuration = new Histogram({
    name: 'groundwork_upload_duration_seconds',
    help: 'Time to receive and store one upload request body, by kind and outcome.',
    labelNames: ['kind', 'outcome'] as const,
    buckets: UPLOAD_BUCKETS,
    registers: [registry],
  })
  for (const l of combinations({ kind: UPLOAD_KINDS, outcome: ['ok', 'error'] })) uploadDuration.zero(l)
  const steps = counter(registry, 'groundwork_file_pipeline_steps_total', 'File processing step runs, by step and outcome (retry: will run again).', { step: STEP_NAMES, outcome: STEP_OUTCOMES })
  const sent = counter(registry, 'groundwork_emails_sent_total', 'Messages the mail provider accepted, by kind (transactional or campaign).', { kind: MAIL_KINDS })
  const failed = counter(
    registry,
    'groundwork_emails_failed_total',
    'Messages a provider call did not get accepted, by kind and response class; 429, 5xx, timeout and network are retried later.',
    { kind: MAIL_KINDS, class: FAILURE_CLASSES },
  )
  const waits = counter(registry, 'groundwork_email_rate_limit_waits_total', 'Campaign sends that waited for the global rate limiter.', {})
  const waitSeconds = counter(registry, 'groundwork_email_rate_limit_wait_seconds_total', 'Total time campaign sends waited for the global rate limiter.', {})
  const engagement = counter(registry, 'groundwork_tracking_events_total', 'Opens, clicks and unsubscribes stored, by type and origin (human or machine, as classified on arrival).', {
    type: ENGAGEMENT_KINDS,
    origin: ['human', 'machine'],
  })
  const conversions = counter(registry, 'groundwork_tracking_conversions_total', 'Conversions counted.', {})
  const received = counter(registry, 'groundwork_resend_webhooks_received_total', 'Resend webhook requests, by intake outcome.', { outcome: INTAKE_OUTCOMES })
  const processed = counter(registry, 'groundwork_resend_webhooks_processed_total', 'Stored Resend webhook events processed, by outcome (unmatched and failed ones are retried).', { outcome: APPLY_OUTCOMES })
  const deliveries = counter(registry, 'groundwork_webhook_deliveries_total', 'Outgoing webhook attempts, by outcome (retry: scheduled again; failed: attempts exhausted, 410 Gone or endpoint disabled).', { outcome: DELIVERY_OUTCOMES })
  const deliverySeconds = new Histogram({
    name: 'groundwork_webhook_delivery_duration_seconds',
    help: 'Time from sending an outgoing webhook to its answer (or timeout).',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  })

  return {
    uploadReceived(kind, bytes, seconds, ok) {
      uploadBytes.inc({ kind }, bytes)
      uploadDuration.observe({ kind, outcome: ok ? 'ok' : 'error' }, seconds)
    },
    pipelineStep(step: StepName, outcome) {
      // The name comes from a database row: never let an unexpected one become a new series.
      if (STEP_NAMES.includes(step)) steps.inc({ step, outcome })
    },
    mailSent(kind, response, messages) {
      if (response === '2xx') sent.inc({ kind }, messages)
      else failed.inc({ kind, class: response }, messages)
    },
    rateLimitWaited(seconds) {
      waits.inc()
      waitSeconds.inc(seconds)
    },
    engagementStored(kind, machine, count) {
      engagement.inc({ type: kind, origin: machine ? 'machine' : 'human' }, count)
    },
    conversionRecorded: () => conversions.inc(),
    webhookReceived: (outcome) => received.inc({ outcome }),
    webhookApplied: (outcome) => processed.inc({ outcome }),
    webhookDelivery(outcome, seconds) {
      deliveries.inc({ outcome })
      deliverySeconds.observe(seconds)
    },
  }
}

export interface ScrapedSources {
  cache: () => CacheStats
  trackingBuffer: () => EventBufferStats
  queueDepths: () => Promise<QueueDepthSnapshot>
}

/** Figures read when /metrics is scraped; the services' hot paths do no metrics work for them. */
export function registerScrapedMetrics(metrics: Pick<Metrics, 'registry' | 'addCollector'>, sources: ScrapedSources): void {
  const { registry } = metrics
  const mirror = (name: string, help: string, labelNames?: string[]) => mirroredCounter(registry, name, help, labelNames)
  const hits = mirror('groundwork_cache_hits_total', 'Cache reads served by a level (l1: in process, l2: Redis), stale ones included.', ['level'])
  const staleHits = mirror('groundwork_cache_stale_hits_total', 'Cache reads served past the fresh TTL, within grace, by level.', ['level'])
  const misses = mirror('groundwork_cache_misses_total', 'Cache reads a level could not serve, by level.', ['level'])
  const loads = mirror('groundwork_cache_loads_total', 'Loader runs: misses filled, background refreshes and re-warming.')
  const loadFailures = mirror('groundwork_cache_load_failures_total', 'Loader runs that threw or timed out, by reason.', ['reason'])
  const evictions = mirror('groundwork_cache_evictions_total', 'Entries evicted from L1 to stay within its item and byte limits.')
  const errors = mirror('groundwork_cache_errors_total', 'L2 (Redis) reads, writes and tag checks that failed or timed out; the cache answered without them.')
  const l1Items = new Gauge({ name: 'groundwork_cache_l1_items', help: 'Entries held in this process (L1).', registers: [registry] })
  const l1Bytes = new Gauge({ name: 'groundwork_cache_l1_bytes', help: 'Estimated bytes held in this process (L1).', registers: [registry] })
  metrics.addCollector(() => {
    const s = sources.cache()
    for (const level of s.levels) {
      hits(level.hits, { level: level.level })
      staleHits(level.staleHits, { level: level.level })
      misses(level.misses, { level: level.level })
    }
    loads(s.loads)
    loadFailures(s.loadErrors - s.loaderTimeouts, { reason: 'error' })
    loadFailures(s.loaderTimeouts, { reason: 'timeout' })
    evictions(s.evictions)
    errors(s.errors)
    l1Items.set(s.items)
    l1Bytes.set(s.l1Bytes)
  })

  const buffered = new Gauge({ name: 'groundwork_tracking_buffer_events', help: 'Tracking hits waiting in memory to be stored.', registers: [registry] })
  const dropped = mirror('groundwork_tracking_buffer_dropped_total', 'Tracking hits dropped because the buffer was full (a flood, or the database away).')
  metrics.addCollector(() => {
    const s = sources.trackingBuffer()
    buffered.set(s.buffered)
    dropped(s.dropped)
  })

  const depth = new Gauge({ name: 'groundwork_queue_depth', help: 'Background work waiting, by queue; read at most every few seconds.', labelNames: ['queue'] as const, registers: [registry] })
  metrics.addCollector(async () => {
    const q = await sources.queueDepths()
    depth.set({ queue: 'campaign_recipients' }, q.campaignRecipients)
    depth.set({ queue: 'scheduled_emails_due' }, q.scheduledEmailsDue)
    depth.set({ queue: 'webhook_events' }, q.webhookEvents)
    depth.set({ queue: 'file_steps' }, q.fileSteps)
    depth.set({ queue: 'webhook_deliveries' }, q.webhookDeliveries)
  })
}
