/**
 * The runtime's spans: `traced(name, attributes)` wraps an operation in a
 * span, and `traced(name, attributes, annotate)` adds attributes known only
 * from its result (the `seqNr` of a commit) to that same span. Without the
 * call site's stack trace: capturing it (a `new Error()` and a copy of the
 * options per call) costs more than the span itself. With tracing disabled
 * the operation runs as it is, and nothing annotates the caller's span.
 *
 * Spans are made only when a tracer is installed (see `../spans.ts`).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import { whenTraced } from "../spans.js"

export type Attributes = Record<string, unknown>

export interface Traced {
  (name: string, attributes: Attributes): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A>(
    name: string,
    attributes: Attributes,
    annotate: (result: A) => Attributes
  ): <E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

const untraced = <A, E, R>(self: Effect.Effect<A, E, R>) => self

export const makeTraced = (disabled: boolean): Traced => {
  if (disabled) return (() => untraced) as Traced
  return ((name: string, attributes: Attributes, annotate?: (result: unknown) => Attributes) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
    const options = { attributes, captureStackTrace: false }
    if (annotate === undefined) return whenTraced(self, (effect) => Effect.withSpan(effect, name, options))
    // What `withSpan` does, with the result's attributes set on the span
    // itself: no Effect and no lookup of the current span per call.
    return whenTraced(self, (effect) =>
      Effect.useSpan(name, options, (span) =>
        Effect.withParentSpan(
          Effect.map(effect, (result) => {
            const extra = annotate(result)
            for (const key in extra) span.attribute(key, extra[key])
            return result
          }),
          span
        )))
  }) as Traced
}
