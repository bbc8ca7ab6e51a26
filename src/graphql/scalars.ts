import { GraphQLError, Kind, type ValueNode } from 'graphql'
import { Upload } from 'graphql-upload-minimal'
import { builder } from './builder'

builder.scalarType('DateTime', {
  description: 'An instant in ISO 8601 format with a time zone, e.g. 2026-11-24T09:30:00.000Z.',
  serialize: (value) => (value instanceof Date ? value.toISOString() : new Date(value).toISOString()),
  parseValue: (value) => parseDate(value),
  parseLiteral: (ast) => {
    if (ast.kind !== Kind.STRING) throw new GraphQLError('DateTime must be an ISO 8601 string')
    return parseDate(ast.value)
  },
})

builder.scalarType('JSON', {
  description: 'Any JSON value.',
  serialize: (value) => value,
  parseValue: (value) => value,
  parseLiteral: (ast, variables) => literalToJson(ast, variables ?? undefined),
})

// Defined here rather than using graphql-upload-minimal's GraphQLUpload: that one is built with the
// CommonJS copy of graphql, and graphql refuses a scalar from another module realm.
builder.scalarType('Upload', {
  description: 'A file part of a GraphQL multipart request (https://github.com/jaydenseric/graphql-multipart-request-spec).',
  serialize: () => {
    throw new GraphQLError('Upload is an input-only scalar')
  },
  parseValue: (value) => {
    if (value instanceof Upload) return value.promise
    throw new GraphQLError('Upload must be sent as a file in a GraphQL multipart request', { extensions: { code: 'BAD_USER_INPUT' } })
  },
  parseLiteral: () => {
    throw new GraphQLError('Upload literals are not supported: send the file in a GraphQL multipart request', { extensions: { code: 'BAD_USER_INPUT' } })
  },
})

function parseDate(value: unknown): Date {
  if (typeof value !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(value)) {
    throw new GraphQLError('DateTime must be an ISO 8601 string with a time zone, e.g. 2026-11-24T09:30:00Z')
  }
  const date = new Date(value)
  if (Number.isNaN(date.getTime())) throw new GraphQLError('DateTime is not a valid date')
  // What PostgreSQL stores: year 0000, or 9999-12-31T23:00-23:00 (in 10000 UTC), would fail at the query.
  const year = date.getUTCFullYear()
  if (year < 1 || year > 9999) throw new GraphQLError('DateTime must fall between the years 0001 and 9999 (UTC)')
  return date
}

function literalToJson(ast: ValueNode, variables: Record<string, unknown> | undefined): unknown {
  switch (ast.kind) {
    case Kind.STRING:
    case Kind.BOOLEAN:
      return ast.value
    case Kind.INT:
    case Kind.FLOAT:
      return Number(ast.value)
    case Kind.NULL:
      return null
    case Kind.LIST:
      return ast.values.map((v) => literalToJson(v, variables))
    case Kind.OBJECT:
      return Object.fromEntries(ast.fields.map((f) => [f.name.value, literalToJson(f.value, variables)]))
    case Kind.VARIABLE:
      return variables?.[ast.name.value]
    default:
      throw new GraphQLError('Unsupported JSON literal')
  }
}
