import { inflateSync } from 'node:zlib'

/**
 * What one count may cost, whatever the file holds. The count runs on the processing step's
 * thread and is informative only, so a file built to make it slow (thousands of `/Type /Pages`,
 * object streams that inflate to megabytes of them) gets no count rather than seconds of CPU:
 * - page-tree candidates looked at, in the file and its object streams together;
 * - object streams inflated, and the bytes they inflate to, all streams together.
 * A real PDF's page tree has a handful of `/Type /Pages` nodes per thousand pages, and its object
 * streams hold kilobytes to a few megabytes.
 */
export const PDF_COUNT_BUDGET = { candidates: 1_000, streams: 256, inflatedBytes: 8 * 1024 * 1024 }

/** How far from a `/Type /Pages` its dictionary's `<<` and `>>` are looked for. */
const DICT_WINDOW = 4096

interface Budget {
  candidates: number
  streams: number
  inflatedBytes: number
}

/**
 * The page count of a PDF without a PDF library: the root page-tree node is the `/Type /Pages`
 * dictionary without a `/Parent`, and its `/Count` is the number of pages. PDF 1.5+ files often
 * keep it inside compressed object streams, so those are inflated and searched too. Undefined when
 * no page tree is found (encrypted or malformed files) or the budget ran out first: the count is
 * informative, never a gate.
 */
export function countPdfPages(pdf: Buffer): number | undefined {
  const budget: Budget = { ...PDF_COUNT_BUDGET }
  const text = pdf.toString('latin1')
  const direct = rootCount(text, budget)
  if (direct !== undefined) return direct
  let best: number | undefined
  for (const body of objectStreams(pdf, text, budget)) {
    const n = rootCount(body, budget)
    if (n !== undefined) best = Math.max(best ?? 0, n)
    if (budget.candidates <= 0) break
  }
  return best
}

function rootCount(text: string, budget: Budget): number | undefined {
  let root: number | undefined
  let any: number | undefined
  for (const match of text.matchAll(/\/Type\s*\/Pages(?![A-Za-z])/g)) {
    if (budget.candidates-- <= 0) break
    const dict = enclosingDict(text, match.index)
    const count = /\/Count\s+(\d+)/.exec(dict)
    if (!count) continue
    const n = Number(count[1])
    any = Math.max(any ?? 0, n)
    if (!/\/Parent\s/.test(dict)) root = Math.max(root ?? 0, n)
  }
  return root ?? any
}

/** The `<< ... >>` around a position, nesting included, within DICT_WINDOW on either side. */
function enclosingDict(text: string, at: number): string {
  // Within the window only: a search in the whole text would cost its length for every candidate.
  const from = Math.max(0, at - DICT_WINDOW)
  const window = text.slice(from, Math.min(text.length, at + DICT_WINDOW))
  const pos = at - from
  let start = pos
  let depth = 0
  // From delimiter to delimiter, not character by character.
  for (let i = pos; i >= 0; ) {
    const next = Math.max(window.lastIndexOf('<<', i), window.lastIndexOf('>>', i))
    if (next < 0) break
    if (window.startsWith('>>', next)) depth++
    else if (depth === 0) {
      start = next
      break
    } else depth--
    i = next - 1
  }
  let end = window.length
  depth = 0
  for (let i = pos; i < window.length; ) {
    const open = window.indexOf('<<', i)
    const close = window.indexOf('>>', i)
    const next = open < 0 ? close : close < 0 ? open : Math.min(open, close)
    if (next < 0) break
    if (next === open) depth++
    else if (depth === 0) {
      end = next + 2
      break
    } else depth--
    i = next + 2
  }
  return window.slice(start, end)
}

function* objectStreams(pdf: Buffer, text: string, budget: Budget): Generator<string> {
  for (const match of text.matchAll(/\/Type\s*\/ObjStm/g)) {
    if (budget.streams-- <= 0 || budget.inflatedBytes <= 0) return
    const dict = enclosingDict(text, match.index)
    if (!/\/FlateDecode/.test(dict)) continue
    const streamAt = text.indexOf('stream', match.index)
    if (streamAt < 0) continue
    let begin = streamAt + 'stream'.length
    if (text[begin] === '\r') begin++
    if (text[begin] === '\n') begin++
    const end = text.indexOf('endstream', begin)
    if (end < 0) continue
    let body: Buffer
    try {
      body = inflateSync(pdf.subarray(begin, end), { maxOutputLength: budget.inflatedBytes })
    } catch {
      // Past what was left to inflate, or damaged after inflating who knows how much: either may have
      // cost the whole remainder, so nothing more is inflated (a count is never worth more).
      budget.inflatedBytes = 0
      return
    }
    budget.inflatedBytes -= body.length
    yield body.toString('latin1')
  }
}
