import type net from 'node:net'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { importContactsCsv } from '../src/services/campaigns/contact-import'
import { buildTestApp, uploadThroughGraphql, type TestApp } from './helpers/app'
import { collect, wsClient } from './helpers/ws'
import { encodeCursor } from '../src/graphql/connection'
import { addContacts, createAudience, expectData } from './campaign-fixtures'

let t: TestApp
let admin: string

beforeAll(async () => {
  t = await buildTestApp()
  admin = t.token('admin')
})
afterAll(() => t.close())

const IMPORT = `mutation($id: ID!, $file: Upload!, $input: ImportContactsInput) {
  importContacts(audienceId: $id, file: $file, input: $input) {
    __typename
    ... on ImportContactsSuccess { report { rowsRead imported duplicates invalid errorsTruncated completed emailColumn nameColumns
      attributeColumns { header key } errors { line email message } } }
    ... on ValidationError { message fieldErrors { path message } }
    ... on Error { message }
  } }`

interface ImportResult {
  __typename: string
  message?: string
  report?: {
    rowsRead: number
    imported: number
    duplicates: number
    invalid: number
    errorsTruncated: boolean
    completed: boolean
    emailColumn: string
    nameColumns: string[]
    attributeColumns: { header: string; key: string }[]
    errors: { line: number; email: string | null; message: string }[]
  }
}

async function importCsv(audienceId: string, content: Buffer | string, input?: Record<string, unknown>): Promise<ImportResult> {
  const res = await uploadThroughGraphql(t, admin, IMPORT, { id: audienceId, file: null, input }, {
    filename: 'contacts.csv',
    contentType: 'text/csv',
    content: Buffer.isBuffer(content) ? content : Buffer.from(content),
  })
  if (res.body.errors) throw new Error(JSON.stringify(res.body.errors))
  return (res.body.data as { importContacts: ImportResult }).importContacts
}

async function contacts(audienceId: string) {
  const res = expectData(
    await t.gql<{ audience: { contactCount: number; contacts: { edges: { node: { email: string; name: string | null; attributes: Record<string, unknown>; status: string } }[] } } }>(
      'query($id: ID!) { audience(id: $id) { contactCount contacts(first: 100) { edges { node { email name attributes status } } } } }',
      { id: audienceId },
      admin,
    ),
  )
  return { count: res.audience.contactCount, list: res.audience.contacts.edges.map((e) => e.node) }
}

describe('addContacts', () => {
  it('adds valid contacts and reports invalid, repeated and already present addresses by position', async () => {
    const audienceId = await createAudience(t, admin)
    await addContacts(t, admin, audienceId, [{ email: 'Ann@Example.com' }])
    const result = await addContacts(t, admin, audienceId, [
      { email: 'bo@example.com', name: 'Bo', attributes: { plan: 'pro' } },
      { email: 'not-an-address' },
      { email: 'BO@example.COM' },
      { email: 'ann@example.com' },
      { email: 'cy@example.com' },
    ])
    expect(result.report).toEqual({
      added: 2,
      problems: [
        { index: 1, email: 'not-an-address', code: 'INVALID', message: 'The address must look like name@example.com' },
        { index: 2, email: 'BO@example.com', code: 'DUPLICATE_IN_INPUT', message: 'Same address as contacts[0]' },
        { index: 3, email: 'ann@example.com', code: 'ALREADY_IN_AUDIENCE', message: 'The address is already in this audience' },
      ],
    })
    const { count, list } = await contacts(audienceId)
    expect(count).toBe(3)
    expect(list.find((c) => c.email === 'bo@example.com')).toMatchObject({ name: 'Bo', attributes: { plan: 'pro' }, status: 'SUBSCRIBED' })
  })

  it('refuses attributes that are not an object', async () => {
    const audienceId = await createAudience(t, admin)
    const result = await addContacts(t, admin, audienceId, [{ email: 'x@example.com', attributes: [1, 2] as never }])
    expect(result.report!.problems[0]).toMatchObject({ code: 'INVALID', message: 'attributes must be a JSON object' })
  })

  it('answers NotFoundError for an unknown audience', async () => {
    const result = await addContacts(t, admin, '00000000-0000-0000-0000-000000000000', [{ email: 'x@example.com' }])
    expect(result.__typename).toBe('NotFoundError')
  })
})

describe('importContacts', () => {
  it('maps headers, keeps other columns as camelCase attributes and reports bad rows by line', async () => {
    const audienceId = await createAudience(t, admin)
    const csv = [
      'E-mail,First Name,Last Name,Company,zip_code',
      'ann@example.com,Ann,Lee,ACME,1000',
      'broken-address,Bo,,Initech,',
      '',
      'cy@example.com,Cy,,"Globex, Inc.",2000',
      'ANN@example.com,Ann,Again,ACME,1000',
      'dee@example.com,Dee,,Hooli,3000,extra',
    ].join('\r\n')
    const result = await importCsv(audienceId, csv)
    expect(result.report).toMatchObject({
      rowsRead: 5,
      imported: 2,
      duplicates: 1,
      invalid: 2,
      completed: true,
      emailColumn: 'E-mail',
      nameColumns: ['First Name', 'Last Name'],
      attributeColumns: [
        { header: 'Company', key: 'company' },
        { header: 'zip_code', key: 'zipCode' },
      ],
      errors: [
        { line: 3, email: 'broken-address', message: 'The address must look like name@example.com' },
        { line: 7, email: 'dee@example.com', message: 'The row has 6 fields but the header has 5' },
      ],
    })
    const { list } = await contacts(audienceId)
    expect(list.sort((a, b) => a.email.localeCompare(b.email))).toEqual([
      expect.objectContaining({ email: 'ann@example.com', name: 'Ann Lee', attributes: { company: 'ACME', zipCode: '1000' } }),
      expect.objectContaining({ email: 'cy@example.com', name: 'Cy', attributes: { company: 'Globex, Inc.', zipCode: '2000' } }),
    ])
  })

  it('honours an explicit column mapping', async () => {
    const audienceId = await createAudience(t, admin)
    const result = await importCsv(audienceId, 'Work address,Who,Team,Notes\nann@example.com,Ann,Red,skip me\n', {
      emailColumn: 'work address',
      nameColumn: 'Who',
      attributeColumns: ['Team'],
    })
    expect(result.report).toMatchObject({ imported: 1, attributeColumns: [{ header: 'Team', key: 'team' }] })
    expect((await contacts(audienceId)).list[0]).toMatchObject({ name: 'Ann', attributes: { team: 'Red' } })
  })

  it('skips a line that is not UTF-8 and keeps importing the rest', async () => {
    const audienceId = await createAudience(t, admin)
    const latin1 = Buffer.concat([
      Buffer.from('email,name\nann@example.com,Ann\nbo@example.com,Caf'),
      Buffer.from([0xe9]),
      Buffer.from('\ncy@example.com,Cy\n'),
    ])
    const result = await importCsv(audienceId, latin1)
    expect(result.report).toMatchObject({ imported: 2, invalid: 1, errors: [{ line: 3, email: null, message: expect.stringContaining('not valid UTF-8') }] })
  })

  it('refuses a UTF-16 file as a whole with a clear message', async () => {
    const audienceId = await createAudience(t, admin)
    const utf16 = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('email\nann@example.com\n', 'utf16le')])
    const result = await importCsv(audienceId, utf16)
    expect(result).toMatchObject({ __typename: 'ValidationError', message: 'The file is UTF-16; save it as UTF-8 CSV' })
  })

  it('skips a huge line without buffering it and imports the lines after it', async () => {
    const audienceId = await createAudience(t, admin)
    const huge = `bo@example.com,${'x'.repeat(300_000)}`
    const result = await importCsv(audienceId, `email,name\nann@example.com,Ann\n${huge}\ncy@example.com,Cy\n`)
    expect(result.report).toMatchObject({ imported: 2, invalid: 1, errors: [{ line: 3, message: expect.stringContaining('longer than 65536 bytes') }] })
  })

  it('reports an unterminated quote and imports what came before it', async () => {
    const audienceId = await createAudience(t, admin)
    const result = await importCsv(audienceId, 'email,name\nann@example.com,Ann\nbo@example.com,"Bo\ncy@example.com,Cy\n')
    expect(result.report).toMatchObject({ imported: 1, completed: false })
    expect(result.report!.errors[0]!.message).toContain('Unterminated quoted field')
  })

  it('names the line where an unterminated quoted field opened, not the last line of the file', async () => {
    const rows = Array.from({ length: 20_000 }, (_, i) => `user${i}@example.com,User ${i}`)
    for (const eol of ['\n', '\r\n']) {
      const audienceId = await createAudience(t, admin)
      const csv = ['email,name', 'ann@example.com,Ann', 'bo@example.com,"Bo', ...rows].join(eol) + eol
      const report = await importContactsCsv(t.app.db.db, audienceId, Readable.from([Buffer.from(csv)]))
      expect(report, JSON.stringify(eol)).toMatchObject({ imported: 1, invalid: 1, completed: false })
      expect(report.errors, JSON.stringify(eol)).toEqual([
        { line: 3, email: null, message: 'Unterminated quoted field opened on line 3; the rest of the file (to line 20003) was read as that one field and not imported' },
      ])
    }
  })

  it('reports a quoted field that runs past the record limit once, at the line it opened, however many chunks follow', async () => {
    const audienceId = await createAudience(t, admin)
    const rows = Array.from({ length: 60_000 }, (_, i) => `user${i}@example.com,User ${i}`)
    const csv = Buffer.from(['email,name', 'ann@example.com,Ann', 'bo@example.com,"Bo', ...rows].join('\n') + '\n')
    const chunks = Array.from({ length: Math.ceil(csv.length / 65_536) }, (_, i) => csv.subarray(i * 65_536, (i + 1) * 65_536))
    const report = await importContactsCsv(t.app.db.db, audienceId, Readable.from(chunks))
    expect(report).toMatchObject({ imported: 1, invalid: 1, completed: false })
    expect(report.errors).toHaveLength(1)
    expect(report.errors[0]).toMatchObject({ line: 3, message: expect.stringMatching(/^Unterminated quoted field opened on line 3: it passed 1048576 bytes, and the file was not read past line \d+$/) })
  })

  it('keeps a quote inside an unquoted field as text instead of refusing the row twice', async () => {
    const audienceId = await createAudience(t, admin)
    const report = await importContactsCsv(
      t.app.db.db,
      audienceId,
      Readable.from([Buffer.from('email,name,note\nbob@example.com,Bob "The Builder" Smith,5" screen\nann@example.com,"Ann ""A"" Lee",x\n')]),
    )
    expect(report).toMatchObject({ rowsRead: 2, imported: 2, invalid: 0, errors: [], completed: true })
    const { list } = await contacts(audienceId)
    expect(list.sort((a, b) => a.email.localeCompare(b.email))).toEqual([
      expect.objectContaining({ email: 'ann@example.com', name: 'Ann "A" Lee', attributes: { note: 'x' } }),
      expect.objectContaining({ email: 'bob@example.com', name: 'Bob "The Builder" Smith', attributes: { note: '5" screen' } }),
    ])
  })

  it('reads a file whose lines end with a bare CR, or with no newline at the end, without a phantom row', async () => {
    for (const csv of ['email,name\rann@example.com,Ann\rbo@example.com,Bo\r', 'email,name\rann@example.com,Ann\rbo@example.com,Bo', 'email,name\nann@example.com,Ann\nbo@example.com,Bo']) {
      const audienceId = await createAudience(t, admin)
      const report = await importContactsCsv(t.app.db.db, audienceId, Readable.from([Buffer.from(csv)]))
      expect(report, JSON.stringify(csv)).toMatchObject({ rowsRead: 2, imported: 2, invalid: 0, errors: [], completed: true })
    }
  })

  it('refuses a file without an email column, naming the columns it found', async () => {
    const audienceId = await createAudience(t, admin)
    const result = await importCsv(audienceId, 'name,company\nAnn,ACME\n')
    expect(result.__typename).toBe('ValidationError')
    expect(result.message).toContain('found: name, company')
  })

  it('accepts a BOM and a header-only file', async () => {
    const audienceId = await createAudience(t, admin)
    const result = await importCsv(audienceId, '\ufeffEmail\n')
    expect(result.report).toMatchObject({ rowsRead: 0, imported: 0, emailColumn: 'Email' })
  })

  it('reports progress on uploadProgress(uploadId) like a file upload, ending with COMPLETED', async () => {
    await t.app.listen({ host: '127.0.0.1', port: 0 })
    const client = wsClient(`ws://127.0.0.1:${(t.app.server.address() as net.AddressInfo).port}/graphql`, admin)
    try {
      type Progress = { uploadProgress: { stage: string; percent: number; bytesReceived: number } }
      const sub = collect<Progress>(
        client,
        'subscription($id: ID!) { uploadProgress(uploadId: $id) { stage percent bytesReceived } }',
        { id: 'csv-progress-1' },
        (events) => events.some((e) => e.uploadProgress.stage === 'COMPLETED'),
      )
      await sub.subscribed
      const audienceId = await createAudience(t, admin)
      const csv = `email\n${Array.from({ length: 50 }, (_, i) => `p${i}@example.com`).join('\n')}\n`
      const result = await importCsv(audienceId, csv, { uploadId: 'csv-progress-1' })
      expect(result.report!.imported).toBe(50)
      const stages = (await sub.events).map((e) => e.uploadProgress)
      expect(stages[0]!.stage).toBe('RECEIVING')
      expect(stages.at(-1)).toMatchObject({ stage: 'COMPLETED', percent: 100, bytesReceived: Buffer.byteLength(csv) })
    } finally {
      await client.dispose()
    }
  })

  it('inserts in batches and counts duplicates across batch boundaries', async () => {
    const audienceId = await createAudience(t, admin)
    const rows = Array.from({ length: 250 }, (_, i) => `user${i % 200}@example.com,User ${i}`)
    const report = await importContactsCsv(t.app.db.db, audienceId, Readable.from([`email,name\n${rows.join('\n')}\n`]), { batchSize: 64 })
    expect(report).toMatchObject({ rowsRead: 250, imported: 200, duplicates: 50, invalid: 0 })
    expect((await contacts(audienceId)).count).toBe(200)
  })

  it('lists at most 100 row errors and says the list is truncated', async () => {
    const audienceId = await createAudience(t, admin)
    const rows = Array.from({ length: 150 }, (_, i) => `bad${i}`)
    const report = await importContactsCsv(t.app.db.db, audienceId, Readable.from([`email\n${rows.join('\n')}\n`]))
    expect(report).toMatchObject({ invalid: 150, errorsTruncated: true })
    expect(report.errors).toHaveLength(100)
  })
})

describe('suppression list', () => {
  it('adds addresses lower-cased, counts only new ones and removes them again', async () => {
    const suppress = (emails: string[]) =>
      t.gql<{ suppressEmails: { added?: number; __typename: string } }>(
        'mutation($emails: [String!]!) { suppressEmails(emails: $emails) { __typename ... on SuppressEmailsSuccess { added } } }',
        { emails },
        admin,
      )
    expect(expectData(await suppress(['Spam@Example.com', 'spam@example.com'])).suppressEmails.added).toBe(1)
    expect(expectData(await suppress(['spam@example.com', 'other@example.com'])).suppressEmails.added).toBe(1)
    const list = expectData(await t.gql<{ suppressions: { edges: { node: { email: string; reason: string } }[] } }>('{ suppressions(first: 10) { edges { node { email reason } } } }', {}, admin))
    expect(list.suppressions.edges.map((e) => e.node)).toEqual([
      { email: 'other@example.com', reason: 'MANUAL' },
      { email: 'spam@example.com', reason: 'MANUAL' },
    ])
    const removed = expectData(await t.gql<{ unsuppressEmail: boolean }>('mutation { unsuppressEmail(email: "SPAM@example.com") }', {}, admin))
    expect(removed.unsuppressEmail).toBe(true)
  })

  it('answers a made-up after cursor on contacts and suppressions with VALIDATION_FAILED, not an internal error', async () => {
    const audience = await createAudience(t, admin, 'Cursors')
    const cursor = (value: string | number) => encodeCursor([value])
    for (const after of [cursor('nope'), cursor('00000000-0000-0000-0000-00000000000g'), cursor(42), 'not base64 at all']) {
      const res = await t.gql('query($id: ID!, $after: String) { audience(id: $id) { contacts(first: 5, after: $after) { edges { node { id } } } } }', { id: audience, after }, admin)
      expect(res.errors?.[0]?.extensions?.code, after).toBe('VALIDATION_FAILED')
    }
    for (const after of [cursor('a\u0000b'), cursor('x'.repeat(2000)), cursor(42)]) {
      const res = await t.gql('query($after: String) { suppressions(first: 5, after: $after) { edges { node { email } } } }', { after }, admin)
      expect(res.errors?.[0]?.extensions?.code).toBe('VALIDATION_FAILED')
    }
    const fine = await t.gql('query($after: String) { suppressions(first: 5, after: $after) { edges { node { email } } } }', { after: cursor('m@example.com') }, admin)
    expect(fine.errors).toBeUndefined()
  })

  it('refuses an invalid address and suppresses nothing', async () => {
    const res = expectData(await t.gql<{ suppressEmails: { __typename: string } }>('mutation { suppressEmails(emails: ["ok@example.com", "nope"]) { __typename } }', {}, admin))
    expect(res.suppressEmails.__typename).toBe('ValidationError')
  })
})
