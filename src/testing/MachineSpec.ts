/**
 * Given/when/then for a machine, on the pure core: no store, no runtime, no
 * Effect to run. Given an instance (an initial state and the steps that led
 * it where it is), when one more step is decided, then this is what would be
 * committed — the outcome and state, the recorded event, the produced
 * commands (outbox rows) and the timer changes — or this is the error the
 * runtime's `send` would fail with.
 *
 * ```ts
 * const order = MachineSpec.make(Order)
 *
 * order
 *   .given({ _tag: "Pending", orderId: "o1" })
 *   .when({ _tag: "Pay", amount: 42 })
 *   .then({ outcome: "Goto", state: { _tag: "Paid", orderId: "o1", amount: 42 }, timers: { cancelled: ["payment"] } })
 *   .when({ _tag: "Pay", amount: 1 })
 *   .thenFails({ _tag: "InvalidTransition", state: "Paid", event: "Pay" })
 * ```
 *
 * Steps are the machine's events (typed: a misspelt tag or a wrong field
 * does not compile) or directives: `fire(name)` delivers an armed deadline
 * at its due time, `fireNext` the earliest one, `elapse(duration)` moves the
 * scenario's clock, `stop` stops the instance. The clock starts at `start`
 * (default 0, epoch milliseconds), so deadlines read as durations from it.
 *
 * Everything is synchronous and works with any test runner. The decisions
 * themselves never throw (a machine function that throws is a
 * `TransitionFailed`, as at run time); the assertions do: `then` and
 * `thenFails` throw a `SpecFailure` whose message names the step and shows
 * a line diff of what was expected and what happened — that is how a test
 * runner learns of a failed expectation. A given step that is not accepted
 * throws too, since the scenario cannot go on.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { GuardRejected, InstanceStopped, InvalidTransition, StaleTimer, TransitionFailed } from "../Errors.js"
import * as Core from "../internal/core.js"
import type * as Machine from "../Machine.js"
import { diffLines, render, renderInline } from "./render.js"

type Tagged = Machine.Tagged

// ---------------------------------------------------------------------------
// Directives: steps that are not events
// ---------------------------------------------------------------------------

const DirectiveTypeId: unique symbol = Symbol.for("effect-fsm/testing/MachineSpec/Directive")

/**
 * Delivers the armed deadline `name` (a timeout of the current state that
 * has not fired yet), moving the clock to its due time if that is later.
 * A deadline that is not armed is a `StaleTimer`, as a late delivery is at
 * run time.
 *
 * @since 0.1.0
 */
export interface Fire {
  readonly [DirectiveTypeId]: "Fire"
  readonly name: string
}

/**
 * Delivers the earliest armed deadline (the first declared, of those due at
 * the same time), moving the clock to its due time if that is later.
 *
 * @since 0.1.0
 */
export interface FireNext {
  readonly [DirectiveTypeId]: "FireNext"
}

/**
 * Stops the instance, as `FSMRuntime.stop` does.
 *
 * @since 0.1.0
 */
export interface Stop {
  readonly [DirectiveTypeId]: "Stop"
}

/**
 * Moves the scenario's clock on by `duration`; decides nothing. Only a
 * given step: a `when` must decide something.
 *
 * @since 0.1.0
 */
export interface Elapse {
  readonly [DirectiveTypeId]: "Elapse"
  readonly millis: number
}

/**
 * A step `when` decides: an event of the machine, or a directive.
 *
 * @since 0.1.0
 */
export type WhenStep<E> = E | Fire | FireNext | Stop

/**
 * A step of the instance's past: a `WhenStep`, or time passing.
 *
 * @since 0.1.0
 */
export type GivenStep<E> = WhenStep<E> | Elapse

/**
 * A `Fire` step: delivers the armed deadline `name`.
 *
 * @example
 * ```ts
 * order.given({ _tag: "Pending", orderId: "o1" })
 *   .when(MachineSpec.fire("payment"))
 *   .then({ state: { _tag: "Cancelled", orderId: "o1", reason: "unpaid" }, timers: { fired: "payment" } })
 * ```
 *
 * @since 0.1.0
 */
export const fire = (name: string): Fire => ({ [DirectiveTypeId]: "Fire", name })

/**
 * A `FireNext` step: delivers the earliest armed deadline, whatever it is
 * called and whenever it is due.
 *
 * @example
 * ```ts
 * order.given({ _tag: "Pending", orderId: "o1" }).when(MachineSpec.fireNext).then({ event: { _tag: "PaymentTimeout" } })
 * ```
 *
 * @since 0.1.0
 */
export const fireNext: FireNext = { [DirectiveTypeId]: "FireNext" }

/**
 * A `Stop` step: stops the instance.
 *
 * @example
 * ```ts
 * order.given({ _tag: "Pending", orderId: "o1" }).when(MachineSpec.stop).then({ outcome: "Stop", timers: { cancelled: ["payment"] } })
 * ```
 *
 * @since 0.1.0
 */
export const stop: Stop = { [DirectiveTypeId]: "Stop" }

/**
 * An `Elapse` step: time passes.
 *
 * @example
 * ```ts
 * order.given({ _tag: "Pending", orderId: "o1" }, [MachineSpec.elapse("4 minutes")])
 *   .when({ _tag: "Pay", amount: 5 })
 *   .then({ outcome: "Goto" })
 * ```
 *
 * @since 0.1.0
 */
export const elapse = (duration: Duration.DurationInput): Elapse => ({
  [DirectiveTypeId]: "Elapse",
  millis: Duration.toMillis(Duration.decode(duration))
})

const isDirective = (step: unknown): step is Fire | FireNext | Stop | Elapse =>
  typeof step === "object" && step !== null && DirectiveTypeId in step

// ---------------------------------------------------------------------------
// What a step decides
// ---------------------------------------------------------------------------

/**
 * The timer rows a commit changes, by the names of the deadlines.
 *
 * @since 0.1.0
 */
export interface TimerChanges<E> {
  /** Deadlines that were armed and are disarmed: the state was left or re-entered, or the instance stopped. */
  readonly cancelled: ReadonlyArray<string>
  /** Deadlines armed by entering a state, with absolute due times (epoch ms). */
  readonly scheduled: ReadonlyArray<Machine.Deadline<E>>
  /** The deadline this step delivered, for a `fire` / `fireNext`. */
  readonly fired?: string | undefined
}

/**
 * What an accepted step commits.
 *
 * @since 0.1.0
 */
export interface Accepted<S, E, C extends Tagged> {
  readonly _tag: "Accepted"
  /** As `FSMRuntime.send` reports it. */
  readonly outcome: "Goto" | "Stay" | "Stop"
  /** The state after the step. */
  readonly state: S
  /** The sequence number of the record the step appends (the created instance is 1). */
  readonly seqNr: number
  /** The event recorded (for a timer delivery, the timeout's event); `undefined` for a stop or a creation. */
  readonly event?: E | undefined
  /** Commands written to the outbox with the commit, in order. */
  readonly commands: ReadonlyArray<Machine.Produced<C>>
  readonly timers: TimerChanges<E>
  /** The time the step was decided at (epoch ms). */
  readonly at: number
}

/**
 * The errors a step that writes nothing gives, as the runtime reports them.
 *
 * @since 0.1.0
 */
export type Failure = InvalidTransition | GuardRejected | InstanceStopped | StaleTimer | TransitionFailed

/**
 * A step that writes nothing.
 *
 * @since 0.1.0
 */
export interface Failed {
  readonly _tag: "Failed"
  readonly error: Failure
  /** The time the step was decided at (epoch ms). */
  readonly at: number
}

/**
 * What a step decides.
 *
 * @since 0.1.0
 */
export type Decided<S, E, C extends Tagged> = Accepted<S, E, C> | Failed

/**
 * An instance at some point of a scenario.
 *
 * @since 0.1.0
 */
export interface Instance<S, E> {
  readonly state: S
  readonly seqNr: number
  readonly stopped: boolean
  /** Deadlines of the current state that have not fired yet. */
  readonly deadlines: ReadonlyArray<Machine.Deadline<E>>
  /** The scenario's clock (epoch ms). */
  readonly now: number
}

// ---------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------

/**
 * What `then` checks of an accepted step: each field given must equal the
 * step's exactly (deep equality; properties that are `undefined` count as
 * absent); fields left out are not checked. `timers` is checked field by
 * field the same way.
 *
 * @since 0.1.0
 */
export interface Expected<S, E, C extends Tagged> {
  readonly outcome?: "Goto" | "Stay" | "Stop"
  readonly state?: S
  readonly seqNr?: number
  readonly event?: E | undefined
  readonly commands?: ReadonlyArray<Machine.Produced<C>>
  readonly timers?: Partial<TimerChanges<E>>
  readonly at?: number
}

interface RejectionFields {
  readonly machine: string
  readonly instanceId: string
  readonly state: string
  readonly event: string
}

/**
 * What `thenFails` checks: the error's tag, or its tag and any of its fields.
 *
 * @since 0.1.0
 */
export type ExpectedFailure =
  | Failure["_tag"]
  | ({ readonly _tag: "InvalidTransition" | "GuardRejected" | "InstanceStopped" } & Partial<RejectionFields>)
  | ({ readonly _tag: "StaleTimer" } & Partial<{
    readonly machine: string
    readonly instanceId: string
    readonly name: string
    readonly generation: number
  }>)
  | ({ readonly _tag: "TransitionFailed" } & Partial<
    RejectionFields & { readonly stage: "guard" | "build" | "after" | "commands"; readonly reason: string }
  >)

/**
 * A failed expectation (or a given step that was not accepted). Thrown by
 * `then`, `thenFails`, `given` and `when`: the message says which step and
 * shows a line diff, `- expected` / `+ actual`. `expected` and `actual`
 * hold the rendered values; `showDiff` is `false` so that runners that diff
 * `expected` and `actual` themselves do not print a second diff.
 *
 * @since 0.1.0
 */
export class SpecFailure extends Error {
  override readonly name = "MachineSpecFailure"
  readonly showDiff = false
  constructor(message: string, readonly expected?: string, readonly actual?: string) {
    super(message)
  }
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/**
 * The result of `when`: what the step decided, and the assertions on it.
 *
 * @since 0.1.0
 */
export interface Result<S extends Tagged, E extends Tagged, C extends Tagged> {
  /** What the step decided, for assertions of your own. */
  readonly decided: Decided<S, E, C>
  /**
   * Asserts that the step was accepted, with these fields; continues the
   * scenario from the instance after it.
   */
  readonly then: (expected: Expected<S, E, C>) => Scenario<S, E, C>
  /**
   * Asserts that the step wrote nothing and failed with this error (any
   * error when `expected` is left out); continues the scenario from the
   * same instance, the clock where the step left it.
   */
  readonly thenFails: (expected?: ExpectedFailure) => Scenario<S, E, C>
}

/**
 * An instance, and what may be decided next.
 *
 * @since 0.1.0
 */
export interface Scenario<S extends Tagged, E extends Tagged, C extends Tagged> {
  readonly instance: Instance<S, E>
  /** Decides one step at the scenario's clock (a `fire` first moves it to the deadline). */
  readonly when: (step: WhenStep<E>) => Result<S, E, C>
}

/**
 * Builds scenarios of one machine.
 *
 * @since 0.1.0
 */
export interface Spec<S extends Tagged, E extends Tagged, C extends Tagged> {
  /** An instance created in `initial` at the start time, then moved on by `steps` (each must be accepted). */
  readonly given: (initial: S, steps?: ReadonlyArray<GivenStep<E>>) => Scenario<S, E, C>
  /** As `given`, from the machine's static `initial` state. */
  readonly givenInitial: (steps?: ReadonlyArray<GivenStep<E>>) => Scenario<S, E, C>
  /** When an instance is created in `initial` (the static initial state when left out): its entry commands and deadlines. */
  readonly whenCreated: (initial?: S) => Result<S, E, C>
}

/**
 * Options of `make`.
 *
 * @since 0.1.0
 */
export interface Options {
  /** The instance id errors name. Default `"test"`. */
  readonly instanceId?: string
  /** Where the scenario's clock starts (epoch ms). Default 0. */
  readonly start?: number
}

/**
 * The given/when/then builder of `machine`.
 *
 * @example
 * ```ts
 * import { MachineSpec } from "effect-fsm/testing"
 *
 * const order = MachineSpec.make(Order)
 * order
 *   .given({ _tag: "Pending", orderId: "o1" }, [MachineSpec.elapse("1 minute")])
 *   .when({ _tag: "Pay", amount: 42 })
 *   .then({ outcome: "Goto", state: { _tag: "Paid", orderId: "o1", amount: 42 }, timers: { cancelled: ["payment"], scheduled: [] } })
 * ```
 *
 * @since 0.1.0
 */
export const make = <S extends Tagged, E extends Tagged, R, C extends Tagged>(
  machine: Machine.Machine<S, E, R, C>,
  options: Options = {}
): Spec<S, E, C> => {
  const instanceId = options.instanceId ?? "test"
  const start = options.start ?? 0
  const any = machine as unknown as Machine.Any

  const staticInitial = (what: string): S => {
    if (Option.isSome(machine.initial)) return machine.initial.value
    throw new SpecFailure(`${label(machine.name)}: ${what}: the machine has no static initial state; give one`)
  }

  const failure = (instance: Core.InstanceState, command: Core.Command, decided: Core.NotAccepted): Failure =>
    Core.notAcceptedError(machine.name, instanceId, instance.state._tag, command, decided)

  /** The command a step is, and the time it is decided at. */
  const commandOf = (
    instance: Core.InstanceState,
    now: number,
    step: GivenStep<E>,
    where: () => string
  ): { readonly command: Core.Command; readonly at: number } => {
    if (!isDirective(step)) return { command: { _tag: "Send", event: step as Tagged }, at: now }
    switch (step[DirectiveTypeId]) {
      case "Stop":
        return { command: { _tag: "Stop" }, at: now }
      case "Fire": {
        const name = (step as Fire).name
        const deadline = Core.armedDeadline(instance, name, instance.generation)
        return {
          command: { _tag: "Fire", name, generation: instance.generation },
          at: deadline === undefined ? now : Math.max(now, deadline.dueAt)
        }
      }
      case "FireNext": {
        const deadline = instance.stopped ? undefined : earliest(instance.deadlines)
        if (deadline === undefined) {
          throw new SpecFailure(`${where()}: fireNext: no deadline is armed in state ${renderInline(instance.state)}`)
        }
        return {
          command: { _tag: "Fire", name: deadline.name, generation: instance.generation },
          at: Math.max(now, deadline.dueAt)
        }
      }
      case "Elapse":
        throw new SpecFailure(`${where()}: elapse is a given step; a when step must decide something`)
    }
  }

  const accepted = (instance: Core.InstanceState, decided: Core.Accepted, at: number): Accepted<S, E, C> => {
    const fired = decided.timers.fired?.name
    const cancelled = decided.timers.cancelAll
      ? instance.deadlines.filter((d) => d.name !== fired).map((d) => d.name)
      : []
    const timers: TimerChanges<E> = {
      cancelled,
      scheduled: decided.timers.schedule as ReadonlyArray<Machine.Deadline<E>>,
      ...(fired === undefined ? {} : { fired })
    }
    return {
      _tag: "Accepted",
      outcome: decided.outcome,
      state: decided.next.state as S,
      seqNr: decided.next.seqNr,
      ...(decided.record.event === undefined ? {} : { event: decided.record.event as E }),
      commands: decided.commands as ReadonlyArray<Machine.Produced<C>>,
      timers,
      at
    }
  }

  const scenario = (instance: Core.InstanceState, now: number, history: ReadonlyArray<string>): Scenario<S, E, C> => ({
    instance: {
      state: instance.state as S,
      seqNr: instance.seqNr,
      stopped: instance.stopped,
      deadlines: instance.deadlines as ReadonlyArray<Machine.Deadline<E>>,
      now
    },
    when: (step) => {
      const where = () => describeStep(machine.name, history, `when ${describeGiven(step)}`)
      const { at, command } = commandOf(instance, now, step, where)
      const decided = Core.decide(any, instance, command, at)
      if (decided._tag === "Accepted") {
        return result(where, accepted(instance, decided, at), () => scenario(decided.next, at, [...history, describeGiven(step)]), () => scenario(instance, at, history))
      }
      return result(where, { _tag: "Failed", error: failure(instance, command, decided), at }, unreachable, () => scenario(instance, at, history))
    }
  })

  const unreachable = (): never => {
    throw new SpecFailure("a step that failed has no next instance")
  }

  /** After a creation that failed: there is no instance to decide anything for. */
  const never = (where: () => string): Scenario<S, E, C> => ({
    get instance(): Instance<S, E> {
      throw new SpecFailure(`${where()}: the instance was never created`)
    },
    when: () => {
      throw new SpecFailure(`${where()}: the instance was never created`)
    }
  })

  const result = (
    where: () => string,
    decided: Decided<S, E, C>,
    next: () => Scenario<S, E, C>,
    same: () => Scenario<S, E, C>
  ): Result<S, E, C> => ({
    decided,
    then: (expected) => {
      if (decided._tag === "Failed") {
        throw new SpecFailure(
          `${where()}: expected the step to be accepted, but it failed with ${decided.error._tag}: ${decided.error.message}`
        )
      }
      const picked: Record<string, unknown> = {}
      const wanted: Record<string, unknown> = {}
      for (const key of Object.keys(expected) as Array<keyof Expected<S, E, C>>) {
        if (key === "timers") {
          const timers = expected.timers ?? {}
          const pickedTimers: Record<string, unknown> = {}
          for (const name of Object.keys(timers) as Array<keyof TimerChanges<E>>) pickedTimers[name] = decided.timers[name]
          picked.timers = pickedTimers
          wanted.timers = timers
        } else {
          picked[key] = decided[key]
          wanted[key] = expected[key]
        }
      }
      assertEqual(`${where()}: the accepted step differs from the expectation`, wanted, picked)
      return next()
    },
    thenFails: (expected) => {
      if (decided._tag === "Accepted") {
        const wantedTag = expected === undefined ? "an error" : typeof expected === "string" ? expected : expected._tag
        throw new SpecFailure(
          `${where()}: expected the step to fail with ${wantedTag}, but it was accepted: ${decided.outcome} ${renderInline(decided.state)}`
        )
      }
      if (expected !== undefined) {
        const wanted: Record<string, unknown> = typeof expected === "string" ? { _tag: expected } : { ...expected }
        const picked: Record<string, unknown> = {}
        const error = decided.error as unknown as Record<string, unknown>
        for (const key of Object.keys(wanted)) picked[key] = error[key]
        assertEqual(`${where()}: the step failed with another error (${decided.error.message})`, wanted, picked)
      }
      return same()
    }
  })

  const given = (initial: S, steps: ReadonlyArray<GivenStep<E>> = []): Scenario<S, E, C> => {
    const created = Core.create(any, initial, start)
    if (Either.isLeft(created)) {
      const error = failure(
        { state: initial, seqNr: 0, stopped: false, generation: 0, deadlines: [] },
        { _tag: "Send", event: initial },
        created.left
      )
      throw new SpecFailure(`${label(machine.name)}: given ${renderInline(initial)}: creating the instance failed: ${error.message}`)
    }
    let instance = created.right.next
    let now = start
    const history: Array<string> = []
    for (const [i, step] of steps.entries()) {
      const where = () => `${label(machine.name)}: given step ${i + 1} of ${steps.length} (${describeGiven(step)})`
      if (isDirective(step) && step[DirectiveTypeId] === "Elapse") {
        now += (step as Elapse).millis
        history.push(describeGiven(step))
        continue
      }
      const { at, command } = commandOf(instance, now, step, where)
      const decided = Core.decide(any, instance, command, at)
      if (decided._tag !== "Accepted") {
        const error = failure(instance, command, decided)
        throw new SpecFailure(`${where()} at ${at} ms was not accepted: ${error._tag}: ${error.message}`)
      }
      instance = decided.next
      now = at
      history.push(describeGiven(step))
    }
    return scenario(instance, now, history.length === 0 ? [`given ${renderInline(initial)}`] : [`given ${renderInline(initial)}`, ...history])
  }

  return {
    given,
    givenInitial: (steps) => given(staticInitial("givenInitial"), steps),
    whenCreated: (initial) => {
      const state = initial ?? staticInitial("whenCreated")
      const where = () => `${label(machine.name)}: when created in ${renderInline(state)}`
      const created = Core.create(any, state, start)
      const empty: Core.InstanceState = { state, seqNr: 0, stopped: false, generation: 0, deadlines: [] }
      if (Either.isLeft(created)) {
        const error = failure(empty, { _tag: "Send", event: state }, created.left)
        return result(where, { _tag: "Failed", error, at: start }, unreachable, () => never(where))
      }
      const next = created.right.next
      const decided: Accepted<S, E, C> = {
        _tag: "Accepted",
        outcome: "Goto",
        state: next.state as S,
        seqNr: next.seqNr,
        commands: created.right.commands as ReadonlyArray<Machine.Produced<C>>,
        timers: { cancelled: [], scheduled: next.deadlines as ReadonlyArray<Machine.Deadline<E>> },
        at: start
      }
      return result(where, decided, () => scenario(next, start, [`created ${renderInline(state)}`]), unreachable)
    }
  }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const label = (machine: string) => `MachineSpec(${machine})`

const earliest = <D extends { readonly dueAt: number }>(deadlines: ReadonlyArray<D>): D | undefined => {
  let first: D | undefined
  for (const deadline of deadlines) if (first === undefined || deadline.dueAt < first.dueAt) first = deadline
  return first
}

const describeGiven = (step: unknown): string => {
  if (!isDirective(step)) return renderInline(step)
  switch (step[DirectiveTypeId]) {
    case "Fire":
      return `fire(${JSON.stringify((step as Fire).name)})`
    case "FireNext":
      return "fireNext"
    case "Stop":
      return "stop"
    case "Elapse":
      return `elapse(${(step as Elapse).millis} ms)`
  }
}

const describeStep = (machine: string, history: ReadonlyArray<string>, step: string) => {
  const shown = history.length > 4 ? ["...", ...history.slice(-4)] : history
  return `${label(machine)}: ${[...shown, step].join(", ")}`
}

const assertEqual = (context: string, expected: unknown, actual: unknown): void => {
  const wanted = render(expected)
  const got = render(actual)
  if (wanted === got) return
  throw new SpecFailure(`${context}\n\n- expected\n+ actual\n\n${diffLines(wanted, got)}`, wanted, got)
}
