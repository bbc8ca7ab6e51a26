/**
 * A read or load of a key takes a claim before it goes to Redis or the loader, and fills the cache
 * (L1, or L1 and L2) with what it found only while the claim holds. A `set`, `del`, invalidation
 * or bus message for the key voids the claims open on it, so a value read before the change is
 * never stored after it, and callers that come after the change do not join a load that began
 * before it. Only keys with an open claim are tracked.
 */
export interface Claim {
  readonly voided: boolean
}

interface OpenClaim extends Claim {
  voided: boolean
  readonly tags: readonly string[] | undefined
}

export class FillClaims {
  private readonly open = new Map<string, Set<OpenClaim>>()

  take(lk: string, tags?: readonly string[]): Claim {
    const claim: OpenClaim = { voided: false, tags: tags && tags.length > 0 ? tags : undefined }
    let claims = this.open.get(lk)
    if (claims === undefined) this.open.set(lk, (claims = new Set()))
    claims.add(claim)
    return claim
  }

  /** Runs `work` under a claim of its own on the key, released when it settles. */
  async holding<T>(lk: string, tags: readonly string[] | undefined, work: (claim: Claim) => Promise<T>): Promise<T> {
    const claim = this.take(lk, tags)
    try {
      return await work(claim)
    } finally {
      this.release(lk, claim)
    }
  }

  release(lk: string, claim: Claim): void {
    const claims = this.open.get(lk)
    if (claims === undefined) return
    claims.delete(claim as OpenClaim)
    if (claims.size === 0) this.open.delete(lk)
  }

  voidKey(lk: string): void {
    const claims = this.open.get(lk)
    if (claims !== undefined) for (const claim of claims) claim.voided = true
  }

  voidKeys(match: (lk: string) => boolean): void {
    for (const [lk, claims] of this.open) if (match(lk)) for (const claim of claims) claim.voided = true
  }

  voidTags(tags: readonly string[]): void {
    const voided = new Set(tags)
    for (const claims of this.open.values()) {
      for (const claim of claims) if (claim.tags?.some((tag) => voided.has(tag))) claim.voided = true
    }
  }

  voidAll(): void {
    for (const claims of this.open.values()) for (const claim of claims) claim.voided = true
  }
}
