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

/** A pattern element that matches one byte: a literal (one byte only), `?`, or a class (256 flags). */
type Token = { star: true } | { star: false; literal: boolean; accepts: (byte: number) => boolean }

const STAR: Token = { star: true }
const ANY: Token = { star: false, literal: false, accepts: () => true }

/**
 * A test of keys against a Redis glob, with Redis's result for every key. Matching walks the key once
 * per attempt of the last `*` only (O(key × pattern) at worst), never the exponential backtracking a
 * RegExp of `*a*a*a*…` would do on a long key.
 */
export function globMatcher(glob: string): (key: string) => boolean {
  const tokens = compile(bytes(glob))
  return (key) => matches(tokens, bytes(key))
}

/**
 * Whether the glob, read as `globMatcher` and Redis read it, starts with a literal byte: a character
 * outside a class that is neither `*` nor `?`, or any character after a `\` (a trailing `\` is itself
 * a literal). Only such a glob is bound to a part of the key space (`user:*` to keys that start with
 * `u`); any other can match every key: `*`, `*[^]`, `[a-z]*`, and `*:*` too, since every namespaced
 * key holds a `:`. Classes never count, however narrow (`[a]` included): telling a narrow class from
 * one that takes every byte (`[^]`, `[!-~]` for ASCII keys) is not worth the risk.
 */
export function globStartsWithLiteral(glob: string): boolean {
  const first = compile(bytes(glob))[0]
  return first !== undefined && !first.star && first.literal
}

function matches(tokens: readonly Token[], key: string): boolean {
  let t = 0
  let k = 0
  // The last `*` seen, and where in the key it stands to take one more byte on a mismatch.
  let star = -1
  let starFrom = 0
  while (k < key.length) {
    const token = tokens[t]
    if (token !== undefined && !token.star && token.accepts(key.charCodeAt(k))) {
      t++
      k++
    } else if (token !== undefined && token.star) {
      star = t++
      starFrom = k
    } else if (star >= 0) {
      t = star + 1
      k = ++starFrom
    } else {
      return false
    }
  }
  while (tokens[t]?.star) t++
  return t === tokens.length
}

/** The pattern (as bytes, see `bytes`) as tokens, read as stringmatchlen reads it. */
function compile(p: string): Token[] {
  const tokens: Token[] = []
  let i = 0
  while (i < p.length) {
    const c = p[i] as string
    if (c === '*') {
      if (tokens.at(-1) !== STAR) tokens.push(STAR)
    } else if (c === '?') {
      tokens.push(ANY)
    } else if (c === '\\' && i + 1 < p.length) {
      tokens.push(literal(p.charCodeAt(++i)))
    } else if (c === '[') {
      const parsed = parseClass(p, i + 1)
      tokens.push(parsed.token)
      i = parsed.end
    } else {
      tokens.push(literal(p.charCodeAt(i)))
    }
    i++
  }
  return tokens
}

function literal(code: number): Token {
  return { star: false, literal: true, accepts: (byte) => byte === code }
}

/** A class starting after its `[`, as stringmatchlen reads it; `end` is the index of its last character. */
function parseClass(p: string, from: number): { token: Token; end: number } {
  let i = from
  const negate = p[i] === '^'
  if (negate) i++
  const members = new Uint8Array(256)
  for (;;) {
    if (p[i] === '\\' && i + 1 < p.length) {
      members[p.charCodeAt(++i)] = 1
    } else if (p[i] === ']') {
      break
    } else if (i >= p.length) {
      // Unclosed: the class took the rest of the pattern.
      i = p.length - 1
      break
    } else if (i + 2 < p.length && p[i + 1] === '-') {
      for (const byte of range(p.charCodeAt(i), p.charCodeAt(i + 2))) members[byte] = 1
      i += 2
    } else {
      members[p.charCodeAt(i)] = 1
    }
    i++
  }
  // An empty class matches nothing (negated: any byte), as in Redis.
  return { token: { star: false, literal: false, accepts: (byte) => (members[byte] === 1) !== negate }, end: i }
}

/**
 * The bytes of a range of a class. Redis compares a range's bytes as C `char`s, which are signed:
 * bytes from 0x80 sort below 0x00, so `[z-é]` (0x7a to 0xc3) holds 0xc3-0xff and 0x00-0x7a.
 */
function range(a: number, b: number): number[] {
  const signed = (x: number) => (x >= 0x80 ? x - 0x100 : x)
  const [lo, hi] = signed(a) <= signed(b) ? [signed(a), signed(b)] : [signed(b), signed(a)]
  const out: number[] = []
  for (let x = lo; x <= hi; x++) out.push(x & 0xff)
  return out
}
