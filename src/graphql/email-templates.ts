import type { TemplateVariableDecl } from '../infra/db/schema/campaigns'
import { NotFoundError, ValidationError } from '../lib/errors'
import type { TemplatePatch } from '../services/campaigns/template-service'
import type { EmailTemplateRow, EmailTemplateVersionRow, TemplatePreview } from '../services/campaigns/template-service'
import { MissingVariablesError, TemplateError } from '../services/campaigns/template-engine'
import { builder } from './builder'
import { asResult, resultTypeResolver, TEMPLATE_ERRORS } from './campaign-errors'
import { connectionOf, paginate, timeCursor, timeCursorOf } from './connection'

export const TemplateKindEnum = builder.enumType('EmailTemplateKind', {
  description: 'What a template is for.',
  values: {
    TRANSACTIONAL: { value: 'transactional', description: 'One-to-one mail triggered by your app.' },
    MARKETING: { value: 'marketing', description: 'Campaign mail: must contain {{unsubscribeUrl}}.' },
  } as const,
})

const TemplateVariableRef = builder.objectRef<TemplateVariableDecl>('EmailTemplateVariable').implement({
  description: 'A variable a template reads. email, name and unsubscribeUrl are always provided; the rest come from contact attributes.',
  fields: (t) => ({
    name: t.exposeString('name', { description: 'Dotted path into the contact attributes, e.g. company.name.' }),
    required: t.exposeBoolean('required', { description: 'A recipient without it fails instead of getting a blank.' }),
    fallback: t.string({ nullable: true, description: 'Used when an optional variable is missing.', resolve: (v) => v.fallback ?? null }),
  }),
})

const TemplateVariableInput = builder.inputType('EmailTemplateVariableInput', {
  description: 'Declares a template variable.',
  fields: (t) => ({
    name: t.string({ required: true, description: 'Dotted path into the contact attributes, e.g. company.name.' }),
    required: t.boolean({ required: false, description: 'Default false.' }),
    fallback: t.string({ required: false, description: 'Used when an optional variable is missing.' }),
  }),
})

export const EmailTemplateVersionRef = builder.objectRef<EmailTemplateVersionRow>('EmailTemplateVersion').implement({
  description: 'An immutable published version of a template; campaigns send a version.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Version id.' }),
    version: t.exposeInt('version', { description: '1 for the first publish, then increasing.' }),
    kind: t.field({ type: TemplateKindEnum, description: 'Transactional or marketing.', resolve: (v) => v.kind }),
    subject: t.exposeString('subject', { description: 'Subject source (Handlebars).' }),
    html: t.exposeString('html', { description: 'HTML source (Handlebars, escaped output).' }),
    text: t.exposeString('text', { description: 'Plain-text source.' }),
    textGenerated: t.exposeBoolean('textGenerated', { description: 'The text was generated from the HTML.' }),
    variables: t.field({ type: [TemplateVariableRef], description: 'Declared variables.', resolve: (v) => v.variables }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was published.' }),
  }),
})

export const EmailTemplateRef = builder.objectRef<EmailTemplateRow>('EmailTemplate').implement({
  description: 'A stored email template: an editable draft and its published versions.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Template id.' }),
    name: t.exposeString('name', { description: 'Name for humans.' }),
    kind: t.field({ type: TemplateKindEnum, description: 'Transactional or marketing.', resolve: (v) => v.kind }),
    subject: t.exposeString('subject', { description: 'Draft subject.' }),
    html: t.exposeString('html', { description: 'Draft HTML.' }),
    text: t.exposeString('text', { nullable: true, description: 'Draft text; null means generated from the HTML on publish.' }),
    variables: t.field({ type: [TemplateVariableRef], description: 'Draft variable declarations.', resolve: (v) => v.variables }),
    sampleData: t.field({ type: 'JSON', description: 'Data for the test render on save.', resolve: (v) => v.sampleData }),
    latestVersion: t.exposeInt('latestVersion', { description: 'The newest published version number; 0 before the first publish.' }),
    versions: t.field({
      type: [EmailTemplateVersionRef],
      description: 'Published versions, newest first.',
      resolve: (v, _a, ctx) => ctx.services.emailTemplates.listVersions(v.id),
    }),
    version: t.field({
      type: EmailTemplateVersionRef,
      nullable: true,
      description: 'One published version; the latest when no number is given.',
      args: { number: t.arg.int({ required: false, description: 'Version number.' }) },
      resolve: async (v, args, ctx) => {
        const number = args.number ?? v.latestVersion
        if (number < 1) return null
        return ctx.services.emailTemplates.getVersion(v.id, number).catch((err: unknown) => {
          if (err instanceof NotFoundError) return null
          throw err
        })
      },
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was created.' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'When the draft last changed.' }),
  }),
})

const EmailTemplateConnection = connectionOf('EmailTemplate', EmailTemplateRef)

const CreateEmailTemplateInput = builder.inputType('CreateEmailTemplateInput', {
  description: 'A new template draft. It is checked in full before it is saved.',
  fields: (t) => ({
    name: t.string({ required: true, description: 'Name for humans.' }),
    kind: t.field({ type: TemplateKindEnum, required: true, description: 'MARKETING templates must contain {{unsubscribeUrl}}.' }),
    subject: t.string({ required: true, description: 'Subject (Handlebars).' }),
    html: t.string({ required: true, description: 'HTML body (Handlebars; {{x}} is escaped, {{{x}}} is refused).' }),
    text: t.string({ required: false, description: 'Plain-text body; generated from the HTML when omitted.' }),
    variables: t.field({ type: [TemplateVariableInput], required: false, description: 'Variables the template reads.' }),
    sampleData: t.field({ type: 'JSON', required: false, description: 'Data for the test render (an object).' }),
  }),
})

const UpdateEmailTemplateInput = builder.inputType('UpdateEmailTemplateInput', {
  description: 'Changes to a draft; omitted fields stay. Published versions never change.',
  fields: (t) => ({
    name: t.string({ required: false, description: 'Name for humans.' }),
    kind: t.field({ type: TemplateKindEnum, required: false, description: 'Transactional or marketing.' }),
    subject: t.string({ required: false, description: 'Subject (Handlebars).' }),
    html: t.string({ required: false, description: 'HTML body (Handlebars).' }),
    text: t.string({ required: false, description: 'Plain-text body; an empty string goes back to generating it.' }),
    variables: t.field({ type: [TemplateVariableInput], required: false, description: 'Replaces the declarations.' }),
    sampleData: t.field({ type: 'JSON', required: false, description: 'Data for the test render (an object).' }),
  }),
})

const EmailTemplateSuccess = builder.objectRef<{ emailTemplate: EmailTemplateRow }>('EmailTemplateSuccess').implement({
  description: 'The template as saved.',
  isTypeOf: (v) => typeof v === 'object' && v !== null && 'emailTemplate' in v,
  fields: (t) => ({ emailTemplate: t.field({ type: EmailTemplateRef, description: 'The template.', resolve: (r) => r.emailTemplate }) }),
})

const EmailTemplateResult = builder.unionType('EmailTemplateResult', {
  description: 'EmailTemplateSuccess, or why nothing was saved.',
  types: [EmailTemplateSuccess, ValidationError, TemplateError, NotFoundError],
  resolveType: resultTypeResolver('EmailTemplateSuccess'),
})

const EmailPreviewRef = builder.objectRef<TemplatePreview>('EmailPreview').implement({
  description: 'A rendered template.',
  fields: (t) => ({
    subject: t.exposeString('subject', { description: 'Rendered subject.' }),
    html: t.exposeString('html', { description: 'Rendered HTML.' }),
    text: t.exposeString('text', { description: 'Rendered text.' }),
    version: t.exposeInt('version', { nullable: true, description: 'The version rendered; null for the draft.' }),
  }),
})

const PreviewEmailSuccess = builder.objectRef<{ preview: TemplatePreview }>('PreviewEmailSuccess').implement({
  description: 'The rendered email.',
  isTypeOf: (v) => typeof v === 'object' && v !== null && 'preview' in v,
  fields: (t) => ({ preview: t.field({ type: EmailPreviewRef, description: 'Subject, HTML and text.', resolve: (r) => r.preview }) }),
})

const PreviewEmailResult = builder.unionType('PreviewEmailResult', {
  description: 'PreviewEmailSuccess, or why it could not be rendered.',
  types: [PreviewEmailSuccess, ValidationError, TemplateError, MissingVariablesError, NotFoundError],
  resolveType: resultTypeResolver('PreviewEmailSuccess'),
})

builder.queryFields((t) => ({
  emailTemplate: t.field({
    type: EmailTemplateRef,
    nullable: true,
    description: 'A stored template (admin).',
    authScopes: { admin: true },
    args: { id: t.arg.id({ required: true, description: 'Template id.' }) },
    resolve: (_root, args, ctx) => ctx.services.emailTemplates.findTemplate(String(args.id)),
  }),
  emailTemplates: t.field({
    type: EmailTemplateConnection,
    description: 'Stored templates, newest first (admin).',
    authScopes: { admin: true },
    args: {
      first: t.arg.int({ required: false, description: 'Page size, 1-100 (default 20).' }),
      after: t.arg.string({ required: false, description: 'endCursor of the previous page.' }),
    },
    resolve: async (_root, args, ctx) => {
      return paginate(args.first, (limit) => ctx.services.emailTemplates.listTemplates({ limit, after: timeCursor(args.after) }), timeCursorOf)
    },
  }),
}))

builder.mutationFields((t) => ({
  createEmailTemplate: t.field({
    type: EmailTemplateResult,
    description: 'Creates a template draft after checking it: syntax, variables, the unsubscribe link and a test render (admin).',
    authScopes: { admin: true },
    args: { input: t.arg({ type: CreateEmailTemplateInput, required: true, description: 'The draft.' }) },
    resolve: (_root, { input }, ctx) =>
      asResult(TEMPLATE_ERRORS, async () => ({
        emailTemplate: await ctx.services.emailTemplates.createTemplate({
          name: input.name,
          kind: input.kind,
          subject: input.subject,
          html: input.html,
          text: input.text ?? null,
          variables: input.variables?.map(toVariable),
          sampleData: toSampleData(input.sampleData),
        }),
      })),
  }),
  updateEmailTemplate: t.field({
    type: EmailTemplateResult,
    description: 'Edits the draft; it is checked again in full (admin).',
    authScopes: { admin: true },
    args: {
      id: t.arg.id({ required: true, description: 'Template id.' }),
      input: t.arg({ type: UpdateEmailTemplateInput, required: true, description: 'The changes.' }),
    },
    resolve: (_root, { id, input }, ctx) =>
      asResult(TEMPLATE_ERRORS, async () => {
        const patch: TemplatePatch = {}
        if (input.name != null) patch.name = input.name
        if (input.kind != null) patch.kind = input.kind
        if (input.subject != null) patch.subject = input.subject
        if (input.html != null) patch.html = input.html
        if (input.text !== undefined) patch.text = input.text
        if (input.variables != null) patch.variables = input.variables.map(toVariable)
        if (input.sampleData !== undefined) patch.sampleData = toSampleData(input.sampleData)
        return { emailTemplate: await ctx.services.emailTemplates.updateTemplate(String(id), patch) }
      }),
  }),
  publishEmailTemplate: t.field({
    type: EmailTemplateResult,
    description: 'Freezes the draft as a new immutable version (admin). Publishing an unchanged draft creates no new version.',
    authScopes: { admin: true },
    args: { id: t.arg.id({ required: true, description: 'Template id.' }) },
    resolve: (_root, { id }, ctx) => asResult(TEMPLATE_ERRORS, async () => ({ emailTemplate: await ctx.services.emailTemplates.publishTemplate(String(id)) })),
  }),
  previewEmailTemplate: t.field({
    type: PreviewEmailResult,
    description: 'Renders a published version (or the draft) with the given data: attributes, plus email and name (admin).',
    authScopes: { admin: true },
    args: {
      id: t.arg.id({ required: true, description: 'Template id.' }),
      data: t.arg({ type: 'JSON', required: false, description: 'An object: contact attributes, and optionally email and name.' }),
      version: t.arg.int({ required: false, description: 'Version number; the draft when omitted.' }),
    },
    resolve: (_root, args, ctx) =>
      asResult([...TEMPLATE_ERRORS, MissingVariablesError], async () => ({
        preview: await ctx.services.emailTemplates.previewTemplate(String(args.id), args.data, args.version),
      })),
  }),
}))

function toVariable(v: { name: string; required?: boolean | null; fallback?: string | null }): TemplateVariableDecl {
  return { name: v.name, required: v.required ?? false, fallback: v.fallback ?? null }
}

function toSampleData(value: unknown): Record<string, unknown> | null {
  if (value == null) return null
  if (typeof value !== 'object' || Array.isArray(value)) throw ValidationError.field(['input', 'sampleData'], 'sampleData must be an object')
  return value as Record<string, unknown>
}

