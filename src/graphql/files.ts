import type { FileUpload } from 'graphql-upload-minimal'
import type { FileRow, FileVersionRow } from '../infra/db/file-repository'
import { FileTooLargeError, NotFoundError, ValidationError } from '../lib/errors'
import { MAX_URL_TTL, MIN_URL_TTL } from '../services/files/file-service'
import { uploadProgressTopic, type UploadProgressEvent } from '../services/files/upload-progress'
import { builder } from './builder'
import { connectionOf, decodeCursor, encodeCursor, pageSize, toConnection } from './connection'
import type { GraphQLContext } from './context'
import { UPLOAD_ERRORS } from './errors'

const FileStatusEnum = builder.enumType('FileStatus', {
  description: 'Lifecycle of a file.',
  values: {
    PROCESSING: { value: 'processing', description: 'Bytes are being received or processed.' },
    READY: { value: 'ready', description: 'The current version can be downloaded.' },
    FAILED: { value: 'failed', description: 'Processing failed; see the upload error.' },
    DELETED: { value: 'deleted', description: 'Deleted.' },
  } as const,
})

const UploadStageEnum = builder.enumType('UploadStage', {
  description: 'Where an upload is. COMPLETED and FAILED are terminal: exactly one of them ends every upload.',
  values: {
    RECEIVING: { description: 'Bytes are arriving.' },
    VALIDATING: { description: 'Checking type, size and integrity.' },
    OPTIMIZING: { description: 'Images: rotating, stripping metadata, resizing and re-encoding.' },
    STORING: { description: 'Writing to storage and recording the file.' },
    COMPLETED: { description: 'Done; fileId is ready.' },
    FAILED: { description: 'Stopped; see error. Nothing was stored.' },
  } as const,
})

const expiresInArg = (t: { arg: { int: (o: object) => unknown } }) =>
  t.arg.int({ required: false, description: `Seconds the URL stays valid (${MIN_URL_TTL}-${MAX_URL_TTL}, default 3600).` })

export const FileVariantRef = builder.objectRef<FileVersionRow['variants'][number]>('FileVariant').implement({
  description: 'A derived asset of a version, such as a thumbnail.',
  fields: (t) => ({
    name: t.exposeString('name', { description: 'Variant name, e.g. "thumb".' }),
    mimeType: t.exposeString('mimeType', { description: 'MIME type of the variant.' }),
    size: t.exposeFloat('size', { description: 'Bytes.' }),
    width: t.exposeInt('width', { nullable: true, description: 'Pixels.' }),
    height: t.exposeInt('height', { nullable: true, description: 'Pixels.' }),
  }),
})

export const FileVersionRef = builder.objectRef<FileVersionRow>('FileVersion').implement({
  description: 'One immutable version of a file.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Version id.' }),
    number: t.exposeInt('number', { description: '1 for the first upload, then increasing.' }),
    filename: t.exposeString('filename', { description: 'The name the client gave this version (metadata only).' }),
    size: t.exposeFloat('size', { description: 'Stored bytes (after optimisation).' }),
    originalSize: t.exposeFloat('originalSize', { description: 'Bytes the client sent.' }),
    mimeType: t.exposeString('mimeType', { description: 'MIME type sniffed from the content.' }),
    sha256: t.exposeString('sha256', { description: 'Hex sha256 of the stored bytes.' }),
    width: t.exposeInt('width', { nullable: true, description: 'Images: pixels.' }),
    height: t.exposeInt('height', { nullable: true, description: 'Images: pixels.' }),
    url: t.string({
      description: 'A signed download URL.',
      args: { expiresIn: expiresInArg(t) as never },
      resolve: (v, args: { expiresIn?: number | null }, ctx) => ctx.services.files.downloadUrl(v, args.expiresIn ?? undefined),
    }),
    variants: t.field({ type: [FileVariantRef], description: 'Derived assets.', resolve: (v) => v.variants }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When this version was stored.' }),
    createdBy: t.exposeID('createdBy', { nullable: true, description: 'Who uploaded it.' }),
  }),
})

export const FileRef = builder.objectRef<FileRow>('File').implement({
  description: 'A stored file with its versions.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'File id.' }),
    ownerId: t.exposeID('ownerId', { description: 'The user who owns it.' }),
    filename: t.exposeString('filename', { description: 'Current name (metadata only; never part of a storage key).' }),
    status: t.field({ type: FileStatusEnum, description: 'Lifecycle state.', resolve: (f) => f.status }),
    currentVersion: t.field({ type: FileVersionRef, description: 'The version downloads serve.', resolve: (f, _a, ctx) => ctx.services.files.currentVersion(f) }),
    versions: t.field({ type: [FileVersionRef], description: 'All versions, newest first.', resolve: (f, _a, ctx) => ctx.services.files.listVersions(f) }),
    mimeType: t.string({ description: 'MIME type of the current version.', resolve: async (f, _a, ctx) => (await ctx.services.files.currentVersion(f)).mimeType }),
    size: t.float({ description: 'Bytes of the current version.', resolve: async (f, _a, ctx) => (await ctx.services.files.currentVersion(f)).size }),
    sha256: t.string({ description: 'sha256 of the current version.', resolve: async (f, _a, ctx) => (await ctx.services.files.currentVersion(f)).sha256 }),
    url: t.string({
      description: 'A signed download URL for the current version.',
      args: { expiresIn: expiresInArg(t) as never },
      resolve: async (f, args: { expiresIn?: number | null }, ctx) => ctx.services.files.downloadUrl(await ctx.services.files.currentVersion(f), args.expiresIn ?? undefined),
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the file was created.' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'When the current version last changed.' }),
  }),
})

const FileConnection = connectionOf('File', FileRef)

const UploadProgressRef = builder.objectRef<UploadProgressEvent>('UploadProgress').implement({
  description: 'A progress event of one upload.',
  fields: (t) => ({
    uploadId: t.exposeID('uploadId', { description: 'The id given in UploadFileInput.uploadId.' }),
    fileId: t.exposeID('fileId', { nullable: true, description: 'The file being created.' }),
    stage: t.field({ type: UploadStageEnum, description: 'Current stage.', resolve: (e) => e.stage }),
    step: t.exposeInt('step', { description: '1-based index of the stage.' }),
    steps: t.exposeInt('steps', { description: 'Number of stages of this upload.' }),
    bytesReceived: t.exposeFloat('bytesReceived', { description: 'Bytes received so far.' }),
    bytesTotal: t.exposeFloat('bytesTotal', { nullable: true, description: 'Expected bytes, when the client gave input.size.' }),
    percent: t.exposeFloat('percent', { description: 'Overall progress, 0-100.' }),
    error: t.exposeString('error', { nullable: true, description: 'Why it failed (FAILED only).' }),
  }),
})

const UploadFileInput = builder.inputType('UploadFileInput', {
  description: 'Options of an upload.',
  fields: (t) => ({
    uploadId: t.id({ required: false, description: 'Client-chosen id (1-128 of A-Z a-z 0-9 _ -) to follow with the uploadProgress subscription. Subscribe before sending.' }),
    size: t.float({ required: false, description: 'Expected bytes, for progress percentages.' }),
    filename: t.string({ required: false, description: 'Overrides the multipart filename.' }),
    mimeType: t.string({ required: false, description: 'Overrides the multipart Content-Type. Checked against the content.' }),
  }),
})

builder.queryFields((t) => ({
  file: t.field({
    type: FileRef,
    nullable: true,
    description: 'A file you own (admins: any file). Null if it does not exist.',
    authScopes: { authenticated: true },
    args: { id: t.arg.id({ required: true, description: 'File id.' }) },
    resolve: async (_root, args, ctx) => {
      try {
        return await ctx.services.files.getFile(ctx.viewer!, String(args.id))
      } catch (err) {
        if (err instanceof NotFoundError) return null
        throw err
      }
    },
  }),
  files: t.field({
    type: FileConnection,
    description: 'Your files, newest first (admins: everyone\'s).',
    authScopes: { authenticated: true },
    args: {
      first: t.arg.int({ required: false, description: 'Page size, 1-100 (default 20).' }),
      after: t.arg.string({ required: false, description: 'endCursor of the previous page.' }),
    },
    resolve: async (_root, args, ctx) => {
      const first = pageSize(args.first)
      const after = fileCursor(args.after)
      const rows = await ctx.services.files.listFiles(ctx.viewer!, { first: first + 1, after })
      return toConnection(rows, first, (f) => encodeCursor([f.createdAt.toISOString(), f.id]))
    },
  }),
}))

builder.mutationFields((t) => ({
  uploadFile: t.field({
    type: FileRef,
    description: 'Uploads a file (GraphQL multipart request; send the `graphql-require-preflight: 1` header). Images are optimised.',
    authScopes: { authenticated: true },
    errors: { types: UPLOAD_ERRORS, dataField: { name: 'file' } },
    args: {
      file: t.arg({ type: 'Upload', required: true, description: 'The file.' }),
      input: t.arg({ type: UploadFileInput, required: false, description: 'Options.' }),
    },
    resolve: async (_root, args, ctx) => (await ctx.services.files.uploadFile(ctx.viewer!, await toUploadInput(ctx, args.file, args.input))).file,
  }),
  uploadFileVersion: t.field({
    type: FileRef,
    description: 'Uploads a new version of a file you own; it becomes the current version.',
    authScopes: { authenticated: true },
    errors: { types: UPLOAD_ERRORS, dataField: { name: 'file' } },
    args: {
      fileId: t.arg.id({ required: true, description: 'The file.' }),
      file: t.arg({ type: 'Upload', required: true, description: 'The new content.' }),
      input: t.arg({ type: UploadFileInput, required: false, description: 'Options.' }),
    },
    resolve: async (_root, args, ctx) =>
      (await ctx.services.files.uploadFileVersion(ctx.viewer!, String(args.fileId), await toUploadInput(ctx, args.file, args.input))).file,
  }),
  restoreFileVersion: t.field({
    type: FileRef,
    description: 'Copies an old version forward as a new current version. History is kept.',
    authScopes: { authenticated: true },
    errors: { types: [NotFoundError, ValidationError], dataField: { name: 'file' } },
    args: {
      fileId: t.arg.id({ required: true, description: 'The file.' }),
      version: t.arg.int({ required: true, description: 'Version number to restore.' }),
    },
    resolve: async (_root, args, ctx) => (await ctx.services.files.restoreFileVersion(ctx.viewer!, String(args.fileId), args.version)).file,
  }),
  deleteFile: t.field({
    type: 'ID',
    description: 'Deletes a file with all its versions.',
    authScopes: { authenticated: true },
    errors: { types: [NotFoundError], dataField: { name: 'deletedFileId' } },
    args: { id: t.arg.id({ required: true, description: 'File id.' }) },
    resolve: (_root, args, ctx) => ctx.services.files.deleteFile(ctx.viewer!, String(args.id)),
  }),
}))

builder.subscriptionField('uploadProgress', (t) =>
  t.field({
    type: UploadProgressRef,
    description: 'Progress of one of your uploads: RECEIVING, then each processing stage, always ending in COMPLETED or FAILED.',
    authScopes: { authenticated: true },
    args: { uploadId: t.arg.id({ required: true, description: 'The uploadId you passed to uploadFile.' }) },
    subscribe: (_root, args, ctx: GraphQLContext) => ctx.pubsub.subscribe(uploadProgressTopic(ctx.viewer!.id, String(args.uploadId))) as never,
    resolve: (event: UploadProgressEvent) => event,
  }),
)

async function toUploadInput(
  ctx: GraphQLContext,
  upload: Promise<FileUpload>,
  input: { uploadId?: string | number | null; size?: number | null; filename?: string | null; mimeType?: string | null } | null | undefined,
) {
  const file = await upload
  let stream
  try {
    stream = file.createReadStream()
  } catch (err) {
    // The multipart parser already cut the file at its cap (it can finish before the resolver runs).
    if ((err as { status?: number }).status === 413) throw new FileTooLargeError(ctx.services.files.maxUploadBytes)
    throw err
  }
  return {
    stream,
    filename: input?.filename ?? file.filename,
    declaredType: input?.mimeType ?? file.mimetype,
    uploadId: input?.uploadId == null ? undefined : String(input.uploadId),
    size: input?.size ?? undefined,
  }
}

function fileCursor(after: string | null | undefined) {
  const parts = decodeCursor(after)
  if (!parts) return undefined
  const [createdAt, id] = parts
  const date = typeof createdAt === 'string' ? new Date(createdAt) : null
  if (!date || Number.isNaN(date.getTime()) || typeof id !== 'string') throw ValidationError.field(['after'], 'The cursor is invalid')
  return { createdAt: date, id }
}
