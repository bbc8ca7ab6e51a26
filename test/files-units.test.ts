import { deflateSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { expectedPartSize, MAX_PARTS, MIN_PART_BYTES, planParts } from '../src/services/files/part-plan'
import { countPdfPages, PDF_COUNT_BUDGET } from '../src/services/files/pdf-pages'
import { progressStream } from '../src/services/files/progress-stream'
import type { UploadProgressEvent } from '../src/services/files/upload-progress'

const MiB = 1024 * 1024

describe('planParts', () => {
  it('uses the preferred size, never below S3 minimum, and one part for a small file', () => {
    expect(planParts(100 * MiB, 8 * MiB)).toEqual({ partSize: 8 * MiB, partCount: 13 })
    expect(planParts(1, 1 * MiB)).toEqual({ partSize: MIN_PART_BYTES, partCount: 1 })
  })

  it('raises the part size in whole MiB so that no upload needs more than 10,000 parts', () => {
    const size = 5 * 1024 * 1024 * MiB // 5 TiB
    const plan = planParts(size, 8 * MiB)
    expect(plan.partCount).toBeLessThanOrEqual(MAX_PARTS)
    expect(plan.partSize % MiB).toBe(0)
    expect(planParts(MAX_PARTS * 8 * MiB, 8 * MiB)).toEqual({ partSize: 8 * MiB, partCount: MAX_PARTS })
    expect(planParts(MAX_PARTS * 8 * MiB + 1, 8 * MiB).partSize).toBe(9 * MiB)
  })

  it('expects every part at partSize except the last, which holds the rest', () => {
    const session = { size: 20 * MiB + 3, partSize: 8 * MiB, partCount: 3 }
    expect([1, 2, 3].map((n) => expectedPartSize(session, n))).toEqual([8 * MiB, 8 * MiB, 4 * MiB + 3])
  })
})

describe('countPdfPages', () => {
  it('reads /Count of the root page tree, not of a nested one', () => {
    const pdf = Buffer.from('%PDF-1.4\n2 0 obj << /Type /Pages /Kids [4 0 R 5 0 R] /Count 12 >> endobj\n4 0 obj << /Type /Pages /Parent 2 0 R /Count 5 >> endobj\n')
    expect(countPdfPages(pdf)).toBe(12)
  })

  it('answers undefined when there is no page tree to read', () => {
    expect(countPdfPages(Buffer.from('%PDF-1.7\nnothing here'))).toBeUndefined()
  })

  const objStm = (body: Buffer) =>
    Buffer.concat([Buffer.from('1 0 obj\n<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode >>\nstream\n', 'latin1'), deflateSync(body), Buffer.from('\nendstream\nendobj\n', 'latin1')])
  const tree = Buffer.from('2 0 obj << /Type /Pages /Kids [3 0 R] /Count 7 /Resources << /Font << /F1 4 0 R >> >> >> endobj ', 'latin1')

  it('finds the page tree inside a compressed object stream, nested dictionaries and all', () => {
    expect(countPdfPages(Buffer.concat([Buffer.from('%PDF-1.7\n'), objStm(tree)]))).toBe(7)
  })

  it('looks at no more page-tree candidates than its budget: a file made of them gets no count, not seconds of work', () => {
    const decoys = '<< /Type /Pages /Parent 9 0 R >> '.repeat(PDF_COUNT_BUDGET.candidates)
    expect(countPdfPages(Buffer.from(`%PDF-1.4\n${decoys}2 0 obj << /Type /Pages /Count 7 >> endobj`, 'latin1'))).toBeUndefined()
    expect(countPdfPages(Buffer.from(`%PDF-1.4\n${decoys.slice(0, -40)}2 0 obj << /Type /Pages /Count 7 >> endobj`, 'latin1'))).toBe(7)
  })

  it('looks at no more characters than its budget while finding dictionaries: windows without one end the count', () => {
    // No dictionary around a decoy: each costs its whole window, 4 KB each way, 8 KB looked at.
    const decoy = '> '.repeat(2048) + '/Type/Pages '
    const root = '2 0 obj << /Type /Pages /Count 7 >> endobj'
    expect(countPdfPages(Buffer.from(`%PDF-1.4\n${decoy.repeat(200)}${root}`, 'latin1'))).toBe(7)
    expect(countPdfPages(Buffer.from(`%PDF-1.4\n${decoy.repeat(400)}${root}`, 'latin1'))).toBeUndefined()
    expect(200 * 8192).toBeLessThan(PDF_COUNT_BUDGET.steps)
    expect(400 * 8192).toBeGreaterThan(PDF_COUNT_BUDGET.steps)
  })

  it('inflates no more than its budget over all object streams: past it, nothing more is inflated', () => {
    const blank = (bytes: number) => objStm(Buffer.alloc(bytes, 0x20))
    const head = Buffer.from('%PDF-1.7\n')
    // Streams that together fit the budget are all read; one byte more and the tree behind them is not.
    const half = PDF_COUNT_BUDGET.inflatedBytes / 2
    expect(countPdfPages(Buffer.concat([head, blank(half), blank(half - 1024), objStm(tree)]))).toBe(7)
    expect(countPdfPages(Buffer.concat([head, blank(half), blank(half + 1), objStm(tree)]))).toBeUndefined()
    // A stream that fails to inflate (past the budget, or damaged) ends the search as well.
    const damaged = Buffer.concat([Buffer.from('1 0 obj\n<< /Type /ObjStm /Filter /FlateDecode >>\nstream\n', 'latin1'), Buffer.from('not zlib at all'), Buffer.from('\nendstream\nendobj\n')])
    expect(countPdfPages(Buffer.concat([head, damaged, objStm(tree)]))).toBeUndefined()
  })
})

function event(runId: string, stage: UploadProgressEvent['stage'], percent: number): UploadProgressEvent {
  return { uploadId: 'u', fileId: null, stage, step: 1, steps: 4, bytesReceived: 0, bytesTotal: null, percent, error: null, runId }
}

function liveOf(events: UploadProgressEvent[]) {
  let returned = false
  const iterator: AsyncIterator<unknown> = {
    next: async () => (events.length > 0 ? { done: false, value: events.shift() } : new Promise<IteratorResult<unknown>>(() => {})),
    return: async () => {
      returned = true
      return { done: true, value: undefined }
    },
  }
  return { iterator, returned: () => returned }
}

describe('progressStream', () => {
  it('yields the saved state first, drops events that would move percent backwards, and ends after the terminal one', async () => {
    const live = liveOf([event('r', 'RECEIVING', 10), event('r', 'RECEIVING', 40), event('r', 'VALIDATING', 50), event('r', 'COMPLETED', 100), event('r', 'RECEIVING', 5)])
    const seen: number[] = []
    for await (const e of progressStream(event('r', 'RECEIVING', 30), live.iterator)) seen.push(e.percent)
    expect(seen).toEqual([30, 40, 50, 100])
    expect(live.returned()).toBe(true)
  })

  it('ends at once when the saved state is terminal', async () => {
    const live = liveOf([])
    const seen: string[] = []
    for await (const e of progressStream(event('r', 'FAILED', 20), live.iterator)) seen.push(e.stage)
    expect(seen).toEqual(['FAILED'])
    expect(live.returned()).toBe(true)
  })

  it('releases the live subscription when the client leaves while nothing happens', async () => {
    const live = liveOf([])
    const stream = progressStream(undefined, live.iterator)
    void stream.next()
    await stream.return!()
    expect(live.returned()).toBe(true)
  })
})
