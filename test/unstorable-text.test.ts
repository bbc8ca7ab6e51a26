import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isStorableText, unstorableAt } from '../src/lib/storable-text'
import { checkContact } from '../src/services/campaigns/contact-rows'
import { buildTestApp, type TestApp } from './helpers/app'
import { createAudience } from './campaign-fixtures'

const ADD = `mutation($id: ID!, $contacts: [ContactInput!]!) { addContacts(audienceId: $id, contacts: $contacts) {
  __typename ... on AddContactsSuccess { report { added } } } }`
const WELCOME = 'mutation($input: WelcomeEmailInput!) { sendWelcomeEmail(input: $input) { __typename } }'

describe('text PostgreSQL cannot store', () => {
  it('is NUL or an unpaired surrogate, in a value or a key, at any depth', () => {
    expect(isStorableText('Zoë 👩‍💻 \u00a0')).toBe(true)
    expect(isStorableText('a\u0000b')).toBe(false)
    expect(isStorableText('\ud83d')).toBe(false)
    expect(isStorableText('x\udc00')).toBe(false)
    expect(unstorableAt({ a: [1, 'ok', { b: 'ok\u0000' }] })).toEqual(['a', '2', 'b'])
    expect(unstorableAt({ ['k\u0000']: 1 })).toEqual(['k\u0000'])
    expect(unstorableAt({ a: 'fine', n: null, t: true, list: ['x'] })).toBeUndefined()
    // However deep: variables are JSON, which the query's depth limit does not bound.
    let deep: unknown = 'A\u0000B'
    for (let i = 0; i < 10_000; i++) deep = { a: deep }
    expect(unstorableAt(deep)).toHaveLength(10_000)
  })

  it('makes a contact from a CSV row a problem of its own, not a failed batch', () => {
    expect(checkContact({ email: 'a@example.com', attributes: { company: 'A\u0000B' } })).toEqual({ error: expect.stringMatching(/^attributes\.company must not contain the NUL/) })
    expect(checkContact({ email: 'a@example.com', name: 'Ann \ud800' })).toEqual({ error: expect.stringMatching(/^The name must not contain/) })
    expect(checkContact({ email: 'a@example.com', name: 'Ann', attributes: { company: 'A&B' } })).toHaveProperty('row')
  })

  describe('through GraphQL', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await buildTestApp({ redis: false })
    })
    afterAll(() => t.close())

    it('refuses it in a variable with 400 VALIDATION_FAILED naming the variable, and stores nothing of the batch', async () => {
      const admin = t.token('admin')
      const audience = await createAudience(t, admin)
      const res = await t.gql(ADD, { id: audience, contacts: [{ email: 'good@example.com' }, { email: 'bad@example.com', attributes: { company: 'A\u0000B' } }] }, admin)
      expect(res.statusCode).toBe(400)
      expect(res.errors?.[0]).toMatchObject({ extensions: { code: 'VALIDATION_FAILED' }, message: expect.stringContaining('contacts.1.attributes.company') })
      const after = await t.gql<{ addContacts: { report: { added: number } } }>(ADD, { id: audience, contacts: [{ email: 'good@example.com' }] }, admin)
      expect(after.data.addContacts.report.added).toBe(1)
    })

    it('refuses it in a string literal of the query, and in any mutation (a user id here)', async () => {
      const service = t.token('service')
      const literal = await t.gql('mutation { sendWelcomeEmail(input: { user: { id: "u\\u0000", email: "a@example.com", name: "A" } }) { __typename } }', {}, service)
      expect(literal.statusCode).toBe(400)
      expect(literal.errors?.[0]).toMatchObject({ extensions: { code: 'VALIDATION_FAILED' }, message: expect.stringContaining('A string in the query') })
      const variable = await t.gql(WELCOME, { input: { user: { id: 'u\ud800', email: 'a@example.com', name: 'A' } } }, service)
      expect(variable.statusCode).toBe(400)
      expect(variable.errors?.[0]?.message).toContain('input.user.id')
    })
  })
})
