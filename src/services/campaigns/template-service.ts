/**
 * Stored email templates: an editable draft per template and immutable published versions.
 * Every save and every publish runs the full checks, so a draft that is stored is always sendable.
 */
import { and, desc, eq, lt, or, sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { emailTemplates, emailTemplateVersions, type TemplateVariableDecl } from '../../infra/db/schema/campaigns'
import { NotFoundError, ValidationError } from '../../lib/errors'
import type { CacheService, CacheWarmer, WarmEntry } from '../cache/cache-service'
import type { RenderedEmail } from './template-engine'
import {
  buildContext,
  checkTemplate,
  compileTemplate,
  MissingVariablesError,
  renderOrThrow,
  type TemplateKind,
} from './template-engine'
import { isUuid } from '../../lib/uuid'

export type EmailTemplateRow = typeof emailTemplates.$inferSelect
export type EmailTemplateVersionRow = typeof emailTemplateVersions.$inferSelect

export interface TemplateInput {
  name: string
  kind: TemplateKind
  subject: string
  html: string
  text?: string | null
  variables?: TemplateVariableDecl[]
  sampleData?: Record<string, unknown> | null
}

export type TemplatePatch = Partial<TemplateInput>

export interface TemplatePreview extends RenderedEmail {
  /** Null when the draft was rendered. */
  version: number | null
}

const MAX_NAME = 200
const MAX_BODY_CHARS = 512 * 1024
const PREVIEW_UNSUBSCRIBE_URL = 'https://example.com/unsubscribe/preview'
/** Published versions never change: the TTL only bounds memory. Publishing drops the template's tag anyway. */
const VERSION_CACHE_TTL = 3600
/** How many templates' latest published versions the warmer preloads. */
const TEMPLATE_WARM_LIMIT = 1000
const templateTag = (templateId: string) => `template:${templateId}`

export class EmailTemplateService {
  /** `cache` holds published version rows (a namespace of the app cache); without it every read goes to the database. */
  constructor(
    private readonly db: Database,
    private readonly cache?: CacheService,
  ) {}

  async createTemplate(input: TemplateInput): Promise<EmailTemplateRow> {
    const values = normalize(input)
    checkTemplate(values, values.sampleData)
    const [row] = await this.db.insert(emailTemplates).values(values).returning()
    return row!
  }

  async updateTemplate(id: string, patch: TemplatePatch): Promise<EmailTemplateRow> {
    const current = await this.getTemplate(id)
    const values = normalize({
      name: patch.name ?? current.name,
      kind: patch.kind ?? current.kind,
      subject: patch.subject ?? current.subject,
      html: patch.html ?? current.html,
      // An explicit null (or empty string) goes back to generating the text from the HTML.
      text: patch.text !== undefined ? patch.text : current.text,
      variables: patch.variables ?? current.variables,
      sampleData: patch.sampleData !== undefined ? patch.sampleData : current.sampleData,
    })
    checkTemplate(values, values.sampleData)
    const [row] = await this.db
      .update(emailTemplates)
      .set({ ...values, updatedAt: sql`now()` })
      .where(eq(emailTemplates.id, id))
      .returning()
    if (!row) throw new NotFoundError('Email template', id)
    return row
  }

  /**
   * Freezes the draft as the next version. Publishing an unchanged draft returns the template as
   * it is, so a retried mutation does not mint a duplicate version.
   */
  async publishTemplate(id: string): Promise<EmailTemplateRow> {
    const published = await this.db.transaction(async (tx) => {
      const [draft] = isUuid(id) ? await tx.select().from(emailTemplates).where(eq(emailTemplates.id, id)).for('update') : []
      if (!draft) throw new NotFoundError('Email template', id)
      const checked = checkTemplate(draft, draft.sampleData)
      if (draft.latestVersion > 0) {
        const [latest] = await tx
          .select()
          .from(emailTemplateVersions)
          .where(and(eq(emailTemplateVersions.templateId, id), eq(emailTemplateVersions.version, draft.latestVersion)))
        if (latest && sameContent(latest, { ...checked, kind: draft.kind })) return draft
      }
      const version = draft.latestVersion + 1
      await tx.insert(emailTemplateVersions).values({
        templateId: id,
        version,
        kind: draft.kind,
        subject: checked.subject,
        html: checked.html,
        text: checked.text,
        textGenerated: checked.textGenerated,
        variables: checked.variables,
      })
      const [row] = await tx.update(emailTemplates).set({ latestVersion: version, updatedAt: sql`now()` }).where(eq(emailTemplates.id, id)).returning()
      return row!
    })
    // After the commit: every instance drops its cached version lookups of this template.
    await this.cache?.invalidateTags([templateTag(id)]).catch(() => {})
    return published
  }

  /** Renders a published version (or the draft when `version` is null) with the given data. */
  async previewTemplate(id: string, data: unknown, version?: number | null): Promise<TemplatePreview> {
    if (data != null && (typeof data !== 'object' || Array.isArray(data))) throw ValidationError.field(['data'], 'data must be an object')
    const input = (data ?? {}) as Record<string, unknown>
    let source: { subject: string; html: string; text: string; variables: TemplateVariableDecl[] }
    if (version != null) {
      source = await this.getVersion(id, version)
    } else {
      const draft = await this.getTemplate(id)
      source = checkTemplate(draft, draft.sampleData)
    }
    const compiled = compileTemplate(source)
    const built = buildContext(
      source.variables,
      {
        email: typeof input.email === 'string' ? input.email : 'preview@example.com',
        name: typeof input.name === 'string' ? input.name : null,
        attributes: input,
      },
      PREVIEW_UNSUBSCRIBE_URL,
    )
    if ('missing' in built) throw new MissingVariablesError(built.missing)
    return { ...renderOrThrow(compiled, built.context, 'html'), version: version ?? null }
  }

  async getTemplate(id: string): Promise<EmailTemplateRow> {
    const [row] = isUuid(id) ? await this.db.select().from(emailTemplates).where(eq(emailTemplates.id, id)) : []
    if (!row) throw new NotFoundError('Email template', id)
    return row
  }

  async findTemplate(id: string): Promise<EmailTemplateRow | null> {
    const [row] = isUuid(id) ? await this.db.select().from(emailTemplates).where(eq(emailTemplates.id, id)) : []
    return row ?? null
  }

  /** Newest first; `after` is the last row of the previous page. */
  async listTemplates(options: { limit: number; after?: { createdAt: Date; id: string } }): Promise<EmailTemplateRow[]> {
    const { after } = options
    return this.db
      .select()
      .from(emailTemplates)
      .where(after ? or(lt(emailTemplates.createdAt, after.createdAt), and(eq(emailTemplates.createdAt, after.createdAt), lt(emailTemplates.id, after.id))) : undefined)
      .orderBy(desc(emailTemplates.createdAt), desc(emailTemplates.id))
      .limit(options.limit)
  }

  async getVersion(templateId: string, version: number): Promise<EmailTemplateVersionRow> {
    const row = isUuid(templateId) && Number.isSafeInteger(version)
      ? await this.cachedVersion(`${templateId}:v${version}`, [templateTag(templateId)], async () => {
          const [found] = await this.db
            .select()
            .from(emailTemplateVersions)
            .where(and(eq(emailTemplateVersions.templateId, templateId), eq(emailTemplateVersions.version, version)))
          return found
        })
      : undefined
    if (!row) throw new NotFoundError('Email template version', `${templateId}@${version}`)
    return row
  }

  async getVersionById(id: string): Promise<EmailTemplateVersionRow> {
    const load = async () => (await this.db.select().from(emailTemplateVersions).where(eq(emailTemplateVersions.id, id)))[0]
    const row = isUuid(id) ? await this.cachedVersion(`id:${id}`, [], load) : await load()
    if (!row) throw new NotFoundError('Email template version', id)
    return row
  }

  /** Preloads the latest published version of the most recently changed templates, under the keys getVersion/getVersionById read. */
  cacheWarmer(limit = TEMPLATE_WARM_LIMIT): CacheWarmer | undefined {
    if (!this.cache) return undefined
    const db = this.db
    return {
      name: 'email-templates.published',
      pattern: '*',
      load: async function* (): AsyncIterable<WarmEntry> {
        const rows = await db
          .select({ version: emailTemplateVersions })
          .from(emailTemplateVersions)
          .innerJoin(emailTemplates, and(eq(emailTemplates.id, emailTemplateVersions.templateId), eq(emailTemplates.latestVersion, emailTemplateVersions.version)))
          .orderBy(desc(emailTemplates.updatedAt))
          .limit(limit)
        for (const { version: v } of rows) {
          yield { key: `${v.templateId}:v${v.version}`, value: v, ttlSeconds: VERSION_CACHE_TTL, tags: [templateTag(v.templateId)] }
          yield { key: `id:${v.id}`, value: v, ttlSeconds: VERSION_CACHE_TTL }
        }
      },
    }
  }

  /** Only found rows are cached (a loader's undefined is never stored). */
  private cachedVersion(key: string, tags: string[], load: () => Promise<EmailTemplateVersionRow | undefined>): Promise<EmailTemplateVersionRow | undefined> {
    if (!this.cache) return load()
    return this.cache.getMultiLevel(key, load, { ttlSeconds: VERSION_CACHE_TTL, tags: tags.length > 0 ? tags : undefined })
  }

  async listVersions(templateId: string): Promise<EmailTemplateVersionRow[]> {
    return this.db.select().from(emailTemplateVersions).where(eq(emailTemplateVersions.templateId, templateId)).orderBy(desc(emailTemplateVersions.version))
  }
}

function normalize(input: TemplateInput) {
  const name = input.name.trim()
  const fieldErrors = []
  if (name.length === 0 || name.length > MAX_NAME) fieldErrors.push({ path: ['input', 'name'], message: `The name must be 1-${MAX_NAME} characters` })
  for (const part of ['subject', 'html', 'text'] as const) {
    if ((input[part]?.length ?? 0) > MAX_BODY_CHARS) fieldErrors.push({ path: ['input', part], message: `At most ${MAX_BODY_CHARS} characters` })
  }
  const sampleData = input.sampleData ?? {}
  if (typeof sampleData !== 'object' || Array.isArray(sampleData)) fieldErrors.push({ path: ['input', 'sampleData'], message: 'sampleData must be an object' })
  if (fieldErrors.length > 0) throw new ValidationError(fieldErrors.map((e) => e.message).join('; '), fieldErrors)
  const variables = (input.variables ?? []).map((v) => ({ name: v.name.trim(), required: v.required, fallback: v.fallback ?? null }))
  return {
    name,
    kind: input.kind,
    subject: input.subject,
    html: input.html,
    text: input.text != null && input.text.trim() !== '' ? input.text : null,
    variables,
    sampleData,
  }
}

function sameContent(
  a: { kind: string; subject: string; html: string; text: string; variables: TemplateVariableDecl[] },
  b: { kind: string; subject: string; html: string; text: string; variables: TemplateVariableDecl[] },
): boolean {
  return a.kind === b.kind && a.subject === b.subject && a.html === b.html && a.text === b.text && JSON.stringify(a.variables) === JSON.stringify(b.variables)
}
