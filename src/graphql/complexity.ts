import { GraphQLError, Kind, type ArgumentNode, type ASTVisitor, type FragmentDefinitionNode, type SelectionSetNode, type ValidationContext } from 'graphql'
import { MAX_PAGE_SIZE } from './connection'

/**
 * A query cost limit that needs no variable values, so mercurius can keep caching validated
 * queries. Each field costs 1 plus its children; a field with a `first` or `limit` argument
 * multiplies its children by that number (by the largest page size when it is a variable), so
 * nested connections cannot fan out unnoticed.
 */
export function queryCostRule(maxCost: number) {
  return (context: ValidationContext): ASTVisitor => {
    const fragments = new Map<string, FragmentDefinitionNode>()
    for (const def of context.getDocument().definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) fragments.set(def.name.value, def)

    const costOf = (set: SelectionSetNode | undefined, seen: Set<string>): number => {
      if (!set) return 0
      let total = 0
      for (const sel of set.selections) {
        if (sel.kind === Kind.FIELD) {
          if (sel.name.value.startsWith('__')) continue
          total += 1 + multiplier(sel.arguments ?? []) * costOf(sel.selectionSet, seen)
        } else if (sel.kind === Kind.INLINE_FRAGMENT) {
          total += costOf(sel.selectionSet, seen)
        } else {
          const name = sel.name.value
          if (seen.has(name)) continue // a cycle; NoFragmentCyclesRule reports it
          total += costOf(fragments.get(name)?.selectionSet, new Set([...seen, name]))
        }
        if (total > maxCost) return total
      }
      return total
    }

    return {
      OperationDefinition(node) {
        const cost = costOf(node.selectionSet, new Set())
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
