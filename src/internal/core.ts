/**
 * The pure core of a running instance: every rule that turns a command into
 * what to commit, and a stored record into the next instance. No I/O, no
 * Effects, no encoding: the runtime adds locking, loading, committing and
 * actions around it, and live sends, timer deliveries and replay all go
 * through the same two functions, so replay cannot disagree with the live path.
 *
 * - `decide(machine, instance, command, now)`: what one command does — the
 *   record to append and the instance after it, or why nothing happens.
 * - `evolve(machine, instance, record)`: the instance after a stored record;
 *   recovery is a fold of `evolve` over the log (from a snapshot).
 *
 * Words, used with one meaning across the runtime:
 * - *timeout*: what a machine declares on a state (`timeouts.Pending.payment`).
 * - *deadline*: a timeout armed by entering its state, with an absolute
 *   `dueAt`; an instance carries the deadlines of its current state that
 *   have not fired yet.
 * - *generation*: the sequence number of the event that entered the current
 *   state; it names one arming of that state's deadlines.
 * - *timer row*: a deadline as the durable strategy stores it, keyed by
 *   (machine, instance, timeout name) and carrying its generation.
 * - *delivery*: a due deadline handed to the runtime, which decides it as a
 *   `Fire` command; a delivery is valid only while its deadline is armed.
 * - *produced command*: what a transition (its `commands`) and the entry of
 *   the state it enters (the definition's `commands`) ask to be done, in
 *   that order; numbered by their position (`index`) in the commit, and
 *   written to the outbox with it. Replay never rebuilds them: they are not
 *   part of an instance's state.
 *
 * @internal
 */
import * as Either from "effect/Either"
import { GuardRejected, InstanceStopped, InvalidTransition, StaleTimer, TransitionFailed } from "../Errors.js"
import * as Machine from "../Machine.js"
import { describeValue } from "./describe.js"

type Tagged = Machine.Tagged
type Deadline = Machine.Deadline<Tagged>

/** An instance as the core sees it. */
export interface InstanceState {
  readonly state: Tagged
  /** Sequence number of the last record in the log. */
  readonly seqNr: number
  readonly stopped: boolean
  /** Sequence number of the event that entered the current state. */
  readonly generation: number
  /** Deadlines of the current state that have not fired yet. */
  readonly deadlines: ReadonlyArray<Deadline>
}

/** Something asked of an instance. */
export type Command =
  | { readonly _tag: "Send"; readonly event: Tagged }
  | {
    /** A due deadline: valid only while deadline `name` of arming `generation` is still armed. */
    readonly _tag: "Fire"
    readonly name: string
    readonly generation: number
    /** The event to deliver; the deadline's own event when absent. */
    readonly event?: Tagged | undefined
  }
  | { readonly _tag: "Stop" }

/** The record a command appends (before encoding). */
export interface NewRecord {
  /** The event's tag, or `@stopped`. */
  readonly tag: string
  /** The event, `undefined` for `@stopped`. */
  readonly event: Tagged | undefined
  /** For a `Fire`: the timeout that fired. */
  readonly timer: string | undefined
}

/** Timer rows a commit writes, for the durable strategy (events not yet encoded). */
export interface TimerPlan {
  /** Delete every timer row of the instance (it left or re-entered its state, or stopped). */
  readonly cancelAll: boolean
  /** Deadlines to store as rows of the new generation. */
  readonly schedule: ReadonlyArray<Deadline>
  /** The timer row this commit consumes; it must still be stored with this generation. */
  readonly fired: { readonly name: string; readonly generation: number } | undefined
}

/** A command that writes. */
export interface Accepted {
  readonly _tag: "Accepted"
  readonly record: NewRecord
  readonly next: InstanceState
  readonly outcome: "Goto" | "Stay" | "Stop"
  /** The state was exited and entered (its exit and entry actions run). */
  readonly entered: boolean
  readonly previous: Tagged
  readonly timers: TimerPlan
  /** Commands to write to the outbox in the same commit, in order. */
  readonly commands: ReadonlyArray<Produced>
}

/** A produced command: one of the machine's own, or a built-in `@sendTo` / `@spawn`. */
export type Produced = Machine.Produced<Tagged>

/** Why a command writes nothing. */
export type NotAccepted =
  | { readonly _tag: "Rejected"; readonly reason: "NoTransition" | "GuardRejected" | "Stopped"; readonly event: string }
  /** A `Fire` whose deadline is no longer armed (fired already, or the instance left the state). */
  | { readonly _tag: "Stale" }
  /** A machine function threw (or an `after` gave no duration). */
  | {
    readonly _tag: "Failed"
    readonly stage: "guard" | "build" | "after" | "commands"
    readonly event: string
    readonly reason: string
    readonly error: unknown
  }

export type Decided = Accepted | NotAccepted

/**
 * The typed error of a command that was not accepted, as the runtime
 * reports it and the testkit (`MachineSpec`) expects it: one mapping for
 * both, so they cannot drift apart.
 */
export const notAcceptedError = (
  machine: string,
  instanceId: string,
  state: string,
  command: Command,
  decided: NotAccepted
): InvalidTransition | GuardRejected | InstanceStopped | StaleTimer | TransitionFailed => {
  switch (decided._tag) {
    case "Stale":
      return command._tag === "Fire"
        ? new StaleTimer({ machine, instanceId, name: command.name, generation: command.generation })
        : new InvalidTransition({ machine, instanceId, state, event: "@timer" })
    case "Rejected": {
      const fields = { machine, instanceId, state, event: decided.event }
      switch (decided.reason) {
        case "NoTransition":
          return new InvalidTransition(fields)
        case "GuardRejected":
          return new GuardRejected(fields)
        case "Stopped":
          return new InstanceStopped(fields)
      }
    }
    case "Failed":
      return new TransitionFailed({
        machine,
        instanceId,
        state,
        event: decided.event,
        stage: decided.stage,
        reason: `${decided.reason}: ${describeValue(decided.error)}`,
        cause: decided.error
      })
  }
}

/** A stored record, decoded. */
export type StoredRecord =
  | { readonly _tag: "Created"; readonly seqNr: number; readonly state: Tagged; readonly timestamp: number }
  | {
    readonly _tag: "Event"
    readonly seqNr: number
    readonly event: Tagged
    readonly stateTag: string
    readonly timestamp: number
    /** The timeout that fired, for timer deliveries; `null` otherwise. */
    readonly timer: string | null
    /** Records written before timer names were stored: a timeout delivery with no name. */
    readonly legacyTimeout: boolean
  }
  | { readonly _tag: "Stopped"; readonly seqNr: number }

/** Why a record does not follow from the instance. */
export interface EvolveProblem {
  readonly seqNr: number
  readonly kind: "sequence" | "lifecycle" | "replay"
  /** For `replay`: the state tag the log recorded. */
  readonly expected: string
  /** What replay produced instead, or what was wrong. */
  readonly actual: string
}

const failedDeadlines = (event: string, failure: Machine.DeadlineFailure): NotAccepted => ({
  _tag: "Failed",
  stage: "after",
  event,
  reason: `timeout "${failure.timeout}": ${failure.reason}`,
  error: failure.error
})

/** The instance a `create` starts: seqNr 1, the initial state entered at `now`. */
export const initialize = (
  machine: Machine.Any,
  state: Tagged,
  now: number
): Either.Either<InstanceState, NotAccepted> => {
  const armed = Machine.deadlines(machine, state, now)
  if (Either.isLeft(armed)) return Either.left(failedDeadlines("@created", armed.left))
  return Either.right({ state, seqNr: 1, stopped: false, generation: 1, deadlines: armed.right })
}

/** What a `create` commits: the initial instance and the commands its state's entry produces. */
export interface Created {
  readonly next: InstanceState
  readonly commands: ReadonlyArray<Produced>
}

/** `initialize`, with the commands that entering the initial state produces. */
export const create = (machine: Machine.Any, state: Tagged, now: number): Either.Either<Created, NotAccepted> => {
  const next = initialize(machine, state, now)
  if (Either.isLeft(next)) return Either.left(next.left)
  const commands: Array<Produced> = []
  const problem = appendCommands(commands, machine.entryCommands.get(state._tag), state, undefined)
  if (problem !== undefined) return Either.left(failedCommands("@created", `the entry commands of "${state._tag}"`, problem))
  return Either.right({ next: next.right, commands })
}

const noCommands: ReadonlyArray<Produced> = []

const failedCommands = (event: string, what: string, error: unknown): NotAccepted => ({
  _tag: "Failed",
  stage: "commands",
  event,
  reason: `${what} ${error instanceof CommandShapeError ? error.message : "threw"}`,
  error
})

class CommandShapeError extends Error {}

/**
 * Calls a command builder and appends what it returns to `into`; returns
 * the error (a throw, or a result that is not a list of tagged objects),
 * `undefined` when it went well. Never throws.
 */
const appendCommands = (
  into: Array<Produced>,
  build: ((state: never, event: never) => ReadonlyArray<unknown>) | undefined,
  state: Tagged,
  event: Tagged | undefined
): unknown => {
  if (build === undefined) return undefined
  let produced: unknown
  try {
    produced = (build as (s: Tagged, e: Tagged | undefined) => unknown)(state, event)
  } catch (error) {
    return error
  }
  if (!Array.isArray(produced)) return new CommandShapeError(`returned ${describeValue(produced)}, not a list of commands`)
  for (let i = 0; i < produced.length; i++) {
    const command: unknown = produced[i]
    if (typeof command !== "object" || command === null || typeof (command as Tagged)._tag !== "string") {
      return new CommandShapeError(`returned ${describeValue(command)} at index ${i}, not a tagged command`)
    }
    into.push(command as Produced)
  }
  return undefined
}

/** The commands an accepted step produces: the transition's, then the entered state's entry commands. */
const produce = (
  machine: Machine.Any,
  alternative: Machine.CompiledAlternative | undefined,
  previous: Tagged,
  event: Tagged,
  next: Tagged,
  entered: boolean
): Either.Either<ReadonlyArray<Produced>, NotAccepted> => {
  const onEntry = entered ? machine.entryCommands.get(next._tag) : undefined
  if (alternative?.commands === undefined && onEntry === undefined) return Either.right(noCommands)
  const commands: Array<Produced> = []
  const fromTransition = appendCommands(commands, alternative?.commands, previous, event)
  if (fromTransition !== undefined) {
    return Either.left(failedCommands(event._tag, `the commands of the transition ${previous._tag} -> ${event._tag}`, fromTransition))
  }
  const fromEntry = appendCommands(commands, onEntry, next, event)
  if (fromEntry !== undefined) {
    return Either.left(failedCommands(event._tag, `the entry commands of "${next._tag}"`, fromEntry))
  }
  return Either.right(commands)
}

type Taken = Exclude<Machine.Decision<Tagged>, { readonly _tag: "Rejected" | "Failed" }>

/**
 * The instance after an accepted decision at `seqNr`: entering a state arms
 * its timeouts from `timestamp`, stopping disarms everything, staying keeps
 * the deadlines less the one that fired (`fired`).
 */
const advance = (
  machine: Machine.Any,
  instance: InstanceState,
  decision: Taken,
  seqNr: number,
  timestamp: number,
  fired: (deadlines: ReadonlyArray<Deadline>) => ReadonlyArray<Deadline>
): Either.Either<InstanceState, Machine.DeadlineFailure> => {
  const stopped = decision._tag === "Stop"
  const entered = decision._tag === "Goto" || (decision._tag === "Stop" && decision.entered)
  let deadlines: ReadonlyArray<Deadline>
  if (stopped) {
    deadlines = []
  } else if (entered) {
    const armed = Machine.deadlines(machine, decision.state, timestamp)
    if (Either.isLeft(armed)) return Either.left(armed.left)
    deadlines = armed.right
  } else {
    deadlines = fired(instance.deadlines)
  }
  return Either.right({
    state: decision.state,
    seqNr,
    stopped,
    generation: entered ? seqNr : instance.generation,
    deadlines
  })
}

const withoutIndex = (deadlines: ReadonlyArray<Deadline>, index: number) =>
  index < 0 ? deadlines : deadlines.filter((_, i) => i !== index)

const withoutName = (name: string) => (deadlines: ReadonlyArray<Deadline>) =>
  withoutIndex(deadlines, deadlines.findIndex((d) => d.name === name))

const keepAll = (deadlines: ReadonlyArray<Deadline>) => deadlines

/** The timer rows moving `instance` to `next` writes. */
const timerPlan = (instance: InstanceState, next: InstanceState, fired: TimerPlan["fired"]): TimerPlan =>
  next.generation !== instance.generation || next.stopped
    ? { cancelAll: true, schedule: next.stopped ? [] : next.deadlines, fired }
    : { cancelAll: false, schedule: [], fired }

/** The deadline a `Fire` command names, if it is still armed. */
export const armedDeadline = (
  instance: InstanceState,
  name: string,
  generation: number
): Deadline | undefined =>
  instance.stopped || instance.generation !== generation ? undefined : instance.deadlines.find((d) => d.name === name)

// Where `stepTaking` reports the alternative it took: one holder, not one per
// command (`decide` is synchronous and never re-entered).
const taken: Machine.Taken = { alternative: undefined }

/**
 * What `command` does to `instance` at `now` (epoch ms). Pure; never throws.
 */
export const decide = (machine: Machine.Any, instance: InstanceState, command: Command, now: number): Decided => {
  const seqNr = instance.seqNr + 1
  if (command._tag === "Stop") {
    if (instance.stopped) return { _tag: "Rejected", reason: "Stopped", event: "@stopped" }
    const next: InstanceState = { ...instance, seqNr, stopped: true, deadlines: [] }
    return {
      _tag: "Accepted",
      record: { tag: "@stopped", event: undefined, timer: undefined },
      next,
      outcome: "Stop",
      entered: false,
      previous: instance.state,
      timers: timerPlan(instance, next, undefined),
      commands: noCommands
    }
  }
  let event: Tagged
  let fired: TimerPlan["fired"]
  let consume = keepAll
  if (command._tag === "Fire") {
    const deadline = armedDeadline(instance, command.name, command.generation)
    if (deadline === undefined) return { _tag: "Stale" }
    event = command.event ?? deadline.event
    fired = { name: command.name, generation: command.generation }
    consume = withoutName(command.name)
  } else {
    event = command.event
  }
  const decision = Machine.stepTaking(machine, instance.state, event, instance.stopped, taken)
  switch (decision._tag) {
    case "Rejected":
      return { _tag: "Rejected", reason: decision.reason, event: event._tag }
    case "Failed":
      return {
        _tag: "Failed",
        stage: decision.stage,
        event: event._tag,
        reason: `its ${decision.stage} function threw`,
        error: decision.error
      }
    case "Goto":
    case "Stay":
    case "Stop": {
      const next = advance(machine, instance, decision, seqNr, now, consume)
      if (Either.isLeft(next)) return failedDeadlines(event._tag, next.left)
      const entered = decision._tag === "Goto" || (decision._tag === "Stop" && decision.entered)
      const commands = produce(machine, taken.alternative, instance.state, event, decision.state, entered)
      if (Either.isLeft(commands)) return commands.left
      return {
        _tag: "Accepted",
        record: { tag: event._tag, event, timer: fired?.name },
        next: next.right,
        outcome: decision._tag,
        entered,
        previous: instance.state,
        timers: timerPlan(instance, next.right, fired),
        commands: commands.right
      }
    }
  }
}

/**
 * The instance after the stored `record`, or why the record does not follow
 * from `instance` (`undefined` before the first record). Replay is a fold of
 * this function; it recomputes deadlines from the stored timestamps, so a
 * reload never moves them, and disarms exactly the timeout a stored timer
 * delivery names.
 */
export const evolve = (
  machine: Machine.Any,
  instance: InstanceState | undefined,
  record: StoredRecord
): Either.Either<InstanceState, EvolveProblem> => {
  const expectedSeqNr = (instance?.seqNr ?? 0) + 1
  if (record.seqNr !== expectedSeqNr) {
    return Either.left({ seqNr: record.seqNr, kind: "sequence", expected: String(expectedSeqNr), actual: String(record.seqNr) })
  }
  if (record._tag === "Created") {
    if (instance !== undefined) {
      return Either.left({ seqNr: record.seqNr, kind: "lifecycle", expected: "", actual: "a second @created record" })
    }
    const initial = initialize(machine, record.state, record.timestamp)
    return Either.mapLeft(initial, (failure) => ({
      seqNr: record.seqNr,
      kind: "replay" as const,
      expected: record.state._tag,
      actual: `(failed: ${failure._tag === "Failed" ? failure.reason : failure._tag})`
    }))
  }
  if (instance === undefined) {
    return Either.left({
      seqNr: record.seqNr,
      kind: "lifecycle",
      expected: "",
      actual: "the log does not start with a @created record"
    })
  }
  if (record._tag === "Stopped") return Either.right({ ...instance, seqNr: record.seqNr, stopped: true, deadlines: [] })
  const problem = (actual: string) =>
    Either.left<EvolveProblem>({ seqNr: record.seqNr, kind: "replay", expected: record.stateTag, actual })
  const decision = Machine.step(machine, instance.state, record.event, { stopped: instance.stopped })
  switch (decision._tag) {
    case "Rejected":
      return problem(`(rejected: ${decision.reason})`)
    case "Failed":
      return problem(`(its ${decision.stage} function threw)`)
    case "Goto":
    case "Stay":
    case "Stop": {
      const consume = record.timer !== null
        ? withoutName(record.timer)
        : record.legacyTimeout
        ? legacyConsume(record.event._tag)
        : keepAll
      const next = advance(machine, instance, decision, record.seqNr, record.timestamp, consume)
      if (Either.isLeft(next)) return problem(`(failed: timeout "${next.left.timeout}": ${next.left.reason})`)
      return next.right.state._tag === record.stateTag ? Either.right(next.right) : problem(next.right.state._tag)
    }
  }
}

/** Logs written before timer names were stored: the earliest deadline with the event's tag fired. */
const legacyConsume = (eventTag: string) => (deadlines: ReadonlyArray<Deadline>) => {
  let index = -1
  for (let i = 0; i < deadlines.length; i++) {
    const d = deadlines[i]!
    if (d.event._tag === eventTag && (index < 0 || d.dueAt < deadlines[index]!.dueAt)) index = i
  }
  return withoutIndex(deadlines, index)
}
