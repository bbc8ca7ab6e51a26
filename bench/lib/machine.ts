/** What the benchmark ran on, for the header of bench/RESULTS.md. */
import { existsSync } from 'node:fs'
import os from 'node:os'

export interface MachineInfo {
  cpuModel: string
  cores: number
  ramBytes: number
  node: string
  platform: string
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus()
  return {
    cpuModel: cpus[0]?.model.trim() || 'unknown',
    // availableParallelism honours CPU affinity (containers); cpus().length does not.
    cores: typeof os.availableParallelism === 'function' ? os.availableParallelism() : cpus.length,
    ramBytes: os.totalmem(),
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
  }
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`
}

export function formatMachine(m: MachineInfo): string {
  return `${m.cpuModel}, ${m.cores} cores, ${formatBytes(m.ramBytes)} RAM, Node ${m.node}, ${m.platform}`
}

/**
 * sharp runs with concurrency 1 under glibc unless jemalloc is preloaded (see ARCHITECTURE.md,
 * "Known traps"). The bench runner preloads it into every child process when it is installed.
 */
export const JEMALLOC_PATH = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2'

/** The environment with jemalloc added to LD_PRELOAD, or unchanged when the library is absent. */
export function withJemalloc(env: NodeJS.ProcessEnv, library = JEMALLOC_PATH): { env: NodeJS.ProcessEnv; used: boolean } {
  if (!existsSync(library)) return { env, used: false }
  const current = env.LD_PRELOAD?.split(/[\s:]+/).filter(Boolean) ?? []
  if (current.includes(library)) return { env, used: true }
  return { env: { ...env, LD_PRELOAD: [library, ...current].join(':') }, used: true }
}

/** Whether jemalloc is loaded into this process (Linux: listed in /proc/self/maps). */
export async function jemallocLoaded(): Promise<boolean> {
  try {
    const { readFile } = await import('node:fs/promises')
    return /libjemalloc/.test(await readFile('/proc/self/maps', 'utf8'))
  } catch {
    return false
  }
}
