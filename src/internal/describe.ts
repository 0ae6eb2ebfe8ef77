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

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

/**
 * An error text as every backend can store it: error messages may quote user
 * data, and PostgreSQL refuses NUL and lone surrogates (a row whose last error
 * cannot be written would never be retried or dead-lettered). Long texts are
 * cut.
 */
export const storableText = (text: string): string =>
  (text.length > 4000 ? `${text.slice(0, 4000)}…` : text).replace(/\u0000/g, "\uFFFD").replace(loneSurrogate, "\uFFFD")
