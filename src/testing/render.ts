/**
 * Values as the testkit shows them in failure messages, and the line diff of
 * two of them.
 *
 * `render` is canonical: `_tag` first, then the other keys in alphabetical
 * order; properties that are `undefined` left out; `-0`, `NaN`, bigints,
 * dates, maps, sets and cycles spelt out. Two values are equal for the
 * testkit exactly when they render the same, so a message's diff never
 * shows a difference that does not count, nor hides one that does.
 *
 * @internal
 */

const indentOf = (depth: number) => "  ".repeat(depth)

const keyOf = (key: string) => (/^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key))

const sortedKeys = (value: object): Array<string> =>
  Object.keys(value)
    .filter((key) => (value as Record<string, unknown>)[key] !== undefined)
    .sort((a, b) => (a === "_tag" ? -1 : b === "_tag" ? 1 : a < b ? -1 : a > b ? 1 : 0))

const renderAt = (value: unknown, depth: number, seen: Set<object>, inline: boolean): string => {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value)
    case "number":
      return Object.is(value, -0) ? "-0" : String(value)
    case "bigint":
      return `${value}n`
    case "boolean":
      return String(value)
    case "undefined":
      return "undefined"
    case "symbol":
      return value.toString()
    case "function":
      return `[Function ${value.name === "" ? "(anonymous)" : value.name}]`
  }
  if (value === null) return "null"
  const object = value as object
  if (seen.has(object)) return "[Circular]"
  if (object instanceof Date) return `Date(${Number.isNaN(object.getTime()) ? "invalid" : object.toISOString()})`
  seen.add(object)
  try {
    const inner = indentOf(depth + 1)
    const close = indentOf(depth)
    const block = (open: string, items: ReadonlyArray<string>, end: string) =>
      items.length === 0
        ? `${open}${end}`
        : inline
        ? `${open}${open.endsWith("{") ? " " : ""}${items.join(", ")}${end === "}" ? " " : ""}${end}`
        : `${open}\n${items.map((item) => `${inner}${item},`).join("\n")}\n${close}${end}`
    if (Array.isArray(object)) {
      const items: Array<string> = []
      for (let i = 0; i < object.length; i++) items.push(i in object ? renderAt(object[i], depth + 1, seen, inline) : "<hole>")
      return block("[", items, "]")
    }
    if (object instanceof Map) {
      return block(
        "Map {",
        [...object].map(([k, v]) => `${renderAt(k, depth + 1, seen, inline)} => ${renderAt(v, depth + 1, seen, inline)}`),
        "}"
      )
    }
    if (object instanceof Set) {
      return block("Set {", [...object].map((v) => renderAt(v, depth + 1, seen, inline)), "}")
    }
    const record = object as Record<string, unknown>
    const entries = sortedKeys(object).map((key) => `${keyOf(key)}: ${renderAt(record[key], depth + 1, seen, inline)}`)
    if (object instanceof Error && !Object.keys(record).includes("message")) {
      entries.unshift(`message: ${JSON.stringify(object.message)}`)
    }
    return block("{", entries, "}")
  } finally {
    seen.delete(object)
  }
}

/** `value`, canonical and indented (see the module comment). */
export const render = (value: unknown): string => renderAt(value, 0, new Set(), false)

/** `value`, canonical, on one line: for naming steps in messages. */
export const renderInline = (value: unknown): string => renderAt(value, 0, new Set(), true)

/**
 * A line diff of two renderings: common lines indented by two spaces, lines
 * only in `expected` marked `- `, lines only in `actual` marked `+ `.
 */
export const diffLines = (expected: string, actual: string): string => {
  const a = expected.split("\n")
  const b = actual.split("\n")
  // Longest common subsequence, by suffix lengths.
  const lengths: Array<Array<number>> = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0))
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lengths[i]![j] = a[i] === b[j] ? lengths[i + 1]![j + 1]! + 1 : Math.max(lengths[i + 1]![j]!, lengths[i]![j + 1]!)
    }
  }
  const lines: Array<string> = []
  let i = 0
  let j = 0
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      lines.push(`  ${a[i]}`)
      i++
      j++
    } else if (i < a.length && (j === b.length || lengths[i + 1]![j]! >= lengths[i]![j + 1]!)) {
      lines.push(`- ${a[i]}`)
      i++
    } else {
      lines.push(`+ ${b[j]}`)
      j++
    }
  }
  return lines.join("\n")
}
