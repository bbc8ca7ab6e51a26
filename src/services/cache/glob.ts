/** Redis glob handling shared by L2 (SCAN MATCH) and L1 (the same keys, matched in process). */
export function escapeGlob(literal: string): string {
  return literal.replace(/[*?[\]\\]/g, '\\$&')
}

/** Translates Redis glob syntax (as in its stringmatchlen) so both backends match the same keys. */
export function globToRegExp(glob: string): RegExp {
  let out = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string
    if (c === '*') out += '[\\s\\S]*'
    else if (c === '?') out += '[\\s\\S]'
    else if (c === '\\' && i + 1 < glob.length) out += escapeRegExp(glob[++i] as string)
    else if (c === '[') {
      const close = findClassEnd(glob, i + 1)
      if (close === -1) {
        out += escapeRegExp(c)
        continue
      }
      let body = glob.slice(i + 1, close)
      const negate = body.startsWith('^')
      if (negate) body = body.slice(1)
      out += `[${negate ? '^' : ''}${classBody(body)}]`
      i = close
    } else out += escapeRegExp(c)
  }
  return new RegExp(`^${out}$`)
}

function findClassEnd(glob: string, from: number): number {
  for (let i = from; i < glob.length; i++) {
    if (glob[i] === '\\') i++
    else if (glob[i] === ']') return i
  }
  return -1
}

function classBody(body: string): string {
  let out = ''
  let i = 0
  const next = (): string => {
    const c = body[i++] as string
    return c === '\\' && i < body.length ? (body[i++] as string) : c
  }
  while (i < body.length) {
    const from = next()
    if (body[i] === '-' && i + 1 < body.length) {
      i++
      const to = next()
      // Redis accepts a reversed range such as [z-a]; a RegExp would throw.
      const [lo, hi] = from <= to ? [from, to] : [to, from]
      out += `${escapeRegExp(lo)}-${escapeRegExp(hi)}`
    } else {
      out += escapeRegExp(from)
    }
  }
  return out
}

function escapeRegExp(c: string): string {
  return /[\\^$.*+?()[\]{}|/-]/.test(c) ? `\\${c}` : c
}
