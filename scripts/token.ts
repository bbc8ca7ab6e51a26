/**
 * Mints a bearer token for development:
 *   npm run token -- --role admin [--sub alice] [--email a@example.com] [--name Alice] [--ttl 86400]
 * Uses JWT_SECRET when set, otherwise the embedded-mode secret in DATA_DIR (created if missing).
 */
import { parseArgs } from 'node:util'
import { loadConfig } from '../src/config'
import { loadDevSecrets } from '../src/infra/dev-secrets'
import { createTokenSigner, ROLES, type Role } from '../src/services/auth/jwt'

const { values } = parseArgs({
  options: {
    role: { type: 'string', multiple: true, default: ['user'] },
    sub: { type: 'string' },
    email: { type: 'string' },
    name: { type: 'string' },
    ttl: { type: 'string', default: '86400' },
  },
})
const roles = values.role as string[]
for (const r of roles) {
  if (!(ROLES as readonly string[]).includes(r)) {
    console.error(`Unknown role "${r}". Use one of: ${ROLES.join(', ')}`)
    process.exit(2)
  }
}
const config = loadConfig()
if (config.auth.jwtPublicKey) {
  console.error('JWT_PUBLIC_KEY is set (RS256): tokens come from your identity provider, not from this script.')
  process.exit(2)
}
const secret = config.auth.jwtSecret ?? (await loadDevSecrets(config.dataDir)).jwtSecret
const sign = createTokenSigner(secret, { issuer: config.auth.jwtIssuer, audience: config.auth.jwtAudience })
const sub = values.sub ?? `${roles[0]}-dev`
console.log(sign({ id: sub, email: values.email ?? `${sub}@example.com`, name: values.name ?? sub, roles: roles as Role[] }, Number(values.ttl)))
