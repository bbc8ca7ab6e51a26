import { sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { checkEmail } from '../../lib/email-address'
import { isStorableText, UNSTORABLE_TEXT, unstorableAt } from '../../lib/storable-text'

export interface ContactInput {
  email: string
  name?: string | null
  attributes?: Record<string, unknown> | null
}

export const MAX_ATTRIBUTES_BYTES = 8 * 1024
const MAX_NAME = 200

export interface ContactRowInput {
  email: string
  name: string | null
  attributesJson: string
}

/**
 * One multi-row INSERT for a whole batch: three array parameters whatever the batch size, so it
 * stays under PostgreSQL's parameter limit and needs no per-row round trip. Rows whose address is
 * already in the audience (case-insensitively) are skipped by the unique index, as are repeats
 * within the batch. Returns the lower-cased addresses that were inserted.
 */
export async function insertContactRows(db: Database, audienceId: string, rows: ContactRowInput[]): Promise<Set<string>> {
  if (rows.length === 0) return new Set()
  const result = await db.execute<{ email: string }>(sql`
    insert into contacts (audience_id, email, name, attributes)
    select ${audienceId}::uuid, t.email, t.name, t.attributes::jsonb
    from unnest(${sql.param(rows.map((r) => r.email))}::text[], ${sql.param(rows.map((r) => r.name))}::text[], ${sql.param(rows.map((r) => r.attributesJson))}::text[]) as t(email, name, attributes)
    on conflict (audience_id, lower(email)) do nothing
    returning lower(email) as email`)
  return new Set(result.rows.map((r) => r.email))
}

/** Validates one contact; the normalised row or why it was refused. */
export function checkContact(contact: ContactInput): { row: ContactRowInput } | { error: string } {
  const checked = checkEmail(typeof contact.email === 'string' ? contact.email.trim() : contact.email)
  if (!checked.valid) return { error: `The address ${checked.reason}` }
  const name = contact.name?.trim() || null
  if (name !== null && (name.length > MAX_NAME || /[\r\n\0]/.test(name))) return { error: `The name must be at most ${MAX_NAME} characters on one line` }
  if (name !== null && !isStorableText(name)) return { error: `The name ${UNSTORABLE_TEXT}` }
  const attributes = contact.attributes ?? {}
  if (typeof attributes !== 'object' || Array.isArray(attributes)) return { error: 'attributes must be a JSON object' }
  const unstorable = unstorableAt(attributes)
  if (unstorable) return { error: `attributes${unstorable.map((p) => `.${p}`).join('')} ${UNSTORABLE_TEXT}` }
  const json = JSON.stringify(attributes)
  if (Buffer.byteLength(json) > MAX_ATTRIBUTES_BYTES) return { error: `attributes must be at most ${MAX_ATTRIBUTES_BYTES} bytes of JSON` }
  return { row: { email: checked.normalized!, name, attributesJson: json } }
}
