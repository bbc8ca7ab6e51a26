/**
 * Outgoing webhooks (admin): the endpoints an app subscribes to email events, their deliveries,
 * and re-sending a failed one. Secrets are shown by createWebhookEndpoint and
 * rotateWebhookEndpointSecret only.
 */
import { ConflictError, NotFoundError, ValidationError } from '../lib/errors'
import type { WebhookDeliveryRow, WebhookEndpointRow } from '../services/webhooks/endpoint-service'
import { InvalidWebhookUrlError } from '../services/webhooks/endpoint-url'
import { WEBHOOK_EVENT_TYPES } from '../services/webhooks/webhook-event-types'
import { builder } from './builder'
import { connectionOf, decodeCursor, encodeCursor, paginate, timeCursor, timeCursorOf } from './connection'
import { ErrorInterface } from './errors'

const UrlProblemEnum = builder.enumType('WebhookUrlProblem', {
  description: 'Why an endpoint URL was refused.',
  values: {
    INVALID: { value: 'invalid', description: 'Not an absolute http(s) URL, or too long.' },
    INSECURE: { value: 'insecure', description: 'http where https is required (NODE_ENV=production).' },
    CREDENTIALS: { value: 'credentials', description: 'It carries a user name or password.' },
    PRIVATE_ADDRESS: { value: 'private_address', description: 'It is, or resolves to, a loopback, private, link-local or reserved address (WEBHOOKS_ALLOW_PRIVATE_URLS allows them).' },
    UNRESOLVABLE: { value: 'unresolvable', description: 'Its host name does not resolve.' },
  } as const,
})

builder.objectType(InvalidWebhookUrlError, {
  name: 'InvalidWebhookUrlError',
  description: 'The endpoint URL cannot be used. Nothing was saved.',
  interfaces: [ErrorInterface],
  isTypeOf: (v) => v instanceof InvalidWebhookUrlError,
  fields: (t) => ({ problem: t.field({ type: UrlProblemEnum, description: 'What is wrong with it.', resolve: (e) => e.problem }) }),
})

const DeliveryStatusEnum = builder.enumType('WebhookDeliveryStatus', {
  description: 'Where one delivery is.',
  values: {
    PENDING: { value: 'pending', description: 'Waiting for its first attempt or its next retry.' },
    DELIVERED: { value: 'delivered', description: 'The endpoint answered 2xx.' },
    FAILED: { value: 'failed', description: 'Out of attempts, answered 410 Gone, or its endpoint was disabled; redeliverWebhookDelivery sends it again.' },
  } as const,
})

const WebhookDeliveryRef = builder.objectRef<WebhookDeliveryRow>('WebhookDelivery').implement({
  description: 'One event sent (or to be sent) to one endpoint.',
  fields: (t) => ({
    id: t.id({ description: 'Delivery id.', resolve: (d) => String(d.id) }),
    messageId: t.exposeString('messageId', { description: 'The webhook-id header: the same on every attempt, for the receiver to de-duplicate on.' }),
    eventType: t.exposeString('eventType', { description: 'The event type, e.g. "email.delivered".' }),
    payload: t.field({ type: 'JSON', description: 'The body sent: { type, created_at, data }.', resolve: (d) => d.payload }),
    status: t.field({ type: DeliveryStatusEnum, description: 'Where it is.', resolve: (d) => d.status }),
    attempts: t.exposeInt('attempts', { description: 'Attempts made (reset by a redelivery).' }),
    nextAttemptAt: t.expose('nextAttemptAt', { type: 'DateTime', description: 'When the next attempt is due, while PENDING.' }),
    lastStatusCode: t.exposeInt('lastStatusCode', { nullable: true, description: 'HTTP status of the last answer; null when there was none (timeout, refused connection).' }),
    lastError: t.exposeString('lastError', { nullable: true, description: 'Why the last attempt failed.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the event was queued.' }),
    deliveredAt: t.expose('deliveredAt', { type: 'DateTime', nullable: true, description: 'When the endpoint accepted it.' }),
  }),
})

const WebhookDeliveryConnection = connectionOf('WebhookDelivery', WebhookDeliveryRef)

/** The row, and its secret right after create or rotate (never exposed as a field of the endpoint). */
type EndpointShape = WebhookEndpointRow & { secret?: string }

const WebhookEndpointRef = builder.objectRef<EndpointShape>('WebhookEndpoint').implement({
  description: 'An app endpoint that receives email events as signed POSTs (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature).',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Endpoint id.' }),
    url: t.exposeString('url', { description: 'Where events are POSTed.' }),
    description: t.exposeString('description', { nullable: true, description: 'Note for humans.' }),
    eventTypes: t.exposeStringList('eventTypes', { description: 'The event types it receives; empty means every type.' }),
    enabled: t.exposeBoolean('enabled', { description: 'Whether events are queued and sent to it.' }),
    disabledReason: t.exposeString('disabledReason', { nullable: true, description: 'Why it was disabled automatically (too many failures in a row, or a 410 Gone).' }),
    consecutiveFailures: t.exposeInt('consecutiveFailures', { description: 'Deliveries that failed for good (attempts exhausted) since the last success.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was created.' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'When it last changed.' }),
    previousSecretExpiresAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'Until when the secret replaced by the last rotation still signs deliveries beside the current one; null when none does.',
      resolve: (e) => (e.previousSecretExpiresAt && e.previousSecretExpiresAt.getTime() > Date.now() ? e.previousSecretExpiresAt : null),
    }),
    deliveries: t.field({
      type: WebhookDeliveryConnection,
      description: 'Its deliveries, newest first.',
      args: {
        first: t.arg.int({ required: false, description: 'Page size, 1-100 (default 20).' }),
        after: t.arg.string({ required: false, description: 'endCursor of the previous page.' }),
        status: t.arg({ type: DeliveryStatusEnum, required: false, description: 'Only this status, e.g. FAILED.' }),
      },
      resolve: (endpoint, args, ctx) => {
        const afterId = deliveryCursor(args.after)
        return paginate(args.first, (limit) => ctx.services.webhooks.endpoints.listDeliveries(endpoint.id, { limit, afterId, status: args.status }), (d) => encodeCursor([d.id]))
      },
    }),
  }),
})

const WebhookEndpointConnection = connectionOf('WebhookEndpoint', WebhookEndpointRef)

const SECRET_DESCRIPTION = 'The signing secret (whsec_...), shown only in this answer: keep it where the receiver can read it.'

const eventTypesDescription = `Event types: ${WEBHOOK_EVENT_TYPES.join(', ')}.`

const CreateWebhookEndpointInput = builder.inputType('CreateWebhookEndpointInput', {
  description: 'A new endpoint.',
  fields: (t) => ({
    url: t.string({ required: true, description: 'https URL (http allowed outside production); private addresses are refused unless WEBHOOKS_ALLOW_PRIVATE_URLS.' }),
    eventTypes: t.stringList({ required: false, description: `${eventTypesDescription} Empty or absent: every type.` }),
    description: t.string({ required: false, description: 'Note for humans, up to 500 characters.' }),
    enabled: t.boolean({ required: false, description: 'Default true.' }),
  }),
})

const UpdateWebhookEndpointInput = builder.inputType('UpdateWebhookEndpointInput', {
  description: 'What to change; absent fields stay as they are.',
  fields: (t) => ({
    url: t.string({ required: false, description: 'New URL, checked like on creation.' }),
    eventTypes: t.stringList({ required: false, description: `${eventTypesDescription} Empty: every type.` }),
    description: t.string({ required: false, description: 'New note; null clears it.' }),
    enabled: t.boolean({ required: false, description: 'true re-enables a disabled endpoint and clears its failure streak.' }),
  }),
})

builder.queryFields((t) => ({
  webhookEndpoint: t.field({
    type: WebhookEndpointRef,
    nullable: true,
    description: 'An outgoing webhook endpoint (admin).',
    authScopes: { admin: true },
    args: { id: t.arg.id({ required: true, description: 'Endpoint id.' }) },
    resolve: (_root, args, ctx) => ctx.services.webhooks.endpoints.findEndpoint(String(args.id)),
  }),
  webhookEndpoints: t.field({
    type: WebhookEndpointConnection,
    description: 'Outgoing webhook endpoints, newest first (admin).',
    authScopes: { admin: true },
    args: {
      first: t.arg.int({ required: false, description: 'Page size, 1-100 (default 20).' }),
      after: t.arg.string({ required: false, description: 'endCursor of the previous page.' }),
    },
    resolve: (_root, args, ctx) => {
      const after = timeCursor(args.after)
      return paginate(args.first, (limit) => ctx.services.webhooks.endpoints.listEndpoints({ limit, after }), timeCursorOf)
    },
  }),
  webhookEventTypes: t.stringList({
    description: 'The event types an endpoint can subscribe to (admin).',
    authScopes: { admin: true },
    resolve: () => [...WEBHOOK_EVENT_TYPES],
  }),
}))

builder.mutationFields((t) => ({
  createWebhookEndpoint: t.field({
    type: WebhookEndpointRef,
    description: 'Subscribes an endpoint to email events; answers its signing secret, once (admin).',
    authScopes: { admin: true },
    errors: { types: [ValidationError, InvalidWebhookUrlError, ConflictError], dataField: { name: 'endpoint', description: 'The new endpoint.' }, result: { fields: (r) => ({ secret: r.string({ description: SECRET_DESCRIPTION, resolve: (e) => e.secret! }) }) } },
    args: { input: t.arg({ type: CreateWebhookEndpointInput, required: true, description: 'The endpoint.' }) },
    resolve: async (_root, { input }, ctx) => {
      const created = await ctx.services.webhooks.endpoints.createEndpoint(input, ctx.viewer!.id)
      return { ...created.endpoint, secret: created.secret }
    },
  }),
  updateWebhookEndpoint: t.field({
    type: WebhookEndpointRef,
    description: 'Changes an endpoint\'s URL, event types, description or enabled state (admin).',
    authScopes: { admin: true },
    errors: { types: [ValidationError, InvalidWebhookUrlError, NotFoundError], dataField: { name: 'endpoint', description: 'The endpoint after the change.' } },
    args: {
      id: t.arg.id({ required: true, description: 'Endpoint id.' }),
      input: t.arg({ type: UpdateWebhookEndpointInput, required: true, description: 'What to change.' }),
    },
    resolve: (_root, args, ctx) => ctx.services.webhooks.endpoints.updateEndpoint(String(args.id), args.input),
  }),
  rotateWebhookEndpointSecret: t.field({
    type: WebhookEndpointRef,
    description:
      'Replaces the signing secret. During the overlap every attempt is signed with both the new and the old secret (two signatures in webhook-signature), so the receiver can switch without rejecting a delivery; then the old one stops (admin).',
    authScopes: { admin: true },
    errors: { types: [ValidationError, NotFoundError], dataField: { name: 'endpoint', description: 'The endpoint.' }, result: { fields: (r) => ({ secret: r.string({ description: SECRET_DESCRIPTION, resolve: (e) => e.secret! }) }) } },
    args: {
      id: t.arg.id({ required: true, description: 'Endpoint id.' }),
      overlapHours: t.arg.int({ required: false, defaultValue: 0, description: 'How long the old secret keeps signing beside the new one, 0-168 hours. 0 (the default, right after a leak) retires it at once; 24 gives receivers a day to switch, as Svix does.' }),
    },
    resolve: async (_root, args, ctx) => {
      const rotated = await ctx.services.webhooks.endpoints.rotateSecret(String(args.id), (args.overlapHours ?? 0) * 3600)
      return { ...rotated.endpoint, secret: rotated.secret }
    },
  }),
  deleteWebhookEndpoint: t.field({
    type: 'ID',
    description: 'Deletes an endpoint and its deliveries, pending ones included (admin).',
    authScopes: { admin: true },
    errors: { types: [NotFoundError], dataField: { name: 'deletedEndpointId', description: 'The id of the deleted endpoint.' } },
    args: { id: t.arg.id({ required: true, description: 'Endpoint id.' }) },
    resolve: (_root, args, ctx) => ctx.services.webhooks.endpoints.deleteEndpoint(String(args.id)),
  }),
  redeliverWebhookDelivery: t.field({
    type: WebhookDeliveryRef,
    description: 'Queues a FAILED delivery again, due now, with fresh attempts and the same webhook-id; its endpoint must be enabled (admin).',
    authScopes: { admin: true },
    errors: { types: [NotFoundError, ConflictError], dataField: { name: 'delivery', description: 'The delivery, PENDING again.' } },
    args: { id: t.arg.id({ required: true, description: 'Delivery id.' }) },
    resolve: (_root, args, ctx) => ctx.services.webhooks.endpoints.redeliver(String(args.id)),
  }),
}))

function deliveryCursor(after: string | null | undefined): number | undefined {
  const [id] = decodeCursor(after) ?? []
  if (id === undefined) return undefined
  if (!Number.isSafeInteger(id)) throw ValidationError.field(['after'], 'The cursor is invalid')
  return id as number
}
