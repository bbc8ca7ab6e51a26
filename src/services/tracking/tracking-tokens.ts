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

const OPEN = 'tracking-open'
const CLICK = 'tracking-click'
const CONVERSION = 'tracking-conversion'

const OPEN_TOKEN = /^(\d{1,18})\.(\d{1,15})\.([A-Za-z0-9_-]{43})$/
const CLICK_TOKEN = /^(\d{1,18})\.(\d{1,5})\.(\d{1,15})\.([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{1,3000})$/
const CONVERSION_TOKEN = /^(\d{1,18})\.(\d{1,5})\.(\d{1,15})\.([A-Za-z0-9_-]{43})$/

/**
 * Genuine open and click tokens are remembered after their HMAC check, by their exact text, so a
 * repeated hit (a scanner re-checking a link, a proxy re-fetching a pixel, a replayed token) skips
 * it. Only tokens that verified are kept, so a forged or altered token always pays for its check,
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
  const sig = (params: Record<string, string>, exp: number) => signer.signature(params, exp)
  const opens = new VerifiedTokens<OpenToken>(options.remembered ?? REMEMBERED_TOKENS)
  const clicks = new VerifiedTokens<ClickToken>(options.remembered ?? REMEMBERED_TOKENS)
  return {
    openToken(recipientId, exp) {
      return `${recipientId}.${exp}.${sig({ purpose: OPEN, r: String(recipientId) }, exp)}`
    },
    clickToken(recipientId, linkIndex, url, exp) {
      const signature = sig({ purpose: CLICK, r: String(recipientId), l: String(linkIndex), u: url }, exp)
      return `${recipientId}.${linkIndex}.${exp}.${signature}.${Buffer.from(url, 'utf8').toString('base64url')}`
    },
    conversionToken(recipientId, linkIndex, clickedAt) {
      const signature = sig({ purpose: CONVERSION, r: String(recipientId), l: String(linkIndex), t: String(clickedAt) }, clickedAt + CONVERSION_TOKEN_TTL_SECONDS)
      return `${recipientId}.${linkIndex}.${clickedAt}.${signature}`
    },
    verifyOpen(token) {
      const known = opens.recall(token)
      if (known) return known
      const m = OPEN_TOKEN.exec(token)
      if (!m) return { ok: false, reason: 'invalid' }
      const verified = signer.verify({ purpose: OPEN, r: m[1]!, exp: m[2]!, sig: m[3]! })
      return verified.ok ? opens.remember(token, Number(m[2]), { ok: true, recipientId: Number(m[1]) }) : verified
    },
    verifyClick(token) {
      const known = clicks.recall(token)
      if (known) return known
      const m = CLICK_TOKEN.exec(token)
      if (!m) return { ok: false, reason: 'invalid' }
      const url = decodeUrl(m[5]!)
      if (url === null) return { ok: false, reason: 'invalid' }
      const verified = signer.verify({ purpose: CLICK, r: m[1]!, l: m[2]!, u: url, exp: m[3]!, sig: m[4]! })
      // Signed by us, so already a checked web URL; the scheme is checked again so a leaked key still cannot make a javascript: redirect.
      if (verified.ok && !/^https?:\/\//i.test(url)) return { ok: false, reason: 'invalid' }
      return verified.ok ? clicks.remember(token, Number(m[3]), { ok: true, recipientId: Number(m[1]), linkIndex: Number(m[2]), url }) : verified
    },
    verifyConversion(token) {
      const m = CONVERSION_TOKEN.exec(token)
      if (!m) return { ok: false, reason: 'invalid' }
      const clickedAt = Number(m[3])
      const verified = signer.verify({ purpose: CONVERSION, r: m[1]!, l: m[2]!, t: m[3]!, exp: String(clickedAt + CONVERSION_TOKEN_TTL_SECONDS), sig: m[4]! })
      return verified.ok ? { ok: true, recipientId: Number(m[1]), linkIndex: Number(m[2]), clickedAt } : verified
    },
  }
}

const EXPIRED: TokenFailure = { ok: false, reason: 'expired' }

/** What a token verified to, by its exact text, with its expiry (see REMEMBERED_TOKENS). */
class VerifiedTokens<T> {
  private readonly known: BoundedMap<string, { exp: number; verified: T }>

  constructor(private readonly max: number) {
    this.known = new BoundedMap(max)
  }

  /** The remembered verdict (expired once past its expiry, as the signer would say), or undefined. */
  recall(token: string): T | TokenFailure | undefined {
    const entry = this.known.get(token)
    if (entry === undefined) return undefined
    return entry.exp > Math.floor(Date.now() / 1000) ? entry.verified : EXPIRED
  }

  remember(token: string, exp: number, verified: T): T {
    if (this.max > 0 && token.length <= MAX_REMEMBERED_TOKEN_LENGTH) this.known.set(token, { exp, verified })
    return verified
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
