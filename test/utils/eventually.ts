/**
 * Waits for background fibers (timeout deliveries, sweepers) to settle
 * without any clock: retries `check` after yielding to the event loop, so
 * database I/O can complete. TestClock time does not move.
 */
import { Effect } from "effect"

const yieldToEventLoop = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

export const eventually = <A, E, R>(
  check: Effect.Effect<A, E, R>,
  minTries = 2_000,
  maxMillis = 20_000
): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    // Let already-scheduled work run before the first look.
    for (let i = 0; i < 20; i++) {
      yield* Effect.yieldNow()
      yield* yieldToEventLoop
    }
    // Bounded by tries and by real time (never by TestClock time), so a
    // loaded machine whose database answers slowly still gets its chance.
    const started = Date.now()
    let tries = 0
    while (true) {
      const result = yield* Effect.either(check)
      if (result._tag === "Right") return result.right
      if (++tries >= minTries && Date.now() - started >= maxMillis) return yield* Effect.fail(result.left)
      yield* Effect.yieldNow()
      yield* yieldToEventLoop
    }
  })
