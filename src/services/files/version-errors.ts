import type { FileVersionRow } from '../../infra/db/file-repository'
import { AppError, FileTooLargeError, QuotaExceededError, ServiceUnavailableError, UnsupportedFileTypeError, ValidationError } from '../../lib/errors'

/**
 * The typed error behind a failed version, for a client waiting on uploadFile. The instance that
 * ran the failing step has the error object; any other rebuilds it from the stored code and message.
 */
export function versionError(version: FileVersionRow, thrown: Error | undefined, limits: { allowedTypes: string[]; maxImageBytes: number }): AppError {
  // The thrown error keeps its detail (the detected type, say) when it is what the version failed with.
  if (thrown instanceof AppError && thrown.code === version.errorCode) return thrown
  const message = version.error ?? 'Processing failed'
  switch (version.errorCode) {
    case 'VALIDATION_FAILED':
      return ValidationError.field(['file'], message)
    case 'UNSUPPORTED_FILE_TYPE':
      return new UnsupportedFileTypeError(message, null, limits.allowedTypes)
    case 'FILE_TOO_LARGE':
      return new FileTooLargeError(limits.maxImageBytes)
    case 'QUOTA_EXCEEDED':
      return new QuotaExceededError(message, 0, 0)
    default:
      return new ServiceUnavailableError(message)
  }
}
