/**
 * Recognises an error that means "the database cannot be reached right now" (refused or dropped
 * connections, a server shutting down or starting, the pool unable to connect in time), as opposed
 * to a bug or a bad query. Clients then get SERVICE_UNAVAILABLE with a message that says to retry,
 * instead of a generic internal error; the full error is still logged.
 */
import { ServiceUnavailableError } from './errors'

/** Socket-level failures, as node-postgres reports them. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'])
/**
 * SQLSTATEs of a moment's trouble, which a retry may not meet: admin_shutdown, crash_shutdown,
 * cannot_connect_now, query_canceled (a statement timeout under load), serialization_failure,
 * deadlock_detected, lock_not_available, read_only_sql_transaction (a replica promoted, a failover
 * under way), and class 53, insufficient resources (too many connections, out of memory, disk full).
 * Class 08 is "connection exception".
 */
const SQLSTATES = new Set(['57P01', '57P02', '57P03', '57014', '40001', '40P01', '55P03', '25006'])
/** node-postgres and pg-pool raise these as plain Errors without a code. */
const MESSAGES = /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Connection refused|server closed the connection/i

export const DATABASE_UNAVAILABLE_MESSAGE = 'The database is unavailable at the moment; retry shortly'

/** The error and its causes, outermost first: Drizzle wraps driver errors (DrizzleQueryError) with the driver's error as `cause`. */
function* errorChain(err: unknown): Generator<Error> {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) yield e
}

/** The string `code`s (SQLSTATEs, socket errors) along the error's cause chain. */
export function errorCodes(err: unknown): string[] {
  const codes: string[] = []
  for (const e of errorChain(err)) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string') codes.push(code)
  }
  return codes
}

export function isDatabaseUnavailable(err: unknown): boolean {
  if (errorCodes(err).some((code) => NETWORK_CODES.has(code) || SQLSTATES.has(code) || /^(?:08|53)[0-9A-Z]{3}$/.test(code))) return true
  for (const e of errorChain(err)) if (MESSAGES.test(e.message)) return true
  return false
}

/** The client-facing error for `err` when it is a database outage; undefined otherwise. */
export function databaseUnavailable(err: unknown): ServiceUnavailableError | undefined {
  return isDatabaseUnavailable(err) ? new ServiceUnavailableError(DATABASE_UNAVAILABLE_MESSAGE, { cause: err }) : undefined
}
