import { createRequire } from 'node:module'
import type net from 'node:net'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import WebSocket from 'ws'
import { buildTestApp, type TestApp } from './helpers/app'

const require = createRequire(import.meta.url)

type Message = { type: string; id?: string; payload?: unknown }

/** A bare graphql-transport-ws connection, to send what a well-behaved client never would. */
async function connect(url: string, token?: string) {
  const ws = new WebSocket(url, 'graphql-transport-ws')
  const messages: Message[] = []
  const waiting = new Set<() => void>()
  ws.on('message', (data) => {
    messages.push(JSON.parse(String(data)) as Message)
    for (const wake of waiting) wake()
  })
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })))
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject))
  const next = (match: (m: Message) => boolean, timeoutMs = 5_000) =>
    new Promise<Message>((resolve, reject) => {
      const look = () => {
        const i = messages.findIndex(match)
        if (i < 0) return
        waiting.delete(look)
        clearTimeout(timer)
        resolve(messages.splice(i, 1)[0]!)
      }
      const timer = setTimeout(() => {
        waiting.delete(look)
        reject(new Error(`no such message in ${timeoutMs} ms; got ${JSON.stringify(messages)}`))
      }, timeoutMs)
      waiting.add(look)
      look()
    })
  const send = (message: Message) => ws.send(JSON.stringify(message))
  send({ type: 'connection_init', payload: token ? { authorization: `Bearer ${token}` } : {} })
  await next((m) => m.type === 'connection_ack')
  const subscribe = (id: string, query: string) => send({ type: 'subscribe', id, payload: { query } })
  return { ws, send, next, subscribe, closed, close: () => ws.close() }
}

type Held = { subscriptionContexts: Map<unknown, unknown>; subscriptionIters: Map<unknown, unknown> }

/** Records each mercurius connection that starts a subscription, to look into what it holds; restore() undoes it. */
function captureConnections() {
  const { prototype } = require('mercurius/lib/subscription-connection.js') as { prototype: { handleGQLStart: (data: unknown) => Promise<void> } }
  const start = prototype.handleGQLStart
  const connections = new Set<Held>()
  prototype.handleGQLStart = function (this: Held, data: unknown) {
    connections.add(this)
    return start.call(this, data)
  }
  return { connections, restore: () => (prototype.handleGQLStart = start) }
}

const STATS = 'subscription { cacheStats(intervalMs: 60000) { hits } }'

describe('subscriptions per WebSocket connection', () => {
  let t: TestApp
  let url: string
  beforeAll(async () => {
    t = await buildTestApp({ redis: false, env: { GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION: '2' } })
    await t.app.listen({ host: '127.0.0.1', port: 0 })
    url = `ws://127.0.0.1:${(t.app.server.address() as net.AddressInfo).port}/graphql`
  })
  afterAll(() => t.close())

  it('runs at most the configured number at once, and takes another once one completes', async () => {
    const c = await connect(url, t.token('admin'))
    try {
      c.subscribe('a', STATS)
      c.subscribe('b', STATS)
      await c.next((m) => m.type === 'next' && m.id === 'a')
      await c.next((m) => m.type === 'next' && m.id === 'b')
      c.subscribe('c', STATS)
      const refused = await c.next((m) => m.id === 'c')
      expect(refused).toMatchObject({ type: 'error', payload: [{ message: expect.stringMatching(/Too many subscriptions.*at most 2/), extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } }] })
      c.send({ type: 'complete', id: 'a' })
      // The id of a completed subscription is free again, as is its place.
      c.subscribe('a', STATS)
      await c.next((m) => m.type === 'next' && m.id === 'a')
    } finally {
      c.close()
    }
  })

  it('forgets a subscription that failed to start: refusals neither use up places nor stay in the connection', async () => {
    // mercurius's connection holds a subscription's context and result under its id; the refusals must not stay there.
    const { connections, restore } = captureConnections()
    const c = await connect(url, t.token('user'))
    try {
      for (let i = 0; i < 10; i++) {
        c.subscribe(`refused-${i}`, STATS)
        expect(await c.next((m) => m.id === `refused-${i}`)).toMatchObject({ type: 'error', payload: [{ message: expect.stringMatching(/not allowed|FORBIDDEN/i) }] })
      }
      c.subscribe('invalid', 'subscription { cacheStats { nope } }')
      expect(await c.next((m) => m.id === 'invalid')).toMatchObject({ type: 'error', payload: [{ message: expect.stringMatching(/Cannot query field/) }] })
      expect(connections.size).toBe(1)
      const [held] = connections
      expect([held!.subscriptionContexts.size, held!.subscriptionIters.size]).toEqual([0, 0])
      // Both places are still free.
      c.subscribe('p1', 'subscription { uploadProgress(uploadId: "one") { stage } }')
      c.subscribe('p2', 'subscription { uploadProgress(uploadId: "two") { stage } }')
      c.subscribe('p3', 'subscription { uploadProgress(uploadId: "three") { stage } }')
      expect(await c.next((m) => m.id === 'p3')).toMatchObject({ type: 'error', payload: [{ extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } }] })
      expect(held!.subscriptionContexts.size).toBe(2)
    } finally {
      restore()
      c.close()
    }
  })

  it('sends a start that failed inside its resolver through the error formatter: no internals, a code', async () => {
    const files = t.app.services.files
    const snapshot = files.progressSnapshot
    files.progressSnapshot = () => Promise.reject(new Error('Failed query: select secret from upload_progress'))
    const c = await connect(url, t.token('user'))
    try {
      c.subscribe('broken', 'subscription { uploadProgress(uploadId: "u-1") { stage } }')
      const refused = await c.next((m) => m.id === 'broken')
      expect(refused).toMatchObject({ type: 'error', payload: [{ message: 'Internal server error', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] })
      expect(JSON.stringify(refused)).not.toContain('secret')
      // A refusal of the app's own keeps its message and gains its code.
      c.subscribe('invalid', 'subscription { cacheStats { hits } }')
      expect(await c.next((m) => m.id === 'invalid')).toMatchObject({ type: 'error', payload: [{ extensions: { code: 'FORBIDDEN' } }] })
    } finally {
      files.progressSnapshot = snapshot
      c.close()
    }
  })

  it('stops a subscription completed while it was still starting: it sends nothing, keeps nothing and counts until its iterator is returned', async () => {
    const { connections, restore } = captureConnections()
    const c = await connect(url, t.token('admin'))
    try {
      // Subscribe and complete at once, twenty times: each start is still in its hooks when its complete lands.
      for (let i = 0; i < 20; i++) {
        c.subscribe(`s${i}`, 'subscription { cacheStats(intervalMs: 250) { hits } }')
        c.send({ type: 'complete', id: `s${i}` })
      }
      await vi.waitFor(() => expect(connections.size).toBe(1))
      const [held] = connections
      await vi.waitFor(() => expect([held!.subscriptionContexts.size, held!.subscriptionIters.size]).toEqual([0, 0]), { timeout: 5_000 })
      // Both places are free once those runs have ended: two more run, a third is refused.
      c.subscribe('x1', STATS)
      c.subscribe('x2', STATS)
      await c.next((m) => m.type === 'next' && m.id === 'x1')
      await c.next((m) => m.type === 'next' && m.id === 'x2')
      c.subscribe('x3', STATS)
      expect(await c.next((m) => m.id === 'x3')).toMatchObject({ type: 'error', payload: [{ extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } }] })
      // Not one message for an id the client had completed (the limit refused some of them, as errors, while earlier runs were ending).
      await expect(c.next((m) => /^s\d+$/.test(m.id ?? '') && m.type !== 'error', 600)).rejects.toThrow(/no such message/)
    } finally {
      restore()
      c.close()
    }
  })

  it('lets a completed id be reused at once, and the old run never ends the new one', async () => {
    const c = await connect(url, t.token('admin'))
    try {
      const ticking = 'subscription { cacheStats(intervalMs: 250) { hits } }'
      c.subscribe('a', ticking)
      await c.next((m) => m.type === 'next' && m.id === 'a')
      c.send({ type: 'complete', id: 'a' })
      c.subscribe('a', ticking)
      // The new `a` ticks on; the old one's end sends no complete for it.
      for (let i = 0; i < 3; i++) await c.next((m) => m.id === 'a' && m.type === 'next')
      await expect(c.next((m) => m.id === 'a' && m.type === 'complete', 300)).rejects.toThrow(/no such message/)
    } finally {
      c.close()
    }
  })

  it('closes a connection with 4401 when its token expires, running subscriptions and all', async () => {
    const c = await connect(url, t.token('admin', 'adm', { expiresInSeconds: 2 }))
    c.subscribe('ticks', 'subscription { cacheStats(intervalMs: 250) { hits } }')
    await c.next((m) => m.type === 'next' && m.id === 'ticks')
    expect(await c.closed).toEqual({ code: 4401, reason: 'The token has expired: connect again with a new one' })
  })

  it('refuses a subscribe on a connection whose token has expired since it connected', async () => {
    const c = await connect(url, t.token('admin', 'adm', { expiresInSeconds: 1 }))
    await new Promise((resolve) => setTimeout(resolve, 1_200))
    c.subscribe('late', STATS)
    expect(await c.closed).toMatchObject({ code: 4401 })
  })

  it('closes the connection with 4409 when a second subscription takes a running one’s id', async () => {
    const c = await connect(url, t.token('admin'))
    c.subscribe('same', STATS)
    await c.next((m) => m.type === 'next' && m.id === 'same')
    c.subscribe('same', STATS)
    expect(await c.closed).toEqual({ code: 4409, reason: 'Subscriber for same already exists' })
  })
})
