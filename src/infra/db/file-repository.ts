import { and, desc, eq, gt, inArray, lt, ne, or, sql } from 'drizzle-orm'
import { QuotaExceededError } from '../../lib/errors'
import type { Database } from './client'
import { fileProcessingSteps } from './schema/file-pipeline'
import { fileObjects, files, fileVersions, type StoredVariant } from './schema/files'
import { uploadSessions } from './schema/upload-sessions'

export type FileRow = typeof files.$inferSelect
export type FileVersionRow = typeof fileVersions.$inferSelect
export type FileObjectRow = typeof fileObjects.$inferSelect
export type NewFileVersion = Omit<typeof fileVersions.$inferInsert, 'fileId' | 'number'>
export type Tx = Parameters<Parameters<Database['transaction']>[0]>[0]

/** Keyset position for listing newest first. */
export interface FileCursor {
  createdAt: Date
  id: string
}

/** Checked inside the transaction that adds the bytes, under a per-owner lock, so parallel uploads cannot overshoot. */
export interface QuotaCheck {
  ownerId: string
  limitBytes: number
  addingBytes: number
  /** A session whose reservation the new version replaces. */
  excludeSessionId?: string
}

/** What the finalise step recorded about the stored bytes. */
export interface ProcessedVersion {
  storageKey: string
  mimeType: string
  size: number
  sha256: string
  originalSize: number
  originalSha256: string
  width: number | null
  height: number | null
  pageCount: number | null
  variants: StoredVariant[]
}

/** A processing step to enqueue; `skipped` ones do not apply to this type (image steps of a PDF). */
export interface StepSpec {
  name: string
  skipped?: boolean
}

export interface Removal {
  /** Storage keys no row references any more. */
  keys: string[]
}

export class FileRepository {
  constructor(private readonly db: Database) {}

  async findById(id: string): Promise<FileRow | undefined> {
    const [row] = await this.db.select().from(files).where(eq(files.id, id)).limit(1)
    return row
  }

  async findVersion(fileId: string, number: number): Promise<FileVersionRow | undefined> {
    const [row] = await this.db
      .select()
      .from(fileVersions)
      .where(and(eq(fileVersions.fileId, fileId), eq(fileVersions.number, number)))
      .limit(1)
    return row
  }

  async findVersionById(id: string): Promise<FileVersionRow | undefined> {
    const [row] = await this.db.select().from(fileVersions).where(eq(fileVersions.id, id)).limit(1)
    return row
  }

  listVersions(fileId: string): Promise<FileVersionRow[]> {
    return this.db.select().from(fileVersions).where(eq(fileVersions.fileId, fileId)).orderBy(desc(fileVersions.number))
  }

  /** Newest first, `limit` rows after the cursor; ownerId undefined lists everyone's (admin). */
  list(options: { ownerId?: string; after?: FileCursor; limit: number }): Promise<FileRow[]> {
    const conditions = [
      sql`${files.status} <> 'deleted'`,
      // A row whose current version is gone (left by an older release) cannot resolve its fields: it
      // is left out rather than failing the whole page. One index probe per row.
      sql`exists (select 1 from ${fileVersions} cv where cv.file_id = ${files.id} and cv.number = ${files.currentVersion})`,
    ]
    if (options.ownerId !== undefined) conditions.push(eq(files.ownerId, options.ownerId))
    if (options.after) {
      const { createdAt, id } = options.after
      conditions.push(or(lt(files.createdAt, createdAt), and(eq(files.createdAt, createdAt), lt(files.id, id)))!)
    }
    return this.db
      .select()
      .from(files)
      .where(and(...conditions))
      .orderBy(desc(files.createdAt), desc(files.id))
      .limit(options.limit)
  }

  /**
   * Bytes the owner stores or has reserved: every version that is not failed, plus open upload
   * sessions for their files, whoever opened them (an admin's upload to a user's file reserves the
   * user's space, as its version will use it), and the sessions for new files they opened.
   */
  async usage(ownerId: string, excludeSessionId?: string, tx: Database | Tx = this.db): Promise<number> {
    const result = await tx.execute(sql`
      select
        coalesce((select sum(v.size) from ${fileVersions} v join ${files} f on f.id = v.file_id
                  where f.owner_id = ${ownerId} and v.status <> 'failed'), 0)::bigint
      + coalesce((select sum(s.size) from ${uploadSessions} s
                  where s.status in ('uploading', 'completing') and s.expires_at > now()
                    and ((s.target_file_id is null and s.owner_id = ${ownerId})
                         or s.target_file_id in (select f.id from ${files} f where f.owner_id = ${ownerId}))
                  ${excludeSessionId ? sql`and s.id <> ${excludeSessionId}` : sql``}), 0)::bigint as used`)
    return Number((result.rows[0] as { used: string | number }).used)
  }

  /** Runs `work` in a transaction that holds the owner's quota lock, after checking the quota. */
  async withQuota<T>(quota: QuotaCheck | undefined, work: (tx: Tx) => Promise<T>): Promise<T> {
    return this.db.transaction(async (tx) => {
      if (quota) await this.checkQuota(tx, quota)
      return work(tx)
    })
  }

  async checkQuota(tx: Tx, quota: QuotaCheck): Promise<void> {
    if (quota.limitBytes <= 0) return
    // Serialises the check-then-insert of one owner's uploads across every instance.
    await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`quota:${quota.ownerId}`}))`)
    const used = await this.usage(quota.ownerId, quota.excludeSessionId, tx)
    if (used + quota.addingBytes > quota.limitBytes) {
      throw new QuotaExceededError(`Storing ${quota.addingBytes} more bytes would exceed your quota of ${quota.limitBytes} bytes`, quota.limitBytes, used)
    }
  }

  /** A new file with its first version and the version's processing steps, all or nothing. */
  async createWithVersion(
    file: { id: string; ownerId: string; filename: string; status?: FileRow['status'] },
    version: NewFileVersion,
    options: { steps?: StepSpec[]; quota?: QuotaCheck; afterInsert?: (tx: Tx) => Promise<void> } = {},
  ): Promise<{ file: FileRow; version: FileVersionRow }> {
    return this.withQuota(options.quota, async (tx) => {
      const [fileRow] = await tx
        .insert(files)
        .values({ ...file, status: file.status ?? 'processing', currentVersion: 1, latestVersion: 1 })
        .returning()
      const [versionRow] = await tx
        .insert(fileVersions)
        .values({ ...version, fileId: file.id, number: 1 })
        .returning()
      if (options.steps) await insertSteps(tx, versionRow!.id, options.steps)
      await options.afterInsert?.(tx)
      return { file: fileRow!, version: versionRow! }
    })
  }

  /**
   * Appends a version under the file's row lock, so concurrent uploads and restores get distinct,
   * increasing numbers. `makeCurrent` points the file at it at once (a restore of processed bytes);
   * otherwise finalise does when processing ends.
   */
  async appendVersion(
    fileId: string,
    version: NewFileVersion,
    options: { makeCurrent: boolean; filename?: string; steps?: StepSpec[]; quota?: QuotaCheck; afterInsert?: (tx: Tx) => Promise<void> },
  ): Promise<{ file: FileRow; version: FileVersionRow } | undefined> {
    return this.withQuota(options.quota, async (tx) => {
      const [locked] = await tx.select().from(files).where(eq(files.id, fileId)).for('update')
      if (!locked || locked.status === 'deleted') return undefined
      const [{ top } = { top: 0 }] = await tx
        .select({ top: sql<number>`coalesce(max(${fileVersions.number}), 0)::int` })
        .from(fileVersions)
        .where(eq(fileVersions.fileId, fileId))
      // Rows written before latest_version existed default it to 1: the max keeps their numbers unique.
      const next = Math.max(locked.latestVersion, top) + 1
      const [versionRow] = await tx
        .insert(fileVersions)
        .values({ ...version, fileId, number: next })
        .returning()
      if (options.steps) await insertSteps(tx, versionRow!.id, options.steps)
      const current = options.makeCurrent ? { currentVersion: next, filename: options.filename ?? locked.filename, status: 'ready' as const, error: null } : {}
      const [fileRow] = await tx
        .update(files)
        .set({ latestVersion: next, updatedAt: new Date(), ...current })
        .where(eq(files.id, fileId))
        .returning()
      await options.afterInsert?.(tx)
      return { file: fileRow!, version: versionRow! }
    })
  }

  /**
   * Takes a reference to the owner's stored object with this content, if there is one: the bytes
   * are then never stored twice. ref_count > 0 keeps a concurrent last delete from racing it.
   */
  async attachObject(versionId: string, ownerId: string, sha256: string): Promise<{ id: string } | undefined> {
    // One statement: taking the reference and recording it on the version cannot come apart, and a
    // retried step whose version already holds a reference takes no second one.
    const result = await this.db.execute(sql`
      with version as (
        select id, object_id from ${fileVersions} where id = ${versionId} for update
      ), taken as (
        update ${fileObjects} set ref_count = ref_count + 1
        where owner_id = ${ownerId} and sha256 = ${sha256} and ref_count > 0
          and exists (select 1 from version where object_id is null)
        returning id
      ), recorded as (
        update ${fileVersions} set object_id = (select id from taken)
        where id = ${versionId} and exists (select 1 from taken)
        returning object_id
      )
      select coalesce((select object_id from recorded), (select object_id from version)) as id`)
    const id = (result.rows[0] as { id: string | null } | undefined)?.id
    return id ? { id } : undefined
  }

  /** One more version shares the object (a restore); false if it is gone. Run inside the transaction that adds the version. */
  async addObjectRef(tx: Tx, objectId: string): Promise<boolean> {
    const rows = await tx
      .update(fileObjects)
      .set({ refCount: sql`${fileObjects.refCount} + 1` })
      .where(and(eq(fileObjects.id, objectId), gt(fileObjects.refCount, 0)))
      .returning({ id: fileObjects.id })
    return rows.length > 0
  }

  async setOriginalSha256(versionId: string, sha256: string): Promise<void> {
    await this.db.update(fileVersions).set({ originalSha256: sha256 }).where(eq(fileVersions.id, versionId))
  }

  /**
   * Marks the version ready, registers (or reuses) its stored object and points the file at the
   * newest ready version. Returns keys that became redundant: a concurrent identical upload won the
   * object registration, so ours are deleted and the winner's are shared.
   */
  async finalizeVersion(
    versionId: string,
    processed: ProcessedVersion,
    ownerId: string,
  ): Promise<{ file: FileRow; version: FileVersionRow; redundantKeys: string[] } | undefined> {
    return this.db.transaction(async (tx) => {
      const [head] = await tx.select({ fileId: fileVersions.fileId }).from(fileVersions).where(eq(fileVersions.id, versionId))
      if (!head) return undefined
      const [file] = await tx.select().from(files).where(eq(files.id, head.fileId)).for('update')
      const [version] = await tx.select().from(fileVersions).where(eq(fileVersions.id, versionId)).for('update')
      if (!file || !version) return undefined
      if (version.status === 'ready') return { file, version, redundantKeys: [] }

      let object: FileObjectRow | undefined
      let redundantKeys: string[] = []
      if (version.objectId) {
        ;[object] = await tx.select().from(fileObjects).where(eq(fileObjects.id, version.objectId))
      } else {
        ;[object] = await tx
          .insert(fileObjects)
          .values({ ownerId, sha256: processed.originalSha256, ...objectFields(processed), refCount: 1 })
          .onConflictDoNothing()
          .returning()
        if (!object) {
          ;[object] = await tx
            .update(fileObjects)
            .set({ refCount: sql`${fileObjects.refCount} + 1` })
            .where(and(eq(fileObjects.ownerId, ownerId), eq(fileObjects.sha256, processed.originalSha256)))
            .returning()
          redundantKeys = [processed.storageKey, ...processed.variants.map((v) => v.storageKey)].filter((k) => k !== object?.storageKey)
        }
      }
      if (!object) throw new Error(`No stored object for version ${versionId}`)
      const [ready] = await tx
        .update(fileVersions)
        .set({
          status: 'ready',
          objectId: object.id,
          storageKey: object.storageKey,
          mimeType: object.mimeType,
          size: object.size,
          sha256: object.storedSha256,
          originalSize: processed.originalSize,
          originalSha256: processed.originalSha256,
          width: object.width,
          height: object.height,
          pageCount: object.pageCount,
          variants: object.variants,
          error: null,
          errorCode: null,
        })
        .where(eq(fileVersions.id, versionId))
        .returning()
      const [{ newest } = { newest: ready!.number }] = await tx
        .select({ newest: sql<number>`max(${fileVersions.number})::int` })
        .from(fileVersions)
        .where(and(eq(fileVersions.fileId, file.id), eq(fileVersions.status, 'ready')))
      const becameCurrent = newest === ready!.number
      const [fileRow] = await tx
        .update(files)
        .set({ currentVersion: newest, status: 'ready', error: null, updatedAt: new Date(), ...(becameCurrent ? { filename: ready!.filename } : {}) })
        .where(eq(files.id, file.id))
        .returning()
      return { file: fileRow!, version: ready!, redundantKeys }
    })
  }

  /**
   * Marks a processing version failed. A file with no ready version fails with it; a file that has
   * one keeps serving it. Returns keys to delete: everything the failed processing wrote.
   */
  async failVersion(versionId: string, error: { message: string; code: string }, writtenKeys: string[]): Promise<({ file: FileRow; version: FileVersionRow } & Removal) | undefined> {
    return this.db.transaction(async (tx) => {
      const [head] = await tx.select({ fileId: fileVersions.fileId }).from(fileVersions).where(eq(fileVersions.id, versionId))
      if (!head) return undefined
      await tx.select({ id: files.id }).from(files).where(eq(files.id, head.fileId)).for('update')
      const [version] = await tx.select().from(fileVersions).where(eq(fileVersions.id, versionId)).for('update')
      if (!version || version.status !== 'processing') return undefined
      const keys = new Set([version.storageKey, ...writtenKeys])
      const [failed] = await tx
        .update(fileVersions)
        .set({ status: 'failed', error: error.message, errorCode: error.code, objectId: null })
        .where(eq(fileVersions.id, versionId))
        .returning()
      if (version.objectId) {
        // A deduplicated version shares another version's bytes: drop the reference, never those keys.
        for (const k of await releaseObjects(tx, [version.objectId])) keys.add(k)
        const shared = await tx.select({ key: fileObjects.storageKey, variants: fileObjects.variants }).from(fileObjects).where(eq(fileObjects.id, version.objectId))
        for (const o of shared) for (const k of [o.key, ...o.variants.map((v) => v.storageKey)]) keys.delete(k)
      }
      const [{ ready } = { ready: 0 }] = await tx
        .select({ ready: sql<number>`count(*)::int` })
        .from(fileVersions)
        .where(and(eq(fileVersions.fileId, head.fileId), eq(fileVersions.status, 'ready')))
      const [fileRow] = await tx
        .update(files)
        .set(ready === 0 ? { status: 'failed', error: error.message, updatedAt: new Date() } : { updatedAt: new Date() })
        .where(eq(files.id, head.fileId))
        .returning()
      return { file: fileRow!, version: failed!, keys: [...keys] }
    })
  }

  /** Deletes the file, its versions and steps; returns the storage keys no other version references. */
  async delete(fileId: string): Promise<string[]> {
    return this.db.transaction(async (tx) => {
      const [file] = await tx.select({ id: files.id }).from(files).where(eq(files.id, fileId)).for('update')
      if (!file) return []
      const versions = await tx.select().from(fileVersions).where(eq(fileVersions.fileId, fileId))
      const written = await writtenKeysOf(tx, versions.map((v) => v.id))
      await tx.delete(files).where(eq(files.id, fileId))
      return [...(await keysFreedBy(tx, versions)), ...written]
    })
  }

  /**
   * Deletes one version that is neither current nor processing. The current one is refused whatever
   * its status (a failed first version too): the file row must always point at a version that exists.
   */
  async deleteVersion(fileId: string, number: number): Promise<{ outcome: 'deleted'; keys: string[] } | { outcome: 'current' | 'processing' | 'missing' }> {
    return this.db.transaction(async (tx) => {
      const [file] = await tx.select().from(files).where(eq(files.id, fileId)).for('update')
      if (!file) return { outcome: 'missing' as const }
      const [version] = await tx.select().from(fileVersions).where(and(eq(fileVersions.fileId, fileId), eq(fileVersions.number, number)))
      if (!version) return { outcome: 'missing' as const }
      if (version.number === file.currentVersion) return { outcome: 'current' as const }
      if (version.status === 'processing') return { outcome: 'processing' as const }
      await tx.delete(fileVersions).where(eq(fileVersions.id, version.id))
      return { outcome: 'deleted' as const, keys: await keysFreedBy(tx, [version]) }
    })
  }

  /**
   * Versions retention would delete: neither current nor processing, and outside every enabled rule
   * (among the newest `keep`, or younger than `maxAgeDays`). At least one rule must be on.
   */
  async versionsPastRetention(policy: { keep: number; maxAgeDays: number }, limit: number, fileId?: string): Promise<{ fileId: string; number: number }[]> {
    if (policy.keep <= 0 && policy.maxAgeDays <= 0) return []
    const result = await this.db.execute(sql`
      select r.file_id, r.number from (
        select v.file_id, v.number, v.status, v.created_at, f.current_version,
               row_number() over (partition by v.file_id order by v.number desc) as rank
        from ${fileVersions} v join ${files} f on f.id = v.file_id
        ${fileId ? sql`where v.file_id = ${fileId}` : sql``}
      ) r
      where r.number <> r.current_version and r.status <> 'processing'
        ${policy.keep > 0 ? sql`and r.rank > ${policy.keep}` : sql``}
        ${policy.maxAgeDays > 0 ? sql`and r.created_at < now() - make_interval(days => ${policy.maxAgeDays})` : sql``}
      order by r.file_id, r.number
      limit ${limit}`)
    return (result.rows as { file_id: string; number: number }[]).map((r) => ({ fileId: r.file_id, number: Number(r.number) }))
  }
}

async function insertSteps(tx: Tx, versionId: string, steps: StepSpec[]): Promise<void> {
  if (steps.length === 0) return
  await tx
    .insert(fileProcessingSteps)
    .values(steps.map((s, position) => ({ versionId, name: s.name, position, status: s.skipped ? ('skipped' as const) : ('pending' as const) })))
}

function objectFields(p: ProcessedVersion) {
  return {
    storageKey: p.storageKey,
    mimeType: p.mimeType,
    size: p.size,
    storedSha256: p.sha256,
    originalSize: p.originalSize,
    width: p.width,
    height: p.height,
    pageCount: p.pageCount,
    variants: p.variants,
  }
}

/** Drops one reference per id (repeats count); returns the keys of objects nobody references any more. */
async function releaseObjects(tx: Tx, objectIds: string[]): Promise<string[]> {
  const counts = new Map<string, number>()
  for (const id of objectIds) counts.set(id, (counts.get(id) ?? 0) + 1)
  const keys: string[] = []
  for (const [id, n] of counts) {
    const [object] = await tx
      .update(fileObjects)
      .set({ refCount: sql`greatest(${fileObjects.refCount} - ${n}, 0)` })
      .where(eq(fileObjects.id, id))
      .returning()
    if (object && object.refCount === 0) {
      // Versions pointing here are being deleted in this transaction; the FK forbids dropping it before.
      const [{ still } = { still: 0 }] = await tx
        .select({ still: sql<number>`count(*)::int` })
        .from(fileVersions)
        .where(eq(fileVersions.objectId, id))
      if (still > 0) {
        await tx.update(fileObjects).set({ refCount: still }).where(eq(fileObjects.id, id))
        continue
      }
      await tx.delete(fileObjects).where(eq(fileObjects.id, id))
      keys.push(object.storageKey, ...object.variants.map((v) => v.storageKey))
    }
  }
  return keys
}

/** Keys of deleted version rows: shared objects lose a reference; bytes of unshared ones go. */
async function keysFreedBy(tx: Tx, versions: FileVersionRow[]): Promise<string[]> {
  const objectIds = versions.filter((v) => v.objectId).map((v) => v.objectId!)
  const keys = await releaseObjects(tx, objectIds)
  for (const v of versions) {
    // A processing version's key is still its received bytes, which it owns even when it already shares an object.
    if (v.status === 'processing') keys.push(v.storageKey)
    // Rows from before deduplication, and failed ones, own their keys outright.
    else if (!v.objectId) keys.push(v.storageKey, ...v.variants.map((x) => x.storageKey))
  }
  return [...new Set(keys)]
}

async function writtenKeysOf(tx: Tx, versionIds: string[]): Promise<string[]> {
  if (versionIds.length === 0) return []
  const steps = await tx
    .select({ result: fileProcessingSteps.result, versionId: fileProcessingSteps.versionId })
    .from(fileProcessingSteps)
    .where(and(inArray(fileProcessingSteps.versionId, versionIds), ne(fileProcessingSteps.status, 'skipped')))
    // Locked: a step finishing concurrently either lands before this read (its keys are returned here)
    // or finds its row gone afterwards (finish() fails and the pipeline deletes what it wrote).
    .for('update')
  const versions = await tx.select({ id: fileVersions.id, status: fileVersions.status }).from(fileVersions).where(inArray(fileVersions.id, versionIds))
  const processing = new Set(versions.filter((v) => v.status === 'processing').map((v) => v.id))
  // Only unfinished processing can leave keys no row names yet; finished ones are named by their object.
  return steps.filter((s) => processing.has(s.versionId)).flatMap((s) => ((s.result?.keys as string[] | undefined) ?? []))
}
