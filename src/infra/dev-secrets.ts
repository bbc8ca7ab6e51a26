import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'

export interface DevSecrets {
  jwtSecret: string
  signingSecret: string
}

/**
 * Embedded mode needs secrets that survive restarts (so minted tokens and signed links keep
 * working) without the user configuring anything. They are generated once into DATA_DIR with
 * mode 0600. Production sets JWT_SECRET/JWT_PUBLIC_KEY and SIGNING_SECRET instead (config.ts enforces it).
 */
export async function loadDevSecrets(dataDir: string): Promise<DevSecrets> {
  const file = path.join(dataDir, 'dev-secrets.json')
  try {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as Partial<DevSecrets>
    if (parsed.jwtSecret && parsed.signingSecret) return { jwtSecret: parsed.jwtSecret, signingSecret: parsed.signingSecret }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const secrets = { jwtSecret: randomBytes(32).toString('base64url'), signingSecret: randomBytes(32).toString('base64url') }
  await mkdir(dataDir, { recursive: true })
  // 'wx' so two processes booting at once agree on one file.
  try {
    await writeFile(file, JSON.stringify(secrets, null, 2), { mode: 0o600, flag: 'wx' })
    return secrets
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    return loadDevSecrets(dataDir)
  }
}
