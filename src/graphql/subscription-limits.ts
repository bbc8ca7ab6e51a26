/**
 * Bounds on the subscriptions of one WebSocket connection, which mercurius (16.x) does not keep:
 * - **At most `max` at once** (GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION): a further one is refused
 *   with TOO_MANY_SUBSCRIPTIONS until one of them completes. Without it one connection could start
 *   any number, each with its own timer or listener.
 * - **One operation per id**: mercurius replaced a running subscription's context with a new one of
 *   the same id and left the first running, unreachable. The graphql-transport-ws protocol says a
 *   server closes the socket with 4409 then, which is done here for either protocol.
 * - **A subscription that fails to start is forgotten.** mercurius keeps a subscription's context
 *   (and, when `subscribe` refused it, the refusal) in the connection's maps from before its hooks run,
 *   and only a `complete` from the client or the socket closing removes them. A client is not sent
 *   anything to complete after an error, so every refused start (a scope check, a bad argument, a
 *   hook) stayed until the socket closed: one connection could grow them without bound.
 *
 * - **An error that ends a start goes through the app's error formatter**, as every other error does:
 *   mercurius sent it as thrown, so an internal failure in a `subscribe` resolver (a database error,
 *   with its SQL) reached the client.
 *
 * There is no hook for these, so the connection class's start handler is wrapped, once per process,
 * in the module mercurius itself loaded (the package has no `exports` map). The settings are read from
 * the Fastify instance the connection serves, so an app that does not set them gets mercurius's behaviour.
 */
import { createRequire } from 'node:module'
import type { FastifyInstance } from 'fastify'
import { GraphQLError } from 'graphql'

const require = createRequire(import.meta.url)

/** The app's settings, as decorated on it (read by the wrapped start handler). */
const kLimits = Symbol('graphql.subscriptionLimits')

export interface SubscriptionLimits {
  /** Subscriptions one connection may run at once. */
  maxPerConnection: number
  /** What the client is sent for an error that ended a start: mercurius sends it as it was thrown, internals included. */
  formatError: (err: unknown) => Error
}

/** The graphql-transport-ws close code for a second operation with a running one's id. */
export const SUBSCRIBER_EXISTS = 4409

interface StartMessage {
  id?: unknown
}

interface Connection {
  fastify: FastifyInstance & { [kLimits]?: SubscriptionLimits }
  socket: { close(code: number, reason: string): void }
  handleGQLStart(data: StartMessage): Promise<void>
  handleGQLComplete(id: unknown): void
}

/** The ids of each connection's running subscriptions, each with a mark of the start that holds it. */
const running = new WeakMap<Connection, Map<unknown, object>>()

let wrapped = false

function wrapStart(): void {
  if (wrapped) return
  wrapped = true
  const { prototype } = require('mercurius/lib/subscription-connection.js') as { prototype: Connection }
  const { handleGQLStart: start, handleGQLComplete: complete } = prototype
  // A start's promise lasts as long as its subscription runs: it settles when the subscription ends.
  prototype.handleGQLStart = async function (this: Connection, data: StartMessage) {
    const limits = this.fastify[kLimits]
    if (limits === undefined) return start.call(this, data)
    const max = limits.maxPerConnection
    let ids = running.get(this)
    if (!ids) running.set(this, (ids = new Map()))
    const { id } = data
    if (ids.has(id)) {
      this.socket.close(SUBSCRIBER_EXISTS, `Subscriber for ${String(id).slice(0, 64)} already exists`)
      return
    }
    if (ids.size >= max) {
      throw new GraphQLError(`Too many subscriptions on this connection (at most ${max}): complete one before starting another`, {
        extensions: { code: 'TOO_MANY_SUBSCRIPTIONS', max },
      })
    }
    const mark = {}
    ids.set(id, mark)
    try {
      await start.call(this, data)
    } catch (err) {
      // Still this start's id (no complete came for it): what mercurius holds under it is this start's.
      if (ids.get(id) === mark) this.handleGQLComplete(id)
      throw limits.formatError(err)
    } finally {
      if (ids.get(id) === mark) ids.delete(id)
    }
  }
  // A complete (the client's, or mercurius's at the end) frees the id at once.
  prototype.handleGQLComplete = function (this: Connection, id: unknown) {
    running.get(this)?.delete(id)
    complete.call(this, id)
  }
}

/** Applies the bounds above to the app's WebSocket subscriptions. */
export function limitSubscriptions(app: FastifyInstance, limits: SubscriptionLimits): void {
  wrapStart()
  app.decorate(kLimits, limits)
}
