/**
 * The URL attributes of an HTML document, found the way a browser's tokenizer finds them, and
 * neutralised when they name a scheme that is not allowed. Template data comes from contacts and
 * imports: Handlebars escaping keeps it inside its attribute, but not out of `javascript:` when the
 * attribute is built from it (`<a href="{{website}}">`).
 *
 * The scan follows the HTML tokenizer's start-tag states (a `>` inside a quoted value does not end
 * the tag, a closing quote may be followed by the next attribute without a space) and its comment
 * states (`<!-- -->`, `--!>`, `<!-->`, bogus comments), so it never reads as text what a browser
 * reads as a tag. Where it errs, it errs the other way: the text of `<style>` or `<textarea>` is
 * scanned as if it held tags.
 */
import { decodeEntities } from './escape'

/** Attributes a mail client follows or loads as a URL. */
const URL_ATTRIBUTES = new Set(['href', 'src', 'action', 'formaction', 'background', 'poster', 'cite', 'xlink:href', 'data', 'codebase', 'longdesc', 'lowsrc', 'dynsrc', 'usemap'])
/** Allowed in any template. */
export const SAFE_SCHEMES: ReadonlySet<string> = new Set(['http', 'https', 'mailto', 'tel', 'cid'])
/** Never allowed, even when the template itself uses one: script, or a document of the attacker's making. */
const NEVER = new Set(['javascript', 'vbscript', 'livescript', 'data', 'file', 'blob', 'filesystem', 'about'])
const INLINE_IMAGE = /^data:image\/(?:png|gif|jpe?g|webp);/i
const SCHEME = /^([a-z][a-z0-9+.-]*):/i
const WHITESPACE = /[\t\n\f\r ]/

interface UrlAttribute {
  name: string
  /** The raw value (character references not decoded) and where it sits, quotes included. */
  raw: string
  start: number
  end: number
}

/**
 * `html` with every URL attribute whose scheme is neither in SAFE_SCHEMES nor in `allowed` (and
 * not in NEVER) replaced by `"#"`; inline `data:image/...` stays allowed for sources. Values without
 * a scheme (relative links, fragments) are left alone.
 */
export function neutralizeUnsafeUrls(html: string, allowed: ReadonlySet<string> = SAFE_SCHEMES): string {
  let out = ''
  let copied = 0
  for (const attribute of urlAttributes(html)) {
    if (isAllowed(attribute, allowed)) continue
    out += html.slice(copied, attribute.start) + '"#"'
    copied = attribute.end
  }
  return copied === 0 ? html : out + html.slice(copied)
}

/**
 * The schemes a template's own HTML writes into its URL attributes (`sms:`, `webcal:`, an app's own),
 * which its rendered output may then keep: they are the author's, not the data's. NEVER ones are not.
 */
export function authoredSchemes(html: string): Set<string> {
  const schemes = new Set(SAFE_SCHEMES)
  for (const attribute of urlAttributes(html)) {
    const scheme = schemeOf(attribute.raw)
    // A value that starts with an expression is the data's choice, whatever follows.
    if (scheme !== undefined && !NEVER.has(scheme) && !attribute.raw.trimStart().startsWith('{{')) schemes.add(scheme)
  }
  return schemes
}

function isAllowed(attribute: UrlAttribute, allowed: ReadonlySet<string>): boolean {
  const scheme = schemeOf(attribute.raw)
  if (scheme === undefined) return true
  if (scheme === 'data') return attribute.name === 'src' && INLINE_IMAGE.test(clean(attribute.raw))
  return !NEVER.has(scheme) && (SAFE_SCHEMES.has(scheme) || allowed.has(scheme))
}

function schemeOf(raw: string): string | undefined {
  return SCHEME.exec(clean(raw))?.[1]?.toLowerCase()
}

/** The value as a browser's URL parser sees it: references decoded, C0 controls and spaces dropped (they are, inside a scheme). */
function clean(raw: string): string {
  // eslint-disable-next-line no-control-regex -- C0 controls and space are what browsers drop
  return decodeEntities(raw).replace(/[\u0000-\u0020\u007f-\u009f]/g, '')
}

/** Every URL attribute of every start tag, in order. */
function* urlAttributes(html: string): Generator<UrlAttribute> {
  let i = 0
  while (i < html.length) {
    const lt = html.indexOf('<', i)
    if (lt < 0) return
    const next = html[lt + 1] ?? ''
    if (html.startsWith('<!--', lt)) {
      i = commentEnd(html, lt + 4)
    } else if (next === '!' || next === '?' || (next === '/' && !/[a-z]/i.test(html[lt + 2] ?? ''))) {
      // A bogus comment (a doctype, a processing instruction, `</` and no name) ends at the next `>`.
      const gt = html.indexOf('>', lt + 2)
      i = gt < 0 ? html.length : gt + 1
    } else if (/[a-z]/i.test(next) || (next === '/' && /[a-z]/i.test(html[lt + 2] ?? ''))) {
      // End tags are tokenised too (their attributes are ignored but still quoted), and yield nothing.
      const end = next === '/'
      const tag = scanTag(html, lt + (end ? 2 : 1))
      if (!end) yield* tag.attributes
      i = tag.end
    } else {
      i = lt + 1
    }
  }
}

/** Where a comment whose text starts at `at` ends: after `-->` or `--!>`; `<!-->` and `<!--->` close at once. */
function commentEnd(html: string, at: number): number {
  if (html.startsWith('>', at)) return at + 1
  if (html.startsWith('->', at)) return at + 2
  for (let i = at; i < html.length; i++) {
    if (html[i] !== '-' || html[i + 1] !== '-') continue
    if (html[i + 2] === '>') return i + 3
    if (html[i + 2] === '!' && html[i + 3] === '>') return i + 4
  }
  return html.length
}

/** A tag from its name on: its URL attributes and where it ends (after `>`, or the end of the input). */
function scanTag(html: string, at: number): { attributes: UrlAttribute[]; end: number } {
  const attributes: UrlAttribute[] = []
  let i = at
  while (i < html.length && !WHITESPACE.test(html[i]!) && html[i] !== '/' && html[i] !== '>') i++
  for (;;) {
    while (i < html.length && (WHITESPACE.test(html[i]!) || html[i] === '/')) i++
    if (i >= html.length) return { attributes, end: html.length }
    if (html[i] === '>') return { attributes, end: i + 1 }
    // An attribute name: its first character may be `=`, then anything up to a space, `/`, `>` or `=`.
    const nameStart = i++
    while (i < html.length && !WHITESPACE.test(html[i]!) && html[i] !== '/' && html[i] !== '>' && html[i] !== '=') i++
    const name = html.slice(nameStart, i).toLowerCase()
    let j = i
    while (j < html.length && WHITESPACE.test(html[j]!)) j++
    if (html[j] !== '=') continue
    j++
    while (j < html.length && WHITESPACE.test(html[j]!)) j++
    const quote = html[j]
    let valueStart: number
    let valueEnd: number
    let end: number
    if (quote === '"' || quote === "'") {
      valueStart = j + 1
      const close = html.indexOf(quote, valueStart)
      // Unclosed: the browser drops the whole tag at the end of the input.
      if (close < 0) return { attributes, end: html.length }
      valueEnd = close
      end = close + 1
    } else {
      valueStart = j
      while (j < html.length && !WHITESPACE.test(html[j]!) && html[j] !== '>') j++
      valueEnd = j
      end = j
    }
    if (URL_ATTRIBUTES.has(name)) attributes.push({ name, raw: html.slice(valueStart, valueEnd), start: quote === '"' || quote === "'" ? valueStart - 1 : valueStart, end })
    i = end
  }
}
