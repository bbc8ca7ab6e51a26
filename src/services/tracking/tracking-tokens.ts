/**
 * The signed tokens in tracking links. Each kind is signed under a purpose of its own, so a token
 * of one kind (or a download or unsubscribe signature) is never accepted as another. Tokens are
 * dot-separated and URL-safe, and a pure function of their inputs, so a re-sent batch renders
 * byte-identical emails.
 *
 *   open        <recipient>.<exp>.<sig>
 *   click       <recipient>.<link>.<exp>.<sig>.<base64url(destination)>
 *   conversion  <recipient>.<link>.<clickedAt>.<sig>   (minted by the click, carried forward by the app)
 */
import type { UrlSigner } from '../../infra/storage/signed-url'
import { safeUrl } from '../../lib/escape'
import { BoundedMap } from '../../lib/bounded-map'
import { hashKey } from '../../lib/hash-key'

const OPEN = 'tracking-open'
const CLICK = 'tracking-click'
const CONVERSION = 'tracking-conversion'

const OPEN_TOKEN = /^(\d{1,18})\.(\d{1,15})\.([A-Za-z0-9_-]{43})$/
const CLICK_TOKEN = /^(\d{1,18})\.(\d{1,5})\.(\d{1,15})\.([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{1,3000})$/
const CONVERSION_TOKEN = /^(\d{1,18})\.(\d{1,5})\.(\d{1,15})\.([A-Za-z0-9_-]{43})$/

/**
 * Genuine open and click tokens are remembered after their second HMAC check, by their exact text,
 * so further hits (a scanner re-checking a link, a proxy re-fetching a pixel, a replayed token) skip
 * it. A token seen only once, as most are, costs no entry (see Doorkeeper). Only tokens that verified are kept, so a forged or altered token always pays for its check,
 * and expiry is checked on every hit. First in, first out past the bound (a few seconds of a busy
 * instance's distinct tokens: bursts and floods, not a campaign's worth); longer tokens (clicks with
 * long destinations) are checked every time, which bounds the memory (about 5 MB at most).
 */
const REMEMBERED_TOKENS = 4_096
const MAX_REMEMBERED_TOKEN_LENGTH = 512

/** Longest destination a link may carry; longer ones are left untracked rather than truncated. */
export const MAX_TRACKED_URL_LENGTH = 2048
/** A conversion token outlives any sensible attribution window; the window itself is checked on use. */
const CONVERSION_TOKEN_TTL_SECONDS = 400 * 24 * 60 * 60

export type TokenFailure = { ok: false; reason: 'invalid' | 'expired' }
export type OpenToken = { ok: true; recipientId: number } | TokenFailure
export type ClickToken = { ok: true; recipientId: number; linkIndex: number; url: string } | TokenFailure
export type ConversionToken = { ok: true; recipientId: number; linkIndex: number; clickedAt: number } | TokenFailure

export interface TrackingTokens {
  openToken(recipientId: number, exp: number): string
  clickToken(recipientId: number, linkIndex: number, url: string, exp: number): string
  conversionToken(recipientId: number, linkIndex: number, clickedAtSeconds: number): string
  verifyOpen(token: string): OpenToken
  verifyClick(token: string): ClickToken
  verifyConversion(token: string): ConversionToken
}

export interface TrackingTokensOptions {
  /** Genuine tokens of each kind remembered (0: every hit is checked). */
  remembered?: number
}

export function createTrackingTokens(signer: UrlSigner, options: TrackingTokensOptions = {}): TrackingTokens {
  // The same signatures as signer.signature({ purpose, r, ... }, exp), laid out once for these hot paths.
  const open = signer.fixed({ purpose: OPEN }, ['r'])
  const click = signer.fixed({ purpose: CLICK }, ['r', 'l', 'u'])
  const conversion = signer.fixed({ purpose: CONVERSION }, ['r', 'l', 't'])
  const opens = new VerifiedTokens<OpenToken>(options.remembered ?? REMEMBERED_TOKENS)
  const clicks = new VerifiedTokens<ClickToken>(options.remembered ?? REMEMBERED_TOKENS)
  return {
    openToken(recipientId, exp) {
      return `${recipientId}.${exp}.${open.signature([String(recipientId)], exp)}`
    },
    clickToken(recipientId, linkIndex, url, exp) {
      const signature = click.signature([String(recipientId), String(linkIndex), url], exp)
      return `${recipientId}.${linkIndex}.${exp}.${signature}.${Buffer.from(url, 'utf8').toString('base64url')}`
    },
    conversionToken(recipientId, linkIndex, clickedAt) {
      const t = String(clickedAt)
      return `${recipientId}.${linkIndex}.${t}.${conversion.signature([String(recipientId), String(linkIndex), t], clickedAt + CONVERSION_TOKEN_TTL_SECONDS)}`
    },
    verifyOpen(token) {
      const known = opens.recall(token)
      if (known) return known
      const m = OPEN_TOKEN.exec(token)
      if (!m) return INVALID
      const verified = open.verify([m[1]!], m[2]!, m[3]!)
      return verified.ok ? opens.remember(token, Number(m[2]), { ok: true, recipientId: Number(m[1]) }) : verified
    },
    verifyClick(token) {
      const known = clicks.recall(token)
      if (known) return known
      const m = CLICK_TOKEN.exec(token)
      if (!m) return INVALID
      const url = decodeUrl(m[5]!)
      if (url === null) return INVALID
      const verified = click.verify([m[1]!, m[2]!, url], m[3]!, m[4]!)
      // Signed by us, so already a checked web URL; the scheme is checked again so a leaked key still cannot make a javascript: redirect.
      if (verified.ok && !/^https?:\/\//i.test(url)) return INVALID
      return verified.ok ? clicks.remember(token, Number(m[3]), { ok: true, recipientId: Number(m[1]), linkIndex: Number(m[2]), url }) : verified
    },
    verifyConversion(token) {
      const m = CONVERSION_TOKEN.exec(token)
      if (!m) return INVALID
      const clickedAt = Number(m[3])
      const verified = conversion.verify([m[1]!, m[2]!, m[3]!], String(clickedAt + CONVERSION_TOKEN_TTL_SECONDS), m[4]!)
      return verified.ok ? { ok: true, recipientId: Number(m[1]), linkIndex: Number(m[2]), clickedAt } : verified
    },
  }
}

const INVALID: TokenFailure = { ok: false, reason: 'invalid' }
const EXPIRED: TokenFailure = { ok: false, reason: 'expired' }

/** What a token verified to, by its exact text, with its expiry (see REMEMBERED_TOKENS). */
class VerifiedTokens<T> {
  private readonly known: BoundedMap<string, { exp: number; verified: T }>
  private readonly doorkeeper = new Doorkeeper()

  constructor(private readonly max: number) {
    this.known = new BoundedMap(max)
  }

  /** The remembered verdict (expired once past its expiry, as the signer would say), or undefined. */
  recall(token: string): T | TokenFailure | undefined {
    const entry = this.known.get(token)
    if (entry === undefined) return undefined
    return entry.exp > Math.floor(Date.now() / 1000) ? entry.verified : EXPIRED
  }

  /** Remembered on its second sight: a token seen once (most opens of a campaign) would only be inserted and evicted. */
  remember(token: string, exp: number, verified: T): T {
    if (this.max > 0 && token.length <= MAX_REMEMBERED_TOKEN_LENGTH && this.doorkeeper.seenBefore(token)) this.known.set(token, { exp, verified })
    return verified
  }
}

/**
 * Tokens verified recently, as 16-bit tags in a table of 65,536 slots indexed by a hash of the
 * token (TinyLFU's doorkeeper): a token is remembered once it comes while its slot still holds its
 * tag. A collision only gets a token remembered on its first sight, an overwritten slot only on a
 * later one; neither changes a verdict, since a remembered token was verified.
 */
class Doorkeeper {
  private readonly tags = new Uint16Array(1 << 16)

  /** Whether the token was seen since its slot was last taken; marks it seen either way. */
  seenBefore(token: string): boolean {
    // The low half picks the slot, the high half is the tag.
    const h = hashKey(token)
    const slot = h & 0xffff
    const tag = (h >>> 16) | 1
    if (this.tags[slot] === tag) return true
    this.tags[slot] = tag
    return false
  }
}

function decodeUrl(encoded: string): string | null {
  const bytes = Buffer.from(encoded, 'base64url')
  // Buffer.from skips what it cannot decode: the round trip makes the encoding strict.
  if (bytes.toString('base64url') !== encoded) return null
  const url = bytes.toString('utf8')
  return url.length > 0 && url.length <= MAX_TRACKED_URL_LENGTH ? url : null
}

/**
 * The URL normalised (ASCII only, so it fits a Location header) when it is a plain http(s) URL,
 * else null: no credentials (`https://bank@evil`), control characters or backslashes.
 */
export function webUrl(url: string): string | null {
  if (!/^https?:\/\//i.test(url)) return null
  return safeUrl(url, { allowedProtocols: ['http:', 'https:'] })
}
