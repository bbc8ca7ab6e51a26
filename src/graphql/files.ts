import type { FileUpload } from 'graphql-upload-minimal'
import type { FileRow, FileVersionRow } from '../infra/db/file-repository'
import type { FileStepRow } from '../infra/db/file-step-repository'
import type { StoredVariant } from '../infra/db/schema/files'
import { ConflictError, FileTooLargeError, NotFoundError, QuotaExceededError, ValidationError } from '../lib/errors'
import { MAX_URL_TTL, MIN_URL_TTL } from '../services/files/file-service'
import { progressStream } from '../services/files/progress-stream'
import { uploadProgressTopic, type UploadProgressEvent } from '../services/files/upload-progress'
import { builder } from './builder'
import { connectionOf, paginate, timeCursor, timeCursorOf } from './connection'
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

const VersionStatusEnum = builder.enumType('FileVersionStatus', {
  description: 'Lifecycle of one version.',
  values: {
    PROCESSING: { value: 'processing', description: 'Received; the processing pipeline is running.' },
    READY: { value: 'ready', description: 'Processed; it can be downloaded.' },
    FAILED: { value: 'failed', description: 'Processing failed; see error. Its bytes were removed.' },
  } as const,
})

const StepStatusEnum = builder.enumType('FileProcessingStepStatus', {
  description: 'State of one processing step.',
  values: {
    PENDING: { value: 'pending', description: 'Waiting to run (or to be retried, see nextAttemptAt).' },
    RUNNING: { value: 'running', description: 'A worker is running it.' },
    DONE: { value: 'done', description: 'Finished.' },
    SKIPPED: { value: 'skipped', description: 'Does not apply to this file (image steps of a PDF, or a deduplicated upload).' },
    FAILED: { value: 'failed', description: 'Failed for good; the version failed with it.' },
  } as const,
})

const UploadStageEnum = builder.enumType('UploadStage', {
  description: 'Where an upload is. COMPLETED and FAILED are terminal: exactly one of them ends every upload.',
  values: {
    RECEIVING: { description: 'Bytes are arriving.' },
    VALIDATING: { description: 'Checking the type against the bytes, size limits, image dimensions and frames; counting PDF pages.' },
    CHECKSUMMING: { description: 'Verifying (or computing) the sha256, and looking for identical bytes you already stored.' },
    OPTIMIZING: { description: 'Images: rotating, stripping metadata, resizing and re-encoding.' },
    CREATING_VARIANTS: { description: 'Images: rendering the thumbnail and preview variants.' },
    STORING: { description: 'Recording the processed version and making it current.' },
    COMPLETED: { description: 'Done; fileId is ready.' },
    FAILED: { description: 'Stopped; see error. Nothing was kept.' },
  } as const,
})

const expiresInArg = (t: { arg: { int: (o: object) => unknown } }) =>
  t.arg.int({ required: false, description: `Seconds the URL stays valid (${MIN_URL_TTL}-${MAX_URL_TTL}, default 3600).` })

type VariantOfVersion = StoredVariant & { version: FileVersionRow }

export const FileVariantRef = builder.objectRef<VariantOfVersion>('FileVariant').implement({
  description: 'A derived asset of a version, such as a thumbnail.',
  fields: (t) => ({
    name: t.exposeString('name', { description: 'Variant name, e.g. "thumb" or "preview" (see IMAGE_VARIANTS).' }),
    mimeType: t.exposeString('mimeType', { description: 'MIME type of the variant.' }),
    size: t.exposeFloat('size', { description: 'Bytes.' }),
    width: t.exposeInt('width', { nullable: true, description: 'Pixels.' }),
    height: t.exposeInt('height', { nullable: true, description: 'Pixels.' }),
    url: t.string({
      description: 'A signed download URL of the variant.',
      args: { expiresIn: expiresInArg(t) as never },
      resolve: (v, args: { expiresIn?: number | null }, ctx) => ctx.services.files.variantUrl(v.version, v, args.expiresIn ?? undefined),
    }),
  }),
})

const FileProcessingStepRef = builder.objectRef<FileStepRow>('FileProcessingStep').implement({
  description: 'One durable step of processing a version.',
  fields: (t) => ({
    name: t.exposeString('name', { description: 'validate, checksum, optimize, variants or finalize.' }),
    status: t.field({ type: StepStatusEnum, description: 'State.', resolve: (s) => s.status }),
    attempts: t.exposeInt('attempts', { description: 'Times a worker started it.' }),
    nextAttemptAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When a failed attempt is retried (backoff); null unless a retry is scheduled.',
      resolve: (s) => (s.status === 'pending' && s.attempts > 0 ? s.runAt : null),
    }),
    startedAt: t.expose('startedAt', { type: 'DateTime', nullable: true, description: 'When it first started.' }),
    finishedAt: t.expose('finishedAt', { type: 'DateTime', nullable: true, description: 'When it finished, was skipped or failed.' }),
  }),
})

export const FileVersionRef = builder.objectRef<FileVersionRow>('FileVersion').implement({
  description: 'One immutable version of a file.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Version id.' }),
    number: t.exposeInt('number', { description: '1 for the first upload, then increasing; never reused.' }),
    status: t.field({ type: VersionStatusEnum, description: 'Processing state of this version.', resolve: (v) => v.status }),
    error: t.exposeString('error', { nullable: true, description: 'Why processing failed (FAILED only).' }),
    pageCount: t.exposeInt('pageCount', { nullable: true, description: 'PDFs: number of pages, when it could be read.' }),
    steps: t.field({ type: [FileProcessingStepRef], description: 'The processing steps of this version, in order.', resolve: (v, _a, ctx) => ctx.services.files.processingSteps(v) }),
    filename: t.exposeString('filename', { description: 'The name the client gave this version (metadata only).' }),
    size: t.exposeFloat('size', { description: 'Stored bytes (after optimisation).' }),
    originalSize: t.exposeFloat('originalSize', { description: 'Bytes the client sent.' }),
    mimeType: t.exposeString('mimeType', { description: 'MIME type sniffed from the content.' }),
    sha256: t.exposeString('sha256', { description: 'Hex sha256 of the stored bytes.' }),
    width: t.exposeInt('width', { nullable: true, description: 'Images: pixels.' }),
    height: t.exposeInt('height', { nullable: true, description: 'Images: pixels.' }),
    url: t.string({
      nullable: true,
      description: 'A signed download URL; null while the version is not READY (there are no processed bytes to serve yet).',
      args: { expiresIn: expiresInArg(t) as never },
      resolve: (v, args: { expiresIn?: number | null }, ctx) => (v.status === 'ready' ? ctx.services.files.downloadUrl(v, args.expiresIn ?? undefined) : null),
    }),
    variants: t.field({ type: [FileVariantRef], description: 'Derived assets (images: thumbnail and preview).', resolve: (v) => v.variants.map((x) => ({ ...x, version: v })) }),
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
    error: t.exposeString('error', { nullable: true, description: 'Why processing failed (FAILED only).' }),
    currentVersion: t.field({ type: FileVersionRef, description: 'The version downloads serve: the newest READY one (while a new file processes, its first version).', resolve: (f, _a, ctx) => ctx.services.files.currentVersion(f) }),
    versions: t.field({ type: [FileVersionRef], description: 'All versions, newest first.', resolve: (f, _a, ctx) => ctx.services.files.listVersions(f) }),
    mimeType: t.string({ description: 'MIME type of the current version.', resolve: async (f, _a, ctx) => (await ctx.services.files.currentVersion(f)).mimeType }),
    size: t.float({ description: 'Bytes of the current version.', resolve: async (f, _a, ctx) => (await ctx.services.files.currentVersion(f)).size }),
    sha256: t.string({ description: 'sha256 of the current version.', resolve: async (f, _a, ctx) => (await ctx.services.files.currentVersion(f)).sha256 }),
    url: t.string({
      nullable: true,
      description: 'A signed download URL for the current version; null while it is not READY (a new file still processing, or failed).',
      args: { expiresIn: expiresInArg(t) as never },
      resolve: async (f, args: { expiresIn?: number | null }, ctx) => {
        const version = await ctx.services.files.currentVersion(f)
        return version.status === 'ready' ? ctx.services.files.downloadUrl(version, args.expiresIn ?? undefined) : null
      },
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the file was created.' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'When the current version last changed.' }),
  }),
})

const FileConnection = connectionOf('File', FileRef)

const UploadProgressRef = builder.objectRef<UploadProgressEvent>('UploadProgress').implement({
  description: 'A progress event of one upload.',
  fields: (t) => ({
    uploadId: t.exposeID('uploadId', { description: 'The id given in UploadFileInput.uploadId, or the session id of a chunked upload.' }),
    fileId: t.exposeID('fileId', { nullable: true, description: 'The file being created.' }),
    stage: t.field({ type: UploadStageEnum, description: 'Current stage.', resolve: (e) => e.stage }),
    step: t.exposeInt('step', { description: '1-based index of the stage.' }),
    steps: t.exposeInt('steps', { description: 'Number of stages of this upload.' }),
    bytesReceived: t.exposeFloat('bytesReceived', { description: 'Bytes received so far.' }),
    bytesTotal: t.exposeFloat('bytesTotal', { nullable: true, description: 'Expected bytes: the session size, or input.size when the client gave it.' }),
    percent: t.exposeFloat('percent', { description: 'Overall progress, 0-100.' }),
    error: t.exposeString('error', { nullable: true, description: 'Why it failed (FAILED only).' }),
  }),
})

const UploadFileInput = builder.inputType('UploadFileInput', {
  description: 'Options of an upload.',
  fields: (t) => ({
    uploadId: t.id({
      required: false,
      description: 'Client-chosen id (1-128 of A-Z a-z 0-9 _ -) to follow with the uploadProgress subscription. Use a fresh one (a UUID) per upload: a subscriber first gets the latest state of that id.',
    }),
    waitForProcessing: t.boolean({
      required: false,
      description: 'true (default): answer once processing ended (up to UPLOAD_PROCESSING_WAIT_MS), so failures are result errors. false: answer at once with a PROCESSING file and follow uploadProgress.',
    }),
    size: t.float({ required: false, description: 'Expected bytes: progress percentages, and a quota check before any byte is stored.' }),
    filename: t.string({ required: false, description: 'Overrides the multipart filename.' }),
    mimeType: t.string({ required: false, description: 'Overrides the multipart Content-Type. Checked against the content.' }),
  }),
})

const FileUsageRef = builder.objectRef<{ usedBytes: number; limitBytes: number | null }>('FileUsage').implement({
  description: 'Storage the viewer uses against their quota.',
  fields: (t) => ({
    usedBytes: t.exposeFloat('usedBytes', { description: 'Bytes of every version of every file, plus bytes reserved by open upload sessions.' }),
    limitBytes: t.exposeFloat('limitBytes', { nullable: true, description: 'The quota; null when unlimited.' }),
  }),
})

builder.queryFields((t) => ({
  fileUsage: t.field({
    type: FileUsageRef,
    description: 'Your storage use and quota.',
    authScopes: { authenticated: true },
    resolve: (_root, _args, ctx) => ctx.services.files.usage(ctx.viewer!),
  }),
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
      const after = timeCursor(args.after)
      return paginate(args.first, (limit) => ctx.services.files.listFiles(ctx.viewer!, { first: limit, after }), timeCursorOf)
    },
  }),
}))

builder.mutationFields((t) => ({
  uploadFile: t.field({
    type: FileRef,
    description:
      'Uploads a file (GraphQL multipart request; send the `graphql-require-preflight: 1` header), then processes it: images are optimised and get variants. For large files use startUpload.',
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
    description: 'Copies an old version forward as a new current version. History is kept; the bytes are shared, not copied.',
    authScopes: { authenticated: true },
    errors: { types: [NotFoundError, ValidationError, ConflictError, QuotaExceededError], dataField: { name: 'file' } },
    args: {
      fileId: t.arg.id({ required: true, description: 'The file.' }),
      version: t.arg.int({ required: true, description: 'Version number to restore.' }),
    },
    resolve: async (_root, args, ctx) => (await ctx.services.files.restoreFileVersion(ctx.viewer!, String(args.fileId), args.version)).file,
  }),
  deleteFileVersion: t.field({
    type: FileRef,
    description:
      'Deletes one version that is not the current one: the current version is refused (ConflictError) whatever its status, a failed one too; restore or upload another version, or delete the file. Bytes another version shares stay stored.',
    authScopes: { authenticated: true },
    errors: { types: [NotFoundError, ConflictError], dataField: { name: 'file' } },
    args: {
      fileId: t.arg.id({ required: true, description: 'The file.' }),
      version: t.arg.int({ required: true, description: 'Version number to delete.' }),
    },
    resolve: (_root, args, ctx) => ctx.services.files.deleteFileVersion(ctx.viewer!, String(args.fileId), args.version),
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
    description:
      'Progress of one of your uploads: the current state first, then RECEIVING and each processing stage, ending (and completing the subscription) with COMPLETED or FAILED.',
    authScopes: { authenticated: true },
    args: { uploadId: t.arg.id({ required: true, description: 'The uploadId you passed to uploadFile, or the id of an upload session.' }) },
    subscribe: async (_root, args, ctx: GraphQLContext) => {
      const uploadId = String(args.uploadId)
      // Subscribe before reading the saved state: an event published in between is then never missed.
      const queue = (await ctx.pubsub.subscribe(uploadProgressTopic(ctx.viewer!.id, uploadId))) as AsyncIterable<unknown>
      const live = queue[Symbol.asyncIterator]()
      try {
        return progressStream(await ctx.services.files.progressSnapshot(ctx.viewer!, uploadId), live) as never
      } catch (err) {
        await live.return?.()
        throw err
      }
    },
    resolve: (event: UploadProgressEvent) => event,
  }),
)

async function toUploadInput(
  ctx: GraphQLContext,
  upload: Promise<FileUpload>,
  input: { uploadId?: string | number | null; size?: number | null; filename?: string | null; mimeType?: string | null; waitForProcessing?: boolean | null } | null | undefined,
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
    waitForProcessing: input?.waitForProcessing ?? undefined,
  }
}

