import type { FastifyInstance, FastifyReply, FastifyRequest, onSendHookHandler, preValidationHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { getOperationAST, GraphQLError, Kind, NoSchemaIntrospectionCustomRule, parse, specifiedRules, validate, type DocumentNode, type GraphQLSchema, type ExecutionResult, type OperationDefinitionNode, type ValidationRule, visit } from 'graphql'
import { Upload } from 'graphql-upload-minimal'
import mercurius, { type MercuriusContext } from 'mercurius'
import { bearerToken } from '../lib/bearer-token'
import { databaseUnavailable } from '../lib/database-unavailable'
import { hookList } from '../lib/route-hooks'
import { isAppError, UnauthenticatedError, ValidationError } from '../lib/errors'
import { isStorableText, UNSTORABLE_TEXT, unstorableAt } from '../lib/storable-text'
import { hasRole, type Viewer } from '../services/auth/jwt'
import { planParts } from '../services/files/part-plan'
import type { GraphQLContext } from './context'
import { OperationLabels } from '../plugins/metrics'
import { queryCostRule, queryDepthRule } from './complexity'
import { processRequest } from './multipart-request'
import { limitSubscriptions } from './subscription-limits'
import { operationKinds } from './operation-kinds'
import { schema } from './schema'

declare module 'fastify' {
  interface FastifyRequest {
    isMultipart?: boolean
    uploads?: Upload[]
  }
}

const GRAPHQL_PATH = '/graphql'
const PREFLIGHT_HEADERS = ['graphql-require-preflight', 'apollo-require-preflight', 'x-apollo-operation-name']

/** Mercurius with uploads, auth in the context, subscriptions, abuse limits and error masking. */
export const graphqlPlugin = fp(
  async (app: FastifyInstance) => {
    const { graphql: gql, uploads } = app.config

    // A chunk of a resumable upload may be larger than a whole small upload: the cap admits the largest part.
    const largestPart = planParts(app.config.files.sessionMaxBytes, app.config.files.partBytes).partSize
    registerUploads(app, { maxFileSize: Math.max(uploads.maxFileBytes, uploads.maxImageBytes, largestPart) + 1, maxFiles: uploads.maxFiles })
    registerGetGuard(app)

    // A static rule list keeps mercurius's validated-query cache on.
    const validationRules: ValidationRule[] = [queryCostRule(gql.maxComplexity), queryDepthRule(gql.maxDepth)]
    if (!gql.introspection) validationRules.push(NoSchemaIntrospectionCustomRule)

    await app.register(mercurius, {
      schema,
      path: GRAPHQL_PATH,
      graphiql: gql.graphiql,
      jit: 1,
      validationRules,
      context: (request: FastifyRequest) => contextFor(app, request.headers.authorization, request.id),
      subscription: {
        emitter: app.events.emitter as never,
        // A bad token is refused at connect time, before any subscription starts.
        onConnect: ({ payload }: { payload?: Record<string, unknown> }) => {
          const header = payload?.authorization ?? payload?.Authorization
          const ctx = contextFor(app, typeof header === 'string' ? header : undefined, 'ws')
          if (ctx.authError) throw ctx.authError
          app.metrics.subscriptions.inc()
          return { viewer: ctx.viewer, authError: null }
        },
        onDisconnect: (context: MercuriusContext) => {
          // Refused connections never counted (onConnect threw before inc).
          if ((context as Partial<GraphQLContext>).viewer !== undefined) app.metrics.subscriptions.dec()
        },
        context: () => ({ services: app.services, viewer: null, authError: null, requestId: 'ws' }),
      },
      errorFormatter: (execution, ctx) => formatErrors(execution, ctx),
    })
    runNamedOperation(app)
    refuseOutOfPlace(app)
    refuseUnstorableText(app)
    validateSubscriptions(app, validationRules)
    limitSubscriptions(app, {
      maxPerConnection: gql.maxSubscriptionsPerConnection,
      formatError: (err) => subscriptionStartError(app, err),
      expiresAt: (context) => (context.viewer as Viewer | null | undefined)?.expiresAt,
    })
    observeOperations(app)
  },
  { name: 'graphql', dependencies: ['services', 'events'] },
)

/**
 * mercurius caches a JIT-compiled document by its text alone, compiled for the operation that the
 * compiling request named: a later request naming another operation of the same document would run
 * the compiled one instead. A document with several operations is handed back as a copy, which
 * mercurius neither compiles nor runs compiled, so graphql-js runs the operation each request names.
 */
function runNamedOperation(app: FastifyInstance) {
  app.graphql.addHook('preExecution', async (_schema, document) => {
    let operations = 0
    for (const d of document.definitions) if (d.kind === Kind.OPERATION_DEFINITION) operations++
    return operations > 1 ? { document: { ...document } } : undefined
  })
}

/** A refusal of the request itself, answered with its status (see formatErrors). */
function requestError(message: string, code: string, statusCode = 400): Error {
  return Object.assign(new Error(message), { statusCode, code })
}

/**
 * What mercurius would run but must not:
 * - a document that is not GraphQL text: when a query does not parse, mercurius tries it as a JSON
 *   syntax tree, which skips every check made on the text (the mutation rate limit among them) and
 *   crashes validation on anything but a well-formed tree. A parsed document's location is a
 *   graphql-js Location, whose methods no JSON can produce.
 * - a subscription over HTTP: it would run its resolvers without the subscription's own checks.
 */
function refuseOutOfPlace(app: FastifyInstance) {
  app.graphql.addHook('preValidation', async (_schema, document) => {
    if (!parsedFromText(document)) {
      throw requestError('The query must be a GraphQL document (text)', 'GRAPHQL_PARSE_FAILED')
    }
  })
  app.graphql.addHook('preExecution', async (_schema, document, context) => {
    if (operationToRun(document, context)?.operation === 'subscription') {
      throw requestError('Subscriptions run over WebSocket (graphql-ws or subscriptions-transport-ws at /graphql), not over HTTP', 'SUBSCRIPTION_REQUIRES_WEBSOCKET')
    }
  })
}

/**
 * Text that PostgreSQL cannot store (U+0000, an unpaired surrogate), in a variable or a literal of
 * the query: refused at once, the variable named, instead of an internal error from the first write
 * (and a batch such as addContacts failing whole).
 */
function refuseUnstorableText(app: FastifyInstance) {
  const literalsStorable = new WeakMap<DocumentNode, boolean>()
  app.graphql.addHook('preExecution', async (_schema, document, _context, variables) => {
    let literals = literalsStorable.get(document)
    if (literals === undefined) {
      literals = true
      visit(document, {
        StringValue(node) {
          if (!isStorableText(node.value)) literals = false
        },
      })
      literalsStorable.set(document, literals)
    }
    const at = literals ? unstorableAt(variables) : []
    if (at) {
      const where = literals ? `Variable "${at.join('.')}"` : 'A string in the query'
      throw Object.assign(ValidationError.field(literals ? ['variables', ...at] : ['query'], `${where} ${UNSTORABLE_TEXT}`), { statusCode: 400 })
    }
  })
}

/** Whether graphql-js parsed the document from text: its location is a Location, whose methods no JSON can produce. */
function parsedFromText(document: DocumentNode): boolean {
  return typeof (document.loc as { toJSON?: unknown } | undefined)?.toJSON === 'function'
}

/**
 * mercurius validates nothing of a subscription sent over WebSocket (graphql-js's subscribe assumes a
 * validated document): it gets the same validation as a query, the depth and cost limits included,
 * on the document mercurius parsed. The legacy protocol also takes a syntax tree instead of text,
 * which is refused first. A refusal here leaves nothing behind (see subscription-limits.ts).
 */
function validateSubscriptions(app: FastifyInstance, rules: readonly ValidationRule[]) {
  app.graphql.addHook('preSubscriptionExecution', async (schema, document) => {
    if (!parsedFromText(document)) throw requestError('The query must be a GraphQL document (text)', 'GRAPHQL_PARSE_FAILED')
    const errors = validate(schema as GraphQLSchema, document, [...specifiedRules, ...rules])
    if (errors.length > 0) throw requestError(errors.map((e) => e.message).join('; '), 'GRAPHQL_VALIDATION_FAILED')
  })
}

const timing = Symbol('timing')
type Timed = { [timing]?: { start: bigint; operation: string; type: string } }

function observeOperations(app: FastifyInstance) {
  const labels = new OperationLabels()
  app.graphql.addHook('preExecution', async (_schema, document, context) => {
    const op = operationToRun(document, context)
    const viewer = (context as Partial<GraphQLContext>).viewer
    ;(context as Timed)[timing] = {
      start: process.hrtime.bigint(),
      // Who may give an operation a label of its own: see OperationLabels.
      operation: labels.label(op?.name?.value, viewer ? { id: viewer.id, privileged: hasRole(viewer, 'admin', 'service') } : undefined),
      type: op?.operation ?? 'unknown',
    }
  })
  app.graphql.addHook('onResolution', async (execution, context) => {
    const t = (context as Timed)[timing]
    if (!t) return
    const seconds = Number(process.hrtime.bigint() - t.start) / 1e9
    app.metrics.graphqlDuration.observe({ operation: t.operation, type: t.type, outcome: execution.errors?.length ? 'error' : 'ok' }, seconds)
  })
}

/**
 * The operation a request runs: its document's only one, or the one its `operationName` (body or
 * query string) names; undefined when it names none of them (graphql-js then answers an error).
 */
function operationToRun(document: DocumentNode, context: MercuriusContext): OperationDefinitionNode | undefined {
  const request = context.reply?.request
  const params = (request?.method === 'GET' ? request.query : request?.body) as { operationName?: unknown } | undefined
  return getOperationAST(document, operationNameOf(params?.operationName)) ?? undefined
}

/** An `operationName` parameter as graphql-js takes it: a non-empty string, else none. */
function operationNameOf(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined
}

function contextFor(app: FastifyInstance, authorization: string | undefined, requestId: string): Pick<GraphQLContext, 'viewer' | 'authError' | 'services' | 'requestId'> {
  const base = { services: app.services, requestId }
  if (!authorization) return { ...base, viewer: null, authError: null }
  const token = bearerToken(authorization)
  if (!token) return { ...base, viewer: null, authError: new UnauthenticatedError('The Authorization header must be "Bearer <token>"') }
  try {
    const viewer: Viewer = app.tokens.verify(token)
    return { ...base, viewer, authError: null }
  } catch (err) {
    return { ...base, viewer: null, authError: err instanceof UnauthenticatedError ? err : new UnauthenticatedError('The token is invalid') }
  }
}

/**
 * Expected errors keep their message and carry `extensions.code`; GraphQL's own validation errors
 * pass through; anything else is logged in full and answered as INTERNAL_SERVER_ERROR with the
 * request id, so nothing internal reaches the client.
 */
function formatErrors(execution: ExecutionResult & { statusCode?: number }, ctx: MercuriusContext) {
  const log = ctx.reply ? ctx.reply.log : ctx.app.log
  const requestId = ctx.reply?.request.id ?? 'ws'
  const errors = (execution.errors ?? []).map((error) => {
    const original = error.originalError as (Error & { errors?: unknown; statusCode?: number }) | undefined
    if (!original || original instanceof GraphQLError || Array.isArray(original.errors)) return error
    if (isAppError(original)) {
      // originalError travels along (it is not serialised) so a statusCode on it, like a rate limit's 429, sets the HTTP status.
      return new GraphQLError(original.message, { nodes: error.nodes, path: error.path, originalError: original, extensions: { ...error.extensions, code: original.code } })
    }
    const status = original.statusCode
    if (typeof status === 'number' && status >= 400 && status < 500) {
      // With originalError, so its status (a malformed body's 400, a too large one's 413) is the answer's.
      return new GraphQLError(original.message, { nodes: error.nodes, path: error.path, originalError: original, extensions: { code: (original as { code?: string }).code ?? 'BAD_REQUEST' } })
    }
    const outage = databaseUnavailable(original)
    if (outage) {
      log.warn({ err: original, path: error.path }, 'database unavailable')
      return new GraphQLError(outage.message, { nodes: error.nodes, path: error.path, extensions: { code: outage.code, requestId } })
    }
    log.error({ err: original, path: error.path }, 'unexpected GraphQL error')
    return new GraphQLError('Internal server error', { nodes: error.nodes, path: error.path, extensions: { code: 'INTERNAL_SERVER_ERROR', requestId } })
  })
  const formatted = mercurius.defaultErrorFormatter({ ...execution, errors } as never, ctx)
  // mercurius takes a status from a lone error only: a request refused for several reasons (two unknown
  // fields) would be a 200. Without data, the first request error's status is the answer's.
  if (!execution.data && formatted.statusCode === 200 && execution.errors && execution.errors.length > 0) {
    const statuses = execution.errors.map((e) => (e.originalError as { statusCode?: unknown } | undefined)?.statusCode)
    const status = statuses.find((c) => typeof c === 'number' && c >= 400 && c < 500)
    if (typeof status === 'number') formatted.statusCode = status
    // Errors before execution have no path (variables that do not coerce, which the JIT-compiled query
    // reports without a status of its own): the request was refused, as graphql-js's own would be.
    else if (execution.errors.every((e, i) => !e.path?.length && statuses[i] === undefined)) formatted.statusCode = 400
  }
  return formatted
}

/** An error that ended a subscription's start, as formatErrors answers any other (one error: the protocol's message carries one). */
function subscriptionStartError(app: FastifyInstance, err: unknown): GraphQLError {
  const error = err instanceof GraphQLError ? err : new GraphQLError(err instanceof Error ? err.message : String(err), { originalError: err instanceof Error ? err : undefined })
  const [first] = formatErrors({ data: null, errors: [error] }, { app } as unknown as MercuriusContext).response.errors as { message: string; extensions?: Record<string, unknown> }[]
  return new GraphQLError(first!.message, { extensions: first!.extensions })
}

/**
 * GraphQL multipart requests (jaydenseric spec) through graphql-upload-minimal, with the traps
 * handled: CSRF (a multipart POST skips CORS preflight, so a custom header is required), clear
 * 4xx answers for malformed bodies, and draining unread files so the connection is reusable.
 */
function registerUploads(app: FastifyInstance, options: { maxFileSize: number; maxFiles: number }) {
  app.addContentTypeParser('multipart/form-data', (request, _payload, done) => {
    request.isMultipart = true
    done(null)
  })

  // On the GraphQL route only (mercurius adds it after this): the rest of the app (the tracking pixel
  // among it) never pays for them. Callback hooks, so a request that is not multipart costs no promise.
  const readBody: preValidationHookHandler = (request, reply, done) => {
    if (!request.isMultipart) return done()
    readMultipart(request, reply, options).then(
      // A refused body has its answer already: the request ends here.
      (accepted) => {
        if (accepted) done()
      },
      done,
    )
  }
  const drainUnread: onSendHookHandler = (request, reply, payload, done) => {
    if (request.uploads) {
      // A resolver that failed (or never ran) leaves file streams unread; busboy then stalls and a
      // keep-alive follow-up request on the same socket hangs (mercurius#950). Drain them, and close
      // the connection if the body is still arriving.
      for (const upload of request.uploads) drain(upload)
      if (!request.raw.readableEnded) reply.header('connection', 'close')
    }
    done(null, payload)
  }
  app.addHook('onRoute', (route) => {
    if (route.url !== GRAPHQL_PATH) return
    route.preValidation = [...hookList(route.preValidation), readBody]
    route.onSend = [...hookList(route.onSend), drainUnread]
  })
}

function registerGetGuard(app: FastifyInstance) {
  app.addHook('onRoute', (route) => {
    if (route.url === GRAPHQL_PATH && [route.method].flat().includes('GET')) route.preValidation = [...hookList(route.preValidation), refuseMutationOverGet]
  })
}

/**
 * A GET request may not carry a document holding a mutation, whichever operation it names: mercurius
 * refuses a mutation over GET only when it is the operation named, which held only as long as the
 * named operation is the one that runs (see runNamedOperation and operation-kinds.ts).
 */
const refuseMutationOverGet: preValidationHookHandler = (request, reply, done) => {
  const params = request.query as { query?: unknown; operationName?: unknown } | undefined
  const query = params?.query
  if (typeof query !== 'string') return done()
  if (operationKinds(query)?.mutation === true) {
    void reply.code(405).header('allow', 'POST').send({
      errors: [{ message: 'A document holding a mutation must be sent with POST', extensions: { code: 'METHOD_NOT_ALLOWED' } }],
    })
    return
  }
  // mercurius looks up the named operation of a GET without checking that there is one.
  const missing = missingOperation(query, params?.operationName)
  if (!missing) return done()
  void reply.code(400).send({ data: null, errors: [{ message: missing, extensions: { code: 'BAD_REQUEST' } }] })
}

/** Why `operationName` picks no operation of the document, or null when it picks one (or the document does not parse: mercurius says why). */
function missingOperation(query: string, operationName: unknown): string | null {
  let document: DocumentNode
  try {
    document = parse(query)
  } catch {
    return null
  }
  const name = operationNameOf(operationName)
  if (getOperationAST(document, name)) return null
  return name ? `The document has no operation named "${name.slice(0, 100)}"` : 'The document has several operations: name the one to run with operationName'
}

/** Parses a multipart GraphQL request into its body and uploads; false when it was refused with an answer. */
async function readMultipart(request: FastifyRequest, reply: FastifyReply, options: Parameters<typeof processRequest>[2]): Promise<boolean> {
  if (!PREFLIGHT_HEADERS.some((h) => typeof request.headers[h] === 'string' && request.headers[h] !== '')) {
    request.raw.resume()
    reply.header('connection', 'close')
    void reply.code(400).send({
      errors: [{ message: 'Multipart requests must send a non-empty `graphql-require-preflight` (or `apollo-require-preflight`) header', extensions: { code: 'CSRF_PREFLIGHT_REQUIRED' } }],
    })
    return false
  }
  try {
    const body = await processRequest(request.raw, reply.raw, options)
    const uploads = collectUploads(body)
    // One file part read by two variables: the second createReadStream would fail deep in a resolver.
    if (new Set(uploads).size !== uploads.length) {
      for (const upload of uploads) drain(upload)
      throw Object.assign(new Error('Each file of a multipart request must be mapped to one variable'), { status: 400 })
    }
    request.body = body
    request.uploads = uploads
    return true
  } catch (err) {
    const status = (err as { status?: number }).status ?? 400
    reply.header('connection', 'close')
    void reply.code(status >= 400 && status < 500 ? status : 400).send({
      errors: [{ message: err instanceof Error ? err.message : 'Invalid multipart request', extensions: { code: 'BAD_MULTIPART_REQUEST' } }],
    })
    return false
  }
}

function collectUploads(value: unknown, found: Upload[] = []): Upload[] {
  if (value instanceof Upload) found.push(value)
  else if (Array.isArray(value)) for (const v of value) collectUploads(v, found)
  else if (value && typeof value === 'object') for (const v of Object.values(value)) collectUploads(v, found)
  return found
}

function drain(upload: Upload): void {
  upload.promise.then(
    (file) => {
      try {
        const stream = file.createReadStream()
        stream.on('error', () => {})
        stream.resume()
      } catch {
        // Already consumed by the resolver, or the request failed: nothing left to drain.
      }
    },
    () => {},
  )
}

