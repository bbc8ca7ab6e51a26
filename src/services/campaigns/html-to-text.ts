/**
 * A plain-text body from an HTML template source, done once at publish time rather than per
 * recipient. Mustache tags contain no `<`, so they survive and are rendered in the text part as well;
 * a link keeps its target in parentheses, which is how the unsubscribe URL reaches the text part.
 */
const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ', '#39': "'" }

export function htmlToText(html: string): string {
  let s = html.replace(/\r\n?/g, '\n')
  s = s.replace(/<!--[\s\S]*?-->/g, '')
  s = s.replace(/<(head|style|script|title)\b[^>]*>[\s\S]*?<\/\1\s*>/gi, '')
  s = s.replace(/<a\b[^>]*?\bhref\s*=\s*("([^"]*)"|'([^']*)'|([^\s>]+))[^>]*>([\s\S]*?)<\/a\s*>/gi, (_m, _q, d, sq, bare, inner: string) => {
    const href = decode(d ?? sq ?? bare ?? '')
    const label = collapse(stripTags(inner))
    if (!label || label === href) return href
    return href.startsWith('mailto:') || href.startsWith('#') ? label : `${label} (${href})`
  })
  s = s.replace(/<br\s*\/?>/gi, '\n')
  s = s.replace(/<li\b[^>]*>/gi, '\n- ')
  s = s.replace(/<\/(p|div|h[1-6]|table|ul|ol|blockquote|section|article|header|footer)\s*>/gi, '\n\n')
  s = s.replace(/<\/(tr|li)\s*>/gi, '\n')
  s = s.replace(/<(td|th)\b[^>]*>/gi, ' ')
  s = decode(stripTags(s))
  const lines = s.split('\n').map((line) => collapse(line))
  return lines.join('\n').replace(/\n{3,}/g, '\n\n').trim() + '\n'
}

function stripTags(s: string): string {
  return s.replace(/<[^>]*>/g, '')
}

function collapse(s: string): string {
  return s.replace(/[ \t\u00a0]+/g, ' ').trim()
}

function decode(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+\d*);/gi, (m, code: string) => {
    const lower = code.toLowerCase()
    if (lower.startsWith('#x')) return safeCodePoint(parseInt(lower.slice(2), 16), m)
    if (lower.startsWith('#') && lower !== '#39') return safeCodePoint(parseInt(lower.slice(1), 10), m)
    return ENTITIES[lower] ?? m
  })
}

function safeCodePoint(n: number, original: string): string {
  return Number.isInteger(n) && n > 0 && n <= 0x10ffff ? String.fromCodePoint(n) : original
}
