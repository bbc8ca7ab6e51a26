import type { ObjectRef } from '@pothos/core'
import { ValidationError } from '../lib/errors'
import { builder } from './builder'
import { isUuid } from '../lib/uuid'

export interface PageInfo {
  hasNextPage: boolean
  hasPreviousPage: boolean
  startCursor: string | null
  endCursor: string | null
}

export interface Connection<T> {
  edges: { cursor: string; node: T }[]
  pageInfo: PageInfo
}

export const PageInfoRef = builder.objectRef<PageInfo>('PageInfo').implement({
  description: 'Relay pagination state.',
  fields: (t) => ({
    hasNextPage: t.exposeBoolean('hasNextPage', { description: 'More items follow endCursor.' }),
    hasPreviousPage: t.exposeBoolean('hasPreviousPage', { description: 'Always false: lists page forward only.' }),
    startCursor: t.exposeString('startCursor', { nullable: true, description: 'Cursor of the first edge.' }),
    endCursor: t.exposeString('endCursor', { nullable: true, description: 'Pass as `after` for the next page.' }),
  }),
})

/** Defines `<Name>Connection` and `<Name>Edge` for a node type. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- any builder's schema types
export function connectionOf<T>(name: string, node: ObjectRef<any, T>) {
  const edge = builder.objectRef<{ cursor: string; node: T }>(`${name}Edge`).implement({
    description: `One ${name} in a list.`,
    fields: (t) => ({
      cursor: t.exposeString('cursor', { description: 'Opaque position of this edge.' }),
      node: t.field({ type: node, description: `The ${name}.`, resolve: (e) => e.node as never }),
    }),
  })
  return builder.objectRef<Connection<T>>(`${name}Connection`).implement({
    description: `A page of ${name} items.`,
    fields: (t) => ({
      edges: t.field({ type: [edge], description: 'The items of this page.', resolve: (c) => c.edges }),
      pageInfo: t.field({ type: PageInfoRef, description: 'Where this page sits.', resolve: (c) => c.pageInfo }),
    }),
  })
}

export const MAX_PAGE_SIZE = 100
export const DEFAULT_PAGE_SIZE = 20

export function pageSize(first: number | null | undefined): number {
  const n = first ?? DEFAULT_PAGE_SIZE
  if (!Number.isInteger(n) || n < 1 || n > MAX_PAGE_SIZE) throw ValidationError.field(['first'], `first must be between 1 and ${MAX_PAGE_SIZE}`)
  return n
}

/** Builds a connection from `limit + 1` fetched rows, so hasNextPage needs no count query. */
export function toConnection<T>(rows: T[], limit: number, cursorOf: (row: T) => string): Connection<T> {
  const page = rows.slice(0, limit)
  const edges = page.map((node) => ({ cursor: cursorOf(node), node }))
  return {
    edges,
    pageInfo: { hasNextPage: rows.length > limit, hasPreviousPage: false, startCursor: edges[0]?.cursor ?? null, endCursor: edges.at(-1)?.cursor ?? null },
  }
}

export function encodeCursor(parts: (string | number)[]): string {
  return Buffer.from(JSON.stringify(parts)).toString('base64url')
}

export function decodeCursor(cursor: string | null | undefined): unknown[] | undefined {
  if (cursor == null) return undefined
  try {
    const parts: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
    if (Array.isArray(parts)) return parts
  } catch {
    // fall through
  }
  throw ValidationError.field(['after'], 'The cursor is invalid')
}

/**
 * Cursor of lists ordered by (createdAt desc, id desc). Every such list (files, audiences, templates,
 * campaigns, webhook endpoints) is keyed by a uuid, and PostgreSQL timestamps hold years 1-9999: a
 * forged cursor outside that is refused here instead of failing in the query.
 */
export function timeCursor(after: string | null | undefined): { createdAt: Date; id: string } | undefined {
  const parts = decodeCursor(after)
  if (!parts) return undefined
  const [createdAt, id] = parts
  const date = typeof createdAt === 'string' ? new Date(createdAt) : null
  const year = date?.getUTCFullYear() ?? Number.NaN
  if (!date || !(year >= 1 && year <= 9999) || typeof id !== 'string' || !isUuid(id)) throw ValidationError.field(['after'], 'The cursor is invalid')
  return { createdAt: date, id }
}

export const timeCursorOf = (row: { createdAt: Date; id: string }) => encodeCursor([row.createdAt.toISOString(), row.id])

/** One page of a list: validates `first`, fetches one row more than it shows, and builds the connection. */
export async function paginate<T>(first: number | null | undefined, fetch: (limit: number) => Promise<T[]>, cursorOf: (row: T) => string): Promise<Connection<T>> {
  const size = pageSize(first)
  return toConnection(await fetch(size + 1), size, cursorOf)
}
