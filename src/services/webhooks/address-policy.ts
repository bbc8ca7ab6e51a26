/**
 * Which addresses a webhook may be sent to. An endpoint is a URL an admin typed, so without a check
 * it could point the server at its own loopback, the cloud metadata service (169.254.169.254) or
 * anything else on the private network (SSRF). The check runs when the URL is saved and again on
 * every connection, on the addresses DNS gives at that moment, so a name that later resolves to a
 * private address (DNS rebinding) is refused too.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns'
import { BlockList, isIP } from 'node:net'
import { createLimiter } from '../../lib/concurrency'

/**
 * dns.lookup runs getaddrinfo on libuv's thread pool (4 threads, shared with file I/O, crypto and
 * every other lookup), with no timeout of its own: an endpoint whose DNS stops answering would hold
 * a thread per attempt. At most this many webhook lookups run at once, so the rest of the app keeps
 * the other threads.
 */
const MAX_CONCURRENT_LOOKUPS = 2
const lookups = createLimiter(MAX_CONCURRENT_LOOKUPS)

/** Every address of `hostname`, through the bounded lookup slots. */
export function lookupAll(hostname: string, family?: LookupOptions['family']): Promise<LookupAddress[]> {
  return lookups.run(
    () =>
      new Promise<LookupAddress[]>((resolve, reject) => {
        dnsLookup(hostname, { all: true, ...(family ? { family } : {}) }, (err, addresses) => (err ? reject(err) : resolve(addresses)))
      }),
  )
}

const blocked = new BlockList()
for (const [net, prefix] of [
  ['0.0.0.0', 8], // "this" network
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, cloud metadata
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  blocked.addSubnet(net, prefix, 'ipv4')
}
for (const [net, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b:1::', 48], // local-use NAT64
  ['100::', 64], // discard
  ['2001::', 32], // Teredo: tunnels to an IPv4 address that is not checked here
  ['2001:db8::', 32], // documentation
  ['fec0::', 10], // site-local (deprecated, still private)
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
] as const) {
  blocked.addSubnet(net, prefix, 'ipv6')
}

/** False for loopback, private, link-local, multicast and reserved addresses (and anything that is not an IP address). */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address)
  if (family === 0) return false
  if (family === 4) return !blocked.check(address, 'ipv4')
  const embedded = embeddedIpv4(ipv6Groups(address))
  if (embedded !== null) return isPublicAddress(embedded)
  return !blocked.check(address, 'ipv6')
}

/**
 * The IPv4 address an IPv6 one reaches, where it embeds one: IPv4-compatible (::a.b.c.d),
 * IPv4-mapped (::ffff:a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and
 * 6to4 (2002:aabb:ccdd::). That address is the one judged. (Not with BlockList subnets: Node matches
 * a ::ffff:0:0/96 rule against every IPv4 address.)
 */
function embeddedIpv4(groups: number[]): string | null {
  const zero = (from: number, to: number) => groups.slice(from, to).every((g) => g === 0)
  const quad = (hi: number, lo: number) => [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.')
  const compatibleOrMapped = zero(0, 5) && (groups[5] === 0 || groups[5] === 0xffff)
  const translated = zero(0, 4) && groups[4] === 0xffff && groups[5] === 0
  const nat64 = groups[0] === 0x64 && groups[1] === 0xff9b && zero(2, 6)
  if (compatibleOrMapped || translated || nat64) return quad(groups[6]!, groups[7]!)
  if (groups[0] === 0x2002) return quad(groups[1]!, groups[2]!)
  return null
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a trailing dotted quad folded in). */
function ipv6Groups(address: string): number[] {
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address)
  const hex = quad ? address.slice(0, quad.index) + (((+quad[1]! << 8) | +quad[2]!).toString(16) + ':' + ((+quad[3]! << 8) | +quad[4]!).toString(16)) : address
  const [head = '', tail] = hex.split('::')
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)))
  const left = parse(head)
  const right = tail === undefined ? [] : parse(tail)
  return [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right]
}

export class BlockedAddressError extends Error {
  readonly code = 'EWEBHOOKBLOCKED'
  constructor(readonly host: string, readonly address: string) {
    super(`${host} resolves to ${address}, a private, loopback or link-local address`)
  }
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

/**
 * A `lookup` for http.request: dns.lookup, refusing the connection when any address it returns is
 * not public. Node passes `all: true` when it tries several addresses (autoSelectFamily).
 */
export function publicOnlyLookup(hostname: string, options: LookupOptions, callback: LookupCallback): void {
  lookupAll(hostname, options.family).then(
    (addresses) => answer(addresses),
    (err: NodeJS.ErrnoException) => callback(err, []),
  )
  function answer(addresses: LookupAddress[]) {
    const bad = addresses.find((a) => !isPublicAddress(a.address))
    if (bad) return callback(new BlockedAddressError(hostname, bad.address), [])
    if (options.all) return callback(null, addresses)
    const first = addresses[0]
    if (!first) return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), [])
    callback(null, first.address, first.family)
  }
}
