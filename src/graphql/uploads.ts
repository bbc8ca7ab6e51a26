import type { FileUpload } from 'graphql-upload-minimal'
import { ConflictError, FileTooLargeError, NotFoundError, QuotaExceededError, UnsupportedFileTypeError, ValidationError } from '../lib/errors'
import type { UploadSessionView } from '../services/files/upload-sessions'
import { builder } from './builder'
import { FileRef } from './files'

const UploadSessionStatusEnum = builder.enumType('UploadSessionStatus', {
  description: 'Lifecycle of a chunked upload session.',
  values: {
    UPLOADING: { value: 'uploading', description: 'Accepting parts.' },
    COMPLETING: { value: 'completing', description: 'completeUpload is assembling the parts.' },
    COMPLETED: { value: 'completed', description: 'Assembled; the file is being processed (follow uploadProgress with the session id).' },
    ABORTED: { value: 'aborted', description: 'Aborted by the client; the parts were removed.' },
    EXPIRED: { value: 'expired', description: 'No part arrived within the session lifetime; the parts were removed.' },
    FAILED: { value: 'failed', description: 'Could not be completed; see error.' },
  } as const,
})

const UploadSessionRef = builder.objectRef<UploadSessionView>('UploadSession').implement({
  description: 'A chunked, resumable upload. Its state lives in the database, so any instance serves any part and a client can resume after a restart.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Session id; also the uploadId of its uploadProgress events.' }),
    filename: t.exposeString('filename', { description: 'The name the file will get (metadata only).' }),
    mimeType: t.exposeString('declaredType', { description: 'The declared type; the first part and processing check it against the bytes.' }),
    size: t.exposeFloat('size', { description: 'Declared total bytes.' }),
    sha256: t.exposeString('sha256', { nullable: true, description: 'The sha256 the assembled file must have, if given.' }),
    fileId: t.exposeID('fileId', { description: 'The file this upload creates, or the file it adds a version to.' }),
    partSize: t.field({ type: 'Int', description: 'Bytes of every part except the last.', resolve: (s) => s.partSize }),
    partCount: t.exposeInt('partCount', { description: 'Number of parts: parts are numbered 1 to partCount.' }),
    receivedParts: t.exposeIntList('receivedParts', { description: 'Part numbers stored so far, ascending: send the others to resume.' }),
    bytesReceived: t.exposeFloat('bytesReceived', { description: 'Bytes of the received parts.' }),
    status: t.field({ type: UploadSessionStatusEnum, description: 'Lifecycle state.', resolve: (s) => s.status }),
    error: t.exposeString('error', { nullable: true, description: 'Why it failed or expired.' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', description: 'The session expires unless a part arrives before; each part extends it.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the session started.' }),
  }),
})

const StartUploadInput = builder.inputType('StartUploadInput', {
  description: 'A chunked upload to open.',
  fields: (t) => ({
    filename: t.string({ required: true, description: 'Name of the file (metadata only).' }),
    size: t.float({ required: true, description: 'Total bytes, greater than 0 and at most UPLOAD_SESSION_MAX_BYTES. The quota is checked against it.' }),
    mimeType: t.string({ required: false, description: 'Declared MIME type; checked against the bytes.' }),
    sha256: t.string({ required: false, description: 'Hex sha256 of the whole file; completion fails if the bytes differ. Without it the server computes one.' }),
    fileId: t.id({ required: false, description: 'Upload a new version of this file instead of a new file.' }),
  }),
})

const SESSION_ERRORS = [ValidationError, NotFoundError, ConflictError, FileTooLargeError, UnsupportedFileTypeError, QuotaExceededError]

builder.queryFields((t) => ({
  uploadSession: t.field({
    type: UploadSessionRef,
    nullable: true,
    description: 'One of your upload sessions, to see which parts arrived. Null if it does not exist or is not yours.',
    authScopes: { authenticated: true },
    args: { id: t.arg.id({ required: true, description: 'Session id.' }) },
    resolve: async (_root, args, ctx) => {
      try {
        return await ctx.services.files.sessions.get(ctx.viewer!, String(args.id))
      } catch (err) {
        if (err instanceof NotFoundError) return null
        throw err
      }
    },
  }),
}))

builder.mutationFields((t) => ({
  startUpload: t.field({
    type: UploadSessionRef,
    description: 'Opens a chunked upload. The server picks the part size (8 MiB by default, raised so no upload needs more than 10,000 parts).',
    authScopes: { authenticated: true },
    errors: { types: SESSION_ERRORS, dataField: { name: 'session' } },
    args: { input: t.arg({ type: StartUploadInput, required: true, description: 'The file to upload.' }) },
    resolve: (_root, args, ctx) =>
      ctx.services.files.sessions.start(ctx.viewer!, {
        filename: args.input.filename,
        size: args.input.size,
        mimeType: args.input.mimeType,
        sha256: args.input.sha256,
        fileId: args.input.fileId == null ? null : String(args.input.fileId),
      }),
  }),
  uploadChunk: t.field({
    type: UploadSessionRef,
    description:
      'Stores one part (GraphQL multipart request with the `graphql-require-preflight: 1` header). It must be exactly partSize bytes (the last part: the rest). Parts may come in any order and in parallel; sending a part again replaces it.',
    authScopes: { authenticated: true },
    errors: { types: SESSION_ERRORS, dataField: { name: 'session' } },
    args: {
      sessionId: t.arg.id({ required: true, description: 'Session id.' }),
      partNumber: t.arg.int({ required: true, description: '1 to partCount.' }),
      chunk: t.arg({ type: 'Upload', required: true, description: 'The bytes of the part.' }),
    },
    resolve: async (_root, args, ctx) => ctx.services.files.sessions.uploadChunk(ctx.viewer!, String(args.sessionId), args.partNumber, await chunkStream(args.chunk)),
  }),
  completeUpload: t.field({
    type: FileRef,
    description:
      'Assembles the parts and hands the file to processing; it answers with the PROCESSING file. Follow uploadProgress with the session id for the rest. Completing again returns the same file.',
    authScopes: { authenticated: true },
    errors: { types: SESSION_ERRORS, dataField: { name: 'file' } },
    args: { sessionId: t.arg.id({ required: true, description: 'Session id.' }) },
    resolve: async (_root, args, ctx) => (await ctx.services.files.sessions.complete(ctx.viewer!, String(args.sessionId))).file,
  }),
  abortUpload: t.field({
    type: UploadSessionRef,
    description: 'Aborts a session and removes its parts. Aborting again is a no-op.',
    authScopes: { authenticated: true },
    errors: { types: [NotFoundError, ConflictError], dataField: { name: 'session' } },
    args: { sessionId: t.arg.id({ required: true, description: 'Session id.' }) },
    resolve: (_root, args, ctx) => ctx.services.files.sessions.abort(ctx.viewer!, String(args.sessionId)),
  }),
}))

async function chunkStream(upload: Promise<FileUpload>) {
  const file = await upload
  try {
    return file.createReadStream()
  } catch (err) {
    // The multipart parser already cut the part at its cap.
    if ((err as { status?: number }).status === 413) throw ValidationError.field(['chunk'], `The part exceeds the largest part size`)
    throw err
  }
}
