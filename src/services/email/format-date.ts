const dateFormat = new Intl.DateTimeFormat('en-GB', { timeZone: 'UTC', dateStyle: 'full', timeStyle: 'short' })

/**
 * `2025-06-03T14:00:00Z` -> `Tuesday, 3 June 2025 at 14:00 UTC`. Always UTC: the recipient's zone
 * is unknown here, and a fixed zone keeps a re-rendered retry byte-identical for the provider's
 * idempotency check.
 */
export function formatDate(value: string | Date): string {
  const date = value instanceof Date ? value : new Date(value)
  if (Number.isNaN(date.getTime())) throw new Error(`formatDate: "${String(value)}" is not a date`)
  return `${dateFormat.format(date)} UTC`
}
