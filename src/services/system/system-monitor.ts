import { randomBytes } from 'node:crypto'
import os from 'node:os'
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import type { InstanceRepository, InstanceRow } from '../../infra/db/instance-repository'

export interface InstanceInfo {
  id: string
  hostname: string
  pid: number
  version: string
  startedAt: Date
  lastSeenAt: Date
  self: boolean
}

export interface SystemStats {
  version: string
  nodeVersion: string
  uptimeSeconds: number
  instanceId: string
  instances: InstanceInfo[]
  eventLoopLagMs: { p50: number; p99: number; max: number }
  memory: { rssBytes: number; heapUsedBytes: number }
}

export interface SystemMonitorOptions {
  version: string
  heartbeatMs?: number
  /** An instance silent for longer than this is no longer listed. */
  staleAfterMs?: number
  logger?: { warn(obj: object, msg?: string): void }
}

/**
 * Uptime, version, event-loop lag, and the instances seen recently: each instance upserts a
 * heartbeat row, so `instances` lists whoever is alive whatever the load balancer does.
 */
export class SystemMonitor {
  readonly instanceId = `${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
  private readonly startedAt = new Date()
  private readonly lag: IntervalHistogram = monitorEventLoopDelay({ resolution: 20 })
  private timer: NodeJS.Timeout | undefined
  private readonly heartbeatMs: number
  private readonly staleAfterMs: number

  constructor(
    private readonly repo: InstanceRepository,
    private readonly options: SystemMonitorOptions,
  ) {
    this.heartbeatMs = options.heartbeatMs ?? 10_000
    this.staleAfterMs = options.staleAfterMs ?? 3 * this.heartbeatMs
  }

  async start(): Promise<void> {
    this.lag.enable()
    await this.beat()
    this.timer = setInterval(() => void this.beat(), this.heartbeatMs)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    this.lag.disable()
    await this.repo.remove(this.instanceId).catch(() => {})
  }

  async stats(): Promise<SystemStats> {
    const rows = await this.repo.seenSince(new Date(Date.now() - this.staleAfterMs))
    const ns = (v: number) => Math.round((v / 1e6) * 100) / 100
    const mem = process.memoryUsage()
    return {
      version: this.options.version,
      nodeVersion: process.version,
      uptimeSeconds: Math.round((Date.now() - this.startedAt.getTime()) / 1000),
      instanceId: this.instanceId,
      instances: rows.map((r: InstanceRow) => ({ ...r, self: r.id === this.instanceId })),
      eventLoopLagMs: this.lag.count > 0 ? { p50: ns(this.lag.percentile(50)), p99: ns(this.lag.percentile(99)), max: ns(this.lag.max) } : { p50: 0, p99: 0, max: 0 },
      memory: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed },
    }
  }

  private async beat(): Promise<void> {
    try {
      await this.repo.heartbeat({ id: this.instanceId, hostname: os.hostname(), pid: process.pid, version: this.options.version, startedAt: this.startedAt })
      await this.repo.prune(new Date(Date.now() - 24 * 3600_000))
    } catch (err) {
      // A missed heartbeat (database restarting) only makes this instance look stale for a while.
      this.options.logger?.warn({ err }, 'instance heartbeat failed')
    }
  }
}
