/**
 * Single-use tokens sent by email (address verification, password reset). The token itself only
 * ever exists in the email; the database keeps its sha256, so a leaked table cannot be replayed.
 */
import { createHash, randomBytes } from 'node:crypto'
import { and, eq, gt, isNull, sql } from 'drizzle-orm'
import type { Database } from '../../infra/db/client'
import { emailTokens } from '../../infra/db/schema/auth'
import { InvalidTokenError } from '../../lib/errors'

export type EmailTokenKind = (typeof emailTokens.kind.enumValues)[number]

export const EMAIL_VERIFICATION_TTL_MS = 24 * 60 * 60 * 1000
export const PASSWORD_RESET_TTL_MS = 60 * 60 * 1000

/** 32 random bytes in base64url, unpadded. */
const TOKEN_FORMAT = /^[A-Za-z0-9_-]{43}$/

export interface IssueEmailTokenInput {
  kind: EmailTokenKind
  userId: string
  email: string
  ttlMs: number
}

export async function issueEmailToken(db: Database, input: IssueEmailTokenInput): Promise<{ token: string; expiresAt: Date }> {
  if (!Number.isFinite(input.ttlMs) || input.ttlMs <= 0) throw new RangeError('ttlMs must be a positive number')
  const token = randomBytes(32).toString('base64url')
  const [row] = await db.transaction(async (tx) => {
    if (input.kind === 'password_reset') {
      // Only the newest reset link may work: an older one may sit in a mailbox someone else reads.
      // Serialised per user across connections and instances: without the lock two concurrent resets
      // each revoke what was committed before they began and each insert, leaving two live links. The
      // lock is held until commit, and under READ COMMITTED the UPDATE below (a statement that starts
      // after the lock is granted) sees the row the previous holder inserted.
      await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`email-token:password_reset:${input.userId}`}))`)
      await tx
        .update(emailTokens)
        .set({ consumedAt: sql`now()` })
        .where(and(eq(emailTokens.userId, input.userId), eq(emailTokens.kind, 'password_reset'), isNull(emailTokens.consumedAt)))
    }
    return tx
      .insert(emailTokens)
      .values({
        kind: input.kind,
        tokenHash: hashToken(token),
        userId: input.userId,
        email: input.email,
        // Database time on both sides: consumeEmailToken compares against now() too, so app clock skew cannot stretch a token.
        expiresAt: sql`now() + make_interval(secs => ${input.ttlMs / 1000}::double precision)`,
      })
      .returning({ expiresAt: emailTokens.expiresAt })
  })
  return { token, expiresAt: row!.expiresAt }
}

/**
 * Marks the token used and returns whom it was issued to. One conditional UPDATE, so of two
 * concurrent requests with the same token exactly one gets a row back.
 */
export async function consumeEmailToken(db: Database, kind: EmailTokenKind, token: string): Promise<{ userId: string; email: string }> {
  if (typeof token !== 'string' || !TOKEN_FORMAT.test(token)) throw new InvalidTokenError()
  const [row] = await db
    .update(emailTokens)
    .set({ consumedAt: sql`now()` })
    .where(
      and(
        eq(emailTokens.tokenHash, hashToken(token)),
        eq(emailTokens.kind, kind),
        isNull(emailTokens.consumedAt),
        gt(emailTokens.expiresAt, sql`now()`),
      ),
    )
    .returning({ userId: emailTokens.userId, email: emailTokens.email })
  if (!row) throw new InvalidTokenError()
  return row
}

function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex')
}
