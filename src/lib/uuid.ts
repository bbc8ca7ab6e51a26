const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** PostgreSQL rejects a malformed uuid with an error; checking first turns that into a plain "not found" or a clear refusal. */
export function isUuid(id: string): boolean {
  return UUID.test(id)
}
