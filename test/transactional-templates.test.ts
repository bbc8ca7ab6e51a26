import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { buildApp } from '../src/app'
import { loadConfig } from '../src/config'
import { checkTemplate, TemplateError } from '../src/services/campaigns/template-engine'
import { loadTransactionalTemplates, TemplateFilesError, type TemplateFileProblem } from '../src/services/email/templates'
import { TEST_JWT_SECRET } from './helpers/app'
import pg from 'pg'
import { createEmptyDatabase, PG_ADMIN_URL } from './helpers/services'
import { copyBundledTemplates, type TemplateDir } from './helpers/template-dir'

let dir: TemplateDir

beforeEach(async () => {
  dir = await copyBundledTemplates()
})
afterEach(() => dir.close())

const write = (file: string, content: string) => dir.write(file, content)

function loadError(): TemplateFilesError {
  try {
    loadTransactionalTemplates(dir.path)
  } catch (err) {
    if (err instanceof TemplateFilesError) return err
    throw err
  }
  throw new Error('expected the templates to be refused')
}

describe('loading the bundled templates on the shared engine', () => {
  it('loads the three templates and wraps each HTML body in the layout, with the subject escaped in the title', () => {
    const templates = loadTransactionalTemplates()
    expect(templates.names()).toEqual(['event-reminder', 'password-reset', 'welcome'])
    const { subject, html } = templates.render('welcome', { name: 'Tom & Jerry', verificationLink: 'https://app.example.com/v?token=abc' })
    expect(subject).toBe('Welcome to Groundwork, Tom & Jerry')
    expect(html.startsWith('<!doctype html>')).toBe(true)
    expect(html).toContain('<title>Welcome to Groundwork, Tom &amp; Jerry</title>')
    // The body sits inside the layout's card, once, and is not escaped a second time.
    expect(html).toMatch(/line-height:1\.5;">\s*<h1[^>]*>Welcome, Tom &amp; Jerry!<\/h1>/)
    expect(html.match(/<h1/g)).toHaveLength(1)
  })

  it('declares name, required and fallback for each variable, as stored templates do', () => {
    expect(loadTransactionalTemplates().meta('welcome').variables).toEqual([
      { name: 'name', required: false, type: 'string', fallback: 'there' },
      { name: 'verificationLink', required: true, type: 'url', fallback: null },
    ])
  })

  it('uses a custom template directory, generating the text part from the HTML when text.hbs is absent', async () => {
    await write('welcome/subject.hbs', 'Hello {{name}}, one more step')
    await dir.remove('welcome/text.hbs')
    const templates = loadTransactionalTemplates(dir.path)
    const rendered = templates.render('welcome', { name: 'Ann', verificationLink: 'https://app.example.com/v?token=t1' })
    expect(rendered.subject).toBe('Hello Ann, one more step')
    expect(rendered.text).toContain('Confirm my address (https://app.example.com/v?token=t1)')
    expect(rendered.text).not.toContain('<')
  })
})

describe('a broken template directory is refused with the file, line and column', () => {
  it('reports a syntax error in html.hbs', async () => {
    await write('welcome/html.hbs', '<h1>Welcome, {{name}}!</h1>\n<p>{{verificationLink}</p>\n')
    const err = loadError()
    expect(err.problems).toEqual([{ file: 'welcome/html.hbs', line: 2, column: 22, message: expect.stringMatching(/^Syntax error/) }])
    expect(err.message).toContain(`Invalid email templates in ${dir.path}:`)
    expect(err.message).toContain('welcome/html.hbs, line 2, column 22: Syntax error')
  })

  it('reports an undeclared variable and an unknown helper where they are used', async () => {
    await write('welcome/subject.hbs', 'Welcome to {{company}}, {{name}}')
    await write('password-reset/text.hbs', 'Hi {{name}},\n{{shout resetLink}}\n{{expiresInMinutes}}')
    const err = loadError()
    expect(err.problems).toEqual([
      { file: 'password-reset/text.hbs', line: 2, column: 1, message: expect.stringContaining('Unknown helper "shout"') },
      { file: 'welcome/subject.hbs', line: 1, column: 14, message: expect.stringContaining('Undeclared variable "company"') },
    ])
  })

  it('refuses partials in a template, the old way of including the layout', async () => {
    const html = await dir.read('welcome/html.hbs')
    await write('welcome/html.hbs', `{{#> layout}}\n${html}{{/layout}}\n`)
    expect(loadError().problems).toEqual([{ file: 'welcome/html.hbs', line: 1, column: 1, message: expect.stringContaining('Partials are not supported') }])
  })

  it('refuses unescaped output of a variable in HTML', async () => {
    await write('welcome/html.hbs', '<a href="{{verificationLink}}">{{{name}}}</a>')
    expect(loadError().problems).toEqual([{ file: 'welcome/html.hbs', line: 1, column: 32, message: expect.stringContaining('Unescaped output {{{name}}}') }])
  })

  it('refuses a layout without exactly one {{{body}}} slot, with an escaped slot, or reading recipient data', async () => {
    await write('layout.hbs', '<html><title>{{subject}}</title>\n<p>{{name}}</p>{{body}}</html>')
    const problems = loadError().problems
    expect(problems).toEqual([
      { file: 'layout.hbs', line: 2, column: 6, message: expect.stringContaining('Undeclared variable "name"') },
      { file: 'layout.hbs', line: 2, column: 16, message: expect.stringContaining('Write the body slot as {{{body}}}') },
    ])
    await write('layout.hbs', '<html>{{subject}}</html>')
    expect(loadError().problems).toEqual([{ file: 'layout.hbs', message: 'A layout needs exactly one {{{body}}} slot for the body, found 0' }])
  })

  it('reports broken JSON in meta.json with its line and column', async () => {
    await write('welcome/meta.json', '{\n  "variables": [\n    { "name": "name" "required": false }\n  ]\n}')
    expect(loadError().problems).toEqual([{ file: 'welcome/meta.json', line: 3, column: 22, message: expect.stringContaining('Not valid JSON') }])
  })

  it('reports bad declarations: an unknown type, a duplicate, a required variable with a fallback', async () => {
    await dir.editMeta('event-reminder', (meta) => {
      meta.variables.push({ name: 'event.room', required: false, type: 'colour' })
    })
    await dir.editMeta('welcome', (meta) => {
      meta.variables.push({ name: 'name', required: false }, { name: 'verificationLink', required: true, fallback: 'x' })
    })
    const problems = loadError().problems
    expect(problems.map((p) => [p.file, p.message])).toEqual([
      ['event-reminder/meta.json', expect.stringContaining('Invalid variable {"name":"event.room","required":false,"type":"colour"}')],
      ['welcome/meta.json', expect.stringContaining('"name" is declared twice')],
      ['welcome/meta.json', expect.stringContaining('"verificationLink" is declared twice')],
      ['welcome/meta.json', expect.stringContaining('"verificationLink" is required, so its fallback would never be used')],
    ])
  })

  it('runs a test render with the sample data and points at the source line that fails', async () => {
    // `event` is optional with no fallback: null in the render, so `event.title` cannot be read.
    await dir.editMeta('event-reminder', (meta) => {
      meta.variables = [{ name: 'event', required: false }]
      meta.sampleData = {}
    })
    await write('event-reminder/subject.hbs', 'Reminder')
    await write('event-reminder/html.hbs', '<p>Soon:</p>\n<p>{{event.title}}</p>')
    await write('event-reminder/text.hbs', 'Soon')
    const [problem] = loadError().problems as [TemplateFileProblem]
    expect(problem).toEqual({ file: 'event-reminder/html.hbs', line: 2, column: 6, message: expect.stringContaining('Render failed: "title" not defined') })
    expect(problem.message).toContain('test render with the sampleData of event-reminder/meta.json')
  })

  it('checks the sample data against the declared types', async () => {
    await dir.editMeta('password-reset', (meta) => {
      meta.sampleData = { resetLink: 'javascript:alert(1)', expiresInMinutes: 'soon' }
    })
    expect(loadError().problems).toEqual([
      { file: 'password-reset/meta.json', message: 'sampleData: sampleData.resetLink must be an http or https URL' },
      { file: 'password-reset/meta.json', message: 'sampleData: sampleData.expiresInMinutes must be a number' },
    ])
  })

  it('renders required variables the sample data leaves out with a placeholder of their type', async () => {
    await dir.editMeta('event-reminder', (meta) => {
      meta.sampleData = {}
    })
    expect(loadTransactionalTemplates(dir.path).names()).toContain('event-reminder')
  })

  it('reports missing files and bad template names, every problem of every template in one error', async () => {
    await dir.remove('welcome/subject.hbs')
    await write('password-reset/html.hbs', '{{#if resetLink}}open')
    await dir.copy('welcome', 'Bad Name')
    const err = loadError()
    expect(err.problems.map((p) => p.file).sort()).toEqual(['Bad Name/', 'password-reset/html.hbs', 'welcome/subject.hbs'])
    expect(err.problems.find((p) => p.file === 'welcome/subject.hbs')!.message).toBe('The file is missing')
  })

  it('refuses a directory that does not exist', () => {
    expect(() => loadTransactionalTemplates(path.join(dir.path, 'nope'))).toThrow(/The directory cannot be read/)
  })
})

describe('the same engine and checks as stored templates', () => {
  it('keeps {{{body}}} and partials out of stored templates: only the engine applies a layout', () => {
    const source = { kind: 'transactional' as const, subject: 'Hi', html: '<div>{{{body}}}</div>{{> layout}}', variables: [{ name: 'body', required: false }] }
    const err = (() => {
      try {
        checkTemplate(source)
      } catch (e) {
        return e as TemplateError
      }
    })()
    expect(err).toBeInstanceOf(TemplateError)
    expect(err!.problems.map((p) => p.message)).toEqual([expect.stringContaining('Unescaped output {{{body}}}'), expect.stringContaining('Partials are not supported')])
  })
})

describe('boot', () => {
  it('fails with the file, line and column when EMAIL_TEMPLATES_DIR holds a broken template', async () => {
    await write('password-reset/html.hbs', '<p>Hi {{name}}</p>\n<p>{{resetLink}</p>\n')
    const database = await createEmptyDatabase()
    const dataDir = await mkdtemp(path.join(tmpdir(), 'gw-test-'))
    const config = loadConfig({ DATA_DIR: dataDir, DATABASE_URL: database.url, JWT_SECRET: TEST_JWT_SECRET, WORKERS_ENABLED: 'false', EMAIL_TEMPLATES_DIR: dir.path })
    try {
      // Registration of the services plugin fails, so buildApp itself rejects: main() never listens.
      const err = await buildApp(config, { logger: false }).then(
        async (app) => {
          await app.close()
          return undefined
        },
        (e: unknown) => e,
      )
      expect(err).toBeInstanceOf(TemplateFilesError)
      expect((err as Error).message).toMatch(/password-reset\/html\.hbs, line 2, column 15: Syntax error/)
      // The plugins registered before the failing one were closed: no pool is left connected.
      const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
      await admin.connect()
      try {
        // A backend leaves pg_stat_activity a moment after its client disconnected (later on a loaded machine):
        // waited for, so only a pool left open fails here.
        await vi.waitFor(async () => {
          const { rows } = await admin.query<{ n: number }>('select count(*)::int as n from pg_stat_activity where datname = $1', [database.name])
          expect(rows[0]!.n).toBe(0)
        }, { timeout: 5_000, interval: 100 })
      } finally {
        await admin.end()
      }
    } finally {
      await database.drop()
      await rm(dataDir, { recursive: true, force: true })
    }
  })
})
