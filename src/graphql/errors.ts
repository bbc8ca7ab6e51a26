import {
  ConflictError,
  FileTooLargeError,
  InvalidTokenError,
  NotFoundError,
  QuotaExceededError,
  UnsupportedFileTypeError,
  ValidationError,
} from '../lib/errors'
import { builder } from './builder'

/** Every expected failure implements Error, so clients can always select `... on Error { message }`. */
export const ErrorInterface = builder.interfaceRef<Error>('Error').implement({
  description: 'An expected failure of a mutation.',
  fields: (t) => ({ message: t.exposeString('message', { description: 'Human-readable, safe to show.' }) }),
})

const FieldErrorRef = builder.objectRef<{ path: string[]; message: string }>('FieldError').implement({
  description: 'A problem with one input field.',
  fields: (t) => ({
    path: t.exposeStringList('path', { description: 'Path to the field, e.g. ["input", "email"].' }),
    message: t.exposeString('message', { description: 'What is wrong with it.' }),
  }),
})

builder.objectType(ValidationError, {
  name: 'ValidationError',
  description: 'The input was rejected.',
  interfaces: [ErrorInterface],
  isTypeOf: (v) => v instanceof ValidationError,
  fields: (t) => ({ fieldErrors: t.field({ type: [FieldErrorRef], description: 'Problems per field.', resolve: (e) => e.fieldErrors }) }),
})

builder.objectType(NotFoundError, {
  name: 'NotFoundError',
  description: 'The resource does not exist, or you may not see it.',
  interfaces: [ErrorInterface],
  isTypeOf: (v) => v instanceof NotFoundError,
  fields: (t) => ({ resource: t.exposeString('resource', { description: 'The kind of resource.' }) }),
})

builder.objectType(ConflictError, {
  name: 'ConflictError',
  description: 'The resource is not in a state that allows this.',
  interfaces: [ErrorInterface],
  isTypeOf: (v) => v instanceof ConflictError,
  fields: () => ({}),
})

builder.objectType(QuotaExceededError, {
  name: 'QuotaExceededError',
  description: 'Storing this would exceed your quota. Nothing was stored.',
  interfaces: [ErrorInterface],
  isTypeOf: (v) => v instanceof QuotaExceededError,
  fields: (t) => ({
    limitBytes: t.exposeFloat('limitBytes', { description: 'The quota in bytes.' }),
    usedBytes: t.exposeFloat('usedBytes', { description: 'Bytes used before this request.' }),
  }),
})

builder.objectType(FileTooLargeError, {
  name: 'FileTooLargeError',
  description: 'The file exceeds the size limit for its type. Nothing was stored.',
  interfaces: [ErrorInterface],
  isTypeOf: (v) => v instanceof FileTooLargeError,
  fields: (t) => ({ maxBytes: t.exposeFloat('maxBytes', { description: 'The limit that applied.' }) }),
})

builder.objectType(UnsupportedFileTypeError, {
  name: 'UnsupportedFileTypeError',
  description: 'The content is not an allowed type, or contradicts the declared type.',
  interfaces: [ErrorInterface],
  isTypeOf: (v) => v instanceof UnsupportedFileTypeError,
  fields: (t) => ({
    detectedType: t.exposeString('detectedType', { nullable: true, description: 'The type sniffed from the bytes, if recognised.' }),
    allowedTypes: t.exposeStringList('allowedTypes', { description: 'The allowed MIME types.' }),
  }),
})

builder.objectType(InvalidTokenError, {
  name: 'InvalidTokenError',
  description: 'The single-use token is unknown, expired or already used.',
  interfaces: [ErrorInterface],
  isTypeOf: (v) => v instanceof InvalidTokenError,
  fields: () => ({}),
})

export const UPLOAD_ERRORS = [ValidationError, NotFoundError, FileTooLargeError, UnsupportedFileTypeError, QuotaExceededError]
