/**
 * Bits of recipient_engagement.flags: what a recipient has already done, so each event knows
 * whether it is the recipient's first of its kind. "Any" and "human" are separate bits because a
 * machine open (Apple's prefetch) usually comes before the human one.
 */
export const Flag = {
  anyOpen: 1,
  humanOpen: 2,
  anyClick: 4,
  humanClick: 8,
  unsubscribed: 16,
  converted: 32,
} as const

export interface FirstTimes {
  unique: boolean
  humanUnique: boolean
}

/** Marks `any` (and `human` unless machine) in `flags`; says which of the two were new. */
export function markFirst(flags: number, any: number, human: number, machine: boolean): { flags: number; first: FirstTimes } {
  const unique = (flags & any) === 0
  const humanUnique = !machine && (flags & human) === 0
  return { flags: flags | any | (machine ? 0 : human), first: { unique, humanUnique } }
}
