/**
 * Template variable paths come from template authors and their values from API callers and CSV
 * imports: neither may reach Object.prototype through `__proto__`, `prototype` or `constructor`.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { assignPath, lookupPath } from '../src/services/campaigns/template-paths'
import { checkTemplate, TemplateError } from '../src/services/campaigns/template-engine'
import { buildTemplateData } from '../src/services/email/template-data'

const polluted = () => ({} as Record<string, unknown>).isAdmin

afterEach(() => {
  delete (Object.prototype as Record<string, unknown>).isAdmin
})

describe('template variable paths', () => {
  it('refuses to write through __proto__, prototype or constructor', () => {
    for (const parts of [['__proto__', 'isAdmin'], ['constructor', 'prototype', 'isAdmin'], ['a', '__proto__']]) {
      expect(() => assignPath({}, parts, 'yes')).toThrow(TypeError)
    }
    expect(polluted()).toBeUndefined()
  })

  it('reads own properties only', () => {
    const data = JSON.parse('{"__proto__": {"isAdmin": "yes"}, "user": {"name": "Ada"}}') as Record<string, unknown>
    expect(lookupPath(data, ['__proto__', 'isAdmin'])).toEqual({ value: undefined })
    expect(lookupPath(data, ['toString'])).toEqual({ value: undefined })
    expect(lookupPath(data, ['user', 'name'])).toEqual({ value: 'Ada' })
  })

  it('refuses to declare a reserved segment when a template is saved, before any test render', () => {
    const source = { kind: 'transactional' as const, subject: 'Hi', html: '<p>{{name}}</p>', variables: [{ name: '__proto__.isAdmin', required: false, fallback: 'yes' }, { name: 'name', required: true }] }
    let err: unknown
    try {
      checkTemplate(source, { name: 'Ada' })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(TemplateError)
    expect((err as TemplateError).problems.map((p) => p.message)).toContainEqual(expect.stringContaining('reserved name'))
    expect(polluted()).toBeUndefined()
  })

  it('builds transactional data from a caller payload carrying __proto__ without touching Object.prototype', () => {
    const data = JSON.parse('{"__proto__": {"isAdmin": "yes"}, "name": "Ada"}') as Record<string, unknown>
    const built = buildTemplateData([{ name: 'name', required: true, type: 'string', fallback: null }], data, 'data')
    expect(built).toEqual({ context: { name: 'Ada' } })
    expect(polluted()).toBeUndefined()
  })
})
