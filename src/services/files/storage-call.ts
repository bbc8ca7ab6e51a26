import { ObjectNotFoundError } from '../../infra/storage/types'
import { AppError, NotFoundError, ServiceUnavailableError } from '../../lib/errors'

/** Storage failures reach clients as a retryable SERVICE_UNAVAILABLE, never as an internal error. */
export async function storageCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (err) {
    if (err instanceof AppError) throw err
    if (err instanceof ObjectNotFoundError) throw new NotFoundError('Stored object')
    throw new ServiceUnavailableError('Storage is unavailable, please retry', { cause: err })
  }
}

/** Permanent failures are the client's (bad bytes, bad input): retrying cannot fix them. */
export function isPermanent(err: unknown): boolean {
  return err instanceof AppError && !(err instanceof ServiceUnavailableError)
}
