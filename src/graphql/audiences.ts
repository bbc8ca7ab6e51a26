import { NotFoundError, ValidationError } from '../lib/errors'
import { isStorableText } from '../lib/storable-text'
import { isUuid } from '../lib/uuid'
import type { AddContactsReport, AudienceRow, ContactProblem, ContactRow, SuppressionRow } from '../services/campaigns/audience-service'
import type { ImportReport, ImportRowError } from '../services/campaigns/contact-import'
import { builder } from './builder'
import { asResult, resultTypeResolver } from './campaign-errors'
import { connectionOf, decodeCursor, encodeCursor, paginate, timeCursor, timeCursorOf } from './connection'

const ContactStatusEnum = builder.enumType('ContactStatus', {
  description: 'Whether a contact receives campaigns.',
  values: {
    SUBSCRIBED: { value: 'subscribed', description: 'Receives campaigns.' },
    UNSUBSCRIBED: { value: 'unsubscribed', description: 'Unsubscribed through a link or by an admin.' },
    BOUNCED: { value: 'bounced', description: 'The address bounced permanently.' },
    COMPLAINED: { value: 'complained', description: 'The recipient marked a campaign as spam.' },
  } as const,
})

const SuppressionReasonEnum = builder.enumType('SuppressionReason', {
  description: 'Why an address is on the global suppression list.',
  values: {
    UNSUBSCRIBED: { value: 'unsubscribed', description: 'Unsubscribed.' },
    BOUNCED: { value: 'bounced', description: 'Bounced permanently.' },
    COMPLAINED: { value: 'complained', description: 'Complained (spam report).' },
    MANUAL: { value: 'manual', description: 'Added by an admin.' },
  } as const,
})

const ContactRef = builder.objectRef<ContactRow>('Contact').implement({
  description: 'An address in an audience.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Contact id.' }),
    email: t.exposeString('email', { description: 'The address (unique per audience, case-insensitively).' }),
    name: t.exposeString('name', { nullable: true, description: 'Display name; {{name}} in templates.' }),
    attributes: t.field({ type: 'JSON', description: 'Template data: declared variables are read from here.', resolve: (c) => c.attributes }),
    status: t.field({ type: ContactStatusEnum, description: 'Whether it receives campaigns.', resolve: (c) => c.status }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was added.' }),
  }),
})

const ContactConnection = connectionOf('Contact', ContactRef)

export const AudienceRef = builder.objectRef<AudienceRow>('Audience').implement({
  description: 'A list of contacts that campaigns are sent to.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Audience id.' }),
    name: t.exposeString('name', { description: 'Name for humans.' }),
    description: t.exposeString('description', { nullable: true, description: 'What the list is.' }),
    contactCount: t.int({
      description: 'Contacts in the audience (counted on request).',
      args: { status: t.arg({ type: ContactStatusEnum, required: false, description: 'Only this status.' }) },
      resolve: (a, args, ctx) => ctx.services.audiences.countContacts(a.id, args.status ?? undefined),
    }),
    contacts: t.field({
      type: ContactConnection,
      description: 'Contacts, in a stable order (by id) that new contacts do not disturb.',
      args: {
        first: t.arg.int({ required: false, description: 'Page size, 1-100 (default 20).' }),
        after: t.arg.string({ required: false, description: 'endCursor of the previous page.' }),
        status: t.arg({ type: ContactStatusEnum, required: false, description: 'Only this status.' }),
      },
      resolve: async (a, args, ctx) => {
        return paginate(args.first, (limit) => ctx.services.audiences.listContacts(a.id, { limit, afterId: uuidCursor(args.after), status: args.status ?? undefined }), (c) => encodeCursor([c.id]))
      },
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was created.' }),
  }),
})

const AudienceConnection = connectionOf('Audience', AudienceRef)

const SuppressionRef = builder.objectRef<SuppressionRow>('Suppression').implement({
  description: 'An address no campaign is sent to.',
  fields: (t) => ({
    email: t.exposeString('email', { description: 'The address, lower-cased.' }),
    reason: t.field({ type: SuppressionReasonEnum, description: 'Why.', resolve: (s) => s.reason }),
    source: t.exposeString('source', { nullable: true, description: 'Where it came from, e.g. campaign:<id> or admin.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was added.' }),
  }),
})

const SuppressionConnection = connectionOf('Suppression', SuppressionRef)

const ContactProblemCodeEnum = builder.enumType('ContactProblemCode', {
  description: 'Why an input contact was not added.',
  values: {
    INVALID: { description: 'The address or the other fields are invalid.' },
    DUPLICATE_IN_INPUT: { description: 'The same address appears earlier in the input.' },
    ALREADY_IN_AUDIENCE: { description: 'The address is already in the audience.' },
  } as const,
})

const ContactProblemRef = builder.objectRef<ContactProblem>('ContactProblem').implement({
  description: 'An input contact that was not added.',
  fields: (t) => ({
    index: t.exposeInt('index', { description: 'Position in the input list.' }),
    email: t.exposeString('email', { description: 'The address as given.' }),
    code: t.field({ type: ContactProblemCodeEnum, description: 'Why.', resolve: (p) => p.code }),
    message: t.exposeString('message', { description: 'Human-readable reason.' }),
  }),
})

const AddContactsReportRef = builder.objectRef<AddContactsReport>('AddContactsReport').implement({
  description: 'What addContacts did.',
  fields: (t) => ({
    added: t.exposeInt('added', { description: 'Contacts added.' }),
    problems: t.field({ type: [ContactProblemRef], description: 'Contacts not added, and why.', resolve: (r) => r.problems }),
  }),
})

const ImportRowErrorRef = builder.objectRef<ImportRowError>('ImportRowError').implement({
  description: 'A CSV row that was not imported.',
  fields: (t) => ({
    line: t.exposeInt('line', { description: 'Line number in the file (1 is the header); 0 for the file as a whole.' }),
    email: t.exposeString('email', { nullable: true, description: 'The address on that row, if it could be read.' }),
    message: t.exposeString('message', { description: 'Why it was not imported.' }),
  }),
})

const ImportAttributeColumnRef = builder.objectRef<ImportReport['attributeColumns'][number]>('ImportAttributeColumn').implement({
  description: 'A CSV column stored as a contact attribute.',
  fields: (t) => ({
    header: t.exposeString('header', { description: 'The column header.' }),
    key: t.exposeString('key', { description: 'The attribute key, as templates read it.' }),
  }),
})

const ImportReportRef = builder.objectRef<ImportReport>('ImportContactsReport').implement({
  description: 'What importContacts did. Bad rows are reported, never fatal.',
  fields: (t) => ({
    rowsRead: t.exposeInt('rowsRead', { description: 'Data rows read.' }),
    imported: t.exposeInt('imported', { description: 'Contacts added.' }),
    duplicates: t.exposeInt('duplicates', { description: 'Rows skipped: already in the audience or repeated in the file.' }),
    invalid: t.exposeInt('invalid', { description: 'Rows refused.' }),
    errors: t.field({ type: [ImportRowErrorRef], description: 'The first 100 refused rows.', resolve: (r) => r.errors }),
    errorsTruncated: t.exposeBoolean('errorsTruncated', { description: 'More rows were refused than listed.' }),
    completed: t.exposeBoolean('completed', { description: 'False when the file could not be read to its end (rows before that point were imported).' }),
    emailColumn: t.exposeString('emailColumn', { description: 'The column read as the address.' }),
    nameColumns: t.exposeStringList('nameColumns', { description: 'The columns joined into the name.' }),
    attributeColumns: t.field({ type: [ImportAttributeColumnRef], description: 'The columns stored as attributes.', resolve: (r) => r.attributeColumns }),
  }),
})

const ContactInput = builder.inputType('ContactInput', {
  description: 'A contact to add.',
  fields: (t) => ({
    email: t.string({ required: true, description: 'The address.' }),
    name: t.string({ required: false, description: 'Display name.' }),
    attributes: t.field({ type: 'JSON', required: false, description: 'An object of template data (at most 8 KiB of JSON).' }),
  }),
})

const CreateAudienceInput = builder.inputType('CreateAudienceInput', {
  description: 'A new audience.',
  fields: (t) => ({
    name: t.string({ required: true, description: 'Name for humans.' }),
    description: t.string({ required: false, description: 'What the list is.' }),
  }),
})

const ImportContactsInput = builder.inputType('ImportContactsInput', {
  description: 'Options of a CSV import.',
  fields: (t) => ({
    emailColumn: t.string({ required: false, description: 'Header of the address column; default: email, e-mail, email address or mail.' }),
    nameColumn: t.string({ required: false, description: 'Header of the name column; default: name or full name, else first name + last name.' }),
    attributeColumns: t.stringList({ required: false, description: 'Headers to keep as attributes; default: all other columns.' }),
    uploadId: t.id({ required: false, description: 'Client-chosen id: progress is published on uploadProgress(uploadId), as for file uploads.' }),
  }),
})

const AudienceSuccess = builder.objectRef<{ audience: AudienceRow }>('AudienceSuccess').implement({
  description: 'The audience as saved.',
  isTypeOf: (v) => typeof v === 'object' && v !== null && 'audience' in v,
  fields: (t) => ({ audience: t.field({ type: AudienceRef, description: 'The audience.', resolve: (r) => r.audience }) }),
})

const AudienceResult = builder.unionType('AudienceResult', {
  description: 'AudienceSuccess, or why nothing was saved.',
  types: [AudienceSuccess, ValidationError],
  resolveType: resultTypeResolver('AudienceSuccess'),
})

builder.queryFields((t) => ({
  audience: t.field({
    type: AudienceRef,
    nullable: true,
    description: 'An audience (admin).',
    authScopes: { admin: true },
    args: { id: t.arg.id({ required: true, description: 'Audience id.' }) },
    resolve: (_root, args, ctx) => ctx.services.audiences.findAudience(String(args.id)),
  }),
  audiences: t.field({
    type: AudienceConnection,
    description: 'Audiences, newest first (admin).',
    authScopes: { admin: true },
    args: {
      first: t.arg.int({ required: false, description: 'Page size, 1-100 (default 20).' }),
      after: t.arg.string({ required: false, description: 'endCursor of the previous page.' }),
    },
    resolve: async (_root, args, ctx) => {
      return paginate(args.first, (limit) => ctx.services.audiences.listAudiences({ limit, after: timeCursor(args.after) }), timeCursorOf)
    },
  }),
  suppressions: t.field({
    type: SuppressionConnection,
    description: 'The global suppression list, by address (admin).',
    authScopes: { admin: true },
    args: {
      first: t.arg.int({ required: false, description: 'Page size, 1-100 (default 20).' }),
      after: t.arg.string({ required: false, description: 'endCursor of the previous page.' }),
    },
    resolve: async (_root, args, ctx) => {
      return paginate(args.first, (limit) => ctx.services.audiences.listSuppressions({ limit, afterEmail: stringCursor(args.after) }), (s) => encodeCursor([s.email]))
    },
  }),
}))

builder.mutationFields((t) => ({
  createAudience: t.field({
    type: AudienceResult,
    description: 'Creates an audience (admin).',
    authScopes: { admin: true },
    args: { input: t.arg({ type: CreateAudienceInput, required: true, description: 'The audience.' }) },
    resolve: (_root, { input }, ctx) => asResult([ValidationError], async () => ({ audience: await ctx.services.audiences.createAudience(input) })),
  }),
  addContacts: t.field({
    type: AddContactsReportRef,
    description: 'Adds up to 1000 contacts; invalid and duplicate addresses are reported, the rest are added (admin).',
    authScopes: { admin: true },
    errors: { types: [ValidationError, NotFoundError], dataField: { name: 'report', description: 'What was added and what was not.' } },
    args: {
      audienceId: t.arg.id({ required: true, description: 'Audience id.' }),
      contacts: t.arg({ type: [ContactInput], required: true, description: 'The contacts.' }),
    },
    resolve: (_root, args, ctx) =>
      ctx.services.audiences.addContacts(
        String(args.audienceId),
        args.contacts.map((c) => ({ email: c.email, name: c.name, attributes: c.attributes as Record<string, unknown> | null })),
      ),
  }),
  importContacts: t.field({
    type: ImportReportRef,
    description: 'Streams a UTF-8 CSV with a header row into the audience (GraphQL multipart request). Bad rows are reported, not fatal (admin).',
    authScopes: { admin: true },
    errors: { types: [ValidationError, NotFoundError], dataField: { name: 'report', description: 'Counts and the refused rows.' } },
    args: {
      audienceId: t.arg.id({ required: true, description: 'Audience id.' }),
      file: t.arg({ type: 'Upload', required: true, description: 'The CSV file.' }),
      input: t.arg({ type: ImportContactsInput, required: false, description: 'Column mapping and progress id.' }),
    },
    resolve: async (_root, args, ctx) => {
      const file = await args.file
      const input = args.input
      return ctx.services.audiences.importContacts(String(args.audienceId), file.createReadStream(), {
        mapping: input ? { email: input.emailColumn, name: input.nameColumn, attributes: input.attributeColumns } : undefined,
        progress: input?.uploadId != null ? { ownerId: ctx.viewer!.id, uploadId: String(input.uploadId) } : undefined,
      })
    },
  }),
  suppressEmails: t.field({
    type: 'Int',
    description: 'Adds addresses to the global suppression list; returns how many were new (admin).',
    authScopes: { admin: true },
    errors: { types: [ValidationError], dataField: { name: 'added', description: 'Addresses newly suppressed.' } },
    args: {
      emails: t.arg.stringList({ required: true, description: 'Up to 1000 addresses.' }),
      reason: t.arg({ type: SuppressionReasonEnum, required: false, description: 'Default MANUAL.' }),
    },
    resolve: (_root, args, ctx) => ctx.services.audiences.suppress(args.emails, args.reason ?? 'manual', `admin:${ctx.viewer!.id}`),
  }),
  unsuppressEmail: t.boolean({
    description: 'Removes an address from the suppression list; false when it was not on it (admin). Contacts keep their status.',
    authScopes: { admin: true },
    args: { email: t.arg.string({ required: true, description: 'The address.' }) },
    resolve: (_root, args, ctx) => ctx.services.audiences.unsuppress(args.email),
  }),
}))

/** The string a cursor holds: text PostgreSQL can compare (an address), or the cursor is invalid. */
function stringCursor(after: string | null | undefined): string | undefined {
  const parts = decodeCursor(after)
  if (!parts) return undefined
  if (typeof parts[0] !== 'string' || parts[0].length > 1024 || !isStorableText(parts[0])) throw ValidationError.field(['after'], 'The cursor is invalid')
  return parts[0]
}

/** The id a cursor holds, a uuid, or the cursor is invalid. */
function uuidCursor(after: string | null | undefined): string | undefined {
  const id = stringCursor(after)
  if (id !== undefined && !isUuid(id)) throw ValidationError.field(['after'], 'The cursor is invalid')
  return id
}
