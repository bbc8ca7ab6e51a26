/**
 * One recipient's email: rendered from the campaign's compiled template version, with the RFC 8058
 * one-click unsubscribe headers. Everything here is a pure function of the recipient row and the
 * campaign, which is what lets a re-claimed batch reuse its idempotency key.
 */
import type { MailMessage, MailTag } from '../../infra/mail/types'
import { parseAddress } from '../../lib/email-address'
import type { MessageTracking } from '../tracking/message-tracking'
import type { RecipientRow } from './campaign-batches'
import { buildContext, type CompiledTemplate } from './template-engine'
import { unsubscribeExpiry, type UnsubscribeLinks } from './unsubscribe-links'

export interface CampaignForSending {
  id: string
  from: string
  replyTo: string | null
  tags: MailTag[]
  startedAt: Date
  template: CompiledTemplate
  templateId: string
  templateVersion: number
}

export interface MessageContext {
  links: UnsubscribeLinks
  /** Overrides unsubscribe@<from domain> in the mailto: part of List-Unsubscribe. */
  unsubscribeMailto?: string
  /** Open pixel and click redirects; absent when tracking is off. */
  tracking?: MessageTracking
}

export function buildCampaignMessage(campaign: CampaignForSending, recipient: RecipientRow, ctx: MessageContext): MailMessage | { error: string } {
  const token = ctx.links.token(recipient.id, unsubscribeExpiry(campaign.startedAt))
  const unsubscribeUrl = ctx.links.url(token)
  const built = buildContext(campaign.template.variables, { email: recipient.email, name: recipient.name, attributes: recipient.attributes }, unsubscribeUrl)
  if ('missing' in built) return { error: `Missing required template variable${built.missing.length > 1 ? 's' : ''}: ${built.missing.join(', ')}` }
  let rendered
  try {
    rendered = campaign.template.render(built.context)
  } catch (err) {
    return { error: `Template failed to render: ${(err as Error).message.replace(/ in \[object Object\]/, '')}` }
  }
  const mailto = ctx.unsubscribeMailto ?? `unsubscribe@${parseAddress(campaign.from)?.email.split('@')[1] ?? 'invalid'}`
  return {
    from: campaign.from,
    to: [recipient.email],
    replyTo: campaign.replyTo ?? undefined,
    subject: rendered.subject,
    html: ctx.tracking ? ctx.tracking.trackHtml(rendered.html, recipient.id, campaign.startedAt) : rendered.html,
    text: rendered.text,
    headers: {
      'List-Unsubscribe': `<${unsubscribeUrl}>, <mailto:${mailto}?subject=unsubscribe%20${token}>`,
      'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
    },
    tags: [
      { name: 'campaign_id', value: campaign.id },
      // With campaign_id, lets a webhook event find its recipient even before the provider id is recorded.
      { name: 'recipient_id', value: String(recipient.id) },
      { name: 'template_version', value: `${campaign.templateId.replace(/-/g, '')}_v${campaign.templateVersion}` },
      ...campaign.tags,
    ],
  }
}
