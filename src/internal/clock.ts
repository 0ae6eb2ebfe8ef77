/**
 * The time every stored value uses: whole epoch milliseconds from Effect's
 * `Clock`. The live clock already gives whole milliseconds; a `TestClock`
 * that ran a jittered schedule need not, and SQL columns are integers.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"

export const nowMillis: Effect.Effect<number> = Effect.map(Clock.currentTimeMillis, Math.floor)
