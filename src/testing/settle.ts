/**
 * Waiting for background fibers (timer deliveries, sweepers, dispatchers)
 * without moving any clock: a check is retried after yielding to the
 * JavaScript event loop, so database I/O can complete, while `TestClock`
 * time stands still.
 *
 * @internal
 */
import * as Effect from "effect/Effect"

/** Lets pending I/O callbacks and timers of the host run once. */
export const yieldToEventLoop: Effect.Effect<void> = Effect.promise(() =>
  new Promise<void>((resolve) => setImmediate(resolve))
)

/**
 * Runs `check` until it succeeds; fails with its last error once it has
 * been tried `minTries` times and `maxMillis` of real time have passed
 * (both bounds, so a loaded machine whose database answers slowly still
 * gets its chance). TestClock time does not move.
 */
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
