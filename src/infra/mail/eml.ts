import { createHash } from 'node:crypto'
import { parseAddress } from '../../lib/email-address'
import type { MailMessage } from './types'

export type EmlMessage = MailMessage & { messageId: string; date: Date }

const CRLF = '\r\n'
/** RFC 2047 caps every line that carries an encoded-word at 76 characters; we hold all header lines to it. */
const MAX_LINE = 76
/** 39 bytes -> 52 base64 chars -> a 64-char encoded-word, which fits a line after most header names. */
const ENCODED_WORD_BYTES = 39
/** Printable US-ASCII except the colon (RFC 5322 ftext). */
const FIELD_NAME = /^[!-9;-~]+$/
/** We write these ourselves; a second copy from message.headers would make the message ambiguous. */
const RESERVED_HEADERS = new Set([
  'from', 'to', 'cc', 'bcc', 'reply-to', 'subject', 'date', 'message-id',
  'mime-version', 'content-type', 'content-transfer-encoding',
])
const ATOM_PHRASE = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+$/

/**
 * Renders a message as RFC 5322 text with CRLF line ends: multipart/alternative with a
 * quoted-printable UTF-8 text/plain and text/html part. Throws on CR, LF or NUL in any header
 * input, since one of those is all a header injection needs.
 */
export function buildEml(message: EmlMessage): string {
  assertHeaderSafe('From', message.from)
  message.to.forEach((to) => assertHeaderSafe('To', to))
  if (message.replyTo !== undefined) assertHeaderSafe('Reply-To', message.replyTo)
  assertHeaderSafe('Subject', message.subject)
  assertHeaderSafe('Message-ID', message.messageId)
  if (message.to.length === 0) throw new Error('A message needs at least one To address')
  if (Number.isNaN(message.date.getTime())) throw new Error('The message date is invalid')

  const messageId = message.messageId.replace(/^<(.*)>$/, '$1')
  if (!/^[^\s<>@]+@[^\s<>@]+$/.test(messageId)) throw new Error(`Message-ID must look like left@right, got ${message.messageId}`)

  // "=_" can never occur in quoted-printable output (a literal "=" is always written "=3D"), so the boundary cannot collide with a body.
  const boundary = `=_gw_${createHash('sha256').update(messageId).digest('hex').slice(0, 32)}`

  const lines = [
    fold('From', addressTokens([message.from], 'From')),
    fold('To', addressTokens(message.to, 'To')),
    ...(message.replyTo !== undefined ? [fold('Reply-To', addressTokens([message.replyTo], 'Reply-To'))] : []),
    fold('Subject', unstructuredTokens(message.subject)),
    `Date: ${formatDate(message.date)}`,
    `Message-ID: <${messageId}>`,
    ...extraHeaders(message.headers ?? {}),
    'MIME-Version: 1.0',
    fold('Content-Type', ['multipart/alternative;', `boundary="${boundary}"`]),
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: quoted-printable',
    '',
    encodeQuotedPrintable(message.text),
    `--${boundary}`,
    'Content-Type: text/html; charset=utf-8',
    'Content-Transfer-Encoding: quoted-printable',
    '',
    encodeQuotedPrintable(message.html),
    `--${boundary}--`,
    '',
  ]
  return lines.join(CRLF)
}

function assertHeaderSafe(field: string, value: string): void {
  if (/[\r\n\0]/.test(value)) throw new Error(`Refusing a CR, LF or NUL in the ${field} header`)
}

function extraHeaders(headers: Record<string, string>): string[] {
  return Object.entries(headers).map(([name, value]) => {
    assertHeaderSafe(`${JSON.stringify(name)} header name`, name)
    assertHeaderSafe(name, value)
    if (!FIELD_NAME.test(name)) throw new Error(`Invalid header name ${JSON.stringify(name)}`)
    if (RESERVED_HEADERS.has(name.toLowerCase())) throw new Error(`The ${name} header is set from the message itself and cannot be overridden`)
    return fold(name, unstructuredTokens(value))
  })
}

/**
 * Joins tokens with single spaces, turning a space into CRLF SP where a line would pass MAX_LINE.
 * Unfolding (deleting the CRLF) gives back exactly the tokens joined by spaces.
 */
function fold(name: string, tokens: string[]): string {
  let out = `${name}:`
  let lineLength = out.length
  for (const token of tokens) {
    // An empty token stands for a run of spaces; breaking before it would leave a whitespace-only line.
    if (token !== '' && lineLength + 1 + token.length > MAX_LINE) {
      out += `${CRLF} ${token}`
      lineLength = 1 + token.length
    } else {
      out += ` ${token}`
      lineLength += 1 + token.length
    }
  }
  return out
}

function unstructuredTokens(value: string): string[] {
  // "=?" in plain text would be read back as an encoded-word; very long words cannot be folded.
  const needsEncoding = /[^\t\x20-\x7e]/.test(value) || value.includes('=?') || value.split(' ').some((w) => w.length > 900)
  return needsEncoding ? encodedWords(value) : value.split(' ')
}

/** RFC 2047 B-encoded words, split on code points so no word ends inside a UTF-8 sequence. */
function encodedWords(value: string): string[] {
  const words: string[] = []
  let chunk: Buffer[] = []
  let size = 0
  const flush = () => {
    if (size === 0) return
    words.push(`=?UTF-8?B?${Buffer.concat(chunk).toString('base64')}?=`)
    chunk = []
    size = 0
  }
  for (const char of value) {
    const bytes = Buffer.from(char, 'utf8')
    if (size + bytes.length > ENCODED_WORD_BYTES) flush()
    chunk.push(bytes)
    size += bytes.length
  }
  flush()
  return words.length > 0 ? words : ['']
}

function addressTokens(addresses: string[], field: string): string[] {
  const tokens: string[] = []
  addresses.forEach((input, i) => {
    const parsed = parseAddress(input)
    if (!parsed) throw new Error(`Invalid ${field} address ${JSON.stringify(input)}`)
    if (parsed.name) tokens.push(...displayNameTokens(parsed.name))
    const email = parsed.name ? `<${parsed.email}>` : parsed.email
    tokens.push(i < addresses.length - 1 ? `${email},` : email)
  })
  return tokens
}

function displayNameTokens(name: string): string[] {
  if (/[^\x20-\x7e]/.test(name) || name.length > 200) return encodedWords(name)
  if (ATOM_PHRASE.test(name) && !name.includes('=?')) return name.split(' ').filter((w) => w !== '')
  return [`"${name.replace(/(["\\])/g, '\\$1')}"`]
}

/** RFC 5322 wants a numeric zone; toUTCString's "GMT" is the obsolete form. */
function formatDate(date: Date): string {
  return date.toUTCString().replace(/GMT$/, '+0000')
}

/** RFC 2045 quoted-printable over UTF-8 bytes, with CRLF hard breaks and lines of at most 76 characters. */
function encodeQuotedPrintable(input: string): string {
  return input.replace(/\r\n|\r|\n/g, '\n').split('\n').map(encodeQuotedPrintableLine).join(CRLF)
}

function encodeQuotedPrintableLine(line: string): string {
  const bytes = Buffer.from(line, 'utf8')
  const out: string[] = []
  let current = ''
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!
    const isLast = i === bytes.length - 1
    // Trailing whitespace is stripped by some transports, so it is only literal when something follows it.
    const literal = (byte >= 33 && byte <= 126 && byte !== 61) || ((byte === 32 || byte === 9) && !isLast)
    const token = literal ? String.fromCharCode(byte) : `=${byte.toString(16).toUpperCase().padStart(2, '0')}`
    if (current.length + token.length > 75) {
      out.push(`${current}=`)
      current = ''
    }
    current += token
  }
  out.push(current)
  return out.join(CRLF)
}
