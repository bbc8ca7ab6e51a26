import { UnsupportedFileTypeError } from '../../lib/errors'
import { normalizeText } from '../../lib/escape'
import type { DetectedType } from './upload-inspector'

export const IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/avif'])
export const SVG_TYPE = 'image/svg+xml'

/** Aliases browsers and OSes send for the canonical types file-type detects. */
const TYPE_ALIASES: Record<string, string> = { 'image/jpg': 'image/jpeg', 'image/pjpeg': 'image/jpeg', 'image/x-png': 'image/png', 'application/x-pdf': 'application/pdf' }
const GENERIC_TYPES = new Set(['', 'application/octet-stream', 'binary/octet-stream'])
const MAX_FILENAME = 255

export function canonicalType(type: string | undefined): string {
  const t = (type ?? '').split(';')[0]!.trim().toLowerCase()
  return TYPE_ALIASES[t] ?? t
}

export function isGenericType(type: string): boolean {
  return GENERIC_TYPES.has(type)
}

/** Images are decoded in memory by sharp, so they get their own size cap and the image pool. */
export function isImageType(type: string): boolean {
  return IMAGE_TYPES.has(type) || type === SVG_TYPE
}

/** Rejects a type outside the allowlist, or content that contradicts what the client declared. */
export function checkType(detected: DetectedType | null, declared: string, allowed: string[]): void {
  if (!detected || !allowed.includes(detected.mime)) {
    throw new UnsupportedFileTypeError(
      detected ? `Files of type ${detected.mime} are not allowed` : 'The file type could not be recognised from its content',
      detected?.mime ?? null,
      allowed,
    )
  }
  if (!isGenericType(declared) && declared !== detected.mime) {
    throw new UnsupportedFileTypeError(`The file was declared as ${declared} but its content is ${detected.mime}`, detected.mime, allowed)
  }
}

/** file-type does not recognise SVG (it is text): look for the root element in the first bytes. */
export function looksLikeSvg(head: Buffer): boolean {
  const text = head.subarray(0, 4096).toString('utf8').replace(/^\uFEFF/, '').trimStart()
  return /^(<\?xml[^>]*>\s*)?(<!--[\s\S]*?-->\s*)*(<!DOCTYPE svg[^>]*>\s*)?<svg[\s>]/i.test(text)
}

/**
 * file-type sees an SVG as nothing, or as XML when it has a prolog. It is refused unless allowed,
 * as it can carry scripts.
 */
export function refineSvg(head: Buffer, detected: DetectedType | null, allowSvg: boolean, allowedTypes: string[]): DetectedType | null {
  if ((detected && detected.mime !== 'application/xml') || !looksLikeSvg(head)) return detected
  if (!allowSvg) throw new UnsupportedFileTypeError('SVG files are not allowed', SVG_TYPE, allowedTypes)
  return { mime: SVG_TYPE, ext: 'svg' }
}

/** The client's name is metadata only: strip directories (path traversal), control characters and excess length. */
export function cleanFilename(name: string | undefined): string {
  const base = (name ?? '').split(/[\\/]/).pop() ?? ''
  const cleaned = normalizeText(base, { maxLength: MAX_FILENAME }).replace(/[\r\n\t]/g, ' ').replace(/^\.+/, '')
  return cleaned.length > 0 ? cleaned : 'file'
}

/**
 * Every key of a version lives under its own prefix and never changes once written: the received
 * bytes (`source`), the optimised image and each variant. Deterministic names make a retried step
 * overwrite its own earlier attempt instead of leaking a second object.
 */
export const versionKeys = {
  source: (fileId: string, versionId: string) => `files/${fileId}/${versionId}/source`,
  optimized: (fileId: string, versionId: string, ext: string) => `files/${fileId}/${versionId}/image${safeExt(ext)}`,
  variant: (fileId: string, versionId: string, name: string, ext: string) => `files/${fileId}/${versionId}/${name}${safeExt(ext)}`,
}

function safeExt(ext: string): string {
  return /^[a-z0-9]{1,8}$/.test(ext) ? `.${ext}` : ''
}
