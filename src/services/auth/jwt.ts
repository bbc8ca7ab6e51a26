import { createSigner, createVerifier, TokenError } from 'fast-jwt'
import { UnauthenticatedError } from '../../lib/errors'

export const ROLES = ['admin', 'service', 'user'] as const
export type Role = (typeof ROLES)[number]

/** Who a verified bearer token says the caller is. */
export interface Viewer {
  id: string
  email?: string
  name?: string
  roles: Role[]
  /** When the token stops being valid (epoch ms): a WebSocket connection authenticated with it ends then. */
  expiresAt?: number
}

export interface JwtOptions {
  /** HS256 secret. */
  secret?: string
  /** RS256 PEM public key (verification only; tokens are minted by the app's identity provider). */
  publicKey?: string
  issuer?: string
  audience?: string
}

export interface TokenVerifier {
  /** Throws UnauthenticatedError with a message safe to show. */
  verify(token: string): Viewer
}

export function createTokenVerifier(options: JwtOptions): TokenVerifier {
  const key = options.publicKey ?? options.secret
  if (!key) throw new Error('A JWT secret or public key is required')
  const verifier = createVerifier({
    key,
    algorithms: options.publicKey ? ['RS256'] : ['HS256'],
    allowedIss: options.issuer,
    allowedAud: options.audience,
    clockTolerance: 5_000,
    // A token that never expires would be a credential for good: one without `exp` is refused.
    requiredClaims: ['exp'],
    // A bounded cache of verified tokens: verification is the hot path of every request.
    cache: 1000,
  })
  return {
    verify(token) {
      let claims: Record<string, unknown>
      try {
        claims = verifier(token) as Record<string, unknown>
      } catch (err) {
        if (err instanceof TokenError && err.code === TokenError.codes.expired) throw new UnauthenticatedError('The token has expired')
        if (err instanceof TokenError && err.code === TokenError.codes.missingRequiredClaim) throw new UnauthenticatedError('The token has no expiry (exp)')
        throw new UnauthenticatedError('The token is invalid')
      }
      return viewerFromClaims(claims)
    },
  }
}

function viewerFromClaims(claims: Record<string, unknown>): Viewer {
  const { sub, email, name, roles, exp } = claims
  if (typeof sub !== 'string' || sub.length === 0 || sub.length > 256) throw new UnauthenticatedError('The token has no valid subject')
  const list = Array.isArray(roles) ? roles : typeof roles === 'string' ? [roles] : ['user']
  if (!list.every((r): r is Role => (ROLES as readonly unknown[]).includes(r))) throw new UnauthenticatedError('The token has an unknown role')
  return {
    id: sub,
    email: typeof email === 'string' ? email : undefined,
    name: typeof name === 'string' ? name : undefined,
    roles: list.length > 0 ? list : ['user'],
    expiresAt: typeof exp === 'number' ? exp * 1000 : undefined,
  }
}

/** Mints HS256 tokens: for `npm run token` and tests. Production tokens come from the app's own auth. */
export function createTokenSigner(secret: string, options: { issuer?: string; audience?: string } = {}) {
  const sign = createSigner({ key: secret, algorithm: 'HS256', iss: options.issuer, aud: options.audience })
  return (viewer: Viewer, expiresInSeconds = 3600): string =>
    sign({ sub: viewer.id, email: viewer.email, name: viewer.name, roles: viewer.roles, exp: Math.floor(Date.now() / 1000) + expiresInSeconds })
}

export function hasRole(viewer: Viewer | null | undefined, ...roles: Role[]): boolean {
  return !!viewer && viewer.roles.some((r) => roles.includes(r))
}
