import { inflateSync } from 'node:zlib'

/**
 * What one count may cost, whatever the file holds. The count runs on the processing step's
 * thread and is informative only, so a file built to make it slow (thousands of `/Type /Pages`,
 * object streams that inflate to megabytes of them) gets no count rather than seconds of CPU:
 * - page-tree candidates looked at, in the file and its object streams together;
 * - object streams inflated, and the bytes they inflate to, all streams together;
 * - characters looked at while finding the dictionaries around them.
 * A real PDF's page tree has a handful of `/Type /Pages` nodes per thousand pages, and its object
 * streams hold kilobytes to a few megabytes.
 */
export const PDF_COUNT_BUDGET = { candidates: 1_000, streams: 256, inflatedBytes: 8 * 1024 * 1024, steps: 2_000_000 }

/** How far from a `/Type /Pages` its dictionary's `<<` and `>>` are looked for. */
const DICT_WINDOW = 4096

interface Budget {
  candidates: number
  streams: number
  inflatedBytes: number
  steps: number
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
    const dict = enclosingDict(text, match.index, budget)
    if (dict === undefined) break
    const count = /\/Count\s+(\d+)/.exec(dict)
    if (!count) continue
    const n = Number(count[1])
    any = Math.max(any ?? 0, n)
    if (!/\/Parent\s/.test(dict)) root = Math.max(root ?? 0, n)
  }
  return root ?? any
}

const LT = 0x3c
const GT = 0x3e

/**
 * The `<< ... >>` around a position, nesting included, within DICT_WINDOW on either side; undefined
 * once the budget's steps are spent. Each character looked at is a step: a window full of
 * delimiters costs its length, and no more than the budget allows over all candidates.
 */
function enclosingDict(text: string, at: number, budget: Budget): string | undefined {
  const floor = Math.max(0, at - DICT_WINDOW)
  const ceiling = Math.min(text.length, at + DICT_WINDOW)
  let start = at
  let depth = 0
  for (let i = at - 2; i >= floor; i--) {
    if (--budget.steps < 0) return undefined
    const a = text.charCodeAt(i)
    if (a !== text.charCodeAt(i + 1) || (a !== LT && a !== GT)) continue
    if (a === GT) depth++
    else if (depth === 0) {
      start = i
      break
    } else depth--
    i--
  }
  let end = ceiling
  depth = 0
  for (let i = at; i + 1 < ceiling; i++) {
    if (--budget.steps < 0) return undefined
    const a = text.charCodeAt(i)
    if (a !== text.charCodeAt(i + 1) || (a !== LT && a !== GT)) continue
    if (a === LT) depth++
    else if (depth === 0) {
      end = i + 2
      break
    } else depth--
    i++
  }
  return text.slice(start, end)
}

function* objectStreams(pdf: Buffer, text: string, budget: Budget): Generator<string> {
  for (const match of text.matchAll(/\/Type\s*\/ObjStm/g)) {
    if (budget.streams-- <= 0 || budget.inflatedBytes <= 0) return
    const dict = enclosingDict(text, match.index, budget)
    if (dict === undefined) return
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
