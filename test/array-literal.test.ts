import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sql } from 'drizzle-orm'
import { arrayLiteral } from '../src/infra/db/array-literal'
import { createTestDatabase, type TestDatabase } from './helpers/services'
import type { DatabaseHandle } from '../src/infra/db/client'

describe('PostgreSQL array literals', () => {
  let database: TestDatabase & { handle: DatabaseHandle }
  beforeAll(async () => {
    database = await createTestDatabase()
  })
  afterAll(() => database.drop())

  it('round-trip numbers, booleans, nulls and any string through PostgreSQL', async () => {
    const strings = ['plain', '', 'NULL', 'null', 'with space', 'a,b', '{braces}', 'quote"d', 'back\\slash', '\\"', 'ü €😀', '  lead', 'line\nbreak', '2026-11-24T10:00:00.000Z', '0b2f6c1e-1d2a-4c4e-9e8a-2b8f3d1c9a77']
    const text = await database.handle.db.execute<{ v: (string | null)[] }>(sql`select ${arrayLiteral([...strings, null])}::text[] as v`)
    expect(text.rows[0]!.v).toEqual([...strings, null])
    const numbers = await database.handle.db.execute<{ v: (string | null)[] }>(sql`select ${arrayLiteral([1, -2, 9007199254740991, null])}::bigint[]::text[] as v`)
    expect(numbers.rows[0]!.v).toEqual(['1', '-2', '9007199254740991', null])
    const flags = await database.handle.db.execute<{ v: boolean[] }>(sql`select ${arrayLiteral([true, false])}::boolean[] as v`)
    expect(flags.rows[0]!.v).toEqual([true, false])
    expect(arrayLiteral([])).toBe('{}')
  })

  it('refuses a number PostgreSQL would misread', () => {
    expect(() => arrayLiteral([Number.NaN])).toThrow(/finite/)
    expect(() => arrayLiteral([Infinity])).toThrow(/finite/)
  })
})
