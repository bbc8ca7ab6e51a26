/**
 * A TCP pass-through in front of a real service, so a test can take the service
 * "down" (stop), drop live connections (cutAll) or stall replies (pause) without
 * touching the server other tests share.
 */
import net from 'node:net'

export interface TcpProxy {
  readonly port: number
  /** Destroys every live connection; new ones are still accepted. */
  cutAll(): void
  /** Stops accepting and drops every connection: clients see the service as down. */
  stop(): Promise<void>
  /** Listens again on the same port. */
  start(): Promise<void>
  /** Holds upstream replies back, like a server that stopped answering. */
  pause(): void
  resume(): void
}

export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>()
  // Upstream -> its client, for pause and resume.
  const links = new Map<net.Socket, net.Socket>()
  let paused = false
  let port = 0

  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, targetHost)
    sockets.add(client).add(upstream)
    links.set(upstream, client)
    client.pipe(upstream)
    if (!paused) upstream.pipe(client)
    const teardown = (): void => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
      links.delete(upstream)
    }
    client.on('error', teardown).on('close', teardown)
    upstream.on('error', teardown).on('close', teardown)
  })

  const listen = (): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen({ port, host: '127.0.0.1' }, () => {
        server.off('error', reject)
        port = (server.address() as net.AddressInfo).port
        resolve()
      })
    })

  const cutAll = (): void => {
    for (const socket of sockets) socket.destroy()
    sockets.clear()
    links.clear()
  }

  await listen()

  return {
    get port() {
      return port
    },
    cutAll,
    stop: async () => {
      if (!server.listening) return
      const closed = new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())))
      cutAll()
      await closed
    },
    start: async () => {
      if (!server.listening) await listen()
    },
    pause: () => {
      paused = true
      for (const [upstream, client] of links) {
        upstream.unpipe(client)
        upstream.pause()
      }
    },
    resume: () => {
      paused = false
      for (const [upstream, client] of links) upstream.pipe(client)
    },
  }
}
