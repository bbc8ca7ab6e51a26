import type { MercuriusContext } from 'mercurius'
import type { UnauthenticatedError } from '../lib/errors'
import type { Viewer } from '../services/auth/jwt'
import type { CacheService } from '../services/cache/cache-service'
import type { AudienceService } from '../services/campaigns/audience-service'
import type { CampaignService } from '../services/campaigns/campaign-service'
import type { RecipientFeedbackService } from '../services/campaigns/recipient-feedback'
import type { EmailTemplateService } from '../services/campaigns/template-service'
import type { EmailService } from '../services/email/email-service'
import type { InfrastructureStats } from '../services/system/infrastructure-stats'
import type { SystemMonitor } from '../services/system/system-monitor'
import type { FileService } from '../services/files/file-service'
import type { TrackingServices } from '../services/tracking/create-tracking-services'
import type { WebhookServices } from '../services/webhooks/create-webhook-services'

/** What resolvers may call. Built once in app.ts; resolvers never reach for adapters directly. */
export interface Services {
  cache: CacheService
  system: SystemMonitor
  /** The cache and files sections of infrastructureStats, briefly memoised. */
  infrastructure: InfrastructureStats
  files: FileService
  email: EmailService
  emailTemplates: EmailTemplateService
  audiences: AudienceService
  campaigns: CampaignService
  recipientFeedback: RecipientFeedbackService
  tracking: TrackingServices
  webhooks: WebhookServices
}

export interface GraphQLContext extends MercuriusContext {
  viewer: Viewer | null
  /** Set when a token was sent but is invalid or expired: auth checks report it instead of a bare "unauthenticated". */
  authError: UnauthenticatedError | null
  services: Services
  requestId: string
  /**
   * Timeline points this request may still build (REQUEST_TIMELINE_POINTS at first): the cost rule
   * cannot count them, since their range and bucket may be variables, and 300 aliased timelines of
   * 2,000 points each passed it.
   */
  timelinePointsLeft?: number
}
