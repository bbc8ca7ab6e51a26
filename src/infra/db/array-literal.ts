/**
 * A PostgreSQL array literal (`{1,2,NULL}`), for the bulk `unnest(...)` writes that send thousands of
 * values at once. The driver's own array serialising quotes and escapes every element with two regex
 * passes; numbers, booleans and plain tokens (uuids, timestamps) need none of that. Anything else is
 * quoted and escaped as the array input syntax requires, so any string round-trips.
 */
const PLAIN = /^[0-9A-Za-z:.+_-]+$/

export function arrayLiteral(values: readonly (number | boolean | string | null | undefined)[]): string {
  let out = '{'
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ','
    out += element(values[i])
  }
  return `${out}}`
}

function element(value: number | boolean | string | null | undefined): string {
  if (value === null || value === undefined) return 'NULL'
  if (typeof value === 'boolean') return value ? 't' : 'f'
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`Not a finite number: ${value}`)
    return String(value)
  }
  // NULL unquoted is the null element, whatever its case.
  if (PLAIN.test(value) && value.toLowerCase() !== 'null') return value
  return `"${value.replace(/[\\"]/g, '\\$&')}"`
}
