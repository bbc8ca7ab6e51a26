/**
 * Wires outgoing webhooks: the endpoint service the API uses, the enqueuer tracking calls inside
 * its transactions, and the delivery worker. Endpoint changes are broadcast on the event bus so
 * every instance drops its cached view of who subscribes to what.
 */
import type { WebhooksConfig } from '../../config'
import type { Database } from '../../infra/db/client'
import type { EventBus } from '../../infra/events'
import type { Instrumentation } from '../instrumentation'
import { DeliveryWorker } from './delivery-worker'
import { WebhookEndpointService } from './endpoint-service'
import { SubscriptionCache } from './subscription-cache'
import { createWebhookEnqueuer } from './webhook-enqueuer'
import type { WebhookEnqueuer } from './webhook-event-types'

export interface WebhookServicesDeps {
  db: Database
  config: WebhooksConfig
  /** Carries endpoint changes to the other instances. */
  events: Pick<EventBus, 'emitter' | 'publish'>
  pollMs?: number
  pruneIntervalMs?: number
  instrumentation?: Pick<Instrumentation, 'webhookDelivery'>
  logger?: { warn(obj: Record<string, unknown>, msg?: string): void; error(obj: Record<string, unknown>, msg?: string): void }
}

export interface WebhookServices {
  endpoints: WebhookEndpointService
  enqueuer: WebhookEnqueuer
  worker: DeliveryWorker
  /** Delivery (workers only). */
  startWorkers(): void
  close(): Promise<void>
}

const CHANGED_TOPIC = 'webhooks:endpoints-changed'

export function createWebhookServices(deps: WebhookServicesDeps): WebhookServices {
  const { db, config } = deps
  const subscriptions = new SubscriptionCache()
  const onChanged = (_message: unknown, done: () => void) => {
    subscriptions.invalidate()
    done()
  }
  deps.events.emitter.on(CHANGED_TOPIC, onChanged)
  const endpoints = new WebhookEndpointService({
    db,
    urlPolicy: { requireHttps: config.requireHttps, allowPrivate: config.allowPrivateUrls },
    changed: () => {
      subscriptions.invalidate()
      void deps.events.publish(CHANGED_TOPIC, {})
    },
  })
  const worker = new DeliveryWorker({
    db,
    retry: { schedule: config.retrySchedule, maxAttempts: config.maxAttempts },
    timeoutMs: config.timeoutMs,
    concurrency: config.concurrency,
    disableAfterFailures: config.disableAfterFailures,
    allowPrivate: config.allowPrivateUrls,
    retentionDays: config.deliveryRetentionDays,
    pollMs: deps.pollMs,
    pruneIntervalMs: deps.pruneIntervalMs,
    instrumentation: deps.instrumentation,
    logger: deps.logger,
  })
  return {
    endpoints,
    enqueuer: createWebhookEnqueuer(subscriptions),
    worker,
    startWorkers: () => worker.start(),
    async close() {
      await worker.stop()
      deps.events.emitter.removeListener(CHANGED_TOPIC, onChanged)
    },
  }
}
