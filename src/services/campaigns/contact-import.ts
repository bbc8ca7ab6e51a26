/**
 * Streams a CSV into an audience: line guard -> csv-parse -> validation -> multi-row INSERTs of
 * a few thousand rows, with the next batch parsed while the previous one is being written. Bad rows
 * are reported with their line number and never stop the import.
 */
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { parse, type CsvError } from 'csv-parse'
import type { Database } from '../../infra/db/client'
import { ValidationError } from '../../lib/errors'
import { checkContact, insertContactRows, type ContactRowInput } from './contact-rows'
import { createLineGuard, UnsupportedEncodingError } from './csv-line-guard'

export interface ColumnMapping {
  /** Header of the address column; default: the first of email, e-mail, email address, mail. */
  email?: string | null
  /** Header of the name column; default: name or full name, else first name + last name. */
  name?: string | null
  /** Headers to keep as attributes; default: every other column. */
  attributes?: string[] | null
}

export interface ImportRowError {
  line: number
  email: string | null
  message: string
}

export interface ImportReport {
  /** Data rows seen (the header and blank lines excluded). */
  rowsRead: number
  imported: number
  /** Already in the audience, or repeated in the file. */
  duplicates: number
  /** Rows refused: bad address, unparseable, too long, not UTF-8. */
  invalid: number
  /** The first MAX_REPORTED_ERRORS problems. */
  errors: ImportRowError[]
  errorsTruncated: boolean
  /** False when the file could not be read to its end; rows before that point were imported. */
  completed: boolean
  emailColumn: string
  nameColumns: string[]
  attributeColumns: { header: string; key: string }[]
}

export interface ImportProgress {
  bytes(total: number): void
  storing(): void
}

export interface ImportOptions {
  mapping?: ColumnMapping | null
  batchSize?: number
  maxLineBytes?: number
  progress?: ImportProgress
}

const DEFAULT_BATCH = 5_000
const DEFAULT_MAX_LINE_BYTES = 64 * 1024
/** A quoted field may span lines; this bounds what one unterminated quote can make the parser buffer. */
const MAX_RECORD_BYTES = 1024 * 1024
const MAX_REPORTED_ERRORS = 100
const EMAIL_HEADERS = ['email', 'e-mail', 'email address', 'e-mail address', 'mail']
const NAME_HEADERS = ['name', 'full name', 'fullname']

export async function importContactsCsv(db: Database, audienceId: string, input: Readable, options: ImportOptions = {}): Promise<ImportReport> {
  const batchSize = options.batchSize ?? DEFAULT_BATCH
  const report: ImportReport = {
    rowsRead: 0,
    imported: 0,
    duplicates: 0,
    invalid: 0,
    errors: [],
    errorsTruncated: false,
    completed: true,
    emailColumn: '',
    nameColumns: [],
    attributeColumns: [],
  }
  const addError = (error: ImportRowError) => {
    report.invalid++
    if (report.errors.length < MAX_REPORTED_ERRORS) report.errors.push(error)
    else report.errorsTruncated = true
  }

  const guard = createLineGuard({
    maxLineBytes: options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES,
    onIssue: (issue) => addError({ line: issue.line, email: null, message: issue.message }),
    onBytes: options.progress ? (n) => options.progress!.bytes(n) : undefined,
  })
  const parser = parse({
    bom: true,
    skip_empty_lines: true,
    relax_column_count: true,
    // A quote inside an unquoted field (Bob "The Builder" Smith) is text, as spreadsheets write it.
    relax_quotes: true,
    skip_records_with_error: true,
    max_record_size: MAX_RECORD_BYTES,
    info: true,
  })
  let unterminated = false
  let lastSkipped = ''
  parser.on('skip', (err: CsvError) => {
    const line = typeof err.lines === 'number' ? err.lines : 0
    if (err.code === 'CSV_MAX_RECORD_SIZE' || err.code === 'CSV_QUOTE_NOT_CLOSED') {
      // The parser stops reading here, but may say so again for every later chunk.
      if (unterminated) return
      unterminated = true
      report.completed = false
      const { opened, last } = unterminatedField(parser, line, err.code === 'CSV_QUOTE_NOT_CLOSED')
      addError({
        line: opened,
        email: null,
        message:
          err.code === 'CSV_QUOTE_NOT_CLOSED'
            ? `Unterminated quoted field opened on line ${opened}; the rest of the file (to line ${last}) was read as that one field and not imported`
            : `Unterminated quoted field opened on line ${opened}: it passed ${MAX_RECORD_BYTES} bytes, and the file was not read past line ${last}`,
      })
      return
    }
    // One record can raise several errors (every stray quote on a line, before relax_quotes); it is one invalid row.
    const record = `${String(err.records)}:${line}`
    if (record === lastSkipped) return
    lastSkipped = record
    addError({ line, email: null, message: `Unreadable row: ${err.message.replace(/ at line \d+.*$/, '')}` })
  })

  let mapping: ResolvedMapping | undefined
  let batch: ContactRowInput[] = []
  let inFlight: Promise<void> = Promise.resolve()
  const flush = () => {
    const rows = batch
    batch = []
    if (rows.length === 0) return
    // One insert in flight while the next batch is parsed; awaiting the previous first keeps it at one.
    inFlight = inFlight.then(async () => {
      const inserted = await insertContactRows(db, audienceId, rows)
      report.imported += inserted.size
      report.duplicates += rows.length - inserted.size
    })
  }

  const source = pipeline(input, guard, parser).catch((err: unknown) => {
    throw toImportError(err)
  })
  // Reading the parser drives the pipeline; its errors surface through `source`.
  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: string[]; info: { lines: number } }>) {
      if (!mapping) {
        mapping = resolveMapping(record, options.mapping)
        report.emailColumn = record[mapping.email]!.trim()
        report.nameColumns = mapping.name.map((i) => record[i]!.trim())
        report.attributeColumns = mapping.attributes.map(({ index, key }) => ({ header: record[index]!.trim(), key }))
        continue
      }
      report.rowsRead++
      const row = toContact(record, mapping)
      if (record.length > mapping.width) {
        addError({ line: info.lines, email: row.email || null, message: `The row has ${record.length} fields but the header has ${mapping.width}` })
        continue
      }
      const checked = checkContact(row)
      if ('error' in checked) {
        addError({ line: info.lines, email: row.email || null, message: checked.error })
        continue
      }
      batch.push(checked.row)
      if (batch.length >= batchSize) {
        await inFlight
        flush()
      }
    }
  } catch (err) {
    await source.catch(() => {})
    await inFlight.catch(() => {})
    throw toImportError(err)
  }
  await source
  options.progress?.storing()
  flush()
  await inFlight
  if (!mapping) throw ValidationError.field(['file'], 'The file is empty: it needs a header row with an email column')
  if ((input as Readable & { truncated?: boolean }).truncated) {
    report.completed = false
    addError({ line: 0, email: null, message: 'The file exceeds the upload size limit; only its beginning was imported' })
  }
  return report
}

/**
 * Where the open quoted field began and the last line read into it. The parser's line now, less
 * the line breaks read inside that field, is the opening line: the parser counts each CR and each
 * LF as a line (a CRLF inside quotes twice), and at the end of the input a break that is the last
 * character is not counted yet. The last line counts a CRLF once, as the file's lines do. Falls
 * back to the parser's line when it does not expose its state.
 */
function unterminatedField(parser: unknown, line: number, atEnd: boolean): { opened: number; last: number } {
  const field = (parser as { state?: { field?: { toString(encoding?: BufferEncoding): string } } }).state?.field
  if (!field || typeof field.toString !== 'function') return { opened: line, last: line }
  const text = field.toString('utf8')
  let counted = 0
  let lines = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x0a || c === 0x0d) counted++
    if (c === 0x0a || (c === 0x0d && text.charCodeAt(i + 1) !== 0x0a)) lines++
  }
  if (atEnd && /[\r\n]$/.test(text)) {
    counted--
    lines--
  }
  const opened = Math.max(1, line - counted)
  return { opened, last: opened + Math.max(0, lines) }
}

function toImportError(err: unknown): unknown {
  return err instanceof UnsupportedEncodingError ? ValidationError.field(['file'], err.message) : err
}

interface ResolvedMapping {
  width: number
  email: number
  name: number[]
  attributes: { index: number; key: string }[]
}

function resolveMapping(header: string[], given: ColumnMapping | null | undefined): ResolvedMapping {
  const names = header.map((h) => h.trim())
  const lower = names.map((h) => h.toLowerCase())
  const find = (wanted: string, what: string) => {
    const i = lower.indexOf(wanted.trim().toLowerCase())
    if (i === -1) throw ValidationError.field(['mapping', what], `The file has no column "${wanted}" (columns: ${names.join(', ')})`)
    return i
  }
  const email = given?.email ? find(given.email, 'email') : lower.findIndex((h) => EMAIL_HEADERS.includes(h))
  if (email === -1) {
    throw ValidationError.field(['file'], `The header row needs an email column (one of: ${EMAIL_HEADERS.join(', ')}); found: ${names.join(', ')}`)
  }
  let name: number[] = []
  if (given?.name) name = [find(given.name, 'name')]
  else {
    const full = lower.findIndex((h) => NAME_HEADERS.includes(h))
    if (full !== -1) name = [full]
    else name = [lower.findIndex((h) => h === 'first name' || h === 'firstname' || h === 'first_name'), lower.findIndex((h) => h === 'last name' || h === 'lastname' || h === 'last_name')].filter((i) => i !== -1)
  }
  const taken = new Set([email, ...name])
  const attributeIndexes = given?.attributes ? given.attributes.map((h) => find(h, 'attributes')) : names.map((_, i) => i).filter((i) => !taken.has(i))
  const attributes = attributeIndexes.filter((i) => names[i] !== '').map((index) => ({ index, key: attributeKey(names[index]!) }))
  return { width: header.length, email, name, attributes }
}

/** "First Name" -> firstName, "zip_code" -> zipCode: keys a template can write as {{firstName}}. */
export function attributeKey(header: string): string {
  const words = header.normalize('NFKD').replace(/[^\p{L}\p{N}]+/gu, ' ').trim().split(' ').filter(Boolean)
  const key = words.map((w, i) => (i === 0 ? w.charAt(0).toLowerCase() + w.slice(1) : w.charAt(0).toUpperCase() + w.slice(1))).join('')
  return /^[A-Za-z_]/.test(key) ? key.replace(/[^A-Za-z0-9_]/g, '') : `_${key.replace(/[^A-Za-z0-9_]/g, '')}`
}

function toContact(record: string[], mapping: ResolvedMapping) {
  const attributes: Record<string, string> = {}
  for (const { index, key } of mapping.attributes) {
    const value = record[index]?.trim()
    if (value) attributes[key] = value
  }
  const name = mapping.name.map((i) => record[i]?.trim() ?? '').filter(Boolean).join(' ')
  return { email: (record[mapping.email] ?? '').trim(), name: name || null, attributes }
}
