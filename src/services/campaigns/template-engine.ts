/**
 * The one template engine, for stored (campaign) templates and the file-based transactional ones:
 * Handlebars in strict mode, HTML escaped by default, in an isolated environment with only the
 * helpers the static checks know about, and the same checks for both. What differs between the two
 * is only the data a template is rendered with (a TemplateProfile), and that transactional HTML is
 * wrapped in a layout the engine applies (templates themselves may not include partials).
 */
import Handlebars from 'handlebars'
import type { TemplateVariableDecl } from '../../infra/db/schema/campaigns'
import { AppError } from '../../lib/errors'
import { authoredSchemes, neutralizeUnsafeUrls } from '../../lib/html-urls'
import { formatDate } from '../email/format-date'
import { htmlToText } from './html-to-text'
import { analyzeSource, BUILTIN_VARIABLES, UNSUBSCRIBE_VARIABLE, type TemplatePart, type TemplateProblem } from './template-analysis'
import { assignPath, isMissing, isUnsafeSegment, lookupPath } from './template-paths'

export interface RenderedEmail {
  subject: string
  html: string
  text: string
}

export type TemplateKind = 'transactional' | 'marketing'

export interface TemplateSource {
  kind: TemplateKind
  subject: string
  html: string
  /** Null or empty: generated from the HTML. */
  text?: string | null
  variables: TemplateVariableDecl[]
}

/** The names a layout sees: nothing of the recipient's data, only the rendered subject and body. */
const LAYOUT_SUBJECT = 'subject'
const LAYOUT_SLOT = 'body'

/** Wraps a rendered HTML body; see compileLayout. */
export type Layout = (subject: string, body: string) => string

/**
 * What differs between kinds of template data; the engine and the checks are the same for all.
 * The default, CAMPAIGN_PROFILE, is a contact's data: built-ins plus attributes.
 */
export interface TemplateProfile {
  /** Names present in every render without being declared. */
  builtins: readonly string[]
  /** The data of the test render, or the problems that keep the sample data from making one. */
  sampleContext(variables: TemplateVariableDecl[], sampleData: Record<string, unknown>): { context: Record<string, unknown> } | { problems: TemplateProblem[] }
  /** Applied to every rendered HTML body. */
  layout?: Layout
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
  // Lenient: a contact attribute that is not a date should not stop a campaign. Transactional dates are type-checked before they get here.
  if (value instanceof Date || (typeof value === 'string' && !Number.isNaN(Date.parse(value)))) return formatDate(value)
  return value == null ? '' : String(value)
})
const COMPILE_OPTIONS = { strict: true, knownHelpers: { formatDate: true, log: false, lookup: false }, knownHelpersOnly: true }

export interface CompiledTemplate {
  variables: TemplateVariableDecl[]
  /** Throws a RenderError naming the part that failed. */
  render(context: Record<string, unknown>): RenderedEmail
}

/** A render that failed at run time; `lineNumber` and `column` (0-based) come from Handlebars when it knows them. */
export class RenderError extends Error {
  readonly lineNumber?: number
  readonly column?: number
  constructor(readonly part: 'subject' | 'html' | 'text' | 'layout', cause: unknown) {
    const e = cause as Error & { lineNumber?: number; column?: number }
    // The position and Handlebars' `[object Object]` say nothing to someone fixing a template.
    super((e?.message ?? String(cause)).replace(/\s+-\s+\d+:\d+$/, '').replace(/ in \[object Object\]/, ''), { cause })
    this.lineNumber = e?.lineNumber
    this.column = e?.column
  }
}

function renderPart<T>(part: RenderError['part'], render: () => T): T {
  try {
    return render()
  } catch (err) {
    throw new RenderError(part, err)
  }
}

export function compileTemplate(
  version: { subject: string; html: string; text: string; variables: TemplateVariableDecl[] },
  layout?: Layout,
): CompiledTemplate {
  // Subject and text are not HTML: escaping would put `&amp;` into them.
  const subject = hb.compile(version.subject, { ...COMPILE_OPTIONS, noEscape: true })
  const html = hb.compile(version.html, COMPILE_OPTIONS)
  const text = hb.compile(version.text, { ...COMPILE_OPTIONS, noEscape: true })
  // The schemes the author wrote (sms:, webcal:, an app's own) stay usable; data gets no others.
  const schemes = authoredSchemes(version.html)
  return {
    variables: version.variables,
    render(context) {
      // Line breaks in a subject would end the header early.
      const renderedSubject = renderPart('subject', () => subject(context)).replace(/\s+/g, ' ').trim()
      // Links and sources built from contact data can only be web, mail, phone or inline-image URLs.
      const body = neutralizeUnsafeUrls(renderPart('html', () => html(context)), schemes)
      return {
        subject: renderedSubject,
        html: layout ? renderPart('layout', () => layout(renderedSubject, body)) : body,
        text: renderPart('text', () => text(context)).trim() + '\n',
      }
    },
  }
}

/**
 * A layout is HTML around every body: it sees only `{{subject}}` and one `{{{body}}}` slot, never
 * the recipient's data, so it cannot leak or mis-escape it; this is the engine's controlled
 * replacement for Handlebars partials. Throws TemplateError (part `html`) when it fails the checks.
 */
export function compileLayout(source: string): Layout {
  const analysis = analyzeSource('html', source, [], { builtins: [LAYOUT_SUBJECT], slot: LAYOUT_SLOT })
  if (analysis.problems.length > 0) throw new TemplateError(analysis.problems)
  const compiled = hb.compile(source, COMPILE_OPTIONS)
  const layout: Layout = (subject, body) => compiled({ [LAYOUT_SUBJECT]: subject, [LAYOUT_SLOT]: body })
  try {
    layout('Sample subject', '<p>Sample body</p>')
  } catch (err) {
    const failure = new RenderError('layout', err)
    throw new TemplateError([{ part: 'html', ...position(failure), message: `Render failed: ${failure.message}` }])
  }
  return layout
}

/**
 * Every check a template gets on save and on publish: declarations, a strict parse of each part,
 * undeclared variables and unknown helpers, the unsubscribe placeholder for marketing, and a test
 * render of the sample data. Throws TemplateError with all problems at once.
 */
export function checkTemplate(source: TemplateSource, sampleData: Record<string, unknown> = {}, profile: TemplateProfile = CAMPAIGN_PROFILE): CheckedTemplate {
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
    const analysis = analyzeSource(part, body, source.variables, { builtins: profile.builtins })
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
  testRender(checked, sampleData, profile)
  return checked
}

function checkDeclarations(variables: TemplateVariableDecl[]): TemplateProblem[] {
  const problems: TemplateProblem[] = []
  if (variables.length > MAX_VARIABLES) problems.push({ part: 'variables', message: `At most ${MAX_VARIABLES} variables` })
  const seen = new Set<string>()
  for (const v of variables) {
    if (!VARIABLE_NAME.test(v.name)) problems.push({ part: 'variables', message: `"${v.name}" is not a valid variable name (letters, digits and _, dotted for nested values)` })
    else if (v.name.split('.').some(isUnsafeSegment)) problems.push({ part: 'variables', message: `"${v.name}" uses a reserved name (__proto__, prototype, constructor)` })
    else if (seen.has(v.name)) problems.push({ part: 'variables', message: `"${v.name}" is declared twice` })
    if (v.name === UNSUBSCRIBE_VARIABLE) problems.push({ part: 'variables', message: `"${UNSUBSCRIBE_VARIABLE}" is provided for every recipient and cannot be declared` })
    if (v.required && v.fallback != null) problems.push({ part: 'variables', message: `"${v.name}" is required, so its fallback would never be used` })
    seen.add(v.name)
  }
  return problems
}

function testRender(template: CheckedTemplate, sampleData: Record<string, unknown>, profile: TemplateProfile): void {
  let compiled: CompiledTemplate
  try {
    compiled = compileTemplate(template, profile.layout)
  } catch (err) {
    throw new TemplateError([{ part: 'html', message: `Does not compile: ${(err as Error).message}` }])
  }
  const built = profile.sampleContext(template.variables, sampleData)
  if ('problems' in built) throw new TemplateError(built.problems)
  renderOrThrow(compiled, built.context, 'sampleData')
}

/** The campaign data of a test render: sample data as a contact, with the placeholder unsubscribe link. */
export const CAMPAIGN_PROFILE: TemplateProfile = {
  builtins: BUILTIN_VARIABLES,
  sampleContext(variables, sampleData) {
    const recipient = {
      email: typeof sampleData.email === 'string' ? sampleData.email : 'sample@example.com',
      name: typeof sampleData.name === 'string' ? sampleData.name : 'Sample Name',
      // The built-ins come from the recipient, not the attributes.
      attributes: withPlaceholders(variables, sampleData, (v) => ((BUILTIN_VARIABLES as readonly string[]).includes(v.name) ? undefined : `[${v.name}]`)),
    }
    const built = buildContext(variables, recipient, PLACEHOLDER_URL)
    if ('missing' in built) return { problems: built.missing.map((name) => ({ part: 'sampleData', message: `The sample data lacks the required variable "${name}"` })) }
    return built
  },
}

/**
 * Sample data as given, with a visible placeholder for any required variable it leaves out, so a
 * test render needs no complete sample. `placeholder` returning undefined leaves the variable out.
 */
export function withPlaceholders<V extends TemplateVariableDecl>(variables: V[], sampleData: Record<string, unknown>, placeholder: (v: V) => unknown): Record<string, unknown> {
  const data = structuredClone(sampleData)
  for (const v of variables) {
    const parts = v.name.split('.')
    const found = lookupPath(data, parts)
    const value = v.required && 'value' in found && isMissing(found.value) ? placeholder(v) : undefined
    if (value !== undefined) assignPath(data, parts, value)
  }
  return data
}

/** Renders, or throws TemplateError reporting the failure as `part`; `renderedPart` says which source the position is in. */
export function renderOrThrow(compiled: CompiledTemplate, context: Record<string, unknown>, part: TemplatePart = 'sampleData'): RenderedEmail {
  try {
    return compiled.render(context)
  } catch (err) {
    const failure = err instanceof RenderError ? err : new RenderError('html', err)
    throw new TemplateError([{ part, renderedPart: failure.part, ...position(failure), message: `Render failed: ${failure.message}` }])
  }
}

function position(failure: RenderError): { line?: number; column?: number } {
  return { line: failure.lineNumber, column: failure.column !== undefined ? failure.column + 1 : undefined }
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
      const found = lookupPath(recipient.attributes, parts)
      value = 'value' in found ? found.value : undefined
    }
    if (isMissing(value)) {
      if (v.required) {
        missing.push(v.name)
        continue
      }
      value = v.fallback ?? ''
    }
    assignPath(context, parts, value)
  }
  return missing.length > 0 ? { missing } : { context }
}
