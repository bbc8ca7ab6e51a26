/**
 * Static checks of a Handlebars source against the variables a template declares. Runs on the
 * AST, so every problem carries the line and column an editor can jump to, and nothing depends on
 * which sample data happened to be used.
 */
import Handlebars from 'handlebars'
import type { TemplateVariableDecl } from '../../infra/db/schema/campaigns'

export type TemplatePart = 'subject' | 'html' | 'text' | 'variables' | 'sampleData'

export interface TemplateProblem {
  part: TemplatePart
  /** 1-based; absent for problems that are not at a position (a missing placeholder, say). */
  line?: number
  column?: number
  message: string
  /** For a failed test render: the source the line and column are in (the problem's part is `sampleData`). */
  renderedPart?: 'subject' | 'html' | 'text' | 'layout'
}

/** Always present in a campaign email's data: the contact's own fields and their unsubscribe link. */
export const BUILTIN_VARIABLES = ['email', 'name', 'unsubscribeUrl'] as const
export const UNSUBSCRIBE_VARIABLE = 'unsubscribeUrl'
export const BLOCK_HELPERS = new Set(['if', 'unless', 'each', 'with'])
export const VALUE_HELPERS = new Set(['formatDate'])
const SCOPING_HELPERS = new Set(['each', 'with'])

export interface AnalysisOptions {
  /** Names present in every render without a declaration; the campaign built-ins by default. */
  builtins?: readonly string[]
  /**
   * A layout's slot for the rendered body: the one name written unescaped (it is HTML already),
   * exactly once. Only the engine's own layout has one; template bodies never do.
   */
  slot?: string
}

export interface Analysis {
  /** False when the source does not parse; nothing else about it is known then. */
  parsed: boolean
  problems: TemplateProblem[]
  /** Root-level variables the source reads, as dotted paths. */
  references: Set<string>
}

interface Scope {
  /** Context-changing blocks (each, with) entered so far. */
  depth: number
  blockParams: Set<string>
}

type Node = hbs.AST.Node

export function analyzeSource(part: TemplatePart, source: string, declared: TemplateVariableDecl[], options: AnalysisOptions = {}): Analysis {
  const problems: TemplateProblem[] = []
  const references = new Set<string>()
  let program: hbs.AST.Program
  try {
    program = Handlebars.parse(source)
  } catch (err) {
    problems.push(syntaxProblem(part, err))
    return { parsed: false, problems, references }
  }
  const declaredNames = declared.map((d) => d.name)
  const builtins = options.builtins ?? BUILTIN_VARIABLES
  let slots = 0
  const at = (node: Node) => ({ line: node.loc?.start.line, column: node.loc ? node.loc.start.column + 1 : undefined })
  const problem = (node: Node, message: string) => problems.push({ part, ...at(node), message })

  const checkRoot = (parts: string[], node: Node) => {
    const path = parts.join('.')
    references.add(path)
    if (builtins.includes(parts[0]!)) return
    const known = declaredNames.some((d) => d === path || path.startsWith(`${d}.`) || d.startsWith(`${path}.`))
    if (!known) problem(node, `Undeclared variable "${path}": declare it in the template's variables`)
  }

  const visitPath = (path: hbs.AST.PathExpression, scope: Scope) => {
    if (path.data) {
      if (path.parts[0] === 'root' && path.parts.length > 1) checkRoot(path.parts.slice(1), path)
      return
    }
    if (path.parts.length === 0) return
    if (path.depth === 0 && scope.blockParams.has(path.parts[0]!)) return
    const level = scope.depth - path.depth
    if (level < 0) return problem(path, `"${path.original}" climbs above the top of the data`)
    if (level === 0) checkRoot(path.parts, path)
  }

  const visitExpr = (node: hbs.AST.Expression, scope: Scope) => {
    if (node.type === 'PathExpression') visitPath(node as hbs.AST.PathExpression, scope)
    else if (node.type === 'SubExpression') visitCall(node as hbs.AST.SubExpression, scope, false)
  }

  const visitArgs = (node: { params: hbs.AST.Expression[]; hash?: hbs.AST.Hash }, scope: Scope) => {
    for (const p of node.params) visitExpr(p, scope)
    for (const pair of node.hash?.pairs ?? []) visitExpr(pair.value, scope)
  }

  /** A mustache or sub-expression; with arguments it must be a helper call. */
  const visitCall = (node: hbs.AST.MustacheStatement | hbs.AST.SubExpression, scope: Scope, isMustache: boolean) => {
    const path = node.path
    if (path.type !== 'PathExpression') return
    const p = path as hbs.AST.PathExpression
    const name = p.original
    const helper = !p.data && p.depth === 0 && p.parts.length === 1 && VALUE_HELPERS.has(name)
    const hasArgs = node.params.length > 0 || (node.hash?.pairs.length ?? 0) > 0
    if (hasArgs && !helper) return problem(node, `Unknown helper "${name}"; available: ${[...VALUE_HELPERS].join(', ')}`)
    if (helper) return visitArgs(node, scope)
    if (BLOCK_HELPERS.has(name)) return problem(node, `"${name}" is a block helper: write {{#${name} ...}}...{{/${name}}}`)
    if (isMustache && options.slot !== undefined && name === options.slot) {
      slots++
      if ((node as hbs.AST.MustacheStatement).escaped) problem(node, `Write the body slot as {{{${name}}}}: the body is HTML already and must not be escaped again`)
      return
    }
    if (isMustache && part === 'html' && !(node as hbs.AST.MustacheStatement).escaped) {
      problem(node, `Unescaped output {{{${name}}}} is not allowed in HTML: contact data could inject markup. Use {{${name}}}`)
    }
    visitPath(p, scope)
  }

  const visitProgram = (prog: hbs.AST.Program | undefined, scope: Scope) => {
    if (!prog) return
    for (const statement of prog.body) visitStatement(statement, scope)
  }

  const visitStatement = (node: hbs.AST.Statement, scope: Scope) => {
    switch (node.type) {
      case 'MustacheStatement':
        return visitCall(node as hbs.AST.MustacheStatement, scope, true)
      case 'BlockStatement': {
        const block = node as hbs.AST.BlockStatement
        const name = block.path.type === 'PathExpression' ? (block.path as hbs.AST.PathExpression).original : ''
        if (!BLOCK_HELPERS.has(name)) return problem(node, `Unknown block helper "${name}"; available: ${[...BLOCK_HELPERS].join(', ')}`)
        if (block.params.length !== 1) problem(node, `{{#${name}}} takes exactly one argument`)
        visitArgs(block, scope)
        const params = block.program?.blockParams ?? []
        const inner: Scope = SCOPING_HELPERS.has(name)
          ? { depth: scope.depth + 1, blockParams: new Set([...scope.blockParams, ...params]) }
          : scope
        visitProgram(block.program, inner)
        visitProgram(block.inverse, scope)
        return
      }
      case 'PartialStatement':
      case 'PartialBlockStatement':
        return problem(node, 'Partials are not supported (the layout of transactional emails is applied by the engine)')
      case 'DecoratorBlock':
      case 'Decorator':
        return problem(node, 'Decorators are not supported')
      default:
        return
    }
  }

  visitProgram(program, { depth: 0, blockParams: new Set() })
  if (options.slot !== undefined && slots !== 1) {
    problems.push({ part, message: `A layout needs exactly one {{{${options.slot}}}} slot for the body, found ${slots}` })
  }
  return { parsed: true, problems, references }
}

/**
 * Handlebars reports syntax errors two ways: jison parse errors carry the position only in the
 * lexer's state (read synchronously, right after the throw), block mismatches carry lineNumber/column.
 */
function syntaxProblem(part: TemplatePart, err: unknown): TemplateProblem {
  const e = err as Error & { lineNumber?: number; column?: number }
  const firstLine = (e.message ?? String(err)).split('\n')[0]!.replace(/\s+-\s+\d+:\d+$/, '')
  if (typeof e.lineNumber === 'number') {
    return { part, line: e.lineNumber, column: (e.column ?? 0) + 1, message: `Syntax error: ${firstLine}` }
  }
  const lexer = (Handlebars as unknown as { Parser?: { lexer?: { yylloc?: { first_line: number; first_column: number } } } }).Parser?.lexer
  const loc = lexer?.yylloc
  const expecting = /Expecting (.*)$/m.exec(e.message ?? '')?.[1]
  const detail = expecting ? `unexpected token, expecting ${expecting}` : firstLine
  return { part, line: loc?.first_line, column: loc ? loc.first_column + 1 : undefined, message: `Syntax error: ${detail}` }
}
