/**
 * The data of a transactional template: each declared variable has a type (string, number, date,
 * url) besides the name, required and fallback every template declares, and data is checked
 * against those before the strict render, so a caller gets a field error per bad variable.
 */
import type { TemplateVariableDecl } from '../../infra/db/schema/campaigns'
import type { FieldError } from '../../lib/errors'
import { safeUrl } from '../../lib/escape'
import { assignPath, isMissing, lookupPath } from '../campaigns/template-paths'

export type TemplateVariableType = 'string' | 'number' | 'date' | 'url'

/** A stored template's declaration, plus the type the data is checked against at send time. */
export interface TemplateVariable extends TemplateVariableDecl {
  /** Defaults to `string`. */
  type?: TemplateVariableType
}

export const VARIABLE_TYPES: readonly TemplateVariableType[] = ['string', 'number', 'date', 'url']
// A time needs an explicit zone: without one, Date would read it in the server's local zone.
const ISO_DATE = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2}))?$/
const PLACEHOLDERS: Record<TemplateVariableType, (name: string) => unknown> = {
  string: (name) => `[${name}]`,
  number: () => 1,
  date: () => '2030-01-01T09:00:00Z',
  url: () => 'https://example.com/sample',
}

/** What a test render uses for a required variable the sample data leaves out: a valid value of its type. */
export function typedPlaceholder(v: TemplateVariable): unknown {
  return PLACEHOLDERS[v.type ?? 'string'](v.name)
}

/** The render data for `data`, with field errors under `root` (`data.event.title`). */
export function buildTemplateData(variables: TemplateVariable[], data: Record<string, unknown>, root: string): { context: Record<string, unknown> } | { errors: FieldError[] } {
  const errors: FieldError[] = []
  const context: Record<string, unknown> = {}
  for (const variable of variables) {
    const parts = variable.name.split('.')
    const fieldPath = [root, ...parts]
    const found = lookupPath(data, parts)
    if ('badParent' in found) {
      const parentPath = [root, ...found.badParent]
      // Several variables can share the bad parent (`event.title`, `event.date`): report it once.
      if (!errors.some((e) => e.path.join('.') === parentPath.join('.'))) errors.push({ path: parentPath, message: 'must be an object' })
      continue
    }
    let value = found.value
    if (isMissing(value)) {
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
    assignPath(context, parts, value)
  }
  return errors.length > 0 ? { errors } : { context }
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
      if (!URL.canParse(value)) return { error: 'must be a URL' }
      // Anything but http(s) in an href (javascript:, data:) is an injection vector: the one check the links in stored templates get.
      return safeUrl(value, { allowedProtocols: ['http:', 'https:'] }) === null ? { error: 'must be an http or https URL' } : { value }
    }
  }
}
