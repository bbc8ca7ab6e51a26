/**
 * Hooks attached to the routes that need them (from an onRoute hook) rather than to the whole app:
 * a global hook runs on every request, the tracking pixel's included.
 */

/** A route option's hooks as a list (it may hold none, one, or several). */
export function hookList<T>(hooks: T | T[] | undefined): T[] {
  return hooks === undefined ? [] : Array.isArray(hooks) ? hooks : [hooks]
}
