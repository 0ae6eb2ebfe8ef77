/**
 * Which values every backend stores exactly: the JSON values that survive
 * `JSON.stringify` then `JSON.parse` unchanged, and whose strings PostgreSQL
 * (`text`, `jsonb`) stores as given.
 *
 * - Strings (values and object keys) must be well-formed UTF-16 (no lone
 *   surrogate: drivers encode one as U+FFFD, so two strings would become
 *   one) and must not contain U+0000 (PostgreSQL refuses it in `text` and
 *   `jsonb`).
 * - Numbers must be finite: `JSON.stringify` writes NaN and ±Infinity as
 *   `null`, which a schema then no longer decodes. `-0` is accepted: JSON
 *   writes it as `0`, which compares equal (`-0 === 0`) and which every
 *   schema decodes alike.
 * - Arrays have no holes and no `undefined` elements (JSON writes `null`);
 *   objects are plain (prototype `Object.prototype` or `null`) and have no
 *   property whose value is `undefined` (JSON drops it). Dates, Maps, class
 *   instances, functions, symbols and bigints are refused, as are cycles and
 *   nesting deeper than {@link maxJsonDepth} levels.
 * - Only own enumerable string-keyed properties are looked at, as
 *   `JSON.stringify` does: symbol-keyed and non-enumerable properties are
 *   not data, and are not checked (looking for them would cost an
 *   allocation per object on every send).
 *
 * The check runs on every send, so it walks the value once, allocates
 * nothing per primitive, builds the path only when it has found a problem,
 * and never throws (a throwing getter or Proxy is reported as a problem).
 *
 * @internal
 */

/** Containers nested deeper than this are refused (`[[1]]` is nested 2 levels). */
export const maxJsonDepth = 1000

/**
 * Why `s` cannot be stored exactly by every backend, or `undefined`: it must
 * be well-formed Unicode (every surrogate in a pair) without U+0000.
 */
export const stringProblem = (s: string): string | undefined => {
  // A scan of code units: no allocation, and on V8 faster than a regex for
  // the short strings (tags, ids, field values) that make up most payloads.
  const length = s.length
  for (let i = 0; i < length; i++) {
    const unit = s.charCodeAt(i)
    if (unit < 0xd800) {
      if (unit === 0) return `contains NUL (U+0000) at index ${i}`
    } else if (unit <= 0xdfff) {
      if (unit <= 0xdbff) {
        const next = s.charCodeAt(i + 1)
        if (next >= 0xdc00 && next <= 0xdfff) {
          i++
          continue
        }
      }
      return `contains a lone surrogate (U+${unit.toString(16).toUpperCase()}) at index ${i}`
    }
  }
  return undefined
}

const identifier = /^[A-Za-z_$][A-Za-z0-9_$]*$/

/** A path such as `$.items[3].price`; very deep paths keep their first and last segments. */
const formatPath = (root: string, keys: ReadonlyArray<string | number>, length: number): string => {
  const segment = (key: string | number) =>
    typeof key === "number" ? `[${key}]` : identifier.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`
  let path = root
  if (length <= 24) {
    for (let i = 0; i < length; i++) path += segment(keys[i]!)
  } else {
    for (let i = 0; i < 12; i++) path += segment(keys[i]!)
    path += `…(${length - 20} more)…`
    for (let i = length - 8; i < length; i++) path += segment(keys[i]!)
  }
  return path
}

const describeThrown = (cause: unknown): string => {
  try {
    return cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause)
  } catch {
    return "a value that cannot be printed"
  }
}

/** What a non-plain object is, for the message. */
const describeObject = (value: object): string => {
  if (value instanceof Date) return "a Date is not a JSON value (encode it, e.g. as an ISO string or epoch milliseconds)"
  if (value instanceof Map) return "a Map is not a JSON value"
  if (value instanceof Set) return "a Set is not a JSON value"
  // Named after its class only when its prototype is that class's own prototype.
  const prototype: unknown = Object.getPrototypeOf(value)
  const constructor: unknown = typeof prototype === "object" && prototype !== null &&
      Object.prototype.hasOwnProperty.call(prototype, "constructor")
    ? (prototype as { readonly constructor: unknown }).constructor
    : undefined
  const name = typeof constructor === "function" && constructor.prototype === prototype ? constructor.name : ""
  return name !== ""
    ? `an instance of ${name} is not a JSON value (only plain objects are)`
    : "an object with a custom prototype is not a JSON value (only plain objects are)"
}

/**
 * One walk over one value. `keys[d]` is the key under which the value at
 * depth `d + 1` was reached and `ancestors[d]` the container at depth `d`,
 * both written before descending, so a problem's path is known without
 * building anything on the way down.
 */
const walk = (
  value: unknown,
  depth: number,
  keys: Array<string | number>,
  ancestors: Array<object>,
  root: string
): string | undefined => {
  switch (typeof value) {
    case "string": {
      const problem = stringProblem(value)
      return problem === undefined ? undefined : `at ${formatPath(root, keys, depth)}: string ${problem}`
    }
    case "number":
      return Number.isFinite(value) ? undefined : `at ${formatPath(root, keys, depth)}: ${value} is not a JSON number`
    case "boolean":
      return undefined
    case "object":
      return value === null ? undefined : walkContainer(value, depth, keys, ancestors, root)
    case "undefined":
      return `at ${formatPath(root, keys, depth)}: undefined is not a JSON value`
    case "bigint":
      return `at ${formatPath(root, keys, depth)}: a bigint is not a JSON value (encode it as a string)`
    case "function":
      return `at ${formatPath(root, keys, depth)}: a function is not a JSON value`
    case "symbol":
      return `at ${formatPath(root, keys, depth)}: a symbol is not a JSON value`
  }
}

const walkContainer = (
  value: object,
  depth: number,
  keys: Array<string | number>,
  ancestors: Array<object>,
  root: string
): string | undefined => {
  for (let i = 0; i < depth; i++) {
    if (ancestors[i] === value) return `at ${formatPath(root, keys, depth)}: a cycle (the value contains itself, at ${formatPath(root, keys, i)})`
  }
  if (depth >= maxJsonDepth) return `at ${formatPath(root, keys, depth)}: nested deeper than ${maxJsonDepth} levels`
  try {
    ancestors[depth] = value
    if (Array.isArray(value)) {
      if (Object.getPrototypeOf(value) !== Array.prototype) {
        return `at ${formatPath(root, keys, depth)}: ${describeObject(value)}`
      }
      const array: ReadonlyArray<unknown> = value
      const length = array.length
      for (let i = 0; i < length; i++) {
        const element = array[i]
        keys[depth] = i
        if (element === undefined) {
          return `at ${formatPath(root, keys, depth + 1)}: ${
            i in array ? "undefined is not a JSON value (JSON writes null)" : "a hole in an array (JSON writes null)"
          }`
        }
        const problem = walk(element, depth + 1, keys, ancestors, root)
        if (problem !== undefined) return problem
      }
      return undefined
    }
    const prototype: unknown = Object.getPrototypeOf(value)
    if (prototype !== Object.prototype && prototype !== null) return `at ${formatPath(root, keys, depth)}: ${describeObject(value)}`
    const record = value as Readonly<Record<string, unknown>>
    const names = Object.keys(record)
    for (let i = 0; i < names.length; i++) {
      const key = names[i]!
      const keyProblem = stringProblem(key)
      if (keyProblem !== undefined) return `at ${formatPath(root, keys, depth)}: key ${JSON.stringify(key)} ${keyProblem}`
      const property = record[key]
      keys[depth] = key
      if (property === undefined) {
        return `at ${formatPath(root, keys, depth + 1)}: undefined is not a JSON value (JSON drops the property)`
      }
      const problem = walk(property, depth + 1, keys, ancestors, root)
      if (problem !== undefined) return problem
    }
    return undefined
  } catch (cause) {
    return `at ${formatPath(root, keys, depth)}: reading the value threw ${describeThrown(cause)}`
  }
}

const noKeys: Array<string | number> = []
const noAncestors: Array<object> = []

/**
 * Why `value` is not a JSON value that every backend stores and returns
 * exactly, or `undefined` when it is one (see the module comment for the
 * rules). The reason names where the problem is, from `root`:
 * `at $.items[3].price: NaN is not a JSON number`. Never throws.
 */
export const jsonProblem = (value: unknown, root = "$"): string | undefined => {
  // A primitive needs no path bookkeeping: nothing is written to `keys` or `ancestors` at depth 0.
  if (typeof value !== "object" || value === null) return walk(value, 0, noKeys, noAncestors, root)
  try {
    return walkContainer(value, 0, [], [], root)
  } catch (cause) {
    // Only reachable through a failure while building a message (a Proxy
    // key whose JSON.stringify throws, say): still a problem, never a throw.
    return `at ${root}: the value could not be checked: ${describeThrown(cause)}`
  }
}
