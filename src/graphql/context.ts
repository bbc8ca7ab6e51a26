import type { MercuriusContext } from 'mercurius'
import type { UnauthenticatedError } from '../lib/errors'
import type { Viewer } from '../services/auth/jwt'
import type { CacheService } from '../services/cache/cache-service'
import type { EmailService } from '../services/email/email-service'
import type { FileService } from '../services/files/file-service'

/** What resolvers may call. Built once in app.ts; resolvers never reach for adapters directly. */
export interface Services {
  cache: CacheService
  files: FileService
  email: EmailService
}

export interface GraphQLContext extends MercuriusContext {
  viewer: Viewer | null
  /** Set when a token was sent but is invalid or expired: auth checks report it instead of a bare "unauthenticated". */
  authError: UnauthenticatedError | null
  services: Services
  requestId: string
}
