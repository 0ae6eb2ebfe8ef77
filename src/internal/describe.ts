/**
 * Readable text for values of unknown shape (thrown values, odd input) in
 * error messages. Never throws, and never returns more than a few hundred
 * characters, whatever it is given.
 *
 * @internal
 */

const maxLength = 300

const clip = (text: string): string => text.length <= maxLength ? text : `${text.slice(0, maxLength)}…`

export const describeValue = (value: unknown): string => {
  try {
    if (value instanceof Error) return clip(`${value.name}: ${value.message}`)
    if (typeof value === "string") return clip(JSON.stringify(value))
    if (typeof value === "bigint" || typeof value === "symbol" || typeof value === "function") return clip(String(value))
    const json = JSON.stringify(value)
    return clip(json === undefined ? String(value) : json)
  } catch {
    return Object.prototype.toString.call(value)
  }
}
