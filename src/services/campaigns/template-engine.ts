/**
 * The stored-template engine: Handlebars in strict mode, like the file-based transactional
 * templates (same helper, same escaping rules), in an isolated environment with only the helpers
 * the static checks know about.
 */
import Handlebars from 'handlebars'
import type { TemplateVariableDecl } from '../../infra/db/schema/campaigns'
import { AppError } from '../../lib/errors'
import { formatDate, type RenderedEmail } from '../email/templates'
import { htmlToText } from './html-to-text'
import { analyzeSource, BUILTIN_VARIABLES, UNSUBSCRIBE_VARIABLE, type TemplatePart, type TemplateProblem } from './template-analysis'

export type TemplateKind = 'transactional' | 'marketing'

export interface TemplateSource {
  kind: TemplateKind
  subject: string
  html: string
  /** Null or empty: generated from the HTML. */
  text?: string | null
  variables: TemplateVariableDecl[]
}

export interface CheckedTemplate {
  subject: string
  html: string
  text: string
  textGenerated: boolean
  variables: TemplateVariableDecl[]
}

/** A template that fails the checks; every problem has the part and, where it has one, the position. */
export class TemplateError extends AppError {
  readonly code = 'TEMPLATE_INVALID'
  readonly httpStatus = 400
  constructor(readonly problems: TemplateProblem[]) {
    super(`The template is invalid: ${problems.map(describeProblem).join('; ')}`)
  }
}

/** A recipient's data lacks a variable the template requires, and it has no fallback. */
export class MissingVariablesError extends AppError {
  readonly code = 'MISSING_VARIABLES'
  readonly httpStatus = 400
  constructor(readonly variables: string[]) {
    super(`Missing required template variable${variables.length > 1 ? 's' : ''}: ${variables.join(', ')}`)
  }
}

export function describeProblem(p: TemplateProblem): string {
  const where = p.line !== undefined ? ` (line ${p.line}, column ${p.column ?? 1})` : ''
  return `${p.part}${where}: ${p.message}`
}

const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$/
const MAX_VARIABLES = 200
const PLACEHOLDER_URL = 'https://example.com/unsubscribe/sample'

const hb = Handlebars.create()
// Only what the static checks allow: `log` and `lookup` would read data the checks cannot see.
hb.unregisterHelper('log')
hb.unregisterHelper('lookup')
hb.registerHelper('formatDate', (value: unknown) => {
  // Lenient where the transactional helper throws: a contact attribute that is not a date should not stop a campaign.
  if (value instanceof Date || (typeof value === 'string' && !Number.isNaN(Date.parse(value)))) return formatDate(value)
  return value == null ? '' : String(value)
})
const COMPILE_OPTIONS = { strict: true, knownHelpers: { formatDate: true, log: false, lookup: false }, knownHelpersOnly: true }

export interface CompiledTemplate {
  variables: TemplateVariableDecl[]
  render(context: Record<string, unknown>): RenderedEmail
}

export function compileTemplate(version: { subject: string; html: string; text: string; variables: TemplateVariableDecl[] }): CompiledTemplate {
  // Subject and text are not HTML: escaping would put `&amp;` into them.
  const subject = hb.compile(version.subject, { ...COMPILE_OPTIONS, noEscape: true })
  const html = hb.compile(version.html, COMPILE_OPTIONS)
  const text = hb.compile(version.text, { ...COMPILE_OPTIONS, noEscape: true })
  return {
    variables: version.variables,
    render(context) {
      // Line breaks in a subject would end the header early.
      const renderedSubject = subject(context).replace(/\s+/g, ' ').trim()
      return { subject: renderedSubject, html: html(context), text: text(context).trim() + '\n' }
    },
  }
}

/**
 * Every check a template gets on save and on publish: declarations, a strict parse of each part,
 * undeclared variables and unknown helpers, the unsubscribe placeholder for marketing, and a test
 * render of the sample data. Throws TemplateError with all problems at once.
 */
export function checkTemplate(source: TemplateSource, sampleData: Record<string, unknown> = {}): CheckedTemplate {
  const problems: TemplateProblem[] = [...checkDeclarations(source.variables)]
  const explicitText = source.text != null && source.text.trim() !== '' ? source.text : null
  const text = explicitText ?? htmlToText(source.html)
  const parts: [TemplatePart, string][] = [
    ['subject', source.subject],
    ['html', source.html],
    ['text', text],
  ]
  if (source.subject.trim() === '') problems.push({ part: 'subject', message: 'The subject is empty' })
  if (source.html.trim() === '') problems.push({ part: 'html', message: 'The HTML body is empty' })
  const references = new Map<TemplatePart, Set<string>>()
  for (const [part, body] of parts) {
    // Problems in a generated text body are the HTML's problems, already reported once.
    const analysis = analyzeSource(part, body, source.variables)
    if (part !== 'text' || explicitText !== null) problems.push(...analysis.problems)
    // An unparsable part has unknown references: saying it lacks the link would be noise.
    if (analysis.parsed) references.set(part, analysis.references)
  }
  if (source.kind === 'marketing') {
    const lacks = (part: TemplatePart) => references.has(part) && !references.get(part)!.has(UNSUBSCRIBE_VARIABLE)
    if (lacks('html')) {
      problems.push({ part: 'html', message: `A marketing template must contain the unsubscribe link {{${UNSUBSCRIBE_VARIABLE}}}` })
    }
    if (explicitText !== null && lacks('text')) {
      problems.push({ part: 'text', message: `A marketing template must contain the unsubscribe link {{${UNSUBSCRIBE_VARIABLE}}}` })
    }
  }
  if (problems.length > 0) throw new TemplateError(problems)

  const checked = { subject: source.subject, html: source.html, text, textGenerated: explicitText === null, variables: source.variables }
  testRender(checked, sampleData)
  return checked
}

function checkDeclarations(variables: TemplateVariableDecl[]): TemplateProblem[] {
  const problems: TemplateProblem[] = []
  if (variables.length > MAX_VARIABLES) problems.push({ part: 'variables', message: `At most ${MAX_VARIABLES} variables` })
  const seen = new Set<string>()
  for (const v of variables) {
    if (!VARIABLE_NAME.test(v.name)) problems.push({ part: 'variables', message: `"${v.name}" is not a valid variable name (letters, digits and _, dotted for nested values)` })
    else if (seen.has(v.name)) problems.push({ part: 'variables', message: `"${v.name}" is declared twice` })
    if (v.name === UNSUBSCRIBE_VARIABLE) problems.push({ part: 'variables', message: `"${UNSUBSCRIBE_VARIABLE}" is provided for every recipient and cannot be declared` })
    if (v.required && v.fallback != null) problems.push({ part: 'variables', message: `"${v.name}" is required, so its fallback would never be used` })
    seen.add(v.name)
  }
  return problems
}

function testRender(template: CheckedTemplate, sampleData: Record<string, unknown>): void {
  let compiled: CompiledTemplate
  try {
    compiled = compileTemplate(template)
  } catch (err) {
    throw new TemplateError([{ part: 'html', message: `Does not compile: ${(err as Error).message}` }])
  }
  const recipient = {
    email: typeof sampleData.email === 'string' ? sampleData.email : 'sample@example.com',
    name: typeof sampleData.name === 'string' ? sampleData.name : 'Sample Name',
    attributes: withPlaceholders(template.variables, sampleData),
  }
  const built = buildContext(template.variables, recipient, PLACEHOLDER_URL)
  if ('missing' in built) {
    throw new TemplateError(built.missing.map((name) => ({ part: 'sampleData' as const, message: `The sample data lacks the required variable "${name}"` })))
  }
  renderOrThrow(compiled, built.context, 'sampleData')
}

/** Sample data as given, with a visible placeholder for any required variable it leaves out. */
function withPlaceholders(variables: TemplateVariableDecl[], sampleData: Record<string, unknown>): Record<string, unknown> {
  const data = structuredClone(sampleData)
  for (const v of variables) {
    if (!v.required || (BUILTIN_VARIABLES as readonly string[]).includes(v.name)) continue
    const found = lookup(data, v.name.split('.'))
    if ('value' in found && isMissing(found.value)) assign(data, v.name.split('.'), `[${v.name}]`)
  }
  return data
}

export function renderOrThrow(compiled: CompiledTemplate, context: Record<string, unknown>, part: TemplatePart = 'sampleData'): RenderedEmail {
  try {
    return compiled.render(context)
  } catch (err) {
    const e = err as Error & { lineNumber?: number; column?: number }
    const message = (e.message ?? String(err)).replace(/\s+-\s+\d+:\d+$/, '').replace(/ in \[object Object\]/, '')
    throw new TemplateError([{ part, line: e.lineNumber, column: e.column !== undefined ? e.column + 1 : undefined, message: `Render failed: ${message}` }])
  }
}

export interface RecipientData {
  email: string
  name: string | null
  attributes: Record<string, unknown>
}

/**
 * The data one recipient's email sees: the built-ins, then each declared variable from the
 * contact's attributes, its fallback when missing, or a missing-variable report when it is required.
 * Only declared variables are passed, so strict mode cannot be satisfied by accident.
 */
export function buildContext(
  variables: TemplateVariableDecl[],
  recipient: RecipientData,
  unsubscribeUrl: string,
): { context: Record<string, unknown> } | { missing: string[] } {
  const context: Record<string, unknown> = { email: recipient.email, name: recipient.name ?? '', unsubscribeUrl }
  const missing: string[] = []
  for (const v of variables) {
    const parts = v.name.split('.')
    let value: unknown
    if (v.name === 'email') value = recipient.email
    else if (v.name === 'name') value = recipient.name
    else {
      const found = lookup(recipient.attributes, parts)
      value = 'value' in found ? found.value : undefined
    }
    if (isMissing(value)) {
      if (v.required) {
        missing.push(v.name)
        continue
      }
      value = v.fallback ?? ''
    }
    assign(context, parts, value)
  }
  return missing.length > 0 ? { missing } : { context }
}

function isMissing(value: unknown): boolean {
  return value === undefined || value === null || (typeof value === 'string' && value.trim() === '')
}

function lookup(data: Record<string, unknown>, parts: string[]): { value: unknown } | { badParent: true } {
  let current: unknown = data
  for (const part of parts) {
    if (current === undefined || current === null) return { value: undefined }
    if (typeof current !== 'object' || Array.isArray(current)) return { badParent: true }
    current = (current as Record<string, unknown>)[part]
  }
  return { value: current }
}

function assign(target: Record<string, unknown>, parts: string[], value: unknown): void {
  let node = target
  for (const part of parts.slice(0, -1)) {
    const next = node[part]
    if (next === null || typeof next !== 'object' || Array.isArray(next)) node[part] = {}
    node = node[part] as Record<string, unknown>
  }
  node[parts[parts.length - 1]!] = value
}
