/**
 * Tells opens and clicks made by software from those made by people, from what a request shows at
 * once: the user agent, the method and the address. (Clicks within seconds of the send are judged
 * later, when the send time is at hand: see engagement-writer.ts.)
 *
 * Apple Mail Privacy Protection fetches every image on delivery through Apple's proxies, which
 * send a bare `Mozilla/5.0`. Gmail's and Yahoo's image proxies fetch when the message is opened,
 * so their hits are human opens (only the repeat opens they cache are lost). Security gateways
 * and link scanners name themselves or use generic HTTP clients.
 */
const MACHINE_AGENTS = [
  'bot', 'crawl', 'spider', 'slurp', 'preview', 'prefetch', 'scanner', 'headless', 'phantomjs', 'lighthouse',
  'python-requests', 'python-urllib', 'aiohttp', 'curl/', 'wget', 'go-http-client', 'java/', 'okhttp', 'libwww', 'httpclient',
  'axios', 'node-fetch', 'undici', 'barracuda', 'mimecast', 'proofpoint', 'ironport', 'symantec', 'messagelabs',
  'trendmicro', 'trend micro', 'fortinet', 'fortiguard', 'sophos', 'zscaler', 'forcepoint', 'safelinks', 'cisco', 'appriver',
  'microsoft office existence discovery', 'ms-office', 'skypeuripreview', 'outlook-ios-preview',
]

/** Apple's own network: Private Relay and MPP fetches that do not go through a CDN egress come from here. */
const APPLE_PREFIX = '17.'
/**
 * Verdicts remembered per user agent: mail clients and proxies send few distinct ones, and the
 * substring scan costs more than the rest of a pixel's bookkeeping. Past the bound (random agents,
 * say) the memory starts over; longer agents are judged every time.
 */
const MAX_REMEMBERED_AGENTS = 1_000
const MAX_REMEMBERED_AGENT_LENGTH = 512

export interface RequestTraits {
  method: string
  userAgent: string | undefined
  ip: string
}

export type MachineDetector = (traits: RequestTraits) => boolean

export function createMachineDetector(extraAgents: string[] = []): MachineDetector {
  const needles = [...MACHINE_AGENTS, ...extraAgents.map((a) => a.toLowerCase())]
  const machineAgent = (userAgent: string | undefined) => {
    const ua = userAgent?.trim() ?? ''
    if (ua === '' || ua === 'Mozilla/5.0') return true
    const lower = ua.toLowerCase()
    for (const needle of needles) if (lower.includes(needle)) return true
    return false
  }
  const remembered = new Map<string, boolean>()
  return ({ method, userAgent, ip }) => {
    // Scanners probe links with HEAD; no mail client opens a message with one.
    if (method === 'HEAD') return true
    if (ip.startsWith(APPLE_PREFIX) || ip.startsWith(`::ffff:${APPLE_PREFIX}`)) return true
    if (userAgent === undefined || userAgent.length > MAX_REMEMBERED_AGENT_LENGTH) return machineAgent(userAgent)
    let machine = remembered.get(userAgent)
    if (machine === undefined) {
      machine = machineAgent(userAgent)
      if (remembered.size >= MAX_REMEMBERED_AGENTS) remembered.clear()
      remembered.set(userAgent, machine)
    }
    return machine
  }
}
