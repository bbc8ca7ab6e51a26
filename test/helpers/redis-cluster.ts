/**
 * A real, local three-master Redis Cluster for tests: started from /usr/bin/redis-server and joined
 * with `redis-cli --cluster create`. Callers skip their tests when it cannot be formed.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'

const run = promisify(execFile)
const REDIS_SERVER = '/usr/bin/redis-server'
const REDIS_CLI = 'redis-cli'

export interface LocalCluster {
  dir: string
  ports: number[]
  processes: ChildProcess[]
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

/** A cluster node also listens on port + 10000 (the cluster bus): both must be free. */
async function freePorts(count: number): Promise<number[]> {
  const ports: number[] = []
  for (let attempt = 0; ports.length < count && attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 30_000)
    if (ports.includes(port)) continue
    if ((await portFree(port)) && (await portFree(port + 10_000))) ports.push(port)
  }
  if (ports.length < count) throw new Error('no free port pairs found')
  return ports
}

async function clusterOk(port: number): Promise<boolean> {
  try {
    const { stdout } = await run(REDIS_CLI, ['-p', String(port), 'cluster', 'info'])
    return stdout.includes('cluster_state:ok')
  } catch {
    return false
  }
}

/** Three real redis-server processes joined into a cluster (no replicas). */
export async function startCluster(): Promise<LocalCluster> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gw-cache-cluster-'))
  const local: LocalCluster = { dir, ports: await freePorts(3), processes: [] }
  try {
    for (const port of local.ports) {
      const child = spawn(
        REDIS_SERVER,
        ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, `nodes-${port}.conf`),
          '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no'],
        { stdio: 'ignore' },
      )
      // A missing binary is reported by the ping loop below, not as an unhandled 'error' event.
      child.on('error', () => {})
      local.processes.push(child)
    }
    for (const port of local.ports) {
      const deadline = Date.now() + 5_000
      while (!(await run(REDIS_CLI, ['-p', String(port), 'ping']).then((r) => r.stdout.includes('PONG'), () => false))) {
        if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not start`)
        await sleep(50)
      }
    }
    await run(REDIS_CLI, ['--cluster', 'create', ...local.ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'])
    const deadline = Date.now() + 15_000
    while (!(await Promise.all(local.ports.map(clusterOk))).every(Boolean)) {
      if (Date.now() > deadline) throw new Error('cluster_state never became ok')
      await sleep(100)
    }
    return local
  } catch (err) {
    await stopCluster(local)
    throw err
  }
}

export async function stopCluster(local: LocalCluster): Promise<void> {
  await Promise.all(
    local.processes.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return resolve()
          child.once('exit', () => resolve())
          child.kill('SIGKILL')
        }),
    ),
  )
  await rm(local.dir, { recursive: true, force: true })
}

