/**
 * Error types of the template and campaign API, and the helper that turns expected errors into
 * members of a shared result union (API.md names one union for several mutations, which the errors
 * plugin's per-field unions cannot express).
 */
import { typeBrandKey } from '@pothos/core'
import { wrapErrorIfMatches } from '@pothos/plugin-errors'
import { TemplateError, MissingVariablesError } from '../services/campaigns/template-engine'
import { ConflictError, NotFoundError, ValidationError } from '../lib/errors'
import { builder } from './builder'
import { ErrorInterface } from './errors'

export const TemplatePartEnum = builder.enumType('EmailTemplatePart', {
  description: 'Which part of a template a problem is in.',
  values: {
    SUBJECT: { value: 'subject', description: 'The subject line.' },
    HTML: { value: 'html', description: 'The HTML body.' },
    TEXT: { value: 'text', description: 'The plain-text body.' },
    VARIABLES: { value: 'variables', description: 'The variable declarations.' },
    SAMPLE_DATA: { value: 'sampleData', description: 'The test render with the sample data.' },
  } as const,
})

const TemplateProblemRef = builder.objectRef<TemplateError['problems'][number]>('EmailTemplateProblem').implement({
  description: 'One problem found in a template, with its position when it has one.',
  fields: (t) => ({
    part: t.field({ type: TemplatePartEnum, description: 'Where the problem is.', resolve: (p) => p.part }),
    line: t.exposeInt('line', { nullable: true, description: '1-based line in that part.' }),
    column: t.exposeInt('column', { nullable: true, description: '1-based column in that line.' }),
    message: t.exposeString('message', { description: 'What is wrong.' }),
  }),
})

builder.objectType(TemplateError, {
  name: 'EmailTemplateValidationError',
  description: 'The template does not parse, uses undeclared variables or unknown helpers, lacks the unsubscribe link, or fails its test render. Nothing was saved.',
  interfaces: [ErrorInterface],
  isTypeOf: (v) => v instanceof TemplateError,
  fields: (t) => ({ problems: t.field({ type: [TemplateProblemRef], description: 'Every problem found.', resolve: (e) => e.problems }) }),
})

builder.objectType(MissingVariablesError, {
  name: 'MissingTemplateVariablesError',
  description: 'The data lacks required template variables that have no fallback.',
  interfaces: [ErrorInterface],
  isTypeOf: (v) => v instanceof MissingVariablesError,
  fields: (t) => ({ variables: t.exposeStringList('variables', { description: 'The missing variable names.' }) }),
})

type ErrorClass = new (...args: never[]) => Error

export const TEMPLATE_ERRORS: ErrorClass[] = [ValidationError, TemplateError, NotFoundError]
export const CAMPAIGN_ERRORS: ErrorClass[] = [ValidationError, NotFoundError, ConflictError]

const ERROR_TYPE_NAMES: [ErrorClass, string][] = [
  [TemplateError, 'EmailTemplateValidationError'],
  [MissingVariablesError, 'MissingTemplateVariablesError'],
  [ValidationError, 'ValidationError'],
  [NotFoundError, 'NotFoundError'],
  [ConflictError, 'ConflictError'],
]

/**
 * resolveType for a shared result union. Explicit, because graphql-jit (mercurius `jit`) calls
 * resolveType without the abstract type that graphql's default isTypeOf-based resolver needs.
 */
export function resultTypeResolver(successName: string) {
  return (value: unknown): string => {
    // Errors arrive wrapped by asResult: a proxy that names its class under Pothos's type brand.
    const brand = typeof value === 'object' && value !== null ? (value as Record<PropertyKey, unknown>)[typeBrandKey] : undefined
    const found = ERROR_TYPE_NAMES.find(([type]) => brand === type || value instanceof type)
    return found ? found[1] : successName
  }
}

/** Runs a mutation and returns an expected error as its union member instead of throwing it. */
export async function asResult<T>(errors: ErrorClass[], run: () => Promise<T>): Promise<T> {
  try {
    return await run()
  } catch (err) {
    // Returned the way the errors plugin returns them: graphql would throw a bare Error instance
    // instead of resolving it as a union member. Typed as T: the union's member list admits them.
    const type = errors.find((e) => err instanceof e)
    if (type) return wrapErrorIfMatches(err, [type]) as T
    throw err
  }
}
