/**
 * Rewrites the rendered HTML of a marketing email: every web link goes through the click redirect
 * and an open pixel goes before </body>. Works on the rendered output, so links built from contact
 * data are tracked too; a link's index is its position among the tracked links of that email.
 */
import { decodeEntities } from '../../lib/escape'
import { MAX_TRACKED_URL_LENGTH, webUrl } from './tracking-tokens'

export interface RewriteOptions {
  /** The tracked URL for the link at `index`. */
  clickUrl?: (index: number, url: string) => string
  pixelUrl?: string
  /** Links that must stay as they are (the unsubscribe link: RFC 8058 and our own counting). */
  keep?: (url: string) => boolean
}

export const MAX_TRACKED_LINKS = 500

const ANCHOR = /<a\b[^>]*>/gi
const HREF = /(\shref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))/i
const NO_TRACK = /\sdata-(?:gw-)?notrack\b/i

export function rewriteHtml(html: string, options: RewriteOptions): string {
  let index = 0
  let out = html
  if (options.clickUrl) {
    const clickUrl = options.clickUrl
    out = out.replace(ANCHOR, (tag) => {
      if (index >= MAX_TRACKED_LINKS || NO_TRACK.test(tag)) return tag
      const href = HREF.exec(tag)
      if (!href) return tag
      const url = webUrl(decodeEntities((href[2] ?? href[3] ?? href[4] ?? '').trim()))
      if (url === null || url.length > MAX_TRACKED_URL_LENGTH || options.keep?.(url)) return tag
      const tracked = clickUrl(index++, url)
      return tag.slice(0, href.index) + `${href[1]}"${tracked}"` + tag.slice(href.index + href[0].length)
    })
  }
  if (options.pixelUrl) {
    const pixel = `<img src="${options.pixelUrl}" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0">`
    const close = out.toLowerCase().lastIndexOf('</body')
    out = close >= 0 ? out.slice(0, close) + pixel + out.slice(close) : out + pixel
  }
  return out
}

/** The links a template's HTML would get tracked, in order: labels for links nobody clicked yet. */
export function templateLinks(html: string, keep?: (url: string) => boolean): string[] {
  const links: string[] = []
  for (const [tag] of html.matchAll(ANCHOR)) {
    if (links.length >= MAX_TRACKED_LINKS || NO_TRACK.test(tag)) continue
    const href = HREF.exec(tag)
    if (!href) continue
    const url = decodeEntities((href[2] ?? href[3] ?? href[4] ?? '').trim())
    // A link made of template expressions is tracked when it renders to a web URL; show the expression.
    if ((webUrl(url) !== null || /^\{\{/.test(url)) && !keep?.(url)) links.push(webUrl(url) ?? url)
  }
  return links
}
