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
  /**
   * The same signatures for one fixed set of parameters (`constants` with fixed values, `names` given
   * per call, in order), with the canonical form laid out once: what a hot path (the tracking pixel and
   * redirect) signs and checks on every request. A signature from either is valid for the other.
   */
  fixed(constants: Record<string, string>, names: readonly string[]): FixedSigner
}

export type FixedVerifyResult = { ok: true } | { ok: false; reason: 'invalid' | 'expired' }

export interface FixedSigner {
  /** `signature` of the constants plus `names[i]` = `values[i]`. */
  signature(values: readonly string[], expiresAtEpochSeconds: number): string
  /** Whether `sig` signs these values and `exp`, with the checks `verify` makes, in the same order. */
  verify(values: readonly string[], exp: string, sig: string): FixedVerifyResult
}

const EXP = 'exp'
const SIG = 'sig'
// Bumped if the canonical form ever changes, so old and new signatures can never be confused.
const VERSION = 'v1'
const SIG_BYTES = 32

export function createUrlSigner(secret: string): UrlSigner {
  if (secret.length === 0) throw new Error('The URL signing secret must not be empty')

  // A Buffer key, so no call converts the secret again.
  const key = Buffer.from(secret, 'utf8')
  const hmac = (text: string): Buffer => createHmac('sha256', key).update(text).digest()
  const mac = (params: Record<string, string>, exp: string): Buffer => hmac(canonical(params, exp))

  const signature = (params: Record<string, string>, expiresAtEpochSeconds: number): string => {
    checkExpiry(expiresAtEpochSeconds)
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

    fixed(constants, names) {
      const layout = fixedLayout(constants, names)
      return {
        signature(values, expiresAtEpochSeconds) {
          checkExpiry(expiresAtEpochSeconds)
          return hmac(layout(values, String(expiresAtEpochSeconds))).toString('base64url')
        },
        verify: (values, exp, sig) => check(sig, exp, () => hmac(layout(values, exp))),
      }
    },

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
      if (exp === undefined || sig === undefined) return { ok: false, reason: 'invalid' }
      const checked = check(sig, exp, () => mac(params, exp))
      if (!checked.ok) return checked
      return { ok: true, params }
    },
  }
}

function checkExpiry(expiresAtEpochSeconds: number): void {
  if (!Number.isSafeInteger(expiresAtEpochSeconds) || expiresAtEpochSeconds < 0) {
    throw new Error('expiresAtEpochSeconds must be a non-negative integer')
  }
}

/** The checks of a signature, in an order that tells an attacker nothing: form, then signature, then expiry. */
function check(sig: string, exp: string, expected: () => Buffer): FixedVerifyResult {
  if (!/^\d{1,15}$/.test(exp)) return { ok: false, reason: 'invalid' }
  const given = Buffer.from(sig, 'base64url')
  // Buffer.from drops invalid characters silently; the round trip makes the encoding strict.
  if (given.length !== SIG_BYTES || given.toString('base64url') !== sig) return { ok: false, reason: 'invalid' }
  if (!timingSafeEqual(given, expected())) return { ok: false, reason: 'invalid' }
  // Checked after the signature, so an attacker learns nothing from editing exp.
  if (Number(exp) <= Math.floor(Date.now() / 1000)) return { ok: false, reason: 'expired' }
  return { ok: true }
}

/**
 * `canonical` for one set of names, laid out once: the constant text between the values is joined
 * ahead of time, so a call only encodes its values (most need no encoding: digits, tokens).
 */
function fixedLayout(constants: Record<string, string>, names: readonly string[]): (values: readonly string[], exp: string) => string {
  const all = [...Object.keys(constants), ...names]
  if (new Set(all).size !== all.length) throw new Error('Each parameter is named once')
  if (all.includes(EXP) || all.includes(SIG)) throw new Error(`"${EXP}" and "${SIG}" are reserved parameter names`)
  // Constant text before each value (the first also after the exp line), and after the last.
  const before: string[] = []
  const slots: number[] = []
  let text = ''
  for (const [i, name] of all.sort().entries()) {
    text += `${i > 0 ? '&' : ''}${encodeValue(name)}=`
    const slot = names.indexOf(name)
    if (slot < 0) {
      text += encodeValue(constants[name]!)
    } else {
      before.push(text)
      slots.push(slot)
      text = ''
    }
  }
  const after = text
  return (values, exp) => {
    if (values.length !== names.length) throw new Error(`Expected ${names.length} values`)
    let out = `${VERSION}\n${exp}\n`
    for (let i = 0; i < slots.length; i++) out += before[i]! + encodeValue(values[slots[i]!]!)
    return out + after
  }
}

/** encodeURIComponent, skipped for the text it would leave as it is (most values: digits, tokens): the one encoding of the canonical form. */
function encodeValue(value: string): string {
  return /^[A-Za-z0-9\-_.!~*'()]*$/.test(value) ? value : encodeURIComponent(value)
}

/** Sorted, percent-encoded and length-unambiguous: `a=b&c=d` can never be re-split into other params. */
function canonical(params: Record<string, string>, exp: string): string {
  const pairs = Object.keys(params)
    .sort()
    .map((name) => `${encodeValue(name)}=${encodeValue(params[name] ?? '')}`)
  return `${VERSION}\n${exp}\n${pairs.join('&')}`
}
