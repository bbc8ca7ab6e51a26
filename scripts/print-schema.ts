/**
 * Prints the Pothos schema, sorted, to schema.graphql. With --check, fails when the committed
 * file differs (schema drift), so a schema change always lands with its SDL.
 */
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { lexicographicSortSchema, printSchema } from 'graphql'
import { schema } from '../src/graphql/schema'

const target = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'schema.graphql')
const sdl = `${printSchema(lexicographicSortSchema(schema))}\n`

if (process.argv.includes('--check')) {
  const committed = await readFile(target, 'utf8').catch(() => '')
  if (committed !== sdl) {
    console.error('schema.graphql is out of date: run `npm run schema:print` and commit the result.')
    process.exit(1)
  }
  console.log('schema.graphql is up to date')
} else {
  await writeFile(target, sdl)
  console.log(`wrote ${path.relative(process.cwd(), target)}`)
}
