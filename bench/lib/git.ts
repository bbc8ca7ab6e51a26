/** Which code a benchmark measured: the commit, and whether the working tree had uncommitted changes. */
import { execFileSync } from 'node:child_process'

export interface Revision {
  commit: string
  dirty: boolean
}

/** The checkout's revision, or undefined outside a git checkout (or without git). */
/** Changes to these paths (the runner's own output) do not make the tree dirty. */
const IGNORED = ['bench/RESULTS.md']

export function gitRevision(cwd: string): Revision | undefined {
  try {
    const git = (...args: string[]) => execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    return { commit: git('rev-parse', '--short=12', 'HEAD'), dirty: git('status', '--porcelain', '--untracked-files=no', '--', '.', ...IGNORED.map((p) => `:(exclude,top)${p}`)).length > 0 }
  } catch {
    return undefined
  }
}

export function formatRevision(rev: Revision | undefined): string {
  if (!rev) return 'unknown (not a git checkout)'
  return rev.dirty ? `${rev.commit} with uncommitted changes` : rev.commit
}
