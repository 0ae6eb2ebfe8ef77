/**
 * A one-shot outcome one fiber waits for: what a `Deferred` does for the
 * group commit's queued callers and the instance lock's waiters, without
 * building one per wait (making a `Deferred` copies Effect's whole commit
 * prototype into a new object: about 4% of a 64-instance SQLite send's
 * profile).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"

export interface Signal<A, E> {
  /** The outcome, once `complete` has given it. */
  outcome: Exit.Exit<A, E> | undefined
  /** The waiting fiber's resumption, while it waits. */
  resume: ((outcome: Exit.Exit<A, E>) => void) | undefined
}

export const make = <A, E = never>(): Signal<A, E> => ({ outcome: undefined, resume: undefined })

/** Gives `signal` its outcome and resumes its waiter, if any; later calls change nothing. */
export const complete = <A, E>(signal: Signal<A, E>, outcome: Exit.Exit<A, E>): void => {
  if (signal.outcome !== undefined) return
  signal.outcome = outcome
  const resume = signal.resume
  signal.resume = undefined
  resume?.(outcome)
}

/** The outcome of `signal`, once there; interrupting the wait only stops waiting. */
export const wait = <A, E>(signal: Signal<A, E>): Effect.Effect<A, E> =>
  Effect.async<A, E>((resume) => {
    if (signal.outcome !== undefined) return resume(signal.outcome)
    signal.resume = resume
    return Effect.sync(() => {
      signal.resume = undefined
    })
  })
