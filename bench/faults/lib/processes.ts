/**
 * The processes a fault script starts and kills: a private redis-server, and app instances run as
 * `node --import tsx src/main.ts`, exactly as in production but for the environment.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { openSync, closeSync } from 'node:fs'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'

const ROOT = fileURLToPath(new URL('../../..', import.meta.url))
const REDIS_SERVER = '/usr/bin/redis-server'

/** A port nothing listens on right now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** Polls `condition` until it returns a truthy value; returns it. Throws after `timeoutMs`. */
export async function waitFor<T>(what: string, condition: () => Promise<T> | T, timeoutMs = 30_000, intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const value = await condition()
    if (value) return value as NonNullable<T>
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(intervalMs)
  }
}

/** Resolves once the child has exited (at once if it already has). */
function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

async function terminate(child: ChildProcess, signal: NodeJS.Signals, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited(child)
  clearTimeout(timer)
}

function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.setTimeout(500)
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.once('data', (data) => {
      socket.destroy()
      resolve(data.toString().startsWith('+PONG'))
    })
    socket.once('error', () => resolve(false))
    socket.once('timeout', () => {
      socket.destroy()
      resolve(false)
    })
  })
}

export interface RedisServer {
  port: number
  url: string
  /** SIGKILL: no shutdown, no goodbye to clients. */
  kill(): Promise<void>
  /** Starts it again on the same port, empty (no persistence). */
  start(): Promise<void>
  stop(): Promise<void>
}

/** A redis-server of its own on a free port, without persistence, so killing it touches nobody else. */
export async function startRedisServer(): Promise<RedisServer> {
  const port = await freePort()
  let child: ChildProcess | undefined
  const start = async () => {
    child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], { stdio: 'ignore' })
    child.on('error', () => {})
    await waitFor(`redis-server on port ${port}`, () => redisPing(port), 10_000)
  }
  await start()
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill: async () => {
      if (child) await terminate(child, 'SIGKILL')
    },
    start,
    stop: async () => {
      if (child) await terminate(child, 'SIGTERM')
    },
  }
}

export interface AppProcess {
  name: string
  url: string
  pid: number
  logFile: string
  /** Sends the signal and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>
  readonly alive: boolean
}

/** `src/main.ts` in a child process with `env` on top of this process's environment; resolves once /healthz answers. */
export async function spawnApp(name: string, env: Record<string, string | undefined>, logFile: string): Promise<AppProcess> {
  const port = await freePort()
  const log = openSync(logFile, 'a')
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, HOST: '127.0.0.1', PORT: String(port), ...env },
    stdio: ['ignore', log, log],
  })
  closeSync(log)
  child.on('error', () => {})
  const url = `http://127.0.0.1:${port}`
  const handle: AppProcess = {
    name,
    url,
    pid: child.pid ?? -1,
    logFile,
    kill: (signal = 'SIGTERM') => terminate(child, signal, signal === 'SIGKILL' ? 0 : 15_000),
    get alive() {
      return child.exitCode === null && child.signalCode === null
    },
  }
  try {
    await waitFor(`${name} to answer /healthz (log: ${logFile})`, async () => {
      if (!handle.alive) throw new Error(`${name} exited during boot (code ${child.exitCode}, signal ${child.signalCode}); see ${logFile}`)
      return fetch(`${url}/healthz`).then((r) => r.ok, () => false)
    }, 60_000, 100)
  } catch (err) {
    await handle.kill('SIGKILL')
    throw err
  }
  return handle
}
