/**
 * graphql-upload-minimal's processRequest, with a `map` that can only reach the request's own data.
 *
 * The library places each file by walking the `map` field's dot paths through `operations` (parsed
 * JSON) with `object[prop]`, refusing only `__proto__` and `constructor`. Inherited properties are
 * walked too, so `variables.hasOwnProperty.call` replaced a method of Object.prototype for the whole
 * process: one anonymous request took every later one down (1.6.4, the latest release). The walk
 * here follows own properties of the parsed objects and arrays only.
 *
 * processRequest takes the walk from its sibling module when it is loaded, so the walk is replaced
 * there first and processRequest is then loaded anew from that module; the library's other parts
 * (Upload, its errors) stay the instances the rest of the app imports.
 */
import { createRequire } from 'node:module'
import path from 'node:path'
import type { processRequest as ProcessRequest } from 'graphql-upload-minimal'

const require = createRequire(import.meta.url)
// By file (the package's `exports` maps only its entry point): the modules beside its CommonJS entry.
const modules = path.dirname(require.resolve('graphql-upload-minimal'))
const HttpError = require(path.join(modules, 'HttpError.js')) as new (status: number, message: string) => Error
const objectUtils = require(path.join(modules, 'object-utils.js')) as { deepSet: (object: unknown, path: string, value: unknown) => void }

/** Never set by a path, even as an own property of the request's data. */
const FORBIDDEN = new Set(['__proto__', 'constructor', 'prototype'])

/** Sets `value` at the dot `path` of `object`, through own properties of plain objects and arrays only. */
export function setOwnPath(object: unknown, path: string, value: unknown): void {
  const props = path.split('.')
  const last = props.pop()!
  let target = object
  for (const prop of props) {
    if (!isData(target) || !Object.hasOwn(target, prop)) throw new HttpError(400, `The path "${path}" was not found in the GraphQL operations.`)
    target = (target as Record<string, unknown>)[prop]
  }
  if (!isData(target) || last === '' || FORBIDDEN.has(last)) throw new HttpError(400, `The path "${path}" is not a variable of the GraphQL operations.`)
  ;(target as Record<string, unknown>)[last] = value
}

/** What JSON.parse makes of an object or array (the only containers a path may walk through). */
function isData(value: unknown): value is object {
  if (value === null || typeof value !== 'object') return false
  const proto: unknown = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === Array.prototype
}

objectUtils.deepSet = setOwnPath
const processRequestPath = path.join(modules, 'processRequest.js')
delete require.cache[processRequestPath]

export const processRequest = require(processRequestPath) as typeof ProcessRequest
