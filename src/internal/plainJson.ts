/**
 * Values as JSON should carry them: an `Option` becomes its value or
 * `null` (its own `toJSON` would print its structure), inside arrays and
 * plain objects. Shared by the CLI's `--json` and the web inspector's API.
 *
 * @internal
 */
import * as Option from "effect/Option"

export const plain = (value: unknown): unknown => {
  if (Option.isOption(value)) return plain(Option.getOrNull(value as Option.Option<unknown>))
  if (Array.isArray(value)) return value.map(plain)
  if (typeof value === "object" && value !== null && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([key, field]) => [key, plain(field)]))
  }
  return value
}
