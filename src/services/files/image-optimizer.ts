import sharp, { type Sharp } from 'sharp'
import type { ImageVariantSpec } from '../../config'
import { ValidationError } from '../../lib/errors'
import { SVG_TYPE } from './file-types'

export interface ImageLimits {
  maxEdge: number
  maxPixels: number
  maxFrames: number
}

export interface ImageInfo {
  width: number
  height: number
  frames: number
}

export interface RenderedImage {
  data: Buffer
  mimeType: string
  ext: string
  width: number
  height: number
}

const ANIMATED_TYPES = new Set(['image/gif', 'image/webp'])

/**
 * Reads the header only: dimensions and frame count are checked before anything is decoded, so a
 * decompression bomb (a tiny file that inflates to gigapixels) or a 10,000-frame GIF is refused cheaply.
 */
export async function inspectImage(input: Buffer, mimeType: string, limits: ImageLimits): Promise<ImageInfo> {
  let meta
  try {
    meta = await open(input, mimeType, limits.maxPixels).metadata()
  } catch (err) {
    throw asImageError(err, limits.maxPixels)
  }
  const frames = meta.pages ?? 1
  const height = meta.pageHeight ?? meta.height ?? 0
  const width = meta.width ?? 0
  if (width * height * (ANIMATED_TYPES.has(mimeType) ? frames : 1) > limits.maxPixels) throw pixelError(limits.maxPixels)
  if (frames > limits.maxFrames) throw ValidationError.field(['file'], `The animation has ${frames} frames; at most ${limits.maxFrames} are allowed`)
  return { width, height, frames }
}

/**
 * Auto-rotates (so EXIF orientation survives the metadata strip), strips metadata (GPS and camera
 * data leak privacy), shrinks to the maximum edge and re-encodes in the same format. An SVG is
 * rasterised to PNG from the buffer: scripts and external references never survive, and librsvg
 * gets no base path to resolve relative hrefs against.
 */
export async function optimizeImage(input: Buffer, mimeType: string, limits: ImageLimits): Promise<RenderedImage> {
  let pipeline = open(input, mimeType, limits.maxPixels, ANIMATED_TYPES.has(mimeType))
    .rotate()
    .resize({ width: limits.maxEdge, height: limits.maxEdge, fit: 'inside', withoutEnlargement: true })
  let out: { mimeType: string; ext: string }
  switch (mimeType) {
    case 'image/jpeg':
      pipeline = pipeline.jpeg({ quality: 82, mozjpeg: true })
      out = { mimeType, ext: 'jpg' }
      break
    case 'image/png':
    case SVG_TYPE:
      pipeline = pipeline.png({ compressionLevel: 8, adaptiveFiltering: true })
      out = { mimeType: 'image/png', ext: 'png' }
      break
    case 'image/webp':
      pipeline = pipeline.webp({ quality: 80 })
      out = { mimeType, ext: 'webp' }
      break
    case 'image/avif':
      pipeline = pipeline.avif({ quality: 55, effort: 4 })
      out = { mimeType, ext: 'avif' }
      break
    case 'image/gif':
      pipeline = pipeline.gif()
      out = { mimeType, ext: 'gif' }
      break
    default:
      throw new ValidationError(`Cannot optimise ${mimeType}`)
  }
  return render(pipeline, out, limits.maxPixels)
}

/** A derived image (thumbnail, preview): the first frame, fitted inside the variant's edge. */
export async function renderVariant(input: Buffer, mimeType: string, spec: ImageVariantSpec, maxPixels: number): Promise<RenderedImage> {
  let pipeline = open(input, mimeType, maxPixels).resize({ width: spec.maxEdge, height: spec.maxEdge, fit: 'inside', withoutEnlargement: true })
  switch (spec.format) {
    case 'webp':
      pipeline = pipeline.webp({ quality: 78 })
      break
    case 'jpeg':
      pipeline = pipeline.flatten({ background: '#ffffff' }).jpeg({ quality: 80, mozjpeg: true })
      break
    case 'png':
      pipeline = pipeline.png({ compressionLevel: 8 })
      break
    case 'avif':
      pipeline = pipeline.avif({ quality: 50, effort: 4 })
      break
  }
  return render(pipeline, { mimeType: `image/${spec.format}`, ext: spec.format === 'jpeg' ? 'jpg' : spec.format }, maxPixels)
}

function open(input: Buffer, mimeType: string, maxPixels: number, animated = false): Sharp {
  // failOn 'warning' is sharp's strictest: a truncated or corrupt image fails instead of decoding as grey.
  return sharp(input, { limitInputPixels: maxPixels, failOn: 'warning', animated: animated && mimeType !== SVG_TYPE })
}

async function render(pipeline: Sharp, out: { mimeType: string; ext: string }, maxPixels: number): Promise<RenderedImage> {
  try {
    const { data, info } = await pipeline.toBuffer({ resolveWithObject: true })
    return { data, ...out, width: info.width, height: info.pageHeight ?? info.height }
  } catch (err) {
    throw asImageError(err, maxPixels)
  }
}

function pixelError(maxPixels: number): ValidationError {
  return ValidationError.field(['file'], `The image exceeds the limit of ${maxPixels} pixels`)
}

function asImageError(err: unknown, maxPixels: number): Error {
  if (err instanceof ValidationError) return err
  const message = err instanceof Error ? err.message : ''
  if (/pixel limit/i.test(message)) return pixelError(maxPixels)
  return ValidationError.field(['file'], 'The image is corrupt or cannot be decoded')
}
