/**
 * Transactional email templates: one directory per template under ./templates with
 * subject.hbs, html.hbs, text.hbs and meta.json (the variables it needs).
 *
 * Data is checked against meta.json before rendering, so a caller gets field errors instead of
 * a half-rendered email, and templates compile with `strict: true` so a template that uses an
 * undeclared variable fails loudly instead of sending a blank.
 */
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import Handlebars from 'handlebars'
import { NotFoundError, ValidationError, type FieldError } from '../../lib/errors'

export type TemplateVariableType = 'string' | 'number' | 'date' | 'url'

export interface TemplateVariable {
  /** Dotted path into the data, e.g. `event.title`. */
  name: string
  required: boolean
  /** Defaults to `string`. */
  type?: TemplateVariableType
  /** Used when an optional variable is missing. */
  fallback?: string | number
}

export interface TemplateMeta {
  description?: string
  variables: TemplateVariable[]
}

export interface RenderedEmail {
  subject: string
  html: string
  text: string
}

export type EmailRenderer = (template: string, data: unknown) => RenderedEmail

interface CompiledTemplate {
  meta: TemplateMeta
  subject: Handlebars.TemplateDelegate
  html: Handlebars.TemplateDelegate
  text: Handlebars.TemplateDelegate
}

// Resolved from this file, not the cwd, so tests, scripts and the server all find the same files.
const TEMPLATES_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'templates')
const VARIABLE_TYPES: readonly TemplateVariableType[] = ['string', 'number', 'date', 'url']
// A time needs an explicit zone: without one, Date would read it in the server's local zone.
const ISO_DATE = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2}))?$/

const dateFormat = new Intl.DateTimeFormat('en-GB', { timeZone: 'UTC', dateStyle: 'full', timeStyle: 'short' })

/**
 * `2025-06-03T14:00:00Z` -> `Tuesday, 3 June 2025 at 14:00 UTC`. Always UTC: the recipient's zone
 * is unknown here, and a fixed zone keeps a re-rendered retry byte-identical for the provider's
 * idempotency check.
 */
export function formatDate(value: string | Date): string {
  const date = value instanceof Date ? value : new Date(value)
  if (Number.isNaN(date.getTime())) throw new Error(`formatDate: "${String(value)}" is not a date`)
  return `${dateFormat.format(date)} UTC`
}

let registry: Map<string, CompiledTemplate> | undefined

function loadTemplates(): Map<string, CompiledTemplate> {
  if (registry) return registry
  // An isolated environment: helpers and partials registered elsewhere cannot leak into emails.
  const hb = Handlebars.create()
  hb.registerHelper('formatDate', (value: unknown) => formatDate(value as string))
  hb.registerPartial('layout', hb.compile(read('layout.hbs'), { strict: true }))

  const templates = new Map<string, CompiledTemplate>()
  for (const entry of readdirSync(TEMPLATES_DIR, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue
    const name = entry.name
    templates.set(name, {
      meta: parseMeta(name, read(name, 'meta.json')),
      // Subject and text are not HTML: escaping would put `&amp;` into them.
      subject: hb.compile(read(name, 'subject.hbs'), { strict: true, noEscape: true }),
      html: hb.compile(read(name, 'html.hbs'), { strict: true }),
      text: hb.compile(read(name, 'text.hbs'), { strict: true, noEscape: true }),
    })
  }
  registry = templates
  return templates
}

function read(...parts: string[]): string {
  return readFileSync(path.join(TEMPLATES_DIR, ...parts), 'utf8')
}

function parseMeta(template: string, source: string): TemplateMeta {
  const meta = JSON.parse(source) as TemplateMeta
  if (!Array.isArray(meta.variables)) throw new Error(`Email template ${template}: meta.json needs a "variables" array`)
  for (const v of meta.variables) {
    if (typeof v.name !== 'string' || typeof v.required !== 'boolean' || !VARIABLE_TYPES.includes(v.type ?? 'string')) {
      throw new Error(`Email template ${template}: invalid variable ${JSON.stringify(v)} in meta.json`)
    }
  }
  return meta
}

export function templateNames(): string[] {
  return [...loadTemplates().keys()].sort()
}

export function getTemplateMeta(name: string): TemplateMeta {
  return getTemplate(name).meta
}

function getTemplate(name: string): CompiledTemplate {
  const template = loadTemplates().get(name)
  if (!template) throw new NotFoundError('Email template', name)
  return template
}

/**
 * Checks `data` against the template's meta.json and returns the data the template will see:
 * only declared variables, fallbacks applied, missing optionals as null (strict mode needs them
 * present), dates as ISO strings (so the stored row renders the same on every retry).
 */
export function validateTemplateData(name: string, data: unknown): Record<string, unknown> {
  const { meta } = getTemplate(name)
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw ValidationError.field(['data'], 'Template data must be an object')
  }
  const errors: FieldError[] = []
  const out: Record<string, unknown> = {}
  for (const variable of meta.variables) {
    const parts = variable.name.split('.')
    const fieldPath = ['data', ...parts]
    const found = lookup(data as Record<string, unknown>, parts)
    if ('badParent' in found) {
      const path = ['data', ...found.badParent]
      // Several variables can share the bad parent (`event.title`, `event.date`): report it once.
      if (!errors.some((e) => e.path.join('.') === path.join('.'))) errors.push({ path, message: 'must be an object' })
      continue
    }
    let value = found.value
    if (value === undefined || value === null || value === '') {
      if (variable.required) {
        errors.push({ path: fieldPath, message: 'is required' })
        continue
      }
      value = variable.fallback ?? null
    } else {
      const checked = checkType(variable.type ?? 'string', value)
      if ('error' in checked) {
        errors.push({ path: fieldPath, message: checked.error })
        continue
      }
      value = checked.value
    }
    assign(out, parts, value)
  }
  if (errors.length > 0) {
    const summary = errors.map((e) => `${e.path.join('.')} ${e.message}`).join('; ')
    throw new ValidationError(`Invalid data for email template ${name}: ${summary}`, errors)
  }
  return out
}

export function renderTemplate(name: string, data: unknown): RenderedEmail {
  const template = getTemplate(name)
  const context = validateTemplateData(name, data)
  try {
    // Line breaks in a subject would end the header early.
    const subject = template.subject(context).replace(/\s+/g, ' ').trim()
    return {
      subject,
      html: template.html(context, { data: { subject } }),
      text: template.text(context).trim() + '\n',
    }
  } catch (err) {
    // The message is enough to fix the template; a stack would only leak paths to API clients.
    throw new ValidationError(`Email template ${name} failed to render: ${err instanceof Error ? err.message : String(err)}`)
  }
}

function lookup(data: Record<string, unknown>, parts: string[]): { value: unknown } | { badParent: string[] } {
  let current: unknown = data
  for (let i = 0; i < parts.length; i++) {
    if (current === undefined || current === null) return { value: undefined }
    if (typeof current !== 'object' || Array.isArray(current)) return { badParent: parts.slice(0, i) }
    current = (current as Record<string, unknown>)[parts[i]!]
  }
  return { value: current }
}

function assign(target: Record<string, unknown>, parts: string[], value: unknown): void {
  let node = target
  for (const part of parts.slice(0, -1)) {
    node[part] ??= {}
    node = node[part] as Record<string, unknown>
  }
  node[parts[parts.length - 1]!] = value
}

function checkType(type: TemplateVariableType, value: unknown): { value: unknown } | { error: string } {
  switch (type) {
    case 'string':
      return typeof value === 'string' ? { value } : { error: 'must be a string' }
    case 'number':
      return typeof value === 'number' && Number.isFinite(value) ? { value } : { error: 'must be a number' }
    case 'date': {
      if (value instanceof Date && !Number.isNaN(value.getTime())) return { value: value.toISOString() }
      if (typeof value === 'string' && ISO_DATE.test(value) && !Number.isNaN(Date.parse(value))) {
        return { value: new Date(value).toISOString() }
      }
      return { error: 'must be an ISO 8601 date' }
    }
    case 'url': {
      if (typeof value !== 'string') return { error: 'must be a URL' }
      try {
        // Anything but http(s) in an href (javascript:, data:) is an injection vector.
        const protocol = new URL(value).protocol
        return protocol === 'http:' || protocol === 'https:' ? { value } : { error: 'must be an http or https URL' }
      } catch {
        return { error: 'must be a URL' }
      }
    }
  }
}
