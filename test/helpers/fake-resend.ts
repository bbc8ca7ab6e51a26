/**
 * A stand-in for the Resend API, for the real `resend` SDK pointed at it through RESEND_BASE_URL
 * (the SDK reads that variable when `new Resend()` runs, so set it before creating a transport).
 *
 * It answers POST /emails and POST /emails/batch the way Resend does: `{ id }` and
 * `{ data: [{ id }, ...] }`, the same ids again for a repeated Idempotency-Key with the same body,
 * 409 invalid_idempotent_request for the same key with another body, 422 for a missing field or a
 * malformed address, and Resend-style error bodies `{ statusCode, name, message }`.
 */
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface FakeResendRequest {
  method: string
  path: string
  headers: IncomingHttpHeaders
  /** Parsed JSON, or the raw text when the body is not JSON. */
  body: unknown
}

/** An accepted email as the API received it (snake_case fields), with the id the fake gave it. */
export interface FakeResendEmail {
  id: string
  /** The request's Idempotency-Key; for a batch it is the key of the whole batch. */
  idempotencyKey?: string
  /** Position in the batch request; undefined for POST /emails. */
  batchIndex?: number
  from: string
  to: string | string[]
  subject: string
  text?: string
  html?: string
  reply_to?: string | string[]
  headers?: Record<string, string>
  tags?: Array<{ name: string; value: string }>
  [field: string]: unknown
}

export interface FakeResendErrorOverride {
  name?: string
  message?: string
}

export interface FakeResend {
  /** Base URL without a trailing slash, for RESEND_BASE_URL. */
  url: string
  /** Every request received, in arrival order, including failed and stalled ones. */
  requests: FakeResendRequest[]
  /** Accepted emails, batches flattened, in order; replays of an idempotency key add nothing. */
  sent: FakeResendEmail[]
  /**
   * The next `times` requests (default 1) are answered with `status` and a Resend-style error body,
   * before any validation. `headers` are sent as given: pass `{ 'retry-after': '1' }` for a realistic 429.
   * A failed request does not record its idempotency key, as with Resend.
   */
  failNext(status: number, times?: number, headers?: Record<string, string>, error?: FakeResendErrorOverride): void
  /** The next `times` requests (default 1) are recorded and never answered: for timeout tests. */
  stallNext(times?: number): void
  /** Headers added to every successful answer from now on, e.g. Resend's `ratelimit-*` window. */
  successHeaders(headers: Record<string, string>): void
  /** Forgets requests, sent emails, idempotency keys, queued failures or stalls, and success headers. */
  reset(): void
  close(): Promise<void>
}

type Reply = { status: number; body: unknown; headers?: Record<string, string> }
type Fault = { kind: 'fail'; reply: Reply; remaining: number } | { kind: 'stall'; remaining: number }

const ERROR_NAMES: Record<number, string> = {
  400: 'validation_error',
  401: 'missing_api_key',
  403: 'invalid_api_key',
  404: 'not_found',
  405: 'method_not_allowed',
  409: 'invalid_idempotent_request',
  422: 'validation_error',
  429: 'rate_limit_exceeded',
  500: 'internal_server_error',
}
const ERROR_MESSAGES: Record<string, string> = {
  rate_limit_exceeded: 'Too many requests. You can only make 2 requests per second. See rate limit response headers for more information. Or contact support to increase rate limit.',
  internal_server_error: 'An unexpected error occurred.',
  application_error: 'An unexpected error occurred, please try again later.',
}
/** Close enough to Resend's check: `email@example.com` or `Name <email@example.com>`. */
const ADDRESS = /^(?:[^<>]*<[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+>|[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+)$/
const MAX_BATCH = 100
const MAX_RECIPIENTS = 50

export async function startFakeResend(): Promise<FakeResend> {
  let extraSuccessHeaders: Record<string, string> = {}
  const requests: FakeResendRequest[] = []
  const sent: FakeResendEmail[] = []
  const faults: Fault[] = []
  /** `${path} ${key}` -> the first answer and the body it was given for. */
  const idempotency = new Map<string, { fingerprint: string; reply: Reply }>()

  const server = createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      send(res, errorReply(500, 'application_error', (err as Error).message))
    })
  })

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req)
    const path = (req.url ?? '/').split('?')[0]!
    const body = parseJson(raw)
    requests.push({ method: req.method ?? 'GET', path, headers: req.headers, body: body.ok ? body.value : raw })

    const fault = takeFault()
    if (fault?.kind === 'stall') return
    if (fault?.kind === 'fail') return send(res, fault.reply)

    if (!/^Bearer \S+$/.test(req.headers.authorization ?? '')) {
      return send(res, errorReply(401, 'missing_api_key', 'Missing API key in the authorization header. Include the following header `Authorization: Bearer YOUR_API_KEY` in the request.'))
    }
    if (path !== '/emails' && path !== '/emails/batch') return send(res, errorReply(404, 'not_found', 'The requested endpoint does not exist.'))
    if (req.method !== 'POST') return send(res, errorReply(405, 'method_not_allowed', 'Method is not allowed for the requested path.'))
    if (!body.ok) return send(res, errorReply(400, 'validation_error', 'Invalid JSON in the request body.'))

    const keyHeader = req.headers['idempotency-key']
    const key = Array.isArray(keyHeader) ? keyHeader[0] : keyHeader
    if (key !== undefined && (key.length < 1 || key.length > 256)) {
      return send(res, errorReply(400, 'invalid_idempotency_key', 'The key must be between 1-256 chars.'))
    }
    const slot = key !== undefined ? `${path} ${key}` : undefined
    const fingerprint = JSON.stringify(body.value)
    const previous = slot !== undefined ? idempotency.get(slot) : undefined
    if (previous) {
      if (previous.fingerprint === fingerprint) return send(res, previous.reply)
      return send(res, errorReply(409, 'invalid_idempotent_request', 'Same idempotency key used with a different request payload.'))
    }

    const reply =
      path === '/emails'
        ? acceptSingle(body.value, key)
        : acceptBatch(body.value, key, req.headers['x-batch-validation'] === 'permissive')
    // Like Resend, only a processed request pins its key; a refused one may be retried with the same key.
    if (slot !== undefined && reply.status === 200) idempotency.set(slot, { fingerprint, reply })
    send(res, reply.status === 200 ? { ...reply, headers: { ...reply.headers, ...extraSuccessHeaders } } : reply)
  }

  function acceptSingle(payload: unknown, key: string | undefined): Reply {
    const problem = validateEmail(payload)
    if (problem) return errorReply(422, problem.name, problem.message)
    const id = randomUUID()
    sent.push({ ...(payload as FakeResendEmail), id, idempotencyKey: key })
    return { status: 200, body: { id } }
  }

  function acceptBatch(payload: unknown, key: string | undefined, permissive: boolean): Reply {
    if (!Array.isArray(payload)) return errorReply(422, 'validation_error', 'The request body must be an array of emails.')
    if (payload.length === 0) return errorReply(422, 'validation_error', 'The batch must contain at least one email.')
    if (payload.length > MAX_BATCH) return errorReply(422, 'validation_error', `Too many emails in the batch: the maximum is ${MAX_BATCH}.`)
    const problems = payload.map((email, index) => ({ index, problem: validateEmail(email) }))
    const failed = problems.filter((p) => p.problem !== undefined)
    if (!permissive && failed.length > 0) {
      const first = failed[0]!
      return errorReply(422, first.problem!.name, `emails[${first.index}]: ${first.problem!.message}`)
    }
    const data: Array<{ id: string }> = []
    payload.forEach((email, index) => {
      if (problems[index]!.problem) return
      const id = randomUUID()
      sent.push({ ...(email as FakeResendEmail), id, idempotencyKey: key, batchIndex: index })
      data.push({ id })
    })
    const body = permissive ? { data, errors: failed.map((f) => ({ index: f.index, message: f.problem!.message })) } : { data }
    return { status: 200, body }
  }

  function takeFault(): Fault | undefined {
    const head = faults[0]
    if (!head) return undefined
    head.remaining -= 1
    if (head.remaining <= 0) faults.shift()
    return head
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    sent,
    failNext(status, times = 1, headers = {}, error = {}) {
      const name = error.name ?? ERROR_NAMES[status] ?? (status >= 500 ? 'application_error' : 'validation_error')
      const message = error.message ?? ERROR_MESSAGES[name] ?? `Fake failure ${status}.`
      faults.push({ kind: 'fail', reply: { ...errorReply(status, name, message), headers }, remaining: times })
    },
    stallNext(times = 1) {
      faults.push({ kind: 'stall', remaining: times })
    },
    successHeaders(headers) {
      extraSuccessHeaders = { ...headers }
    },
    reset() {
      extraSuccessHeaders = {}
      requests.length = 0
      sent.length = 0
      faults.length = 0
      idempotency.clear()
    },
    async close() {
      // Stalled requests keep their sockets open; without this close() would wait for them forever.
      server.closeAllConnections()
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())))
    },
  }
}

function validateEmail(email: unknown): { name: string; message: string } | undefined {
  if (typeof email !== 'object' || email === null || Array.isArray(email)) {
    return { name: 'validation_error', message: 'Each email must be an object.' }
  }
  const e = email as Record<string, unknown>
  const missing = ['from', 'to', 'subject'].filter((f) => e[f] === undefined || e[f] === null || e[f] === '')
  if (missing.length > 0) return { name: 'missing_required_field', message: `Missing \`${missing.join('`, `')}\` field.` }
  if (e.html === undefined && e.text === undefined) return { name: 'validation_error', message: 'Missing `html` or `text` field.' }
  if (typeof e.from !== 'string' || !ADDRESS.test(e.from)) {
    return { name: 'validation_error', message: 'Invalid `from` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format.' }
  }
  const to = Array.isArray(e.to) ? e.to : [e.to]
  if (to.length === 0) return { name: 'validation_error', message: 'The `to` field must contain at least one address.' }
  if (to.length > MAX_RECIPIENTS) return { name: 'validation_error', message: `The \`to\` field must contain at most ${MAX_RECIPIENTS} addresses.` }
  if (!to.every((a) => typeof a === 'string' && ADDRESS.test(a))) {
    return { name: 'validation_error', message: 'Invalid `to` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format.' }
  }
  return undefined
}

function errorReply(status: number, name: string, message: string): Reply {
  return { status, body: { statusCode: status, name, message } }
}

function send(res: ServerResponse, reply: Reply): void {
  res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers })
  res.end(JSON.stringify(reply.body))
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

function parseJson(raw: string): { ok: true; value: unknown } | { ok: false } {
  if (raw === '') return { ok: true, value: undefined }
  try {
    return { ok: true, value: JSON.parse(raw) as unknown }
  } catch {
    return { ok: false }
  }
}
