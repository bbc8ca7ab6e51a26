/**
 * A writable copy of the bundled transactional email templates in a temporary directory, for
 * tests that break or customise one file at a time and load it with loadTransactionalTemplates
 * or EMAIL_TEMPLATES_DIR.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { BUNDLED_TEMPLATES_DIR } from '../../src/services/email/templates'

export type TemplateMetaJson = Record<string, unknown> & { variables: Record<string, unknown>[] }

export interface TemplateDir {
  path: string
  read(file: string): Promise<string>
  write(file: string, content: string): Promise<void>
  remove(file: string): Promise<void>
  copy(from: string, to: string): Promise<void>
  /** Rewrites `<template>/meta.json` through `edit`. */
  editMeta(template: string, edit: (meta: TemplateMetaJson) => void): Promise<void>
  close(): Promise<void>
}

export async function copyBundledTemplates(): Promise<TemplateDir> {
  const dir = await mkdtemp(path.join(tmpdir(), 'gw-templates-'))
  await cp(BUNDLED_TEMPLATES_DIR, dir, { recursive: true })
  const at = (file: string) => path.join(dir, file)
  const read = (file: string) => readFile(at(file), 'utf8')
  const write = (file: string, content: string) => writeFile(at(file), content)
  return {
    path: dir,
    read,
    write,
    remove: (file) => rm(at(file), { recursive: true, force: true }),
    copy: (from, to) => cp(at(from), at(to), { recursive: true }),
    editMeta: async (template, edit) => {
      const meta = JSON.parse(await read(`${template}/meta.json`)) as TemplateMetaJson
      edit(meta)
      await write(`${template}/meta.json`, JSON.stringify(meta, null, 2))
    },
    close: () => rm(dir, { recursive: true, force: true }),
  }
}
