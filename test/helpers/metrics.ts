/** Reading GET /metrics in tests: the Prometheus text format, enough of it for assertions. */
import type { FastifyInstance } from 'fastify'

export type Sample = { name: string; labels: Record<string, string>; value: number }

/** The Prometheus text format, enough of it for these tests: one sample per line, comments skipped. */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`unparseable metrics line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1')
    samples.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return samples
}

export class Scrape {
  constructor(readonly samples: Sample[]) {}

  /** The one series with this name whose labels include these; throws when there is none or several. */
  value(name: string, labels: Record<string, string> = {}): number {
    const found = this.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    if (found.length !== 1) throw new Error(`${found.length} series for ${name} ${JSON.stringify(labels)}`)
    return found[0]!.value
  }

  labelValues(name: string, label: string): Set<string> {
    return new Set(this.samples.filter((s) => s.name === name && s.labels[label] !== undefined).map((s) => s.labels[label]!))
  }
}

/** Scrapes the app's /metrics (no token outside production). */
export async function scrapeMetrics(app: FastifyInstance): Promise<Scrape> {
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  if (res.statusCode !== 200) throw new Error(`GET /metrics answered ${res.statusCode}`)
  return new Scrape(parseMetrics(res.body))
}
