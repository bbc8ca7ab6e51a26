/**
 * Email address validation for addresses we will actually send to: the RFC 5321 length limits,
 * a dot-atom local part (no quoted strings, no comments), and a DNS hostname with a TLD.
 * Stricter than RFC 5322 on purpose: quoted local parts and IP literals are legal but are
 * refused by most providers and are a favourite of injection attempts.
 */
const LOCAL_ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$/
const LABEL = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/
const TLD = /^(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})$/

export interface EmailValidation {
  valid: boolean
  /** Why it is invalid, for a field error. */
  reason?: string
  /** Lower-cased domain, original local part. */
  normalized?: string
}

export function checkEmail(input: unknown): EmailValidation {
  if (typeof input !== 'string') return { valid: false, reason: 'must be a string' }
  const email = input
  if (email.length === 0) return { valid: false, reason: 'is required' }
  if (email.length > 254) return { valid: false, reason: 'is longer than 254 characters' }
  // Control characters, spaces and non-ASCII: header injection and homograph territory.
  if (/[^\x21-\x7e]/.test(email)) return { valid: false, reason: 'contains spaces, control or non-ASCII characters' }
  const at = email.lastIndexOf('@')
  if (at <= 0 || at === email.length - 1) return { valid: false, reason: 'must look like name@example.com' }
  const local = email.slice(0, at)
  const domain = email.slice(at + 1)
  if (local.length > 64) return { valid: false, reason: 'has a local part longer than 64 characters' }
  const atoms = local.split('.')
  if (atoms.some((a) => a === '')) return { valid: false, reason: 'has a leading, trailing or doubled dot before the @' }
  if (!atoms.every((a) => LOCAL_ATOM.test(a))) return { valid: false, reason: 'has characters not allowed before the @' }
  const labels = domain.split('.')
  if (labels.length < 2) return { valid: false, reason: 'needs a domain with a dot, like example.com' }
  if (!labels.every((l) => LABEL.test(l))) return { valid: false, reason: 'has an invalid domain' }
  if (!TLD.test(labels[labels.length - 1]!)) return { valid: false, reason: 'has an invalid top-level domain' }
  return { valid: true, normalized: `${local}@${domain.toLowerCase()}` }
}

/** The seed's API: true when the address is valid. */
export function validateEmail(email: unknown): boolean {
  return checkEmail(email).valid
}

/** Parses `user@example.com` or `Display Name <user@example.com>`; null when invalid. */
export function parseAddress(input: string): { name?: string; email: string } | null {
  const m = /^\s*(?:"?([^"<>\r\n]*?)"?\s*)?<([^<>\s]+)>\s*$/.exec(input)
  const name = m ? m[1]?.trim() || undefined : undefined
  const email = m ? m[2]! : input.trim()
  return checkEmail(email).valid ? { name, email } : null
}
