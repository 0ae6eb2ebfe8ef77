/**
 * The time every stored value uses: whole epoch milliseconds from Effect's
 * `Clock`. The live clock already gives whole milliseconds; a `TestClock`
 * that ran a jittered schedule need not, and SQL columns are integers.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"

export const nowMillis: Effect.Effect<number> = Effect.map(Clock.currentTimeMillis, Math.floor)

/**
 * `nowMillis` read synchronously from a fiber's own `Clock` (what
 * `Effect.withFiberRuntime` gives): the same time, without the three Effects
 * of a clock lookup on a hot path.
 */
export const fiberNowMillis = (fiber: Fiber.RuntimeFiber<unknown, unknown>): number =>
  Math.floor(Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis())
