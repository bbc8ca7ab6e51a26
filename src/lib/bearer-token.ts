/** The token of an `Authorization: Bearer <token>` header (any case of "Bearer", any run of spaces); undefined for any other value. */
export function bearerToken(authorization: string | undefined): string | undefined {
  return authorization === undefined ? undefined : /^Bearer\s+(\S+)$/i.exec(authorization)?.[1]
}
