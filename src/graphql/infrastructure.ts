import type { InstanceInfo, SystemStats } from '../services/system/system-monitor'
import { builder } from './builder'
import { EmailInfrastructureStatsRef } from './tracking'

const InstanceRef = builder.objectRef<InstanceInfo>('Instance').implement({
  description: 'A running instance, as its heartbeat reports it.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'hostname-pid-random.' }),
    hostname: t.exposeString('hostname', { description: 'Host it runs on.' }),
    pid: t.exposeInt('pid', { description: 'Process id.' }),
    version: t.exposeString('version', { description: 'Groundwork version it runs.' }),
    startedAt: t.expose('startedAt', { type: 'DateTime', description: 'When it started.' }),
    lastSeenAt: t.expose('lastSeenAt', { type: 'DateTime', description: 'Its latest heartbeat.' }),
    self: t.exposeBoolean('self', { description: 'True for the instance answering this query.' }),
  }),
})

const LagRef = builder.objectRef<SystemStats['eventLoopLagMs']>('EventLoopLag').implement({
  description: 'Event-loop delay of the answering instance since it started, in milliseconds.',
  fields: (t) => ({
    p50: t.exposeFloat('p50', { description: 'Median.' }),
    p99: t.exposeFloat('p99', { description: '99th percentile.' }),
    max: t.exposeFloat('max', { description: 'Worst seen.' }),
  }),
})

const MemoryRef = builder.objectRef<SystemStats['memory']>('ProcessMemory').implement({
  description: 'Memory of the answering instance.',
  fields: (t) => ({
    rssBytes: t.exposeFloat('rssBytes', { description: 'Resident set size.' }),
    heapUsedBytes: t.exposeFloat('heapUsedBytes', { description: 'V8 heap in use.' }),
  }),
})

const SystemStatsRef = builder.objectRef<SystemStats>('SystemStats').implement({
  description: 'The process and the cluster of instances.',
  fields: (t) => ({
    version: t.exposeString('version', { description: 'Groundwork version of the answering instance.' }),
    nodeVersion: t.exposeString('nodeVersion', { description: 'Node.js version.' }),
    uptimeSeconds: t.exposeFloat('uptimeSeconds', { description: 'Seconds since the answering instance started.' }),
    instanceId: t.exposeID('instanceId', { description: 'The answering instance.' }),
    instances: t.field({ type: [InstanceRef], description: 'Instances with a heartbeat in the last 30 s, newest first.', resolve: (s) => s.instances }),
    eventLoopLagMs: t.field({ type: LagRef, description: 'Event-loop delay.', resolve: (s) => s.eventLoopLagMs }),
    memory: t.field({ type: MemoryRef, description: 'Process memory.', resolve: (s) => s.memory }),
  }),
})

/** Each section resolves lazily, so a client pays only for what it selects. */
const InfrastructureStatsRef = builder.objectRef<Record<string, never>>('InfrastructureStats').implement({
  description: 'Operational figures in one place (admin). Everything is read from counters and rollups, never a full scan.',
  fields: (t) => ({
    system: t.field({ type: SystemStatsRef, description: 'Uptime, version, instances and event-loop lag.', resolve: (_s, _a, ctx) => ctx.services.system.stats() }),
    email: t.field({ type: EmailInfrastructureStatsRef, description: 'Campaign email: sent, delivered and failed over 1, 7 and 30 days, delivery rate, campaign success, queue and webhook backlog.', resolve: (_s, _a, ctx) => ctx.services.tracking.analytics.infrastructureStats() }),
  }),
})

builder.queryField('infrastructureStats', (t) =>
  t.field({
    type: InfrastructureStatsRef,
    description: 'Cache, files, email and system figures (admin).',
    authScopes: { admin: true },
    resolve: () => ({}),
  }),
)
