/**
 * What the domain reports for metrics, in its own words. Services call these methods; the metrics
 * plugin implements them with prom-client, so no service imports it. Every argument that becomes
 * a label comes from a closed set, so the number of series stays fixed whatever the traffic.
 *
 * Figures a service counts anyway (the cache's counters, the tracking buffer) do not go through
 * here: the metrics plugin reads them at scrape time, which keeps hot paths such as an L1 hit free
 * of any metrics work. Services take this as an optional dependency: without one they report nothing.
 */
import type { MailResponseClass } from '../infra/mail/types'
import type { StepName } from './files/processing-steps'

/** `file`: a whole upload in one request; `part`: one chunk of an upload session. */
export type UploadKind = 'file' | 'part'
export type PipelineStepOutcome = 'success' | 'retry' | 'failed'
export type MailKind = 'transactional' | 'campaign'
export type EngagementKind = 'open' | 'click' | 'unsubscribe'
export type WebhookIntakeOutcome = 'accepted' | 'duplicate' | 'rejected' | 'malformed' | 'ignored' | 'unconfigured' | 'unstorable' | 'error'
/** `unmatched`: no recipient matched (yet); the row is retried or ignored. `failed`: an error; the row is retried. */
export type WebhookApplyOutcome = 'applied' | 'unmatched' | 'failed'
/** One attempt to deliver an outgoing webhook: `retry` will be tried again, `failed` will not. */
export type WebhookDeliveryOutcome = 'delivered' | 'retry' | 'failed'

export interface Instrumentation {
  /** One upload request's body, read to the end or abandoned (`ok` false). */
  uploadReceived(kind: UploadKind, bytes: number, seconds: number, ok: boolean): void
  pipelineStep(step: StepName, outcome: PipelineStepOutcome): void
  /** Messages handed to the mail provider in one call, by how the provider answered. */
  mailSent(kind: MailKind, response: MailResponseClass, messages: number): void
  /** A campaign sender had to wait for the global rate limiter (or a provider back-off). */
  rateLimitWaited(seconds: number): void
  /** Tracking hits stored by the buffer's writer; `machine` as classified when the hit arrived. */
  engagementStored(kind: EngagementKind, machine: boolean, count: number): void
  /** A conversion counted (a repeat that `once` leaves out is not). */
  conversionRecorded(): void
  webhookReceived(outcome: WebhookIntakeOutcome): void
  webhookApplied(outcome: WebhookApplyOutcome): void
  /** An outgoing webhook attempt finished, after `seconds` on the wire. */
  webhookDelivery(outcome: WebhookDeliveryOutcome, seconds: number): void
}
