/**
 * Reading layer options: a duration in whole milliseconds, or the typed
 * `InvalidConfiguration` that names the component and the option. Options
 * are checked once, when a layer is built, never later.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { InvalidConfiguration } from "../Errors.js"
import { describeValue } from "./describe.js"

/** `input` (or `fallback` when absent) as whole milliseconds of at least 1 ms (rounded up: times are stored as integers). */
export const durationMillis = (
  component: string,
  option: string,
  input: unknown,
  fallback: number
): Effect.Effect<number, InvalidConfiguration> => {
  if (input === undefined) return Effect.succeed(fallback)
  const decoded = Duration.decodeUnknown(input)
  const millis = Option.isSome(decoded) ? Duration.toMillis(decoded.value) : NaN
  return Number.isFinite(millis) && millis >= 1
    ? Effect.succeed(Math.ceil(millis))
    : Effect.fail(
      new InvalidConfiguration({
        component,
        option,
        reason: `must be a finite duration of at least 1 ms, got ${describeValue(input)}`
      })
    )
}
