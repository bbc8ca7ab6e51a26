/**
 * Checks an endpoint URL when it is saved, so a mistake or an SSRF attempt is refused with a clear
 * reason instead of failing (or succeeding) quietly at delivery time. Delivery checks the
 * addresses again on every connection (address-policy.ts).
 */
import { isIP } from 'node:net'
import { AppError } from '../../lib/errors'
import { isPublicAddress, lookupAll } from './address-policy'

export type WebhookUrlProblem = 'invalid' | 'insecure' | 'credentials' | 'private_address' | 'unresolvable'

/** The URL cannot be used as an endpoint; `problem` says why. */
export class InvalidWebhookUrlError extends AppError {
  readonly code = 'INVALID_WEBHOOK_URL'
  readonly httpStatus = 400
  constructor(readonly problem: WebhookUrlProblem, message: string) {
    super(message)
  }
}

export interface UrlPolicy {
  requireHttps: boolean
  allowPrivate: boolean
}

const MAX_URL_LENGTH = 2048

/** The URL as it will be stored (WHATWG-normalised), or an InvalidWebhookUrlError. */
export async function checkEndpointUrl(raw: string, policy: UrlPolicy): Promise<string> {
  const trimmed = raw.trim()
  let url: URL
  try {
    url = new URL(trimmed)
  } catch {
    throw new InvalidWebhookUrlError('invalid', 'The URL is not a valid absolute URL')
  }
  if (trimmed.length > MAX_URL_LENGTH) throw new InvalidWebhookUrlError('invalid', `The URL is longer than ${MAX_URL_LENGTH} characters`)
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new InvalidWebhookUrlError('invalid', 'The URL must be an http or https URL')
  if (url.protocol === 'http:' && policy.requireHttps) throw new InvalidWebhookUrlError('insecure', 'The URL must use https')
  // Basic-auth in the URL would be stored and shown in clear; the signature is what authenticates a delivery.
  if (url.username || url.password) throw new InvalidWebhookUrlError('credentials', 'The URL must not contain a user name or password')
  if (!policy.allowPrivate) await checkHostIsPublic(url.hostname)
  return url.toString()
}

async function checkHostIsPublic(hostname: string): Promise<void> {
  const host = hostname.replace(/^\[|\]$/g, '')
  const refused = (address: string) =>
    new InvalidWebhookUrlError('private_address', `The URL points at ${address}, a private, loopback or link-local address`)
  if (isIP(host)) {
    if (!isPublicAddress(host)) throw refused(host)
    return
  }
  let addresses: { address: string }[]
  try {
    addresses = await lookupAll(host)
  } catch {
    throw new InvalidWebhookUrlError('unresolvable', `The host ${host} does not resolve`)
  }
  const bad = addresses.find((a) => !isPublicAddress(a.address))
  if (bad) throw refused(bad.address)
}
