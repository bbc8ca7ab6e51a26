import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, it } from 'vitest'

const root = path.resolve(import.meta.dirname, '..')

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true })
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => path.join(e.parentPath, e.name))
}

describe('architecture', () => {
  it('keeps services/ free of fastify, mercurius and graphql', async () => {
    const offenders: string[] = []
    for (const file of await sourceFiles(path.join(root, 'src/services'))) {
      const text = await readFile(file, 'utf8')
      for (const m of text.matchAll(/from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|require\(\s*['"]([^'"]+)['"]\s*\)/g)) {
        const spec = m[1] ?? m[2] ?? m[3] ?? ''
        if (/^(fastify|mercurius|graphql)($|[/-])|^@fastify\/|^@pothos\//.test(spec)) offenders.push(`${path.relative(root, file)} imports ${spec}`)
        if (/(^|\/)(graphql|http|plugins)\//.test(spec) && spec.startsWith('.')) offenders.push(`${path.relative(root, file)} imports ${spec}`)
      }
    }
    expect(offenders).toEqual([])
  })

  it('reads process.env only in src/config.ts', async () => {
    const offenders: string[] = []
    for (const file of await sourceFiles(path.join(root, 'src'))) {
      if (file.endsWith(path.join('src', 'config.ts'))) continue
      const code = (await readFile(file, 'utf8')).replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '')
      if (/process\.env/.test(code)) offenders.push(path.relative(root, file))
    }
    expect(offenders).toEqual([])
  })
})
