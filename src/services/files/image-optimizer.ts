import sharp, { type Sharp } from 'sharp'
import { ValidationError } from '../../lib/errors'

export interface ImageOptions {
  maxEdge: number
  maxPixels: number
}

export interface OptimizedImage {
  data: Buffer
  mimeType: string
  width: number
  height: number
}

export const IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/avif'])

/**
 * Auto-rotates (so EXIF orientation survives the metadata strip), strips metadata (GPS and camera
 * data leak privacy), bounds the pixel count before decoding (decompression bombs), shrinks to the
 * maximum edge, and re-encodes in the same format.
 */
export async function optimizeImage(input: Buffer, mimeType: string, options: ImageOptions): Promise<OptimizedImage> {
  const animated = mimeType === 'image/gif' || mimeType === 'image/webp'
  let pipeline: Sharp
  try {
    pipeline = sharp(input, { limitInputPixels: options.maxPixels, failOn: 'error', animated })
    const meta = await pipeline.metadata()
    const pixels = (meta.width ?? 0) * (meta.pageHeight ?? meta.height ?? 0)
    if (pixels > options.maxPixels) throw pixelError(options.maxPixels)
  } catch (err) {
    throw asImageError(err, options.maxPixels)
  }
  pipeline = pipeline.rotate().resize({ width: options.maxEdge, height: options.maxEdge, fit: 'inside', withoutEnlargement: true })
  switch (mimeType) {
    case 'image/jpeg':
      pipeline = pipeline.jpeg({ quality: 82, mozjpeg: true })
      break
    case 'image/png':
      pipeline = pipeline.png({ compressionLevel: 8, adaptiveFiltering: true })
      break
    case 'image/webp':
      pipeline = pipeline.webp({ quality: 80 })
      break
    case 'image/avif':
      pipeline = pipeline.avif({ quality: 55, effort: 4 })
      break
    case 'image/gif':
      pipeline = pipeline.gif()
      break
    default:
      throw new ValidationError(`Cannot optimise ${mimeType}`)
  }
  try {
    const { data, info } = await pipeline.toBuffer({ resolveWithObject: true })
    return { data, mimeType, width: info.width, height: info.pageHeight ?? info.height }
  } catch (err) {
    throw asImageError(err, options.maxPixels)
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
