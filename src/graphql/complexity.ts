import { GraphQLError, Kind, type ArgumentNode, type ASTVisitor, type FragmentDefinitionNode, type SelectionSetNode, type ValidationContext } from 'graphql'
import { MAX_PAGE_SIZE } from './connection'

/**
 * A query cost limit that needs no variable values, so mercurius can keep caching validated
 * queries. Each field costs 1 plus its children; a field with a `first` or `limit` argument
 * multiplies its children by that number (by the largest page size when it is a variable), so
 * nested connections cannot fan out unnoticed. Introspection counts too: `__typename` as a field, and
 * each `__schema` or `__type` as INTROSPECTION_COST whatever it selects (a tool's introspection query
 * fits many times over; thousands of aliased copies of it, each a full walk of the schema, do not).
 */
export const INTROSPECTION_COST = 100

export function queryCostRule(maxCost: number) {
  return (context: ValidationContext): ASTVisitor => {
    const costOf = (set: SelectionSetNode | undefined): number => {
      if (!set) return 0
      let total = 0
      for (const sel of set.selections) {
        if (sel.kind === Kind.FIELD) {
          const name = sel.name.value
          if (name === '__schema' || name === '__type') total += INTROSPECTION_COST
          else total += 1 + multiplier(sel.arguments ?? []) * costOf(sel.selectionSet)
        } else if (sel.kind === Kind.INLINE_FRAGMENT) {
          total += costOf(sel.selectionSet)
        } else {
          total += fragmentCost(sel.name.value)
        }
        if (total > maxCost) return total
      }
      return total
    }
    const fragmentCost = perFragment(context, costOf, 0)

    return {
      OperationDefinition(node) {
        const cost = costOf(node.selectionSet)
        if (cost > maxCost) {
          context.reportError(new GraphQLError(`The query is too complex: cost ${cost} exceeds the limit of ${maxCost}`, { nodes: [node], extensions: { code: 'QUERY_TOO_COMPLEX' } }))
        }
      },
    }
  }
}

function multiplier(args: readonly ArgumentNode[]): number {
  const arg = args.find((a) => a.name.value === 'first' || a.name.value === 'limit')
  if (!arg) return 1
  if (arg.value.kind === Kind.INT) return Math.max(1, Number(arg.value.value))
  return MAX_PAGE_SIZE
}

/**
 * Introspection's own depth limit. Tools' introspection queries nest `ofType` to read wrapped types
 * (getIntrospectionQuery: depth 15), deeper than an app query needs to go; what they read is the
 * schema, bounded whatever the nesting.
 */
export const INTROSPECTION_MAX_DEPTH = 20

/**
 * A depth limit: `maxDepth` levels of fields, and INTROSPECTION_MAX_DEPTH on paths through
 * `__schema` or `__type`. Fragments add no level of their own.
 */
export function queryDepthRule(maxDepth: number) {
  return (context: ValidationContext): ASTVisitor => {
    /** The longest paths below `set`: those through no introspection field, and those through one. */
    const depthOf = (set: SelectionSetNode | undefined): Depths => {
      const deepest = { plain: 0, introspection: 0 }
      for (const sel of set?.selections ?? []) {
        let below: Depths
        if (sel.kind === Kind.FIELD) {
          const children = depthOf(sel.selectionSet)
          const name = sel.name.value
          below =
            name === '__schema' || name === '__type'
              ? { plain: 0, introspection: 1 + Math.max(children.plain, children.introspection) }
              : { plain: 1 + children.plain, introspection: children.introspection > 0 ? 1 + children.introspection : 0 }
        } else if (sel.kind === Kind.INLINE_FRAGMENT) {
          below = depthOf(sel.selectionSet)
        } else {
          below = fragmentDepths(sel.name.value)
        }
        deepest.plain = Math.max(deepest.plain, below.plain)
        deepest.introspection = Math.max(deepest.introspection, below.introspection)
      }
      return deepest
    }
    const fragmentDepths = perFragment<Depths>(context, depthOf, { plain: 0, introspection: 0 })

    return {
      OperationDefinition(node) {
        const { plain, introspection } = depthOf(node.selectionSet)
        const [depth, limit] = plain > maxDepth ? [plain, maxDepth] : [introspection, INTROSPECTION_MAX_DEPTH]
        if (depth > limit) {
          context.reportError(new GraphQLError(`The query is too deep: depth ${depth} exceeds the limit of ${limit}`, { nodes: [node], extensions: { code: 'QUERY_TOO_DEEP' } }))
        }
      },
    }
  }
}

interface Depths {
  plain: number
  introspection: number
}

/**
 * A fragment's value, computed once per document: walked again at every spread, a fragment spread
 * twice in each of 20 nested fragments would be walked a million times (a 1 KB query holding the
 * event loop for seconds). A fragment reached inside itself (a cycle, which NoFragmentCyclesRule
 * reports, refusing the document) or never defined counts as `none`.
 */
function perFragment<T>(context: ValidationContext, valueOf: (set: SelectionSetNode) => T, none: T): (name: string) => T {
  const definitions = new Map<string, FragmentDefinitionNode>()
  for (const def of context.getDocument().definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) definitions.set(def.name.value, def)
  const values = new Map<string, T>()
  const walking = new Set<string>()
  return (name) => {
    const known = values.get(name)
    if (known !== undefined) return known
    const definition = definitions.get(name)
    if (definition === undefined || walking.has(name)) return none
    walking.add(name)
    try {
      const value = valueOf(definition.selectionSet)
      values.set(name, value)
      return value
    } finally {
      walking.delete(name)
    }
  }
}

