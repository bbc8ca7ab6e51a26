/**
 * What a GraphQL document's operations are, for the checks that run before mercurius: the mutation
 * rate limit and the GET guard. They judge every operation of the document, never the one
 * `operationName` names. mercurius caches a compiled document by its text alone and ran it whatever a
 * later request named (runNamedOperation in plugin.ts now prevents that); judging the whole document
 * keeps these checks right even if such a cache comes back, at the cost of counting a query sent in
 * the same document as a mutation.
 */
import { Kind, parse, type OperationDefinitionNode } from 'graphql'

/** Every mutation's text holds this word (the operation keyword, which has no escaped form); a document without it has none. */
const MUTATION_WORD = /\bmutation\b/

export interface OperationKinds {
  /** One of the operations is a mutation. */
  mutation: boolean
  /** The document is one mutation whose fields are all uploadChunk. */
  onlyUploadChunk: boolean
}

const NO_MUTATION: OperationKinds = { mutation: false, onlyUploadChunk: false }

/** The document's operation kinds, without a parse when it cannot hold a mutation; undefined when it does not parse. */
export function operationKinds(query: string): OperationKinds | undefined {
  if (!MUTATION_WORD.test(query)) return NO_MUTATION
  let operations: OperationDefinitionNode[]
  try {
    operations = parse(query).definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION)
  } catch {
    return undefined
  }
  const mutation = operations.some((o) => o.operation === 'mutation')
  const onlyUploadChunk =
    operations.length === 1 && mutation && operations[0]!.selectionSet.selections.every((s) => s.kind === Kind.FIELD && s.name.value === 'uploadChunk')
  return { mutation, onlyUploadChunk }
}
