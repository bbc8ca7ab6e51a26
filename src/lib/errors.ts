/**
 * Domain errors. Services throw these; GraphQL maps them to union members
 * (src/graphql/errors.ts) and HTTP routes to `{ error: { message, code } }`
 * (src/http/error-handler.ts). Anything else is unexpected and gets masked.
 */
export interface FieldError {
  path: string[]
  message: string
}

export abstract class AppError extends Error {
  abstract readonly code: string
  abstract readonly httpStatus: number
  override get name(): string {
    return this.constructor.name
  }
}

export class ValidationError extends AppError {
  readonly code = 'VALIDATION_FAILED'
  readonly httpStatus = 400
  constructor(message: string, readonly fieldErrors: FieldError[] = []) {
    super(message)
  }

  static field(path: string | string[], message: string): ValidationError {
    const p = Array.isArray(path) ? path : [path]
    return new ValidationError(message, [{ path: p, message }])
  }
}

export class NotFoundError extends AppError {
  readonly code = 'NOT_FOUND'
  readonly httpStatus = 404
  constructor(readonly resource: string, readonly id?: string) {
    super(`${resource} not found`)
  }
}

export class ConflictError extends AppError {
  readonly code = 'CONFLICT'
  readonly httpStatus = 409
}

export class QuotaExceededError extends AppError {
  readonly code = 'QUOTA_EXCEEDED'
  readonly httpStatus = 413
  constructor(message: string, readonly limitBytes: number, readonly usedBytes: number) {
    super(message)
  }
}

export class FileTooLargeError extends AppError {
  readonly code = 'FILE_TOO_LARGE'
  readonly httpStatus = 413
  constructor(readonly maxBytes: number) {
    super(`File exceeds the limit of ${maxBytes} bytes`)
  }
}

export class UnsupportedFileTypeError extends AppError {
  readonly code = 'UNSUPPORTED_FILE_TYPE'
  readonly httpStatus = 415
  constructor(message: string, readonly detectedType: string | null, readonly allowedTypes: string[]) {
    super(message)
  }
}

/** A single-use email token that is unknown, expired or already used. The three are indistinguishable on purpose. */
export class InvalidTokenError extends AppError {
  readonly code = 'INVALID_TOKEN'
  readonly httpStatus = 400
  constructor(message = 'The token is invalid, expired or already used') {
    super(message)
  }
}

export class UnauthenticatedError extends AppError {
  readonly code = 'UNAUTHENTICATED'
  readonly httpStatus = 401
  constructor(message = 'Authentication required') {
    super(message)
  }
}

export class ForbiddenError extends AppError {
  readonly code = 'FORBIDDEN'
  readonly httpStatus = 403
  constructor(message = 'You are not allowed to do this') {
    super(message)
  }
}

/** A dependency (storage, mail provider, database) failed or timed out. The message is safe to show. */
export class ServiceUnavailableError extends AppError {
  readonly code = 'SERVICE_UNAVAILABLE'
  readonly httpStatus = 503
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError
}

export class RateLimitedError extends AppError {
  readonly code = 'RATE_LIMITED'
  readonly httpStatus = 429
  /** Read by mercurius's route error handler, so /graphql answers a real 429 too. */
  readonly statusCode = 429
}
