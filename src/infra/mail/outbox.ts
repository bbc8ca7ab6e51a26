import { randomBytes, randomUUID } from 'node:crypto'
import { mkdir, open, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { eq } from 'drizzle-orm'
import type { Database } from '../db/client'
import { outboxMessages } from '../db/schema/email'
import { parseAddress } from '../../lib/email-address'
import { buildEml } from './eml'
import { MailProviderError } from './types'
import type { BatchItemResult, BatchSendOptions, MailMessage, MailTransport, SendOptions, SendResult } from './types'

export interface OutboxTransportOptions {
  dir: string
  db: Database
}

/** Same limit as Resend, so code that works in embedded mode also works against the provider. */
const MAX_BATCH = 100

interface PreparedMessage {
  message: MailMessage
  messageId: string
  eml: string
  fileName: string
  idempotencyKey?: string
}

/**
 * Embedded-mode mail: one .eml file per message plus an outbox_messages row, so sent mail can be
 * listed and opened without a provider. The idempotency key is enforced by the row's unique index,
 * which makes retries from a claimed job as safe as Resend's own idempotency keys.
 */
export function createOutboxTransport(opts: OutboxTransportOptions): MailTransport {
  const dir = path.resolve(opts.dir)
  const { db } = opts

  async function findByKey(key: string): Promise<string | undefined> {
    const rows = await db
      .select({ messageId: outboxMessages.messageId })
      .from(outboxMessages)
      .where(eq(outboxMessages.idempotencyKey, key))
      .limit(1)
    return rows[0]?.messageId
  }

  async function deliver(prepared: PreparedMessage): Promise<SendResult> {
    const key = prepared.idempotencyKey
    try {
      if (key !== undefined) {
        const existing = await findByKey(key)
        if (existing !== undefined) return { providerId: existing }
      }
      const filePath = path.join(dir, prepared.fileName)
      await writeAtomically(filePath, prepared.eml)

      let inserted: { messageId: string }[]
      try {
        inserted = await db
          .insert(outboxMessages)
          .values({
            messageId: prepared.messageId,
            idempotencyKey: key,
            from: prepared.message.from,
            to: prepared.message.to,
            subject: prepared.message.subject,
            path: filePath,
          })
          .onConflictDoNothing({ target: outboxMessages.idempotencyKey })
          .returning({ messageId: outboxMessages.messageId })
      } catch (err) {
        await rm(filePath, { force: true })
        throw err
      }
      if (inserted.length > 0) return { providerId: prepared.messageId }

      // A concurrent call with the same key won the insert: keep only the winner's file.
      await rm(filePath, { force: true })
      const winner = key !== undefined ? await findByKey(key) : undefined
      if (winner === undefined) throw new Error(`No outbox row for idempotency key ${key} after a conflict`)
      return { providerId: winner }
    } catch (err) {
      if (err instanceof MailProviderError) throw err
      // Disk and database failures are transient from the caller's point of view: retry later.
      throw new MailProviderError(`Could not write to the outbox: ${(err as Error).message}`, true, undefined, undefined, { cause: err })
    }
  }

  async function writeAtomically(filePath: string, content: string): Promise<void> {
    await mkdir(dir, { recursive: true })
    // A dot-prefixed temp name in the same directory: rename is atomic only within one filesystem.
    const tempPath = path.join(dir, `.${path.basename(filePath)}.${randomBytes(6).toString('hex')}.tmp`)
    try {
      const handle = await open(tempPath, 'wx')
      try {
        await handle.writeFile(content, 'utf8')
        // Without fsync a crash after rename can leave a complete name with empty content.
        await handle.sync()
      } finally {
        await handle.close()
      }
      await rename(tempPath, filePath)
    } catch (err) {
      await rm(tempPath, { force: true })
      throw err
    }
  }

  return {
    kind: 'outbox',

    async send(message: MailMessage, options: SendOptions = {}): Promise<SendResult> {
      return deliver(prepare(message, options.idempotencyKey))
    },

    async sendBatch(messages: MailMessage[], options: BatchSendOptions = {}): Promise<BatchItemResult[]> {
      if (messages.length > MAX_BATCH) {
        throw new MailProviderError(`A batch holds at most ${MAX_BATCH} messages, got ${messages.length}`, false)
      }
      const key = options.idempotencyKey
      // Render every message before writing any: strict mode refuses the whole batch for one invalid
      // message, as Resend does; permissive mode reports it and sends the rest.
      const prepared = messages.map((m, i) => {
        try {
          return prepare(m, key !== undefined ? `${key}/${i}` : undefined)
        } catch (err) {
          if (!options.permissive) throw err
          return { error: (err as Error).message }
        }
      })
      const results: BatchItemResult[] = []
      for (const p of prepared) results.push('error' in p ? { error: p.error } : await deliver(p))
      return results
    },

    async check(): Promise<void> {
      // access(W_OK) says yes to root on a read-only mount; writing a file is the only honest test.
      await mkdir(dir, { recursive: true })
      const probe = path.join(dir, `.check-${randomBytes(6).toString('hex')}`)
      await writeFile(probe, '', { flag: 'wx' })
      await rm(probe, { force: true })
    },

    close: async () => {},
  }
}

function prepare(message: MailMessage, idempotencyKey: string | undefined): PreparedMessage {
  const domain = parseAddress(message.from)?.email.split('@')[1] ?? 'outbox.invalid'
  const messageId = `${randomUUID()}@${domain}`
  const date = new Date()
  let eml: string
  try {
    eml = buildEml({ ...message, messageId, date })
  } catch (err) {
    throw new MailProviderError(`Refusing the message: ${(err as Error).message}`, false, undefined, undefined, { cause: err })
  }
  const fileName = `${date.toISOString().replace(/:/g, '-')}-${messageId.replace(/[^A-Za-z0-9._-]/g, '_')}.eml`
  return { message, messageId, eml, fileName, idempotencyKey }
}
