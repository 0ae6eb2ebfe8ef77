/**
 * Durable timer rows: what the durable timeout strategy's sweeper claims,
 * completes, retries and dead-letters.
 *
 * Timers are written by `EventStore.append` in the same commit as the event
 * that entered (or left) their state, so they live in the same database as
 * the event log; every backend layer that provides an `EventStore` provides
 * the matching `TimeoutStore` too. Times are epoch milliseconds taken from
 * Effect's `Clock` by the caller and passed in, so `TestClock` drives every
 * backend alike.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type { PersistenceError } from "./Errors.js"

/**
 * Identifies one timer of one instance. An instance has at most one timer of
 * a name at a time: the timers of the state it is in.
 *
 * @since 0.1.0
 */
export interface TimerKey {
  readonly machine: string
  readonly instanceId: string
  readonly name: string
  /** Sequence number of the event that entered the state that armed the timer. */
  readonly generation: number
}

/**
 * A timer as a commit schedules it.
 *
 * @since 0.1.0
 */
export interface ScheduledTimer {
  readonly name: string
  readonly stateTag: string
  readonly generation: number
  /** Epoch milliseconds. */
  readonly dueAt: number
  /** The encoded timeout event. */
  readonly payload: unknown
}

/**
 * A stored timer.
 *
 * @since 0.1.0
 */
export interface TimerRecord extends ScheduledTimer, TimerKey {
  /** Failed deliveries so far. */
  readonly attempts: number
  readonly lastError: string | null
}

/**
 * A timer that failed too often, with the last error.
 *
 * @since 0.1.0
 */
export interface DeadLetter extends TimerRecord {
  readonly failedAt: number
}

/**
 * The timer changes one commit makes, applied with its events as a unit.
 *
 * @since 0.1.0
 */
export interface TimerChanges {
  /** Delete every timer of the instance first (it left its state, or stopped). */
  readonly cancelAll: boolean
  /** Timers of the state the instance entered. */
  readonly schedule: ReadonlyArray<ScheduledTimer>
  /**
   * The timer this commit delivers: it must still be stored with this
   * generation (else the commit fails with `StaleTimer` and writes nothing),
   * and it is deleted.
   */
  readonly fired?: { readonly name: string; readonly generation: number } | undefined
}

/**
 * Options of `claimDue`.
 *
 * @since 0.1.0
 */
export interface ClaimOptions {
  /** Only timers of these machines. */
  readonly machines: ReadonlyArray<string>
  /** Epoch ms: timers with `dueAt <= now` whose claim, if any, ended at or before `now`. */
  readonly now: number
  readonly limit: number
  readonly nodeId: string
  /** Epoch ms until which the claimed timers belong to `nodeId`. */
  readonly claimUntil: number
}

/**
 * The timer store service.
 *
 * @since 0.1.0
 */
export class TimeoutStore extends Context.Tag("effect-fsm/TimeoutStore")<TimeoutStore, {
  /**
   * Claims up to `limit` due timers, oldest deadline first. A timer claimed
   * by another node whose claim has not expired is skipped; several nodes
   * calling at once never get the same timer.
   */
  readonly claimDue: (options: ClaimOptions) => Effect.Effect<ReadonlyArray<TimerRecord>, PersistenceError>
  /** Deletes the timer if it is still stored with this generation. */
  readonly complete: (timer: TimerKey) => Effect.Effect<void, PersistenceError>
  /** Releases the claim, counts a failed attempt and moves the deadline to `dueAt`. */
  readonly retryLater: (
    timer: TimerKey,
    options: { readonly dueAt: number; readonly error: string }
  ) => Effect.Effect<void, PersistenceError>
  /** Moves the timer to the dead-letter table with the error, atomically. */
  readonly deadLetter: (
    timer: TimerKey,
    options: { readonly error: string; readonly now: number }
  ) => Effect.Effect<void, PersistenceError>
  /**
   * The earliest time at which `claimDue` could return one of the machines'
   * timers: its deadline, or the end of its claim if that is later.
   */
  readonly nextDueAt: (machines: ReadonlyArray<string>) => Effect.Effect<Option.Option<number>, PersistenceError>
  /** The timers an instance has now. */
  readonly pending: (machine: string, instanceId: string) => Effect.Effect<ReadonlyArray<TimerRecord>, PersistenceError>
  /** Dead letters of a machine. */
  readonly deadLetters: (machine: string) => Effect.Effect<ReadonlyArray<DeadLetter>, PersistenceError>
  /**
   * Moves a dead letter back to the live timers, due at `now` with no
   * attempts counted. `false` when there is no such dead letter, or the
   * instance has a live timer of that name already.
   */
  readonly redrive: (
    timer: Omit<TimerKey, "generation">,
    now: number
  ) => Effect.Effect<boolean, PersistenceError>
  /**
   * Deletes a dead letter for good. `false` when there is none of that name.
   */
  readonly discard: (timer: Omit<TimerKey, "generation">) => Effect.Effect<boolean, PersistenceError>
  /**
   * An operator's "fire it now": moves a live timer's deadline to `dueAt`
   * and releases any claim, so the next sweep delivers it (through the
   * normal path: its commit still checks the generation, so it fires at
   * most once). `false` when the timer is no longer stored with this
   * generation.
   */
  readonly reschedule: (timer: TimerKey, dueAt: number) => Effect.Effect<boolean, PersistenceError>
  /**
   * An operator's "cancel it": deletes a live timer, so it never fires
   * (until its state is entered again). `false` when it is no longer stored
   * with this generation.
   */
  readonly cancel: (timer: TimerKey) => Effect.Effect<boolean, PersistenceError>
  /**
   * Up to `limit` live timers of a machine due before `before` (epoch ms),
   * soonest first (by deadline, then instance id and name): what fires next.
   */
  readonly upcoming: (
    machine: string,
    options: { readonly before: number; readonly limit: number }
  ) => Effect.Effect<ReadonlyArray<TimerRecord>, PersistenceError>
}>() {}
