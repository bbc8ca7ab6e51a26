/**
 * HMAC-signed query strings for links the app hands out and later has to trust: disk downloads now,
 * email tracking links later. The signature covers every parameter and the expiry, so nothing in a
 * signed link can be changed or dropped.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'

export type VerifyResult =
  | { ok: true; params: Record<string, string> }
  | { ok: false; reason: 'invalid' | 'expired' }

export interface UrlSigner {
  sign(params: Record<string, string>, expiresAtEpochSeconds: number): URLSearchParams
  /** The `sig` value that sign would add, alone (for tokens that carry their own parameters). */
  signature(params: Record<string, string>, expiresAtEpochSeconds: number): string
  verify(query: Record<string, unknown>): VerifyResult
}

const EXP = 'exp'
const SIG = 'sig'
// Bumped if the canonical form ever changes, so old and new signatures can never be confused.
const VERSION = 'v1'
const SIG_BYTES = 32

export function createUrlSigner(secret: string): UrlSigner {
  if (secret.length === 0) throw new Error('The URL signing secret must not be empty')

  const mac = (params: Record<string, string>, exp: string): Buffer =>
    createHmac('sha256', secret).update(canonical(params, exp)).digest()

  const signature = (params: Record<string, string>, expiresAtEpochSeconds: number): string => {
    if (!Number.isSafeInteger(expiresAtEpochSeconds) || expiresAtEpochSeconds < 0) {
      throw new Error('expiresAtEpochSeconds must be a non-negative integer')
    }
    if (EXP in params || SIG in params) throw new Error(`"${EXP}" and "${SIG}" are reserved parameter names`)
    return mac(params, String(expiresAtEpochSeconds)).toString('base64url')
  }

  return {
    sign(params, expiresAtEpochSeconds) {
      const sig = signature(params, expiresAtEpochSeconds)
      const query = new URLSearchParams(params)
      query.set(EXP, String(expiresAtEpochSeconds))
      query.set(SIG, sig)
      return query
    },

    signature,

    verify(query) {
      const params: Record<string, string> = {}
      let exp: string | undefined
      let sig: string | undefined
      for (const [name, value] of Object.entries(query)) {
        // A repeated parameter arrives as an array: the signed link never has one, so it was tampered with.
        if (typeof value !== 'string') return { ok: false, reason: 'invalid' }
        if (name === EXP) exp = value
        else if (name === SIG) sig = value
        else params[name] = value
      }
      if (exp === undefined || sig === undefined || !/^\d{1,15}$/.test(exp)) return { ok: false, reason: 'invalid' }
      const given = Buffer.from(sig, 'base64url')
      // Buffer.from drops invalid characters silently; the round trip makes the encoding strict.
      if (given.length !== SIG_BYTES || given.toString('base64url') !== sig) return { ok: false, reason: 'invalid' }
      if (!timingSafeEqual(given, mac(params, exp))) return { ok: false, reason: 'invalid' }
      // Checked after the signature, so an attacker learns nothing from editing exp.
      if (Number(exp) <= Math.floor(Date.now() / 1000)) return { ok: false, reason: 'expired' }
      return { ok: true, params }
    },
  }
}

/** Sorted, percent-encoded and length-unambiguous: `a=b&c=d` can never be re-split into other params. */
function canonical(params: Record<string, string>, exp: string): string {
  const pairs = Object.keys(params)
    .sort()
    .map((name) => `${encodeURIComponent(name)}=${encodeURIComponent(params[name] ?? '')}`)
  return `${VERSION}\n${exp}\n${pairs.join('&')}`
}
