/**
 * The subscriptions of one WebSocket connection, kept in bounds that mercurius (16.x) does not keep:
 * - **At most `max` at once** (GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION): a further one is refused
 *   with TOO_MANY_SUBSCRIPTIONS. A subscription counts from its `subscribe` until it has ended or its
 *   iterator has been returned: one the client completed while it was still starting counts until then.
 * - **One operation per id**: mercurius replaced a running subscription's context with a new one of
 *   the same id and left the first running, unreachable. The graphql-transport-ws protocol says a
 *   server closes the socket with 4409 then, which is done here for either protocol. An id is free
 *   again as soon as the client completes it.
 * - **A completed subscription is over at once.** mercurius stored a subscription's iterator only
 *   once its start was done, so a `complete` that arrived before (a client that subscribes and
 *   unsubscribes quickly) found nothing to stop, and the subscription ran on, uncounted, sending
 *   `next` for an id the client had completed. A run the client completed now stores nothing more
 *   (what it would store is closed instead) and sends nothing more, and its own late `complete` never
 *   ends a new subscription that reused its id.
 * - **A subscription that fails to start is forgotten.** mercurius keeps a subscription's context
 *   (and, when `subscribe` refused it, the refusal) from before its hooks run, and only a `complete`
 *   or the socket closing removed them; a client is sent nothing to complete after an error, so
 *   every refused start (a scope check, a bad argument, a hook) stayed until the socket closed.
 * - **Nothing outlives its credentials**: a connection whose token has expired is closed with 4401
 *   (at expiry, or at its next `subscribe`); mercurius checked the token once, at connect.
 * - **An error that ends a start goes through the app's error formatter**, as every other error does:
 *   mercurius sent it as thrown, so an internal failure in a `subscribe` resolver (a database error,
 *   with its SQL) reached the client.
 *
 * There are no hooks for these, so the connection class's start, complete and send are wrapped, once
 * per process, in the module mercurius itself loaded (the package has no `exports` map). Which run is
 * calling is known from an AsyncLocalStorage entered for each start. The settings are read from the
 * Fastify instance the connection serves, so an app that does not set them gets mercurius's behaviour.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
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
  /** When the connection's credentials expire (epoch ms), read from its context; undefined: never. */
  expiresAt?: (context: Record<string, unknown>) => number | undefined
}

/** The graphql-transport-ws close code for a connection whose credentials are no longer valid. */
export const UNAUTHORIZED = 4401
const EXPIRED = 'The token has expired: connect again with a new one'
/** setTimeout's longest delay; a later expiry re-arms the timer. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** The graphql-transport-ws close code for a second operation with a running one's id. */
export const SUBSCRIBER_EXISTS = 4409

interface StartMessage {
  id?: unknown
}

/** What mercurius's SubscriptionConnection has that is used here. */
interface Connection {
  fastify: FastifyInstance & { [kLimits]?: SubscriptionLimits }
  socket: { close(code: number, reason: string): void; once(event: 'close', listener: () => void): void }
  /** The connection's context, with what onConnect returned. */
  context: Record<string, unknown>
  subscriptionContexts: Map<unknown, { close?: () => void }>
  subscriptionIters: Map<unknown, { return?: () => unknown }>
  handleGQLStart(data: StartMessage): Promise<void>
  handleGQLComplete(id: unknown): void
  sendMessage(type: string, id: unknown, payload: unknown): Promise<void>
}

/** One start of a subscription, from `subscribe` until mercurius is done with it. */
interface Run {
  /** The client completed it: it may store and send nothing more. */
  cancelled: boolean
}

interface ConnectionState {
  /** The run each id is the client's name for now. */
  byId: Map<unknown, Run>
  /** Every run that holds or may still create an iterator: what counts against the limit. */
  runs: Set<Run>
}

const states = new WeakMap<Connection, ConnectionState>()
/** The run whose start the current code belongs to; none for the socket's own messages. */
const running = new AsyncLocalStorage<Run>()

/** A connection's map that a completed run cannot store into: what it would store is discarded. */
class RunMap<V> extends Map<unknown, V> {
  private discard: (value: V, run: Run) => void = () => {}

  static replacing<V>(map: Map<unknown, V>, discard: (value: V, run: Run) => void): RunMap<V> {
    const guarded = new RunMap<V>()
    for (const [key, value] of map) guarded.set(key, value)
    guarded.discard = discard
    return guarded
  }

  override set(key: unknown, value: V): this {
    const run = running.getStore()
    if (run?.cancelled) {
      this.discard(value, run)
      return this
    }
    return super.set(key, value)
  }
}

function stateOf(connection: Connection, expiresAt: number | undefined): ConnectionState {
  let state = states.get(connection)
  if (!state) {
    const created: ConnectionState = { byId: new Map(), runs: new Set() }
    state = created
    states.set(connection, state)
    if (expiresAt !== undefined) closeAt(connection, expiresAt)
    connection.subscriptionContexts = RunMap.replacing(connection.subscriptionContexts, (context) => context.close?.())
    // A completed run's iterator, returned as soon as it exists: the run holds nothing more and stops counting.
    connection.subscriptionIters = RunMap.replacing(connection.subscriptionIters, (iterator, run) => {
      void iterator.return?.()
      created.runs.delete(run)
    })
  }
  return state
}

/** Closes the connection when its credentials expire: what it runs was authorised by them. */
function closeAt(connection: Connection, at: number): void {
  let timer: NodeJS.Timeout | undefined
  const arm = (): void => {
    const wait = at - Date.now()
    if (wait <= 0) return connection.socket.close(UNAUTHORIZED, EXPIRED)
    timer = setTimeout(arm, Math.min(wait, MAX_TIMER_MS))
    timer.unref()
  }
  arm()
  connection.socket.once('close', () => clearTimeout(timer))
}

let wrapped = false

function wrapConnections(): void {
  if (wrapped) return
  wrapped = true
  const { prototype } = require('mercurius/lib/subscription-connection.js') as { prototype: Connection }
  const { handleGQLStart: start, handleGQLComplete: complete, sendMessage: send } = prototype

  // A start's promise lasts as long as its subscription runs: it settles when the subscription ends.
  prototype.handleGQLStart = async function (this: Connection, data: StartMessage) {
    const limits = this.fastify[kLimits]
    if (limits === undefined) return start.call(this, data)
    const expiresAt = limits.expiresAt?.(this.context)
    if (expiresAt !== undefined && expiresAt <= Date.now()) {
      this.socket.close(UNAUTHORIZED, EXPIRED)
      return
    }
    const state = stateOf(this, expiresAt)
    const { id } = data
    if (state.byId.has(id)) {
      this.socket.close(SUBSCRIBER_EXISTS, `Subscriber for ${String(id).slice(0, 64)} already exists`)
      return
    }
    if (state.runs.size >= limits.maxPerConnection) {
      throw new GraphQLError(`Too many subscriptions on this connection (at most ${limits.maxPerConnection}): complete one before starting another`, {
        extensions: { code: 'TOO_MANY_SUBSCRIPTIONS', max: limits.maxPerConnection },
      })
    }
    const run: Run = { cancelled: false }
    state.byId.set(id, run)
    state.runs.add(run)
    try {
      await running.run(run, () => start.call(this, data))
    } catch (err) {
      // Still this run's id (no complete came for it): what mercurius holds under it is this run's.
      if (state.byId.get(id) === run) complete.call(this, id)
      // Completed by the client meanwhile: it hears nothing more of it.
      if (run.cancelled) return
      throw limits.formatError(err)
    } finally {
      state.runs.delete(run)
      if (state.byId.get(id) === run) state.byId.delete(id)
    }
  }

  prototype.handleGQLComplete = function (this: Connection, id: unknown) {
    const state = states.get(this)
    if (state === undefined) return complete.call(this, id)
    const caller = running.getStore()
    const run = state.byId.get(id)
    // mercurius completing a run at its end: not when the client completed it first (the id may be another run's now).
    if (caller !== undefined && run !== caller) return
    // Its iterator, when mercurius has stored it, is returned by the complete below.
    const stopped = run !== undefined && this.subscriptionIters.has(id)
    if (run !== undefined) {
      state.byId.delete(id)
      // The client's complete: the run stops here, even if its start is not done yet.
      if (caller === undefined) run.cancelled = true
    }
    complete.call(this, id)
    if (stopped) state.runs.delete(run)
  }

  prototype.sendMessage = function (this: Connection, type: string, id: unknown, payload: unknown) {
    if (running.getStore()?.cancelled) return Promise.resolve()
    return send.call(this, type, id, payload)
  }
}

/** Applies the bounds above to the app's WebSocket subscriptions. */
export function limitSubscriptions(app: FastifyInstance, limits: SubscriptionLimits): void {
  wrapConnections()
  app.decorate(kLimits, limits)
}
