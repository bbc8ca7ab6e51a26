/**
 * The render-time side of tracking for campaign (marketing) mail: the open pixel and the click
 * redirect for each web link. Transactional mail never comes through here. Links expire a fixed
 * time after the campaign started, never after the batch was sent, so a re-sent batch is
 * byte-identical under its idempotency key.
 */
import { rewriteHtml } from './link-rewriter'
import type { TrackingTokens } from './tracking-tokens'

export const OPEN_PATH = '/t/o/'
export const CLICK_PATH = '/t/c/'

export interface MessageTracking {
  /** The rendered HTML of one recipient's email with tracked links and the open pixel. */
  trackHtml(html: string, recipientId: number, campaignStartedAt: Date): string
}

export interface MessageTrackingOptions {
  tokens: TrackingTokens
  publicUrl: string
  opens: boolean
  clicks: boolean
  linkTtlSeconds: number
}

/** Undefined when both opens and clicks are off: the renderer then leaves the HTML alone. */
export function createMessageTracking(options: MessageTrackingOptions): MessageTracking | undefined {
  if (!options.opens && !options.clicks) return undefined
  const base = options.publicUrl.replace(/\/+$/, '')
  // Our own links (unsubscribe, and tracking links already in the content) stay as they are.
  const ours = `${base}/t/`
  return {
    trackHtml(html, recipientId, startedAt) {
      const exp = Math.floor(startedAt.getTime() / 1000) + options.linkTtlSeconds
      return rewriteHtml(html, {
        clickUrl: options.clicks ? (index, url) => `${base}${CLICK_PATH}${options.tokens.clickToken(recipientId, index, url, exp)}` : undefined,
        pixelUrl: options.opens ? `${base}${OPEN_PATH}${options.tokens.openToken(recipientId, exp)}.gif` : undefined,
        keep: (url) => url.startsWith(ours),
      })
    },
  }
}
