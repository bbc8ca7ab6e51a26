/**
 * Sits between an uploaded CSV and the parser. A physical line that is longer than the limit or is
 * not UTF-8 is reported and replaced by an empty line, so the parser neither buffers megabytes for
 * one record nor turns a Latin-1 "é" into U+FFFD, and line numbers stay those of the file.
 * Whole regions that pass (the common case) go through as one chunk, without per-line copies.
 */
import { isUtf8 } from 'node:buffer'
import { Transform, type TransformCallback } from 'node:stream'

export interface LineIssue {
  line: number
  message: string
}

export interface LineGuardOptions {
  maxLineBytes: number
  onIssue(issue: LineIssue): void
  /** Bytes read so far, for progress. */
  onBytes?(total: number): void
}

const NEWLINE = 0x0a
const EMPTY_LINE = Buffer.from('\n')

export class UnsupportedEncodingError extends Error {}

export function createLineGuard(options: LineGuardOptions): Transform {
  const { maxLineBytes, onIssue } = options
  let partial: Buffer = Buffer.alloc(0)
  /** The current line already passed the limit; its bytes are being thrown away until its newline. */
  let dropping = false
  let line = 1
  let bytes = 0
  let first = true

  const checkLine = (content: Buffer, tooLong: boolean, out: Buffer[]) => {
    if (tooLong) onIssue({ line, message: `The line is longer than ${maxLineBytes} bytes and was skipped` })
    else if (!isUtf8(content) || content.includes(0)) onIssue({ line, message: 'The line is not valid UTF-8 text and was skipped; save the file as UTF-8' })
    else {
      out.push(content, EMPTY_LINE)
      line++
      return
    }
    out.push(EMPTY_LINE)
    line++
  }

  /** `region` ends with a newline; the first line of it is dropped when `dropFirst`. */
  const processRegion = (region: Buffer, dropFirst: boolean): Buffer[] => {
    let fast = !dropFirst && isUtf8(region) && !region.includes(0)
    if (fast) {
      for (let start = 0; start < region.length; ) {
        const nl = region.indexOf(NEWLINE, start)
        if (nl - start > maxLineBytes) {
          fast = false
          break
        }
        start = nl + 1
      }
    }
    if (fast) {
      let count = 0
      for (let i = region.indexOf(NEWLINE); i !== -1; i = region.indexOf(NEWLINE, i + 1)) count++
      line += count
      return [region]
    }
    const out: Buffer[] = []
    let start = 0
    let firstLine = true
    while (start < region.length) {
      const nl = region.indexOf(NEWLINE, start)
      const content = region.subarray(start, nl)
      checkLine(content, (firstLine && dropFirst) || content.length > maxLineBytes, out)
      firstLine = false
      start = nl + 1
    }
    return out
  }

  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      bytes += chunk.length
      options.onBytes?.(bytes)
      if (first) {
        first = false
        // UTF-16 text is mostly valid UTF-8 bytes (ASCII plus NULs), so the per-line check alone would report every line.
        if ((chunk[0] === 0xff && chunk[1] === 0xfe) || (chunk[0] === 0xfe && chunk[1] === 0xff)) {
          callback(new UnsupportedEncodingError('The file is UTF-16; save it as UTF-8 CSV'))
          return
        }
      }
      const buffer = partial.length > 0 ? Buffer.concat([partial, chunk]) : chunk
      const lastNl = buffer.lastIndexOf(NEWLINE)
      if (lastNl === -1) {
        keepPartial(buffer)
        callback()
        return
      }
      const out = processRegion(buffer.subarray(0, lastNl + 1), dropping)
      dropping = false
      keepPartial(buffer.subarray(lastNl + 1))
      callback(null, out.length === 1 ? out[0] : Buffer.concat(out))
    },
    flush(callback: TransformCallback) {
      if (partial.length === 0 && !dropping) return callback()
      const out: Buffer[] = []
      checkLine(partial, dropping, out)
      partial = Buffer.alloc(0)
      // The last line had no newline, and none is added: in a file whose lines end with a bare CR, an
      // added LF would be read as one more row. A line left out needs no stand-in either, being the last.
      const kept = out.length === 2 ? out[0]! : Buffer.alloc(0)
      callback(null, kept.length > 0 ? kept : undefined)
    },
  })

  function keepPartial(rest: Buffer) {
    if (dropping || rest.length > maxLineBytes) {
      dropping = true
      partial = Buffer.alloc(0)
    } else {
      // A copy: the rest may be a view into a large chunk that would otherwise stay in memory.
      partial = Buffer.from(rest)
    }
  }
}
