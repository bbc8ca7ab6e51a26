/** S3's multipart rules, which the disk adapter mirrors. */
export const MIN_PART_BYTES = 5 * 1024 * 1024
export const MAX_PART_BYTES = 5 * 1024 * 1024 * 1024
export const MAX_PARTS = 10_000
const MiB = 1024 * 1024

export interface PartPlan {
  partSize: number
  partCount: number
}

/** The preferred part size, raised (in whole MiB) when the file would otherwise need more than 10,000 parts. */
export function planParts(size: number, preferredPartBytes: number): PartPlan {
  let partSize = Math.max(preferredPartBytes, MIN_PART_BYTES)
  const needed = Math.ceil(size / MAX_PARTS)
  if (needed > partSize) partSize = Math.ceil(needed / MiB) * MiB
  return { partSize, partCount: Math.max(1, Math.ceil(size / partSize)) }
}

/** Every part is partSize bytes except the last, which holds the rest. */
export function expectedPartSize(session: { size: number; partSize: number; partCount: number }, partNumber: number): number {
  return partNumber < session.partCount ? session.partSize : session.size - (session.partCount - 1) * session.partSize
}
