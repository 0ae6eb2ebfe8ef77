/**
 * Deadlines under `TestClock`: move the clock to the next deadline of an
 * instance (or of every instance of some machines) and wait until the
 * runtime's timeout strategy has delivered it, so a test says "the next
 * timeout fires" without knowing durations.
 *
 * ```ts
 * const fired = yield* TestDeadlines.advanceToNextDeadline(Order, "o1")
 * // { machine: "order", instanceId: "o1", name: "payment", dueAt: 300000, seqNr: 2, event: { _tag: "PaymentTimeout" } }
 * ```
 *
 * Works with both strategies, in-process (fibers sleeping on `Clock`) and
 * durable (a sweeper polling the timer table): the deadlines come from the
 * instances' state (`FSMRuntime.inspect`), the delivery is seen in their
 * history (an event whose metadata names the timer). Waiting for it takes
 * real time (database I/O must complete) but never moves the clock past the
 * deadline, unless `overshoot` allows it.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import type { MachineNotRegistered, PersistenceError } from "../Errors.js"
import * as FSMRuntime from "../FSMRuntime.js"
import type * as Machine from "../Machine.js"
import { yieldToEventLoop } from "./settle.js"

type Tagged = Machine.Tagged

/**
 * An armed deadline of an instance.
 *
 * @since 0.1.0
 */
export interface PendingDeadline {
  readonly machine: string
  readonly instanceId: string
  readonly name: string
  /** Epoch ms, on the runtime's `Clock`. */
  readonly dueAt: number
}

/**
 * A deadline that was delivered: the timeout event committed at `seqNr`.
 *
 * @since 0.1.0
 */
export interface Delivered<E> extends PendingDeadline {
  readonly seqNr: number
  readonly event: E
}

/**
 * No instance looked at has an armed deadline.
 *
 * @since 0.1.0
 */
export class NoDeadlineArmed extends Schema.TaggedError<NoDeadlineArmed>()(
  "NoDeadlineArmed",
  { machines: Schema.Array(Schema.String), instanceId: Schema.optional(Schema.String) }
) {
  override get message() {
    return this.instanceId === undefined
      ? `no instance of ${this.machines.join(", ")} has an armed deadline`
      : `${this.machines.join(", ")}/${this.instanceId}: no deadline is armed`
  }
}

/**
 * The clock reached the deadline but no delivery of it was committed in
 * time: no timeout strategy fires it here (a durable node with
 * `sweep: false`, a sweeper that polls later than the deadline), or the
 * machine rejected its event.
 *
 * @since 0.1.0
 */
export class DeadlineNotDelivered extends Schema.TaggedError<DeadlineNotDelivered>()(
  "DeadlineNotDelivered",
  {
    machine: Schema.String,
    instanceId: Schema.String,
    name: Schema.String,
    dueAt: Schema.Number,
    waitedMillis: Schema.Number
  }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: deadline "${this.name}" (due at ${this.dueAt}) was not delivered within ${this.waitedMillis} ms of real time: is a timeout strategy running that fires it, and does the state accept its event?`
  }
}

/**
 * Options of `advanceToNextDeadline`.
 *
 * @since 0.1.0
 */
export interface AdvanceOptions {
  /** Real time to wait for the delivery once the clock is at the deadline. Default 10 seconds. */
  readonly wait?: Duration.DurationInput
  /**
   * When the delivery has not come after the clock reached the deadline and
   * pending work settled, move the clock on by this much more (in one step)
   * and wait again: for sweepers that do not wake exactly at a deadline
   * (one whose rows another node wrote). Default 0: the clock never passes
   * the deadline.
   */
  readonly overshoot?: Duration.DurationInput
}

/**
 * Why `advanceToNextDeadline` failed.
 *
 * @since 0.1.0
 */
export type AdvanceError =
  | FSMRuntime.LoadError
  | PersistenceError
  | MachineNotRegistered
  | NoDeadlineArmed
  | DeadlineNotDelivered

const earliestOf = (
  machine: string,
  instanceId: string,
  timeouts: ReadonlyArray<{ readonly name: string; readonly dueAt: number }>
): Option.Option<PendingDeadline> => {
  let first: { readonly name: string; readonly dueAt: number } | undefined
  for (const timeout of timeouts) if (first === undefined || timeout.dueAt < first.dueAt) first = timeout
  return first === undefined ? Option.none() : Option.some({ machine, instanceId, name: first.name, dueAt: first.dueAt })
}

/**
 * The earliest armed deadline of an instance, without moving any clock.
 *
 * @example
 * ```ts
 * const next = yield* TestDeadlines.nextDeadline(Order, "o1")
 * // Option.some({ machine: "order", instanceId: "o1", name: "payment", dueAt: 300000 })
 * ```
 *
 * @since 0.1.0
 */
export const nextDeadline = <S extends Tagged, E extends Tagged, R>(
  machine: Machine.Machine<S, E, R>,
  instanceId: string
): Effect.Effect<Option.Option<PendingDeadline>, FSMRuntime.LoadError, FSMRuntime.FSMRuntime> =>
  Effect.flatMap(FSMRuntime.FSMRuntime, (runtime) =>
    Effect.map(
      runtime.inspect(machine, instanceId),
      (view) => view.stopped ? Option.none() : earliestOf(machine.name, instanceId, view.timeouts)
    ))

/**
 * The earliest armed deadline of any instance of `machines` (each must be
 * registered with the runtime), without moving any clock. It loads every
 * instance: meant for tests, not for large stores.
 *
 * @example
 * ```ts
 * const next = yield* TestDeadlines.nextDeadlineOf([Order, Invoice])
 * ```
 *
 * @since 0.1.0
 */
export const nextDeadlineOf = (
  machines: ReadonlyArray<Machine.Any>
): Effect.Effect<
  Option.Option<PendingDeadline>,
  FSMRuntime.LoadError | PersistenceError | MachineNotRegistered,
  FSMRuntime.FSMRuntime
> =>
  Effect.flatMap(FSMRuntime.FSMRuntime, (runtime) =>
    Effect.reduce(machines, Option.none<PendingDeadline>(), (found, machine) =>
      runtime.instances(machine).pipe(
        Stream.mapEffect((instanceId) => nextDeadline(machine, instanceId)),
        Stream.runFold(found, (best, candidate) =>
          Option.isSome(candidate) && (Option.isNone(best) || candidate.value.dueAt < best.value.dueAt) ? candidate : best)
      )))

/** The delivery of `deadline` committed after `afterSeqNr`, if there is one yet. */
const deliveryOf = <S extends Tagged, E extends Tagged, R>(
  runtime: FSMRuntime.FSMRuntime["Type"],
  machine: Machine.Machine<S, E, R>,
  deadline: PendingDeadline,
  afterSeqNr: number
): Effect.Effect<Option.Option<Delivered<E>>, FSMRuntime.LoadError> =>
  Effect.map(runtime.history(machine, deadline.instanceId, afterSeqNr + 1), (entries) => {
    for (const entry of entries) {
      if (entry._tag === "Event" && entry.metadata.source === "timeout" && entry.metadata.timer === deadline.name) {
        return Option.some({ ...deadline, seqNr: entry.seqNr, event: entry.event })
      }
    }
    return Option.none()
  })

/** Moves the clock to `deadline` (never back) and waits for its delivery. */
const advanceTo = <S extends Tagged, E extends Tagged, R>(
  machine: Machine.Machine<S, E, R>,
  deadline: PendingDeadline,
  options: AdvanceOptions
): Effect.Effect<Delivered<E>, FSMRuntime.LoadError | DeadlineNotDelivered, FSMRuntime.FSMRuntime> =>
  Effect.gen(function*() {
    const runtime = yield* FSMRuntime.FSMRuntime
    const before = yield* runtime.inspect(machine, deadline.instanceId)
    const waitMillis = Duration.toMillis(Duration.decode(options.wait ?? "10 seconds"))
    const overshoot = Duration.toMillis(Duration.decode(options.overshoot ?? 0))
    if ((yield* Clock.currentTimeMillis) < deadline.dueAt) yield* TestClock.setTime(deadline.dueAt)

    const started = Date.now()
    let overshot = overshoot <= 0
    for (let tries = 0;; tries++) {
      const delivered = yield* deliveryOf(runtime, machine, deadline, before.seqNr)
      if (Option.isSome(delivered)) return delivered.value
      const waited = Date.now() - started
      if (!overshot && tries >= 50) {
        overshot = true
        yield* TestClock.adjust(overshoot)
      } else if (tries >= 50 && waited >= waitMillis) {
        return yield* new DeadlineNotDelivered({ ...deadline, waitedMillis: waited })
      }
      yield* Effect.yieldNow()
      yield* yieldToEventLoop
    }
  })

/**
 * Moves `TestClock` to the next deadline and waits until the runtime has
 * delivered it; returns which deadline that was and the event it committed.
 *
 * - `advanceToNextDeadline(machine, instanceId)`: the earliest deadline of
 *   that instance.
 * - `advanceToNextDeadline(machines)`: the earliest deadline of any instance
 *   of these machines (every instance is loaded: meant for tests).
 *
 * Needs the `FSMRuntime` (with a timeout strategy that fires the deadlines)
 * and the test services' `TestClock` (`it.effect` / `it.scoped`). A
 * deadline already due is not moved back to: the clock stays where it is.
 * Fails with `NoDeadlineArmed` when there is nothing to advance to, and
 * with `DeadlineNotDelivered` when the delivery does not come.
 *
 * @example
 * ```ts
 * it.scoped("an unpaid order is cancelled by its payment timeout", () =>
 *   Effect.gen(function*() {
 *     const orders = yield* FSMRuntime.client(Order)
 *     yield* orders.create("o1", { _tag: "Pending", orderId: "o1" })
 *     const fired = yield* TestDeadlines.advanceToNextDeadline(Order, "o1")
 *     expect(fired.name).toBe("payment")
 *     expect((yield* orders.state("o1"))._tag).toBe("Cancelled")
 *   }).pipe(Effect.provide(FSMRuntime.layer({ machines: [Order] })), Effect.provide(EventStore.layerMemory)))
 * ```
 *
 * @since 0.1.0
 */
export const advanceToNextDeadline: {
  <S extends Tagged, E extends Tagged, R>(
    machine: Machine.Machine<S, E, R>,
    instanceId: string,
    options?: AdvanceOptions
  ): Effect.Effect<Delivered<E>, FSMRuntime.LoadError | NoDeadlineArmed | DeadlineNotDelivered, FSMRuntime.FSMRuntime>
  (
    machines: ReadonlyArray<Machine.Any>,
    options?: AdvanceOptions
  ): Effect.Effect<Delivered<Tagged>, AdvanceError, FSMRuntime.FSMRuntime>
} = ((
  target: Machine.Any | ReadonlyArray<Machine.Any>,
  second?: string | AdvanceOptions,
  third?: AdvanceOptions
): Effect.Effect<Delivered<Tagged>, AdvanceError, FSMRuntime.FSMRuntime> => {
  if (Array.isArray(target)) {
    const machines = target as ReadonlyArray<Machine.Any>
    return Effect.flatMap(nextDeadlineOf(machines), (next): Effect.Effect<Delivered<Tagged>, AdvanceError, FSMRuntime.FSMRuntime> =>
      Option.match(next, {
        onNone: () => Effect.fail(new NoDeadlineArmed({ machines: machines.map((m) => m.name) })),
        onSome: (deadline) =>
          advanceTo(machines.find((m) => m.name === deadline.machine)!, deadline, (second ?? {}) as AdvanceOptions)
      }))
  }
  const machine = target as Machine.Any
  const instanceId = second as string
  return Effect.flatMap(nextDeadline(machine, instanceId), (next): Effect.Effect<Delivered<Tagged>, AdvanceError, FSMRuntime.FSMRuntime> =>
    Option.match(next, {
      onNone: () => Effect.fail(new NoDeadlineArmed({ machines: [machine.name], instanceId })),
      onSome: (deadline) => advanceTo(machine, deadline, third ?? {})
    }))
}) as never
