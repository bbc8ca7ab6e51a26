import type { FastifyInstance, FastifyReply, FastifyRequest, onSendHookHandler, preValidationHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { GraphQLError, Kind, type DocumentNode, type ExecutionResult, type OperationDefinitionNode, type ValidationRule } from 'graphql'
import { processRequest, Upload } from 'graphql-upload-minimal'
import mercurius, { type MercuriusContext } from 'mercurius'
import { databaseUnavailable } from '../lib/database-unavailable'
import { hookList } from '../lib/route-hooks'
import { isAppError, UnauthenticatedError } from '../lib/errors'
import type { Viewer } from '../services/auth/jwt'
import { planParts } from '../services/files/part-plan'
import type { GraphQLContext } from './context'
import { operationLabel } from '../plugins/metrics'
import { queryCostRule } from './complexity'
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
    const validationRules: ValidationRule[] = [queryCostRule(gql.maxComplexity)]

    await app.register(mercurius, {
      schema,
      path: GRAPHQL_PATH,
      graphiql: gql.graphiql,
      jit: 1,
      queryDepth: gql.maxDepth,
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

const timing = Symbol('timing')
type Timed = { [timing]?: { start: bigint; operation: string; type: string } }

function observeOperations(app: FastifyInstance) {
  const seen = new Set<string>()
  app.graphql.addHook('preExecution', async (_schema, document, context) => {
    const op = operationToRun(document, context)
    ;(context as Timed)[timing] = {
      start: process.hrtime.bigint(),
      operation: operationLabel(op?.name?.value, seen),
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
  const operations = document.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION)
  if (operations.length <= 1) return operations[0]
  const request = context.reply?.request
  const params = (request?.method === 'GET' ? request.query : request?.body) as { operationName?: unknown } | undefined
  const name = params?.operationName
  return typeof name === 'string' ? operations.find((o) => o.name?.value === name) : undefined
}

function contextFor(app: FastifyInstance, authorization: string | undefined, requestId: string): Pick<GraphQLContext, 'viewer' | 'authError' | 'services' | 'requestId'> {
  const base = { services: app.services, requestId }
  if (!authorization) return { ...base, viewer: null, authError: null }
  const match = /^Bearer\s+(\S+)$/i.exec(authorization)
  if (!match) return { ...base, viewer: null, authError: new UnauthenticatedError('The Authorization header must be "Bearer <token>"') }
  try {
    const viewer: Viewer = app.tokens.verify(match[1]!)
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
      return new GraphQLError(original.message, { nodes: error.nodes, path: error.path, extensions: { code: (original as { code?: string }).code ?? 'BAD_REQUEST' } })
    }
    const outage = databaseUnavailable(original)
    if (outage) {
      log.warn({ err: original, path: error.path }, 'database unavailable')
      return new GraphQLError(outage.message, { nodes: error.nodes, path: error.path, extensions: { code: outage.code, requestId } })
    }
    log.error({ err: original, path: error.path }, 'unexpected GraphQL error')
    return new GraphQLError('Internal server error', { nodes: error.nodes, path: error.path, extensions: { code: 'INTERNAL_SERVER_ERROR', requestId } })
  })
  return mercurius.defaultErrorFormatter({ ...execution, errors } as never, ctx)
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
  const query = (request.query as { query?: unknown } | undefined)?.query
  if (typeof query !== 'string' || operationKinds(query)?.mutation !== true) return done()
  void reply.code(405).header('allow', 'POST').send({
    errors: [{ message: 'A document holding a mutation must be sent with POST', extensions: { code: 'METHOD_NOT_ALLOWED' } }],
  })
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
    request.body = body
    request.uploads = collectUploads(body)
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

