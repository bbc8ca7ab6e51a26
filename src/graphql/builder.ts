import SchemaBuilder from '@pothos/core'
import ErrorsPlugin from '@pothos/plugin-errors'
import ScopeAuthPlugin from '@pothos/plugin-scope-auth'
import type { FileUpload } from 'graphql-upload-minimal'
import { ForbiddenError, UnauthenticatedError } from '../lib/errors'
import { hasRole } from '../services/auth/jwt'
import type { GraphQLContext } from './context'

const capitalize = (s: string) => s.charAt(0).toUpperCase() + s.slice(1)

/** Configuration only: types live in one file per domain (see schema.ts). */
export const builder = new SchemaBuilder<{
  Context: GraphQLContext
  Scalars: {
    DateTime: { Input: Date; Output: Date | string }
    JSON: { Input: unknown; Output: unknown }
    Upload: { Input: Promise<FileUpload>; Output: never }
  }
  AuthScopes: {
    authenticated: boolean
    admin: boolean
    service: boolean
  }
  DefaultFieldNullability: false
}>({
  plugins: [ScopeAuthPlugin, ErrorsPlugin],
  defaultFieldNullability: false,
  scopeAuth: {
    authorizeOnSubscribe: true,
    authScopes: (ctx) => ({
      authenticated: ctx.viewer !== null,
      admin: hasRole(ctx.viewer, 'admin'),
      // The app's backend; admins may do what it does.
      service: hasRole(ctx.viewer, 'service', 'admin'),
    }),
    unauthorizedError: (_parent, ctx) => ctx.authError ?? (ctx.viewer ? new ForbiddenError() : new UnauthenticatedError()),
  },
  errors: {
    // Mutation results are named after the field (uploadFile -> UploadFileResult / UploadFileSuccess) as API.md lists them.
    defaultUnionOptions: {
      name: ({ fieldName }) => `${capitalize(fieldName)}Result`,
      description: 'The Success type of the mutation, or one of the expected errors it can return (each implements Error).',
    },
    defaultResultOptions: {
      name: ({ fieldName }) => `${capitalize(fieldName)}Success`,
      description: 'Returned when the mutation succeeded.',
    },
  },
})

builder.queryType({ description: 'Reads. Lists are Relay-style connections.' })
builder.mutationType({ description: 'Writes. Expected failures are members of each result union and implement Error.' })
builder.subscriptionType({ description: 'Live updates over WebSocket (graphql-transport-ws) on /graphql.' })
