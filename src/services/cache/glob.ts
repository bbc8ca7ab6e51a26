/**
 * Redis glob handling shared by L2 (SCAN MATCH) and L1 (the same keys, matched in process). L1 must
 * delete exactly what Redis deletes, so the matcher follows Redis's stringmatchlen (util.c) to the
 * letter: it matches UTF-8 bytes, not characters (`?` is one byte, so `é` takes `??`); an
 * unclosed `[` is a class running to the end of the pattern; inside a class `x-y` is a range
 * wherever a `-` follows a character (`[a-]` ranges from `a` to `]`), reversed ranges are allowed,
 * ranges compare signed bytes (see `range`), and `\` escapes the next character.
 */
export function escapeGlob(literal: string): string {
  return literal.replace(/[*?[\]\\]/g, '\\$&')
}

/** Any character that is not ASCII (UTF-16 units from 0x80). */
const NOT_ASCII = /[\u0080-\uffff]/

/** One byte per character: what Redis compares. ASCII strings are their own bytes. */
function bytes(text: string): string {
  return NOT_ASCII.test(text) ? Buffer.from(text, 'utf8').toString('latin1') : text
}

/** A test of keys against a Redis glob, with Redis's result for every key. */
export function globMatcher(glob: string): (key: string) => boolean {
  const re = globToRegExp(glob)
  return (key) => re.test(bytes(key))
}

/** The glob as a RegExp over keys' bytes (see `bytes`); use globMatcher, which converts the keys. */
export function globToRegExp(glob: string): RegExp {
  const p = bytes(glob)
  let out = ''
  let i = 0
  while (i < p.length) {
    const c = p[i] as string
    if (c === '*') {
      while (p[i + 1] === '*') i++
      out += '[\\s\\S]*'
    } else if (c === '?') {
      out += '[\\s\\S]'
    } else if (c === '\\' && i + 1 < p.length) {
      out += byte(p[++i] as string)
    } else if (c === '[') {
      const parsed = parseClass(p, i + 1)
      out += parsed.source
      i = parsed.end
    } else {
      out += byte(c)
    }
    i++
  }
  return new RegExp(`^${out}$`)
}

/** A class starting after its `[`, as stringmatchlen reads it; `end` is the index of its last character. */
function parseClass(p: string, from: number): { source: string; end: number } {
  let i = from
  const negate = p[i] === '^'
  if (negate) i++
  let members = ''
  for (;;) {
    if (p[i] === '\\' && i + 1 < p.length) {
      members += byte(p[++i] as string)
    } else if (p[i] === ']') {
      break
    } else if (i >= p.length) {
      // Unclosed: the class took the rest of the pattern.
      i = p.length - 1
      break
    } else if (i + 2 < p.length && p[i + 1] === '-') {
      members += range(p.charCodeAt(i), p.charCodeAt(i + 2))
      i += 2
    } else {
      members += byte(p[i] as string)
    }
    i++
  }
  // An empty class matches nothing (negated: any byte), as in Redis.
  const source = members === '' ? (negate ? '[\\s\\S]' : '(?!)') : `[${negate ? '^' : ''}${members}]`
  return { source, end: i }
}

/**
 * A range of a class as RegExp class members. Redis compares a range's bytes as C `char`s, which are
 * signed: bytes from 0x80 sort below 0x00, so `[z-é]` (0x7a to 0xc3) holds 0xc3-0xff and 0x00-0x7a.
 */
function range(a: number, b: number): string {
  const signed = (x: number) => (x >= 0x80 ? x - 0x100 : x)
  const [lo, hi] = signed(a) <= signed(b) ? [signed(a), signed(b)] : [signed(b), signed(a)]
  const span = (from: number, to: number) => `${byte(String.fromCharCode(from))}-${byte(String.fromCharCode(to))}`
  if (lo >= 0 || hi < 0) return span(lo & 0xff, hi & 0xff)
  return `${span(0, hi)}${span(lo & 0xff, 0xff)}`
}

/** One byte (a latin1 character) as a RegExp atom. */
function byte(c: string): string {
  return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`
}
