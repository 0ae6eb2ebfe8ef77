/**
 * Spans that cost nothing when nobody keeps them: they are made only when a
 * tracer is installed (`@effect/opentelemetry`, `Effect.withTracer`,
 * `Layer.setTracer`). Effect's own default tracer exports nothing, and
 * making its spans cost two fifths of an in-memory send. The tracer is
 * looked up on each call, so one installed later, or for one fiber only, is
 * honoured.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as Tracer from "effect/Tracer"

/** Effect's default tracer, which exports nothing. */
const defaultTracer = Effect.runSync(Effect.tracer)

/** Whether `fiber` runs with a tracer other than Effect's default one (spans are kept). */
export const isTracing = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean => fiber.currentTracer !== defaultTracer

/** `traced(self)` when a tracer that exports spans is installed, else `self` as it is. */
export const whenTraced = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  traced: (self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> => Effect.tracerWith((tracer) => tracer === defaultTracer ? self : traced(self))

/** `Effect.withSpan(name, options)` (data-last, no stack trace) when a tracer is installed. */
export const span = (name: string, options: Omit<Tracer.SpanOptions, "captureStackTrace"> = {}) => {
  const withOptions = { ...options, captureStackTrace: false }
  return <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    whenTraced(self, (effect) => Effect.withSpan(effect, name, withOptions))
}
