/**
 * One-click unsubscribe links (RFC 8058): `${publicUrl}/t/u/<recipientId>.<exp>.<sig>`, signed with
 * the app's URL signer under a purpose of their own, so a download signature can never be
 * replayed as an unsubscribe token or the other way round.
 */
import type { UrlSigner } from '../../infra/storage/signed-url'

export const UNSUBSCRIBE_PATH = '/t/u/'
const PURPOSE = 'campaign-unsubscribe'
/** Long enough for someone who opens an old newsletter; fixed per campaign so a re-sent batch is byte-identical. */
export const UNSUBSCRIBE_LINK_TTL_SECONDS = 400 * 24 * 60 * 60
const TOKEN = /^(\d{1,18})\.(\d{1,15})\.([A-Za-z0-9_-]{43})$/

export type UnsubscribeVerification = { ok: true; recipientId: number } | { ok: false; reason: 'invalid' | 'expired' }

export interface UnsubscribeLinks {
  token(recipientId: number, expiresAtEpochSeconds: number): string
  url(token: string): string
  verify(token: string): UnsubscribeVerification
}

export function createUnsubscribeLinks(signer: UrlSigner, publicUrl: string): UnsubscribeLinks {
  const base = publicUrl.replace(/\/+$/, '')
  return {
    token(recipientId, exp) {
      return `${recipientId}.${exp}.${signer.signature({ purpose: PURPOSE, r: String(recipientId) }, exp)}`
    },
    url(token) {
      return `${base}${UNSUBSCRIBE_PATH}${token}`
    },
    verify(token) {
      const match = TOKEN.exec(token)
      if (!match) return { ok: false, reason: 'invalid' }
      const [, r, exp, sig] = match
      const verified = signer.verify({ purpose: PURPOSE, r: r!, exp: exp!, sig: sig! })
      if (!verified.ok) return verified
      return { ok: true, recipientId: Number(r) }
    },
  }
}

/** The expiry used for every link of a campaign: derived from when it started, never from when a batch was sent. */
export function unsubscribeExpiry(startedAt: Date): number {
  return Math.floor(startedAt.getTime() / 1000) + UNSUBSCRIBE_LINK_TTL_SECONDS
}
