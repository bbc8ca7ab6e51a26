/**
 * Content-Disposition per RFC 6266 with the RFC 8187 (formerly 5987) `filename*` parameter.
 * Browsers that understand `filename*` use it and ignore the ASCII `filename`, which exists for
 * old clients and must never carry anything that could break out of the quoted string.
 */
export function contentDisposition(filename: string, type: 'inline' | 'attachment'): string {
  const name = cleanName(filename)
  return `${type}; filename="${asciiFallback(name)}"; filename*=UTF-8''${encodeRfc8187(name)}`
}

/** Images display inline, except SVG, which can carry script; everything else downloads. */
export function dispositionTypeFor(contentType: string): 'inline' | 'attachment' {
  const type = contentType.toLowerCase()
  return type.startsWith('image/') && type !== 'image/svg+xml' ? 'inline' : 'attachment'
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g
// C0, DEL and C1 controls, plus the Unicode line and paragraph separators.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g

function cleanName(filename: string): string {
  // encodeURIComponent throws on a lone surrogate, and a control character has no place in a name.
  const cleaned = filename.replace(LONE_SURROGATE, '\uFFFD').replace(CONTROL, '').trim()
  return cleaned === '' ? 'download' : cleaned
}

function asciiFallback(name: string): string {
  return name
    // "résumé" degrades to "resume" rather than "r_sum_".
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/[^\x20-\x7e]/g, '_')
    // Quotes and backslashes would end or escape the quoted string; some browsers decode %XX in it.
    .replace(/["\\%]/g, '_')
}

/** encodeURIComponent leaves `'()*` alone, but they are not attr-chars in RFC 8187. */
function encodeRfc8187(name: string): string {
  return encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}
