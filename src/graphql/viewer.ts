import type { ROLES, Viewer } from '../services/auth/jwt'
import { builder } from './builder'

const RoleEnum = builder.enumType('Role', {
  description: 'What a token allows: admin (everything), service (the app backend: transactional mail), user (own files).',
  values: {
    ADMIN: { value: 'admin', description: 'Everything, including every user\'s files, cache and campaigns.' },
    SERVICE: { value: 'service', description: 'Your app\'s backend: transactional mail and tokens.' },
    USER: { value: 'user', description: 'An end user: their own files and uploads.' },
  } as const satisfies Record<string, { value: (typeof ROLES)[number]; description: string }>,
})

const ViewerRef = builder.objectRef<Viewer>('Viewer').implement({
  description: 'The caller, as the bearer token describes them.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The token subject (sub).' }),
    email: t.exposeString('email', { nullable: true, description: 'The email claim.' }),
    name: t.exposeString('name', { nullable: true, description: 'The name claim.' }),
    roles: t.field({ type: [RoleEnum], description: 'The roles claim.', resolve: (v) => v.roles }),
  }),
})

builder.queryField('viewer', (t) =>
  t.field({
    type: ViewerRef,
    nullable: true,
    description: 'Who the token says you are; null without a token. An invalid or expired token is an UNAUTHENTICATED error.',
    resolve: (_root, _args, ctx) => {
      if (ctx.authError) throw ctx.authError
      return ctx.viewer
    },
  }),
)
