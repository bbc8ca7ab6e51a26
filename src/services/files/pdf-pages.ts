import { inflateSync } from 'node:zlib'

/** Object streams inflate to at most this much each: a PDF must not become a zip bomb. */
const MAX_INFLATED_BYTES = 16 * 1024 * 1024

/**
 * The page count of a PDF without a PDF library: the root page-tree node is the `/Type /Pages`
 * dictionary without a `/Parent`, and its `/Count` is the number of pages. PDF 1.5+ files often
 * keep it inside compressed object streams, so those are inflated and searched too. Undefined when
 * no page tree is found (encrypted or malformed files): the count is informative, never a gate.
 */
export function countPdfPages(pdf: Buffer): number | undefined {
  const text = pdf.toString('latin1')
  const direct = rootCount(text)
  if (direct !== undefined) return direct
  let best: number | undefined
  for (const body of objectStreams(pdf, text)) {
    const n = rootCount(body)
    if (n !== undefined) best = Math.max(best ?? 0, n)
  }
  return best
}

function rootCount(text: string): number | undefined {
  let root: number | undefined
  let any: number | undefined
  for (const match of text.matchAll(/\/Type\s*\/Pages(?![A-Za-z])/g)) {
    const dict = enclosingDict(text, match.index)
    const count = /\/Count\s+(\d+)/.exec(dict)
    if (!count) continue
    const n = Number(count[1])
    any = Math.max(any ?? 0, n)
    if (!/\/Parent\s/.test(dict)) root = Math.max(root ?? 0, n)
  }
  return root ?? any
}

/** The `<< ... >>` around a position, nesting included, within a bounded window. */
function enclosingDict(text: string, at: number): string {
  let depth = 0
  let start = at
  for (let i = at; i >= Math.max(0, at - 4096); i--) {
    if (text.startsWith('>>', i)) depth++
    else if (text.startsWith('<<', i)) {
      if (depth === 0) {
        start = i
        break
      }
      depth--
    }
  }
  depth = 0
  let end = Math.min(text.length, at + 4096)
  for (let i = at; i < Math.min(text.length, at + 4096); i++) {
    if (text.startsWith('<<', i)) depth++
    else if (text.startsWith('>>', i)) {
      if (depth === 0) {
        end = i + 2
        break
      }
      depth--
    }
  }
  return text.slice(start, end)
}

function* objectStreams(pdf: Buffer, text: string): Generator<string> {
  for (const match of text.matchAll(/\/Type\s*\/ObjStm/g)) {
    const dict = enclosingDict(text, match.index)
    if (!/\/FlateDecode/.test(dict)) continue
    const streamAt = text.indexOf('stream', match.index)
    if (streamAt < 0) continue
    let begin = streamAt + 'stream'.length
    if (text[begin] === '\r') begin++
    if (text[begin] === '\n') begin++
    const end = text.indexOf('endstream', begin)
    if (end < 0) continue
    try {
      yield inflateSync(pdf.subarray(begin, end), { maxOutputLength: MAX_INFLATED_BYTES }).toString('latin1')
    } catch {
      // A damaged stream only means no count from it.
    }
  }
}
