/**
 * Output encoding, one function per context. Input is stored as the user typed it (after
 * `normalizeText`) and encoded when it is written into HTML, a URL attribute or a header,
 * because only the output context knows which characters are dangerous.
 */
import { decodeHTMLAttribute } from 'entities'
import { ValidationError } from './errors'
import { UNPAIRED_SURROGATE } from './storable-text'

const HTML_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#x27;',
}

/** For HTML element content and quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => HTML_ESCAPES[ch]!)
}

/**
 * For attribute values, including unquoted ones, where a space, `=` or backtick ends the
 * value. OWASP's rule: every character below 256 that is not alphanumeric becomes `&#xHH;`.
 * Control characters become U+FFFD because `&#x0;` is a parse error and `&#x80;`-`&#x9F;`
 * are remapped to Windows-1252 characters by HTML parsers.
 */
export function escapeHtmlAttribute(value: string): string {
  return replaceLoneSurrogates(value).replace(/[^A-Za-z0-9\u0100-\uFFFF]/g, (ch) => {
    const code = ch.charCodeAt(0)
    if (isControl(code) && ch !== '\t' && ch !== '\n' && ch !== '\r') return '&#xfffd;'
    return `&#x${code.toString(16).padStart(2, '0')};`
  })
}

export interface SafeUrlOptions {
  /** Lower-case, with the colon, as `URL.protocol` spells them. */
  allowedProtocols?: readonly string[]
  /** Accept same-origin paths such as `/files/1?x=y`, returned as given (normalised). */
  allowRelative?: boolean
}

const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/
const RELATIVE_BASE = 'https://relative.invalid'

/**
 * The URL, normalised by the WHATWG parser, when it is safe to put in an `href`/`src`;
 * otherwise null. Refuses rather than repairs anything a browser would reinterpret:
 * browsers drop tabs and newlines inside URLs and control characters around them, which is
 * how `java\tscript:` and `\x01javascript:` run script. The result still needs
 * `escapeHtmlAttribute` (or `escapeHtml` in a quoted attribute) when written into HTML.
 */
export function safeUrl(url: string, options: SafeUrlOptions = {}): string | null {
  const { allowedProtocols = ['http:', 'https:', 'mailto:'], allowRelative = false } = options
  if (typeof url !== 'string') return null
  const candidate = url.replace(/^ +| +$/g, '')
  // Backslashes too: the parser reads `https:\\evil.example` and `/\evil.example` as slashes.
  if (candidate === '' || /[\p{Cc}\p{Cf}\p{Z}\\]/u.test(candidate)) return null

  if (allowRelative && candidate.startsWith('/')) {
    const parsed = parse(candidate, RELATIVE_BASE)
    if (!parsed || parsed.origin !== RELATIVE_BASE) return null
    const path = parsed.href.slice(RELATIVE_BASE.length)
    // `//host` is protocol-relative and leaves our origin; `/..//host` normalises to it.
    return path.startsWith('//') ? null : path
  }

  // Without an explicit scheme the meaning depends on the page's base URL.
  if (!SCHEME.test(candidate)) return null
  const parsed = parse(candidate)
  if (!parsed) return null
  const allowed = allowedProtocols.map((p) => p.toLowerCase())
  if (!allowed.includes(parsed.protocol)) return null
  // `https://bank.example@evil.example` reads as the bank to a person and goes to evil.example.
  if (parsed.username !== '' || parsed.password !== '') return null
  return parsed.href
}

function parse(url: string, base?: string): URL | null {
  try {
    return new URL(url, base)
  } catch {
    return null
  }
}

const HEADER_BREAKS = /[\r\n\0\u0085\u2028\u2029]/

/**
 * Throws when a value bound for an HTTP or email header could end the header and start
 * another (CRLF injection). Use for values the caller must not silently alter.
 */
export function assertNoHeaderInjection(value: string, field = 'header'): void {
  if (HEADER_BREAKS.test(value)) {
    throw ValidationError.field(field, `${field} must not contain line breaks or NUL characters`)
  }
}

/**
 * A header-safe copy: line breaks become a single space and other control characters
 * (except tab) are dropped. For display values such as a subject or a download file name.
 */
export function escapeHeaderValue(value: string): string {
  return replaceLoneSurrogates(value)
    .replace(/[\r\n\u0085\u2028\u2029]+/g, ' ')
    .replace(/[^\P{Cc}\t]/gu, '')
}

export interface NormalizeTextOptions {
  /** In code points, the unit of PostgreSQL's `varchar(n)`; longer text is cut. */
  maxLength?: number
}

/**
 * For free text such as names and titles: NFC so that "é" typed two ways compares equal,
 * control characters removed except newline and tab (CR/CRLF become newline), bidi
 * overrides removed so a name cannot reorder the text displayed after it, lone
 * surrogates replaced because PostgreSQL rejects them, and surrounding whitespace trimmed.
 */
export function normalizeText(input: string, options: NormalizeTextOptions = {}): string {
  let text = replaceLoneSurrogates(input)
    .normalize('NFC')
    .replace(/\r\n?/g, '\n')
    .replace(/[^\P{Cc}\n\t]/gu, '')
    .replace(/[\u202a-\u202e\u2066-\u2069]/g, '')
    .trim()
  if (options.maxLength !== undefined) {
    text = Array.from(text).slice(0, Math.max(0, options.maxLength)).join('').trimEnd()
  }
  return text
}

/**
 * @deprecated Use `escapeHtml`, or the encoder for the actual output context. The seed
 * removed `<` and `>` only, which leaves `" onmouseover="alert(1)` intact inside a quoted
 * attribute and mangles legitimate text like "a < b". This now HTML-escapes instead, so the
 * result must be written into HTML and not escaped a second time.
 */
export function sanitizeInput(input: string): string {
  return escapeHtml(input)
}

function isControl(code: number): boolean {
  return code < 0x20 || (code >= 0x7f && code <= 0x9f)
}

const LONE_SURROGATES = new RegExp(UNPAIRED_SURROGATE, 'g')

function replaceLoneSurrogates(text: string): string {
  return text.replace(LONE_SURROGATES, '\ufffd')
}

/** The text of an HTML attribute value, as a browser decodes it (Handlebars escapes `&`, `=`, quotes and backticks). */
export function decodeEntities(value: string): string {
  return value.includes('&') ? decodeHTMLAttribute(value) : value
}
