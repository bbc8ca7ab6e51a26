/**
 * Transactional email templates: files, one directory per template (the bundled ./templates, or
 * EMAIL_TEMPLATES_DIR) with subject.hbs, html.hbs, meta.json and an optional text.hbs (generated
 * from the HTML when absent), plus an optional layout.hbs at the top that wraps every HTML body.
 *
 * They share the stored templates' engine and checks: meta.json declares the variables (name,
 * required, fallback, and a type), every template goes through checkTemplate when the set is
 * loaded (a strict parse with line and column, undeclared variables, unknown helpers, partials,
 * unescaped HTML output, a test render of its sample data), and the whole set fails to load, with
 * one error naming every bad file, line and column, if any template fails. The app loads it at boot.
 *
 * At send time the data is checked against the declared variables and their types before
 * rendering, so a caller gets field errors instead of a half-rendered email, and only declared
 * variables reach the strict render.
 */
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { NotFoundError, ValidationError } from '../../lib/errors'
import type { TemplateProblem } from '../campaigns/template-analysis'
import {
  checkTemplate,
  compileLayout,
  compileTemplate,
  TemplateError,
  withPlaceholders,
  type CompiledTemplate,
  type Layout,
  type RenderedEmail,
  type TemplateProfile,
} from '../campaigns/template-engine'
import { buildTemplateData, typedPlaceholder, VARIABLE_TYPES, type TemplateVariable } from './template-data'

export interface TemplateMeta {
  description?: string
  variables: TemplateVariable[]
  /** The data of the test render at load; a required variable it leaves out gets a placeholder of its type. */
  sampleData: Record<string, unknown>
}

export type EmailRenderer = (template: string, data: unknown) => RenderedEmail

/** One problem in a template directory; `file` is relative to the directory, e.g. `welcome/html.hbs`. */
export interface TemplateFileProblem {
  file: string
  line?: number
  column?: number
  message: string
}

/** The template directory cannot be used; thrown at load, so a broken template stops the boot. */
export class TemplateFilesError extends Error {
  constructor(
    readonly dir: string,
    readonly problems: TemplateFileProblem[],
  ) {
    super(`Invalid email templates in ${dir}:\n${problems.map((p) => `  - ${describeFileProblem(p)}`).join('\n')}`)
  }

  override get name(): string {
    return 'TemplateFilesError'
  }
}

export function describeFileProblem(p: TemplateFileProblem): string {
  const where = p.line !== undefined ? `, line ${p.line}${p.column !== undefined ? `, column ${p.column}` : ''}` : ''
  return `${p.file}${where}: ${p.message}`
}

// Resolved from this file, not the cwd, so tests, scripts and the server all find the same files.
export const BUNDLED_TEMPLATES_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'templates')
const LAYOUT_FILE = 'layout.hbs'
const TEMPLATE_NAME = /^[a-z0-9][a-z0-9_-]*$/
interface LoadedTemplate {
  meta: TemplateMeta
  compiled: CompiledTemplate
}

/** A loaded, checked template set; see loadTransactionalTemplates. */
export class TransactionalTemplates {
  constructor(
    readonly dir: string,
    private readonly templates: ReadonlyMap<string, LoadedTemplate>,
  ) {}

  names(): string[] {
    return [...this.templates.keys()].sort()
  }

  meta(name: string): TemplateMeta {
    return this.get(name).meta
  }

  /**
   * Checks `data` against the template's declared variables and returns the data the template
   * will see: only declared variables, fallbacks applied, missing optionals as null (strict mode
   * needs them present), dates as ISO strings (so the stored row renders the same on every retry).
   * Throws ValidationError with a field error per bad variable.
   */
  validateData(name: string, data: unknown): Record<string, unknown> {
    const { meta } = this.get(name)
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      throw ValidationError.field(['data'], 'Template data must be an object')
    }
    const built = buildTemplateData(meta.variables, data as Record<string, unknown>, 'data')
    if ('errors' in built) {
      const summary = built.errors.map((e) => `${e.path.join('.')} ${e.message}`).join('; ')
      throw new ValidationError(`Invalid data for email template ${name}: ${summary}`, built.errors)
    }
    return built.context
  }

  render(name: string, data: unknown): RenderedEmail {
    const template = this.get(name)
    const context = this.validateData(name, data)
    try {
      return template.compiled.render(context)
    } catch (err) {
      // The message is enough to fix the template; a stack would only leak paths to API clients.
      throw new ValidationError(`Email template ${name} failed to render: ${err instanceof Error ? err.message : String(err)}`)
    }
  }

  /**
   * Checks that the set has every template a sender uses and needs no variable it never fills in,
   * so an edited template directory fails at boot rather than at the first sign-up.
   */
  assertProvides(provided: Readonly<Record<string, readonly string[]>>): void {
    const problems: TemplateFileProblem[] = []
    for (const [name, variables] of Object.entries(provided)) {
      const template = this.templates.get(name)
      if (!template) {
        problems.push({ file: `${name}/`, message: 'The template is missing, and the email service sends it' })
        continue
      }
      for (const v of template.meta.variables) {
        if (v.required && !variables.includes(v.name)) {
          problems.push({ file: `${name}/meta.json`, message: `"${v.name}" is required, but the email service only provides ${variables.join(', ')}` })
        }
      }
    }
    if (problems.length > 0) throw new TemplateFilesError(this.dir, problems)
  }

  private get(name: string): LoadedTemplate {
    const template = this.templates.get(name)
    if (!template) throw new NotFoundError('Email template', name)
    return template
  }
}

/**
 * Reads and checks every template under `dir`. Throws TemplateFilesError listing every problem
 * of every template at once, each with its file and, where it has one, line and column.
 */
export function loadTransactionalTemplates(dir: string = BUNDLED_TEMPLATES_DIR): TransactionalTemplates {
  let entries
  try {
    entries = readdirSync(dir, { withFileTypes: true })
  } catch (err) {
    throw new TemplateFilesError(dir, [{ file: '.', message: `The directory cannot be read: ${(err as Error).message}` }])
  }
  const problems: TemplateFileProblem[] = []
  let layout: Layout | undefined
  const layoutSource = readOptional(dir, LAYOUT_FILE)
  if (layoutSource !== undefined) {
    try {
      layout = compileLayout(layoutSource)
    } catch (err) {
      if (!(err instanceof TemplateError)) throw err
      // The templates are still checked (without the layout), so one boot reports everything.
      problems.push(...err.problems.map((p) => ({ file: LAYOUT_FILE, ...position(p), message: p.message })))
    }
  }

  const templates = new Map<string, LoadedTemplate>()
  // Sorted, so the error lists problems in the same order on every machine.
  for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    if (!entry.isDirectory() || entry.name.startsWith('.')) continue
    if (!TEMPLATE_NAME.test(entry.name)) {
      problems.push({ file: `${entry.name}/`, message: 'A template name is lowercase letters, digits, - and _' })
      continue
    }
    const loaded = loadTemplate(dir, entry.name, layout, problems)
    if (loaded) templates.set(entry.name, loaded)
  }
  if (problems.length > 0) throw new TemplateFilesError(dir, problems)
  return new TransactionalTemplates(dir, templates)
}

let bundled: TransactionalTemplates | undefined

/** The templates shipped with the app, loaded once; for senders not given a set of their own. */
export function bundledTemplates(): TransactionalTemplates {
  bundled ??= loadTransactionalTemplates()
  return bundled
}

function loadTemplate(dir: string, name: string, layout: Layout | undefined, problems: TemplateFileProblem[]): LoadedTemplate | undefined {
  const before = problems.length
  const file = (f: string) => `${name}/${f}`
  const required = (f: string) => {
    const source = readOptional(dir, name, f)
    if (source === undefined) problems.push({ file: file(f), message: 'The file is missing' })
    return source
  }
  const metaSource = required('meta.json')
  const subject = required('subject.hbs')
  const html = required('html.hbs')
  const text = readOptional(dir, name, 'text.hbs')
  const meta = metaSource === undefined ? undefined : parseMeta(metaSource, file('meta.json'), problems)
  if (meta === undefined || subject === undefined || html === undefined || problems.length > before) return undefined

  const source = { kind: 'transactional' as const, subject, html, text, variables: meta.variables }
  try {
    const checked = checkTemplate(source, meta.sampleData, transactionalProfile(meta.variables, layout))
    return { meta, compiled: compileTemplate(checked, layout) }
  } catch (err) {
    if (!(err instanceof TemplateError)) throw err
    problems.push(...err.problems.map((p) => locate(name, p, text !== undefined && text.trim() !== '')))
    return undefined
  }
}

/**
 * The file a problem is in: a failed test render points at the source that failed, not at the
 * sample data; a text part generated from the HTML is the HTML's problem.
 */
function locate(name: string, p: TemplateProblem, hasText: boolean): TemplateFileProblem {
  const at = position(p)
  switch (p.part) {
    case 'subject':
    case 'html':
    case 'text':
      return { file: `${name}/${p.part}.hbs`, ...at, message: p.message }
    case 'variables':
      return { file: `${name}/meta.json`, message: `variables: ${p.message}` }
    case 'sampleData': {
      if (p.renderedPart === undefined) return { file: `${name}/meta.json`, message: `sampleData: ${p.message}` }
      const rendering = `test render with the sampleData of ${name}/meta.json`
      // Positions in a generated text are not positions in any file.
      if (p.renderedPart === 'text' && !hasText) return { file: `${name}/html.hbs`, message: `${p.message} (${rendering}, in the text generated from the HTML)` }
      const file = p.renderedPart === 'layout' ? LAYOUT_FILE : `${name}/${p.renderedPart}.hbs`
      return { file, ...at, message: `${p.message} (${rendering})` }
    }
  }
}

/** Only the keys that have a value, so a problem without a position has no `line: undefined`. */
function position(p: TemplateProblem): { line?: number; column?: number } {
  return { ...(p.line !== undefined && { line: p.line }), ...(p.column !== undefined && { column: p.column }) }
}

/** Transactional data is what the code passes, checked by type; no built-ins, everything is declared. */
function transactionalProfile(variables: TemplateVariable[], layout: Layout | undefined): TemplateProfile {
  return {
    builtins: [],
    layout,
    sampleContext(_declared, sampleData) {
      const built = buildTemplateData(variables, withPlaceholders(variables, sampleData, typedPlaceholder), 'sampleData')
      if ('errors' in built) return { problems: built.errors.map((e) => ({ part: 'sampleData' as const, message: `${e.path.join('.')} ${e.message}` })) }
      return built
    },
  }
}

function parseMeta(source: string, file: string, problems: TemplateFileProblem[]): TemplateMeta | undefined {
  let meta: Partial<TemplateMeta>
  try {
    meta = JSON.parse(source) as Partial<TemplateMeta>
  } catch (err) {
    problems.push({ file, ...jsonPosition(source, err as Error), message: `Not valid JSON: ${(err as Error).message}` })
    return undefined
  }
  if (meta === null || typeof meta !== 'object' || !Array.isArray(meta.variables)) {
    problems.push({ file, message: 'meta.json needs a "variables" array' })
    return undefined
  }
  const sampleData = meta.sampleData ?? {}
  if (sampleData === null || typeof sampleData !== 'object' || Array.isArray(sampleData)) problems.push({ file, message: '"sampleData" must be an object' })
  const variables: TemplateVariable[] = []
  for (const v of meta.variables as unknown[]) {
    const d = (v ?? {}) as Partial<TemplateVariable>
    const valid =
      typeof d.name === 'string' &&
      typeof d.required === 'boolean' &&
      VARIABLE_TYPES.includes(d.type ?? 'string') &&
      (d.fallback == null || typeof d.fallback === 'string')
    if (!valid) {
      problems.push({ file, message: `Invalid variable ${JSON.stringify(v)}: it needs a name, required (true or false), a type of ${VARIABLE_TYPES.join(', ')}, and a string fallback if any` })
      continue
    }
    variables.push({ name: d.name!, required: d.required!, type: d.type ?? 'string', fallback: d.fallback ?? null })
  }
  return { description: meta.description, variables, sampleData: sampleData as Record<string, unknown> }
}

/** V8 gives the offset for most JSON errors ("... at position 42"); an editor wants line and column. */
function jsonPosition(source: string, err: Error): { line?: number; column?: number } {
  const offset = /at position (\d+)/.exec(err.message)?.[1]
  if (offset === undefined) return {}
  const before = source.slice(0, Number(offset)).split('\n')
  return { line: before.length, column: before.at(-1)!.length + 1 }
}

function readOptional(...parts: string[]): string | undefined {
  try {
    return readFileSync(path.join(...parts), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}
