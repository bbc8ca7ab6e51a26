/**
 * Audiences (lists) of contacts, and the global suppression list every campaign honours.
 */
import type { Readable } from 'node:stream'
import { and, asc, desc, eq, gt, inArray, lt, or, sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { audiences, contacts, suppressions } from '../../infra/db/schema/campaigns'
import { checkEmail } from '../../lib/email-address'
import { NotFoundError, ValidationError } from '../../lib/errors'
import type { Publish } from '../files/upload-progress'
import { importContactsCsv, type ColumnMapping, type ImportReport } from './contact-import'
import { isUuid } from '../../lib/uuid'
import { ImportProgress } from './import-progress'
import { checkContact, insertContactRows, type ContactInput, type ContactRowInput } from './contact-rows'
import { suppressAddress } from './recipient-feedback'

export type AudienceRow = typeof audiences.$inferSelect
export type ContactRow = typeof contacts.$inferSelect
export type SuppressionRow = typeof suppressions.$inferSelect
export type ContactStatus = ContactRow['status']
export type SuppressionReason = SuppressionRow['reason']

export type { ContactInput }

export type ContactProblemCode = 'INVALID' | 'DUPLICATE_IN_INPUT' | 'ALREADY_IN_AUDIENCE'

export interface ContactProblem {
  /** Position in the input list. */
  index: number
  email: string
  code: ContactProblemCode
  message: string
}

export interface AddContactsReport {
  added: number
  problems: ContactProblem[]
}

/** addContacts is for small sets; bigger lists go through importContacts. */
export const MAX_ADD_CONTACTS = 1000
const MAX_NAME = 200

export interface ImportContactsOptions {
  mapping?: ColumnMapping | null
  /** Progress goes to the uploadProgress(uploadId) subscription of this owner, as for file uploads. */
  progress?: { ownerId: string; uploadId: string }
}

export class AudienceService {
  constructor(
    private readonly db: Database,
    private readonly publish?: Publish,
    /** Told which campaigns' counters a suppression moved (their queued rows were dropped). */
    private readonly statsChanged?: (campaignIds: string[]) => Promise<void>,
  ) {}

  /** Streams a CSV into the audience; bad rows are reported in the result, never thrown. */
  async importContacts(audienceId: string, stream: Readable, options: ImportContactsOptions = {}): Promise<ImportReport> {
    try {
      await this.getAudience(audienceId)
    } catch (err) {
      stream.resume()
      throw err
    }
    const reporter = options.progress && this.publish ? new ImportProgress(this.publish, options.progress.ownerId, options.progress.uploadId) : undefined
    reporter?.receiving()
    try {
      const report = await importContactsCsv(this.db, audienceId, stream, { mapping: options.mapping, progress: reporter })
      reporter?.completed()
      return report
    } catch (err) {
      reporter?.failed(err instanceof Error ? err.message : 'The import failed')
      throw err
    }
  }

  async createAudience(input: { name: string; description?: string | null }): Promise<AudienceRow> {
    const name = input.name.trim()
    if (name.length === 0 || name.length > MAX_NAME) throw ValidationError.field(['input', 'name'], `The name must be 1-${MAX_NAME} characters`)
    const [row] = await this.db.insert(audiences).values({ name, description: input.description?.trim() || null }).returning()
    return row!
  }

  async getAudience(id: string): Promise<AudienceRow> {
    const row = await this.findAudience(id)
    if (!row) throw new NotFoundError('Audience', id)
    return row
  }

  async findAudience(id: string): Promise<AudienceRow | null> {
    const [row] = isUuid(id) ? await this.db.select().from(audiences).where(eq(audiences.id, id)) : []
    return row ?? null
  }

  async listAudiences(options: { limit: number; after?: { createdAt: Date; id: string } }): Promise<AudienceRow[]> {
    const { after } = options
    return this.db
      .select()
      .from(audiences)
      .where(after ? or(lt(audiences.createdAt, after.createdAt), and(eq(audiences.createdAt, after.createdAt), lt(audiences.id, after.id))) : undefined)
      .orderBy(desc(audiences.createdAt), desc(audiences.id))
      .limit(options.limit)
  }

  /** A count on demand, for an admin looking at one audience; campaigns never count this way. */
  async countContacts(audienceId: string, status?: ContactStatus): Promise<number> {
    const [row] = await this.db
      .select({ n: sql<number>`count(*)::int` })
      .from(contacts)
      .where(and(eq(contacts.audienceId, audienceId), status ? eq(contacts.status, status) : undefined))
    return row?.n ?? 0
  }

  /** By id: a stable order, so paging is consistent while contacts are being added. */
  async listContacts(audienceId: string, options: { limit: number; afterId?: string; status?: ContactStatus }): Promise<ContactRow[]> {
    return this.db
      .select()
      .from(contacts)
      .where(
        and(
          eq(contacts.audienceId, audienceId),
          options.status ? eq(contacts.status, options.status) : undefined,
          options.afterId ? gt(contacts.id, options.afterId) : undefined,
        ),
      )
      .orderBy(asc(contacts.id))
      .limit(options.limit)
  }

  /**
   * Adds valid, new addresses and reports every other one: invalid, repeated within the input, or
   * already in the audience (compared case-insensitively). Never fails as a whole for bad entries.
   */
  async addContacts(audienceId: string, input: ContactInput[]): Promise<AddContactsReport> {
    await this.getAudience(audienceId)
    if (input.length > MAX_ADD_CONTACTS) {
      throw ValidationError.field(['contacts'], `At most ${MAX_ADD_CONTACTS} contacts per call; use importContacts for more`)
    }
    const problems: ContactProblem[] = []
    const rows: (ContactRowInput & { index: number })[] = []
    const firstIndex = new Map<string, number>()
    input.forEach((contact, index) => {
      const checked = checkContact(contact)
      if ('error' in checked) {
        problems.push({ index, email: String(contact.email), code: 'INVALID', message: checked.error })
        return
      }
      const key = checked.row.email.toLowerCase()
      const first = firstIndex.get(key)
      if (first !== undefined) {
        problems.push({ index, email: checked.row.email, code: 'DUPLICATE_IN_INPUT', message: `Same address as contacts[${first}]` })
        return
      }
      firstIndex.set(key, index)
      rows.push({ ...checked.row, index })
    })
    const inserted = await insertContactRows(this.db, audienceId, rows)
    for (const row of rows) {
      if (!inserted.has(row.email.toLowerCase())) {
        problems.push({ index: row.index, email: row.email, code: 'ALREADY_IN_AUDIENCE', message: 'The address is already in this audience' })
      }
    }
    problems.sort((a, b) => a.index - b.index)
    return { added: inserted.size, problems }
  }

  /** Adds (or re-labels) addresses on the global suppression list. Returns how many were new. */
  async suppress(emails: string[], reason: SuppressionReason, source: string | null): Promise<number> {
    const normalized: string[] = []
    emails.forEach((email, i) => {
      const checked = checkEmail(email.trim())
      if (!checked.valid) throw ValidationError.field(['emails', String(i)], `The address ${checked.reason}`)
      normalized.push(checked.normalized!.toLowerCase())
    })
    if (normalized.length === 0) return 0
    const unique = [...new Set(normalized)]
    if (unique.length > MAX_ADD_CONTACTS) throw ValidationError.field(['emails'], `At most ${MAX_ADD_CONTACTS} addresses per call`)
    const existing = await this.db.select({ email: suppressions.email }).from(suppressions).where(inArray(suppressions.email, unique))
    const known = new Set(existing.map((e) => e.email))
    const touched: string[] = []
    try {
      for (const email of unique) {
        if (!known.has(email)) touched.push(...(await this.db.transaction((tx) => suppressAddress(tx as unknown as Database, email, reason, source ?? 'admin'))))
      }
    } finally {
      // Each address committed on its own: the ones done before a failure count too.
      await this.statsChanged?.(touched)
    }
    return unique.length - known.size
  }

  async unsuppress(email: string): Promise<boolean> {
    const removed = await this.db.delete(suppressions).where(eq(suppressions.email, email.trim().toLowerCase())).returning({ email: suppressions.email })
    return removed.length > 0
  }

  async listSuppressions(options: { limit: number; afterEmail?: string }): Promise<SuppressionRow[]> {
    return this.db
      .select()
      .from(suppressions)
      .where(options.afterEmail ? gt(suppressions.email, options.afterEmail) : undefined)
      .orderBy(asc(suppressions.email))
      .limit(options.limit)
  }

  async isSuppressed(email: string): Promise<SuppressionRow | null> {
    const [row] = await this.db.select().from(suppressions).where(eq(suppressions.email, email.trim().toLowerCase()))
    return row ?? null
  }
}
