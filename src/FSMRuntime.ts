/**
 * The runtime that runs machines against an `EventStore`.
 *
 * Each `send` is serialized per instance inside one runtime, decided by
 * `Machine.step` and written as one atomic commit with optimistic
 * sequence-number locking; entry and exit actions run after the commit.
 * Loaded instances live in a bounded LRU cache and are recovered from the
 * latest snapshot plus a replay of the tail when needed.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import {
  ActionFailed,
  EventDecodeError,
  EventReplayError,
  GuardRejected,
  InstanceAlreadyExists,
  InstanceNotFound,
  InstanceStopped,
  InvalidInput,
  InvalidInstanceId,
  InvalidTransition,
  MachineDefinitionError,
  MachineNotRegistered,
  PersistenceError,
  SequenceConflict,
  StaleTimer
} from "./Errors.js"
import * as EventStore from "./EventStore.js"
import { makeKeyedLock } from "./internal/keyedLock.js"
import { Lru } from "./internal/lru.js"
import * as Machine from "./Machine.js"
import * as SqlEventStore from "./SqlEventStore.js"
import * as TimeoutStore from "./TimeoutStore.js"
import * as TimeoutStrategy from "./TimeoutStrategy.js"

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/**
 * What an accepted command did: `Goto` entered a (new) state, `Stay`
 * remained in the same state (data may have changed), `Stop` stopped the
 * instance. `seqNr` is the sequence number of the committed event.
 *
 * @since 0.1.0
 */
export interface Outcome<S> {
  readonly _tag: "Goto" | "Stay" | "Stop"
  readonly state: S
  readonly seqNr: number
}

/**
 * A loaded instance.
 *
 * @since 0.1.0
 */
export interface InstanceView<S> {
  readonly state: S
  readonly seqNr: number
  readonly stopped: boolean
  /** Timeouts armed by entering the current state that have not fired yet (epoch ms). */
  readonly timeouts: ReadonlyArray<{ readonly name: string; readonly dueAt: number }>
}

/**
 * One entry of an instance's history, decoded.
 *
 * @since 0.1.0
 */
export type HistoryEntry<S, E> =
  & { readonly seqNr: number; readonly stateTag: string; readonly schemaVersion: number; readonly metadata: EventStore.Metadata }
  & (
    | { readonly _tag: "Created"; readonly state: S }
    | { readonly _tag: "Event"; readonly event: E }
    | { readonly _tag: "Stopped" }
  )

/**
 * Options of a single command.
 *
 * @since 0.1.0
 */
export interface SendOptions {
  /** Stored in the event's metadata, for tracing a business process across instances. */
  readonly correlationId?: string
  /** Defaults to `"user"`; the timeout sweeper and outbox dispatcher set their own. */
  readonly source?: EventStore.Source
}

/**
 * Failures of loading an instance.
 *
 * @since 0.1.0
 */
export type LoadError =
  | MachineNotRegistered
  | InstanceNotFound
  | InvalidInstanceId
  | PersistenceError
  | EventReplayError
  | EventDecodeError

/**
 * Failures of `create`.
 *
 * @since 0.1.0
 */
export type CreateError =
  | MachineNotRegistered
  | InstanceAlreadyExists
  | InvalidInstanceId
  | InvalidInput
  | PersistenceError
  | ActionFailed

/**
 * Failures of `send`. `SequenceConflict` surfaces only when the retry
 * schedule is exhausted; `ActionFailed` means the event was committed.
 *
 * @since 0.1.0
 */
export type SendError =
  | LoadError
  | InvalidTransition
  | GuardRejected
  | InstanceStopped
  | InvalidInput
  | SequenceConflict
  | ActionFailed

/**
 * Failures of `stop`.
 *
 * @since 0.1.0
 */
export type StopError = LoadError | InstanceStopped | SequenceConflict

/**
 * The runtime service.
 *
 * @since 0.1.0
 */
export class FSMRuntime extends Context.Tag("effect-fsm/FSMRuntime")<FSMRuntime, {
  /** Unique per runtime; stored in the metadata of every event it writes. */
  readonly nodeId: string
  /** Creates an instance in `initial` (or the machine's static initial state); its log starts at seqNr 1. */
  readonly create: <S extends Machine.Tagged, E extends Machine.Tagged, R>(
    machine: Machine.Machine<S, E, R>,
    instanceId: string,
    initial?: NoInfer<S>,
    options?: SendOptions
  ) => Effect.Effect<Outcome<S>, CreateError>
  /** Decides and commits one event. A rejected event writes nothing. */
  readonly send: <S extends Machine.Tagged, E extends Machine.Tagged, R>(
    machine: Machine.Machine<S, E, R>,
    instanceId: string,
    event: NoInfer<E>,
    options?: SendOptions
  ) => Effect.Effect<Outcome<S>, SendError>
  /** The instance's current state, sequence number and stopped flag, caught up with the log. */
  readonly inspect: <S extends Machine.Tagged, E extends Machine.Tagged, R>(
    machine: Machine.Machine<S, E, R>,
    instanceId: string
  ) => Effect.Effect<InstanceView<S>, LoadError>
  /** Every event of the instance, decoded, from `fromSeqNr` (default 1). */
  readonly history: <S extends Machine.Tagged, E extends Machine.Tagged, R>(
    machine: Machine.Machine<S, E, R>,
    instanceId: string,
    fromSeqNr?: number
  ) => Effect.Effect<ReadonlyArray<HistoryEntry<S, E>>, LoadError>
  /** Writes a snapshot of the current state now; returns its seqNr. */
  readonly saveSnapshot: <S extends Machine.Tagged, E extends Machine.Tagged, R>(
    machine: Machine.Machine<S, E, R>,
    instanceId: string
  ) => Effect.Effect<number, LoadError | InvalidInput>
  /** Stops the instance durably: a `@stopped` record is appended and every later event is rejected. */
  readonly stop: <S extends Machine.Tagged, E extends Machine.Tagged, R>(
    machine: Machine.Machine<S, E, R>,
    instanceId: string,
    options?: SendOptions
  ) => Effect.Effect<Outcome<S>, StopError>
  /** Ids of every instance of the machine in the store. */
  readonly instances: (machine: Machine.Any) => Stream.Stream<string, PersistenceError | MachineNotRegistered>
  /** Drops every cached instance (they reload from the store on next use). */
  readonly evictAll: Effect.Effect<void>
}>() {}

/**
 * Options of `FSMRuntime.layer`.
 *
 * @since 0.1.0
 */
export interface Options<Ms extends ReadonlyArray<Machine.Any>> {
  readonly machines: Ms
  /** Take a snapshot at least every N events; 0 disables. Default 100. */
  readonly snapshotEvery?: number
  /** Maximum number of instances kept loaded. Default 10,000. */
  readonly cacheSize?: number
  /**
   * How `SequenceConflict`s (another writer got there first) are retried;
   * each retry reloads the tail and decides again. Default: `defaultRetry`.
   */
  readonly retry?: Schedule.Schedule<unknown, SequenceConflict>
  /** Defaults to a random UUID. */
  readonly nodeId?: string
  /**
   * No spans for the runtime's operations. A span costs several
   * microseconds per command, which matters only in memory; the same
   * option as `@effect/rpc`'s servers and clients.
   */
  readonly disableTracing?: boolean
}

/**
 * The default conflict retry schedule: one immediate retry (the conflicting
 * runtime has just read the events it missed, so deciding again at once
 * usually succeeds), then up to 7 more, exponential from 2 ms, jittered, for
 * instances under sustained contention.
 *
 * @since 0.1.0
 */
export const defaultRetry: Schedule.Schedule<unknown, SequenceConflict> = Schedule.recurs(1).pipe(
  Schedule.andThen(Schedule.exponential("2 millis").pipe(Schedule.jittered, Schedule.intersect(Schedule.recurs(7))))
)

// ---------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------

type Deadline = Machine.Deadline<Machine.Tagged>

interface Loaded {
  readonly state: Machine.Tagged
  readonly seqNr: number
  readonly stopped: boolean
  readonly snapshotSeqNr: number
  /** Sequence number of the event that entered the current state. */
  readonly generation: number
  /** Timeouts of the current state still to fire. */
  readonly deadlines: ReadonlyArray<Deadline>
}

interface Registration {
  readonly machine: Machine.Any
  readonly encodeState: (s: unknown) => Either.Either<unknown, ParseResult.ParseError>
  readonly decodeState: (u: unknown) => Either.Either<Machine.Tagged, ParseResult.ParseError>
  readonly encodeEvent: (e: unknown) => Either.Either<unknown, ParseResult.ParseError>
  readonly decodeEvent: (u: unknown) => Either.Either<Machine.Tagged, ParseResult.ParseError>
  readonly encodeSnapshot: (s: SnapshotEnvelope) => Either.Either<unknown, ParseResult.ParseError>
  readonly decodeSnapshot: (u: unknown) => Either.Either<SnapshotEnvelope, ParseResult.ParseError>
}

/** What the runtime keeps in a snapshot's `state`: the state and its armed timeouts. */
interface SnapshotEnvelope {
  readonly value: Machine.Tagged
  readonly generation: number
  readonly deadlines: ReadonlyArray<Deadline>
}

const register = (machine: Machine.Any): Registration => {
  const state = machine.stateSchema as Schema.Schema<Machine.Tagged, unknown>
  const event = machine.eventSchema as Schema.Schema<Machine.Tagged, unknown>
  const envelope = Schema.Struct({
    value: state,
    generation: Schema.Number,
    deadlines: Schema.Array(Schema.Struct({ name: Schema.String, dueAt: Schema.Number, event }))
  }) as unknown as Schema.Schema<SnapshotEnvelope, unknown>
  return {
    machine,
    encodeState: Schema.encodeUnknownEither(state),
    decodeState: Schema.decodeUnknownEither(state),
    encodeEvent: Schema.encodeUnknownEither(event),
    decodeEvent: Schema.decodeUnknownEither(event),
    encodeSnapshot: Schema.encodeUnknownEither(envelope),
    decodeSnapshot: Schema.decodeUnknownEither(envelope)
  }
}

const cacheKey = (machine: string, instanceId: string) => `${machine}\u0000${instanceId}`

const parseMessage = (error: ParseResult.ParseError) => ParseResult.TreeFormatter.formatErrorSync(error)

/** The deadlines left after the timeout `name` (or, in replay, the earliest one with this event tag) fired. */
const withoutFired = (deadlines: ReadonlyArray<Deadline>, fired: (d: Deadline) => boolean) => {
  const index = deadlines.findIndex(fired)
  return index < 0 ? deadlines : deadlines.filter((_, i) => i !== index)
}

const byDueAt = (a: Deadline, b: Deadline) => a.dueAt - b.dueAt

/**
 * Builds the runtime service. Fails with `MachineDefinitionError` when a
 * machine's definition is inconsistent or two machines share a name. Its
 * timeout strategy (the one in context, or in-process timers) runs in the
 * scope.
 *
 * @since 0.1.0
 */
export const make = <const Ms extends ReadonlyArray<Machine.Any>>(
  options: Options<Ms>
): Effect.Effect<
  FSMRuntime["Type"],
  MachineDefinitionError,
  EventStore.EventStore | Scope.Scope | Machine.Context<Ms[number]>
> =>
  Effect.gen(function*() {
    const store = yield* EventStore.EventStore
    const context = yield* Effect.context<Machine.Context<Ms[number]>>()
    const strategy = Option.getOrElse(
      yield* Effect.serviceOption(TimeoutStrategy.TimeoutStrategy),
      () => TimeoutStrategy.makeInProcess()
    )
    const registrations = new Map<string, Registration>()
    for (const machine of options.machines) {
      yield* Machine.validate(machine)
      if (registrations.has(machine.name)) {
        return yield* new MachineDefinitionError({
          machine: machine.name,
          reason: "two machines with this name are registered in one runtime"
        })
      }
      registrations.set(machine.name, register(machine))
      // Without a static initial state any state may be a creation state, so
      // only machines with one get the warning.
      const unreachable = Option.isSome(machine.initial) ? Machine.unreachableStates(machine) : []
      if (unreachable.length > 0) {
        yield* Effect.logWarning(`machine "${machine.name}": no transition reaches ${unreachable.join(", ")}`)
      }
    }
    const nodeId = options.nodeId ?? crypto.randomUUID()
    const snapshotEvery = options.snapshotEvery ?? 100
    const retry = options.retry ?? defaultRetry
    const cache = new Lru<string, Loaded>(Math.max(1, options.cacheSize ?? 10_000))
    const locks = makeKeyedLock()

    // Spans without the call site's stack trace: capturing it (a `new Error()`
    // and a copy of the options per call) costs more than the span itself.
    const traced = (name: string, attributes: Record<string, unknown>) =>
    <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      options.disableTracing === true ? self : Effect.withSpan(self, name, { attributes, captureStackTrace: false })
    // Assigned once the strategy starts, at the end of construction; nothing
    // can commit before then.
    let timers: TimeoutStrategy.Running = { durable: false, armed: () => Effect.void }

    const registration = (machine: Machine.Any): Effect.Effect<Registration, MachineNotRegistered> => {
      const reg = registrations.get(machine.name)
      return reg !== undefined && reg.machine === machine
        ? Effect.succeed(reg)
        : Effect.fail(new MachineNotRegistered({ machine: machine.name }))
    }

    const arm = (reg: Registration, instanceId: string, loaded: Loaded) =>
      timers.armed(reg.machine.name, instanceId, loaded.generation, loaded.deadlines)

    // -- replay -------------------------------------------------------------

    const replayOne = (
      reg: Registration,
      instanceId: string,
      acc: Loaded | undefined,
      record: EventStore.EventRecord
    ): Effect.Effect<Loaded, EventReplayError | EventDecodeError | PersistenceError> => {
      const machine = reg.machine
      const expectedSeqNr = (acc?.seqNr ?? 0) + 1
      if (record.seqNr !== expectedSeqNr) {
        return Effect.fail(
          new PersistenceError({
            operation: "replay",
            reason: `${machine.name}/${instanceId}: expected event ${expectedSeqNr}, the store returned ${record.seqNr}`
          })
        )
      }
      const decodeFailure = (reason: string) =>
        Effect.fail(new EventDecodeError({ machine: machine.name, instanceId, seqNr: record.seqNr, reason }))
      const timestamp = record.metadata.timestamp
      let next: Loaded
      if (record.tag === EventStore.CreatedTag) {
        if (acc !== undefined) return decodeFailure("a second @created record")
        const state = reg.decodeState(record.payload)
        if (Either.isLeft(state)) return decodeFailure(parseMessage(state.left))
        next = {
          state: state.right,
          seqNr: record.seqNr,
          stopped: false,
          snapshotSeqNr: 0,
          generation: record.seqNr,
          deadlines: Machine.deadlines(machine, state.right, timestamp)
        }
      } else if (acc === undefined) {
        return decodeFailure("the log does not start with a @created record")
      } else if (record.tag === EventStore.StoppedTag) {
        next = { ...acc, seqNr: record.seqNr, stopped: true, deadlines: [] }
      } else {
        const event = reg.decodeEvent(record.payload)
        if (Either.isLeft(event)) return decodeFailure(parseMessage(event.left))
        const decision = Machine.step(machine, acc.state, event.right, { stopped: acc.stopped })
        if (decision._tag === "Rejected") {
          return Effect.fail(
            new EventReplayError({
              machine: machine.name,
              instanceId,
              seqNr: record.seqNr,
              expected: record.stateTag,
              actual: `(rejected: ${decision.reason})`
            })
          )
        }
        next = advance(reg, acc, decision, record.seqNr, timestamp, (deadlines) =>
          record.metadata.source === "timeout"
            ? withoutFired([...deadlines].sort(byDueAt), (d) => d.event._tag === record.tag)
            : deadlines)
      }
      if (next.state._tag !== record.stateTag) {
        return Effect.fail(
          new EventReplayError({
            machine: machine.name,
            instanceId,
            seqNr: record.seqNr,
            expected: record.stateTag,
            actual: next.state._tag
          })
        )
      }
      return Effect.succeed(next)
    }

    /**
     * The instance after an accepted decision: entering a state arms its
     * timeouts from `timestamp`; stopping disarms everything; staying keeps
     * the deadlines (less a timeout that just fired, via `onStay`).
     */
    const advance = (
      reg: Registration,
      loaded: Loaded,
      decision: Exclude<Machine.Decision<Machine.Tagged>, { _tag: "Rejected" }>,
      seqNr: number,
      timestamp: number,
      onStay: (deadlines: ReadonlyArray<Deadline>) => ReadonlyArray<Deadline>
    ): Loaded => {
      const stopped = decision._tag === "Stop"
      const entered = decision._tag === "Goto" || (decision._tag === "Stop" && decision.entered)
      return {
        state: decision.state,
        seqNr,
        stopped,
        snapshotSeqNr: loaded.snapshotSeqNr,
        generation: entered ? seqNr : loaded.generation,
        deadlines: stopped
          ? []
          : entered
          ? Machine.deadlines(reg.machine, decision.state, timestamp)
          : onStay(loaded.deadlines)
      }
    }

    const replayFrom = (reg: Registration, instanceId: string, start: Loaded | undefined) =>
      Stream.runFoldEffect(
        store.events(reg.machine.name, instanceId, (start?.seqNr ?? 0) + 1),
        start,
        (acc: Loaded | undefined, record) => replayOne(reg, instanceId, acc, record)
      )

    const fromSnapshot = (reg: Registration, instanceId: string) =>
      Effect.flatMap(store.loadSnapshot(reg.machine.name, instanceId), (snapshot): Effect.Effect<Loaded | undefined> => {
        if (Option.isNone(snapshot)) return Effect.succeed(undefined)
        const s = snapshot.value
        if (s.schemaVersion !== reg.machine.version) {
          return Effect.as(
            Effect.logInfo(
              `${reg.machine.name}/${instanceId}: snapshot of schema version ${s.schemaVersion} discarded (machine is at ${reg.machine.version}), replaying the whole log`
            ),
            undefined
          )
        }
        const envelope = reg.decodeSnapshot(s.state)
        if (Either.isLeft(envelope)) {
          return Effect.as(
            Effect.logWarning(
              `${reg.machine.name}/${instanceId}: snapshot at ${s.seqNr} does not decode, replaying the whole log: ${
                parseMessage(envelope.left)
              }`
            ),
            undefined
          )
        }
        return Effect.succeed({
          state: envelope.right.value,
          seqNr: s.seqNr,
          stopped: s.stopped,
          snapshotSeqNr: s.seqNr,
          generation: envelope.right.generation,
          deadlines: envelope.right.deadlines
        })
      })

    const notFound = (machine: string, instanceId: string) => Effect.fail(new InstanceNotFound({ machine, instanceId }))

    /** Cache hit, or snapshot + tail replay (which re-arms the instance's timeouts). Call under the instance lock. */
    const load = (reg: Registration, instanceId: string): Effect.Effect<Loaded, LoadError> =>
      Effect.suspend(() => {
        const key = cacheKey(reg.machine.name, instanceId)
        const cached = cache.get(key)
        if (cached !== undefined) return Effect.succeed(cached)
        return fromSnapshot(reg, instanceId).pipe(
          Effect.flatMap((start) => replayFrom(reg, instanceId, start)),
          Effect.flatMap((loaded) => {
            if (loaded === undefined) return notFound(reg.machine.name, instanceId)
            cache.set(key, loaded)
            return Effect.as(arm(reg, instanceId, loaded), loaded)
          })
        )
      })

    /** Reads the events written after `loaded` (by other runtimes) and applies them. */
    const catchUp = (reg: Registration, instanceId: string, loaded: Loaded) =>
      Effect.flatMap(replayFrom(reg, instanceId, loaded), (fresh) => {
        const next = fresh ?? loaded
        cache.set(cacheKey(reg.machine.name, instanceId), next)
        return next.seqNr === loaded.seqNr ? Effect.succeed(next) : Effect.as(arm(reg, instanceId, next), next)
      })

    /** Up to date with the log: a cached instance catches up; one loaded from the store just read to its end. */
    const loadFresh = (reg: Registration, instanceId: string) =>
      Effect.suspend(() =>
        cache.get(cacheKey(reg.machine.name, instanceId)) === undefined
          ? load(reg, instanceId)
          : Effect.flatMap(load(reg, instanceId), (loaded) => catchUp(reg, instanceId, loaded))
      )

    // -- commit -------------------------------------------------------------

    const succeedUndefined = Effect.succeed(undefined)
    const snapshotFor = (
      reg: Registration,
      instanceId: string,
      next: Loaded,
      timestamp: number
    ): Effect.Effect<EventStore.SnapshotRecord | undefined> => {
      if (snapshotEvery <= 0 || next.seqNr - next.snapshotSeqNr < snapshotEvery) return succeedUndefined
      return Effect.map(encodeSnapshot(reg, instanceId, next, timestamp), Option.getOrUndefined)
    }

    const encodeSnapshot = (
      reg: Registration,
      instanceId: string,
      loaded: Loaded,
      timestamp: number
    ): Effect.Effect<Option.Option<EventStore.SnapshotRecord>> => {
      const encoded = reg.encodeSnapshot({
        value: loaded.state,
        generation: loaded.generation,
        deadlines: loaded.deadlines
      })
      if (Either.isLeft(encoded)) {
        return Effect.as(
          Effect.logWarning(
            `${reg.machine.name}/${instanceId}: snapshot skipped, state does not encode: ${parseMessage(encoded.left)}`
          ),
          Option.none()
        )
      }
      return Effect.succeed(Option.some({
        machine: reg.machine.name,
        instanceId,
        seqNr: loaded.seqNr,
        state: encoded.right,
        stopped: loaded.stopped,
        schemaVersion: reg.machine.version,
        timestamp
      }))
    }

    /** The timer rows a commit moving `loaded` to `next` writes, for the durable strategy. */
    const timerChanges = (
      reg: Registration,
      loaded: Loaded | undefined,
      next: Loaded,
      fired: TimeoutStrategy.Delivery | undefined
    ): Either.Either<TimeoutStore.TimerChanges | undefined, ParseResult.ParseError> => {
      if (!timers.durable) return Either.right(undefined)
      const firedKey = fired === undefined ? undefined : { name: fired.name, generation: fired.generation }
      const rearmed = loaded === undefined || next.generation !== loaded.generation
      if (!rearmed && !next.stopped) {
        return Either.right(firedKey === undefined ? undefined : { cancelAll: false, schedule: [], fired: firedKey })
      }
      const schedule: Array<TimeoutStore.ScheduledTimer> = []
      if (!next.stopped) {
        for (const deadline of next.deadlines) {
          const payload = reg.encodeEvent(deadline.event)
          if (Either.isLeft(payload)) return Either.left(payload.left)
          schedule.push({
            name: deadline.name,
            stateTag: next.state._tag,
            generation: next.generation,
            dueAt: deadline.dueAt,
            payload: payload.right
          })
        }
      }
      return Either.right({ cancelAll: loaded !== undefined, schedule, fired: firedKey })
    }

    /**
     * Appends one record moving `loaded` to `next`, with its timer changes.
     * A snapshot rides in the same commit when due; if that commit fails for
     * any reason but a conflict or a stale timer, it is retried once without
     * the snapshot, so a failed snapshot write never fails a command.
     */
    const commitOne = (
      reg: Registration,
      instanceId: string,
      loaded: Loaded | undefined,
      next: Loaded,
      record: { readonly tag: string; readonly payload: unknown },
      timestamp: number,
      options: SendOptions | undefined,
      fired?: TimeoutStrategy.Delivery
    ): Effect.Effect<Loaded, SequenceConflict | StaleTimer | PersistenceError | InvalidInstanceId | InvalidInput> =>
      Effect.flatMap(snapshotFor(reg, instanceId, next, timestamp), (snapshot): Effect.Effect<
        Loaded,
        SequenceConflict | StaleTimer | PersistenceError | InvalidInstanceId | InvalidInput
      > => {
        const changes = timerChanges(reg, loaded, next, fired)
        if (Either.isLeft(changes)) {
          return Effect.fail(
            new InvalidInput({ machine: reg.machine.name, instanceId, reason: `timeout event: ${parseMessage(changes.left)}` })
          )
        }
        const commit: EventStore.Commit = {
          machine: reg.machine.name,
          instanceId,
          expectedSeqNr: loaded?.seqNr ?? 0,
          events: [{
            tag: record.tag,
            payload: record.payload,
            stateTag: next.state._tag,
            schemaVersion: reg.machine.version,
            metadata: {
              timestamp,
              source: options?.source ?? (fired === undefined ? "user" : "timeout"),
              correlationId: options?.correlationId ?? null,
              node: nodeId,
              commitId: crypto.randomUUID(),
              timer: fired?.name ?? null
            }
          }],
          snapshot,
          timers: changes.right
        }
        // Re-arm only when the deadlines changed, and not when there were
        // none before and are none after (a no-op for both strategies).
        const settle = (result: Loaded): Effect.Effect<Loaded> => {
          cache.set(cacheKey(reg.machine.name, instanceId), result)
          const changed = result.generation !== loaded?.generation || result.deadlines !== loaded.deadlines
          const anyArmed = result.deadlines.length > 0 || (loaded !== undefined && loaded.deadlines.length > 0)
          return changed && anyArmed ? Effect.as(arm(reg, instanceId, result), result) : Effect.succeed(result)
        }
        if (snapshot === undefined) return Effect.flatMap(store.append(commit), () => settle(next))
        return store.append(commit).pipe(
          Effect.as<Loaded>({ ...next, snapshotSeqNr: next.seqNr }),
          Effect.catchTag("PersistenceError", (error) =>
            Effect.logWarning(`${reg.machine.name}/${instanceId}: commit with snapshot failed, retrying without it`, error)
              .pipe(Effect.zipRight(store.append({ ...commit, snapshot: undefined })), Effect.as(next))),
          Effect.flatMap(settle)
        )
      })

    /** Retries `effect` on `SequenceConflict` only, under the configured schedule. */
    const retryConflicts = <A, E>(effect: Effect.Effect<A, E | SequenceConflict>): Effect.Effect<A, E | SequenceConflict> =>
      // The schedule (and its driver) is only set up after a first conflict;
      // that failure is replayed as its first input, so delays and the number
      // of retries are as if it had been running from the start.
      Effect.catchIf(effect, (error): error is SequenceConflict => error instanceof SequenceConflict, (conflict) => {
        let replayed = false
        return Effect.suspend(() => replayed ? effect : (replayed = true, Effect.fail(conflict))).pipe(
          Effect.map(Effect.succeed),
          Effect.catchIf(
            (error): error is E => !(error instanceof SequenceConflict),
            (error) => Effect.succeed(Effect.fail(error))
          ),
          Effect.retry(retry),
          Effect.flatten
        )
      })

    /** On conflict: catch up with the log, then fail so that the retry schedule decides again. */
    const onConflict = (reg: Registration, instanceId: string, loaded: Loaded) => (conflict: SequenceConflict) =>
      Effect.zipRight(catchUp(reg, instanceId, loaded), Effect.fail(conflict))

    // -- actions ------------------------------------------------------------

    const runAction = (
      reg: Registration,
      kind: "entry" | "exit",
      state: Machine.Tagged,
      ctx: Machine.ActionContext<unknown, unknown>
    ): Effect.Effect<void, ActionFailed> => {
      const action = (kind === "entry" ? reg.machine.entry : reg.machine.exit).get(state._tag) as
        | ((s: unknown, c: unknown) => Effect.Effect<unknown, unknown, unknown>)
        | undefined
      if (action === undefined) return Effect.void
      return Effect.suspend(() => action(state, ctx)).pipe(
        Effect.provide(context as Context.Context<unknown>),
        Effect.asVoid,
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause)
            ? Effect.failCause(cause as Cause.Cause<never>)
            : Effect.fail(
              new ActionFailed({
                machine: reg.machine.name,
                instanceId: ctx.instanceId,
                seqNr: ctx.seqNr,
                state: state._tag,
                action: kind,
                cause: Cause.squash(cause)
              })
            )
        ),
        traced(`FSMRuntime.${kind}`, { machine: reg.machine.name, state: state._tag })
      ) as Effect.Effect<void, ActionFailed>
    }

    const runTransitionActions = (
      reg: Registration,
      instanceId: string,
      accepted: Accepted,
      event: unknown
    ): Effect.Effect<void, ActionFailed> => {
      if (!accepted.entered || (reg.machine.entry.size === 0 && reg.machine.exit.size === 0)) return Effect.void
      const { outcome, previous } = accepted
      const base = { machine: reg.machine.name, instanceId, seqNr: outcome.seqNr, event }
      return Effect.zipRight(
        runAction(reg, "exit", previous, { ...base, other: outcome.state }),
        runAction(reg, "entry", outcome.state, { ...base, other: previous })
      )
    }

    // -- operations ---------------------------------------------------------

    /** The machine's registration and a valid instance id, checked synchronously (no Effect on the hot path). */
    const checked = (
      machine: Machine.Any,
      instanceId: string
    ): Registration | MachineNotRegistered | InvalidInstanceId => {
      const reg = registrations.get(machine.name)
      if (reg === undefined || reg.machine !== machine) return new MachineNotRegistered({ machine: machine.name })
      const problem = EventStore.instanceIdProblem(instanceId)
      return problem === undefined
        ? reg
        : new InvalidInstanceId({ machine: machine.name, instanceId: String(instanceId), reason: problem })
    }

    const withInstance = <A, E>(
      machine: Machine.Any,
      instanceId: string,
      body: (reg: Registration) => Effect.Effect<A, E>
    ): Effect.Effect<A, E | MachineNotRegistered | InvalidInstanceId> =>
      Effect.suspend((): Effect.Effect<A, E | MachineNotRegistered | InvalidInstanceId> => {
        const reg = checked(machine, instanceId)
        return reg instanceof MachineNotRegistered || reg instanceof InvalidInstanceId
          ? Effect.fail(reg)
          : locks.withLock(cacheKey(machine.name, instanceId))(body(reg))
      })

    const create = (machine: Machine.Any, instanceId: string, initial?: Machine.Tagged, options?: SendOptions) =>
      Effect.flatMap(
        withInstance(machine, instanceId, (reg): Effect.Effect<
          { reg: Registration; state: Machine.Tagged },
          InvalidInput | InstanceAlreadyExists | InvalidInstanceId | PersistenceError
        > => {
          const state = initial ?? Option.getOrUndefined(machine.initial)
          if (state === undefined) {
            return Effect.fail(
              new InvalidInput({
                machine: machine.name,
                instanceId,
                reason: "no initial state was given and the machine has no static initial state"
              })
            )
          }
          const encoded = reg.encodeState(state)
          if (Either.isLeft(encoded)) {
            return Effect.fail(new InvalidInput({ machine: machine.name, instanceId, reason: parseMessage(encoded.left) }))
          }
          const cached = cache.get(cacheKey(machine.name, instanceId))
          if (cached !== undefined) return Effect.fail(new InstanceAlreadyExists({ machine: machine.name, instanceId }))
          return Effect.flatMap(Clock.currentTimeMillis, (timestamp) => {
            const next: Loaded = {
              state,
              seqNr: 1,
              stopped: false,
              snapshotSeqNr: 0,
              generation: 1,
              deadlines: Machine.deadlines(reg.machine, state, timestamp)
            }
            return commitOne(reg, instanceId, undefined, next, { tag: EventStore.CreatedTag, payload: encoded.right }, timestamp, options)
          }).pipe(
            Effect.catchTags({
              SequenceConflict: () => Effect.fail(new InstanceAlreadyExists({ machine: machine.name, instanceId })),
              StaleTimer: (error) => Effect.die(error)
            }),
            Effect.as({ reg, state })
          )
        }),
        ({ reg, state }) => {
          const outcome: Outcome<typeof state> = { _tag: "Goto", state, seqNr: 1 }
          const entry = reg.machine.entry.size === 0 ? Effect.void : runAction(reg, "entry", state, {
            machine: machine.name,
            instanceId,
            seqNr: 1,
            event: undefined,
            other: undefined
          })
          return Effect.as(entry, outcome)
        }
      ).pipe(traced("FSMRuntime.create", { machine: machine.name, instanceId }))

    const rejection = (
      machine: string,
      instanceId: string,
      state: string,
      event: string,
      reason: "NoTransition" | "GuardRejected" | "Stopped"
    ) => {
      const fields = { machine, instanceId, state, event }
      switch (reason) {
        case "NoTransition":
          return new InvalidTransition(fields)
        case "GuardRejected":
          return new GuardRejected(fields)
        case "Stopped":
          return new InstanceStopped(fields)
      }
    }

    interface Accepted {
      readonly previous: Machine.Tagged
      readonly outcome: Outcome<Machine.Tagged>
      readonly entered: boolean
    }

    /**
     * One decide-and-commit attempt. A rejection is re-checked against the
     * log once (the cached state may be behind another runtime's writes);
     * a conflict catches up and fails so that the retry schedule runs it again.
     */
    const attemptSend = (
      reg: Registration,
      instanceId: string,
      event: Machine.Tagged,
      payload: unknown,
      options: SendOptions | undefined,
      fired: TimeoutStrategy.Delivery | undefined
    ): Effect.Effect<Accepted, SendError | StaleTimer> => {
      const decideOn = (loaded: Loaded, recheck: boolean): Effect.Effect<Accepted, SendError | StaleTimer> => {
        const decision = Machine.step(reg.machine, loaded.state, event, { stopped: loaded.stopped })
        if (decision._tag === "Rejected") {
          if (recheck) {
            return Effect.flatMap(catchUp(reg, instanceId, loaded), (fresh) =>
              fresh.seqNr === loaded.seqNr
                ? Effect.fail(rejection(reg.machine.name, instanceId, loaded.state._tag, event._tag, decision.reason))
                : decideOn(fresh, true))
          }
          return Effect.fail(rejection(reg.machine.name, instanceId, loaded.state._tag, event._tag, decision.reason))
        }
        return Effect.flatMap(Clock.currentTimeMillis, (timestamp) => {
          const next = advance(reg, loaded, decision, loaded.seqNr + 1, timestamp, (deadlines) =>
            fired === undefined ? deadlines : withoutFired(deadlines, (d) => d.name === fired.name))
          return commitOne(reg, instanceId, loaded, next, { tag: event._tag, payload }, timestamp, options, fired).pipe(
            Effect.catchTag("SequenceConflict", onConflict(reg, instanceId, loaded)),
            Effect.as({
              previous: loaded.state,
              outcome: { _tag: decision._tag, state: decision.state, seqNr: next.seqNr },
              entered: decision._tag === "Goto" || (decision._tag === "Stop" && decision.entered)
            })
          )
        })
      }
      return Effect.suspend(() => {
        const cached = cache.get(cacheKey(reg.machine.name, instanceId))
        return cached !== undefined
          ? decideOn(cached, true)
          : Effect.flatMap(load(reg, instanceId), (loaded) => decideOn(loaded, true))
      })
    }

    const send = (machine: Machine.Any, instanceId: string, event: Machine.Tagged, options?: SendOptions) =>
      // Registration, id and encoding are checked synchronously; the only
      // Effects on the path are the lock, the commit and the actions.
      Effect.suspend((): Effect.Effect<Outcome<Machine.Tagged>, SendError> => {
        const reg = checked(machine, instanceId)
        if (reg instanceof MachineNotRegistered || reg instanceof InvalidInstanceId) return Effect.fail(reg)
        const payload = reg.encodeEvent(event)
        if (Either.isLeft(payload)) {
          return Effect.fail(new InvalidInput({ machine: machine.name, instanceId, reason: parseMessage(payload.left) }))
        }
        const attempt = retryConflicts(attemptSend(reg, instanceId, event, payload.right, options, undefined)).pipe(
          // Only a timer delivery can be stale.
          Effect.catchTag("StaleTimer", (error) => Effect.die(error))
        )
        return Effect.flatMap(locks.withLock(cacheKey(machine.name, instanceId))(attempt), (accepted) =>
          accepted.entered && (reg.machine.entry.size > 0 || reg.machine.exit.size > 0)
            ? Effect.as(runTransitionActions(reg, instanceId, accepted, event), accepted.outcome)
            : Effect.succeed(accepted.outcome))
      }).pipe(
        traced("FSMRuntime.send", { machine: machine.name, instanceId, event: event._tag })
      )

    /** Delivers a due timer through the send path; never fails, the result says what happened. */
    const deliver = (delivery: TimeoutStrategy.Delivery): Effect.Effect<TimeoutStrategy.DeliveryResult> => {
      const reg = registrations.get(delivery.machine)
      if (reg === undefined) return Effect.succeed({ _tag: "Rejected", reason: "machine not registered" })
      const attempt = withInstance(reg.machine, delivery.instanceId, () =>
        // Fresh from the log: another node may have moved the instance on.
        Effect.flatMap(loadFresh(reg, delivery.instanceId), (loaded): Effect.Effect<
          TimeoutStrategy.DeliveryResult | { readonly accepted: Accepted; readonly event: Machine.Tagged },
          SendError | StaleTimer
        > => {
          if (loaded.stopped) return Effect.succeed({ _tag: "Rejected", reason: "instance stopped" })
          const deadline = loaded.deadlines.find((d) => d.name === delivery.name)
          if (loaded.generation !== delivery.generation || (deadline === undefined && delivery.payload === undefined)) {
            return Effect.succeed({ _tag: "Stale", raced: false })
          }
          let event: Machine.Tagged
          if (delivery.payload !== undefined) {
            const decoded = reg.decodeEvent(delivery.payload)
            if (Either.isLeft(decoded)) {
              return Effect.succeed({ _tag: "Rejected", reason: `timer event does not decode: ${parseMessage(decoded.left)}` })
            }
            event = decoded.right
          } else {
            event = deadline!.event
          }
          const payload = reg.encodeEvent(event)
          if (Either.isLeft(payload)) {
            return Effect.succeed({ _tag: "Rejected", reason: `timer event does not encode: ${parseMessage(payload.left)}` })
          }
          return Effect.map(
            retryConflicts(attemptSend(reg, delivery.instanceId, event, payload.right, { source: "timeout" }, delivery)),
            (accepted) => ({ accepted, event })
          )
        }))
      return attempt.pipe(
        // Actions run after the lock is released, as for `send`, so that an
        // action may send to its own instance.
        Effect.flatMap((result): Effect.Effect<TimeoutStrategy.DeliveryResult> =>
          "accepted" in result
            ? runTransitionActions(reg, delivery.instanceId, result.accepted, result.event).pipe(
              Effect.catchAll((error) => Effect.logWarning(`timeout delivered, but an action failed`, error)),
              Effect.as({ _tag: "Fired", seqNr: result.accepted.outcome.seqNr })
            )
            : Effect.succeed(result)
        ),
        Effect.catchAll((error): Effect.Effect<TimeoutStrategy.DeliveryResult> => {
          switch (error._tag) {
            case "StaleTimer":
              // The instance was at this generation when we looked, so the
              // row went to another node's delivery in the meantime.
              return Effect.succeed({ _tag: "Stale", raced: true })
            case "InvalidTransition":
            case "GuardRejected":
            case "InstanceStopped":
            case "InstanceNotFound":
            case "InvalidInstanceId":
            case "MachineNotRegistered":
            case "InvalidInput":
              return Effect.succeed({ _tag: "Rejected", reason: error.message })
            default:
              return Effect.succeed({ _tag: "Failed", error: error.message })
          }
        }),
        Effect.catchAllDefect((defect) => Effect.succeed({ _tag: "Failed", error: String(defect) } as const)),
        traced("FSMRuntime.deliverTimeout", { machine: delivery.machine, instanceId: delivery.instanceId, timer: delivery.name })
      )
    }

    const inspect = (machine: Machine.Any, instanceId: string) =>
      withInstance(machine, instanceId, (reg) => loadFresh(reg, instanceId)).pipe(
        Effect.map((loaded): InstanceView<Machine.Tagged> => ({
          state: loaded.state,
          seqNr: loaded.seqNr,
          stopped: loaded.stopped,
          timeouts: loaded.deadlines.map(({ dueAt, name }) => ({ name, dueAt }))
        })),
        traced("FSMRuntime.inspect", { machine: machine.name, instanceId })
      )

    const history = (machine: Machine.Any, instanceId: string, fromSeqNr = 1) =>
      Effect.flatMap(registration(machine), (reg) =>
        store.events(machine.name, instanceId, fromSeqNr).pipe(
          Stream.mapEffect((record) => {
            const common = {
              seqNr: record.seqNr,
              stateTag: record.stateTag,
              schemaVersion: record.schemaVersion,
              metadata: record.metadata
            }
            const decoded: Either.Either<HistoryEntry<Machine.Tagged, Machine.Tagged>, ParseResult.ParseError> =
              record.tag === EventStore.StoppedTag
                ? Either.right({ ...common, _tag: "Stopped" as const })
                : record.tag === EventStore.CreatedTag
                ? Either.map(reg.decodeState(record.payload), (state) => ({ ...common, _tag: "Created" as const, state }))
                : Either.map(reg.decodeEvent(record.payload), (event) => ({ ...common, _tag: "Event" as const, event }))
            return Either.isRight(decoded) ? Effect.succeed(decoded.right) : Effect.fail(
              new EventDecodeError({
                machine: machine.name,
                instanceId,
                seqNr: record.seqNr,
                reason: parseMessage(decoded.left)
              })
            )
          }),
          Stream.runCollect,
          Effect.flatMap((chunk) =>
            chunk.length === 0 && fromSeqNr <= 1 ? notFound(machine.name, instanceId) : Effect.succeed([...chunk])
          )
        )).pipe(
          traced("FSMRuntime.history", { machine: machine.name, instanceId })
        )

    const saveSnapshot = (machine: Machine.Any, instanceId: string) =>
      withInstance(machine, instanceId, (reg) =>
        Effect.gen(function*() {
          const loaded = yield* loadFresh(reg, instanceId)
          const snapshot = yield* encodeSnapshot(reg, instanceId, loaded, yield* Clock.currentTimeMillis)
          if (Option.isNone(snapshot)) {
            return yield* new InvalidInput({ machine: machine.name, instanceId, reason: "the state does not encode" })
          }
          yield* store.saveSnapshot(snapshot.value)
          cache.set(cacheKey(machine.name, instanceId), { ...loaded, snapshotSeqNr: loaded.seqNr })
          return loaded.seqNr
        })).pipe(traced("FSMRuntime.saveSnapshot", { machine: machine.name, instanceId }))

    const stop = (machine: Machine.Any, instanceId: string, options?: SendOptions) =>
      withInstance(machine, instanceId, (reg) => {
        const attempt = Effect.flatMap(load(reg, instanceId), (loaded): Effect.Effect<Outcome<Machine.Tagged>, StopError> => {
          if (loaded.stopped) {
            return Effect.fail(
              new InstanceStopped({ machine: machine.name, instanceId, state: loaded.state._tag, event: EventStore.StoppedTag })
            )
          }
          return Effect.flatMap(Clock.currentTimeMillis, (timestamp) => {
            const next: Loaded = { ...loaded, seqNr: loaded.seqNr + 1, stopped: true, deadlines: [] }
            return commitOne(reg, instanceId, loaded, next, { tag: EventStore.StoppedTag, payload: null }, timestamp, options)
              .pipe(
                Effect.catchTag("SequenceConflict", onConflict(reg, instanceId, loaded)),
                Effect.catchTags({
                  StaleTimer: (error) => Effect.die(error),
                  InvalidInput: (error) => Effect.die(error)
                }),
                Effect.as({ _tag: "Stop" as const, state: next.state, seqNr: next.seqNr })
              )
          })
        })
        return retryConflicts(attempt)
      }).pipe(
        traced("FSMRuntime.stop", { machine: machine.name, instanceId })
      )

    const instances = (machine: Machine.Any) =>
      Stream.unwrap(Effect.map(registration(machine), () => store.instances(machine.name)))

    timers = yield* strategy.start({ nodeId, machines: [...registrations.keys()], deliver })

    // The operations are written against `Machine.Any`; the service's
    // signatures restore the per-machine types at the boundary.
    return FSMRuntime.of({
      nodeId,
      create: create as FSMRuntime["Type"]["create"],
      send: send as FSMRuntime["Type"]["send"],
      inspect: inspect as FSMRuntime["Type"]["inspect"],
      history: history as FSMRuntime["Type"]["history"],
      saveSnapshot,
      stop: stop as FSMRuntime["Type"]["stop"],
      instances,
      evictAll: Effect.sync(() => cache.clear())
    })
  })

/**
 * The runtime as a layer. It needs an `EventStore` and whatever the
 * registered machines' actions require; it fails to build with
 * `MachineDefinitionError` when a machine is inconsistent. Timeouts use the
 * `TimeoutStrategy` in context, or in-process timers when there is none.
 *
 * @example
 * ```ts
 * const program = Effect.gen(function*() {
 *   const orders = yield* FSMRuntime.client(Order)
 *   yield* orders.create("order-1", { _tag: "Pending", orderId: "order-1" })
 *   yield* orders.send("order-1", { _tag: "Pay", amount: 42 })
 * })
 * program.pipe(Effect.provide(FSMRuntime.layer({ machines: [Order] })), Effect.provide(EventStore.layerMemory))
 * ```
 *
 * @since 0.1.0
 */
export const layer = <const Ms extends ReadonlyArray<Machine.Any>>(
  options: Options<Ms>
): Layer.Layer<FSMRuntime, MachineDefinitionError, EventStore.EventStore | Machine.Context<Ms[number]>> =>
  Layer.scoped(FSMRuntime, make(options))

/**
 * Options of `FSMRuntime.layerSqlite`.
 *
 * @since 0.1.0
 */
export interface SqliteOptions<Ms extends ReadonlyArray<Machine.Any>> extends Options<Ms> {
  /** The database file; created if missing. */
  readonly filename: string
  /** Options of the durable timeout sweeper. */
  readonly timeouts?: TimeoutStrategy.DurableOptions
  /** Table prefix, default `fsm_`. */
  readonly tablePrefix?: string
}

/**
 * The embedded default in one layer: the runtime on a SQLite file, with
 * durable timeouts. Provides the `EventStore` and `TimeoutStore` too.
 *
 * @example
 * ```ts
 * program.pipe(Effect.provide(FSMRuntime.layerSqlite({ machines: [Order], filename: "orders.db" })))
 * ```
 *
 * @since 0.1.0
 */
export const layerSqlite = <const Ms extends ReadonlyArray<Machine.Any>>(
  options: SqliteOptions<Ms>
): Layer.Layer<
  FSMRuntime | EventStore.EventStore | TimeoutStore.TimeoutStore,
  MachineDefinitionError | SqlEventStore.MakeError,
  Machine.Context<Ms[number]>
> => {
  const { filename, tablePrefix, timeouts, ...runtime } = options
  return layer(runtime).pipe(
    Layer.provide(TimeoutStrategy.layerDurable(timeouts)),
    Layer.provideMerge(SqlEventStore.layerSqlite({ filename, tablePrefix }))
  )
}

// ---------------------------------------------------------------------------
// Accessors and the typed client
// ---------------------------------------------------------------------------

/**
 * A runtime's operations bound to one machine.
 *
 * @since 0.1.0
 */
export interface Client<S extends Machine.Tagged, E extends Machine.Tagged> {
  readonly create: (instanceId: string, initial?: S, options?: SendOptions) => Effect.Effect<Outcome<S>, CreateError>
  readonly send: (instanceId: string, event: E, options?: SendOptions) => Effect.Effect<Outcome<S>, SendError>
  readonly inspect: (instanceId: string) => Effect.Effect<InstanceView<S>, LoadError>
  readonly state: (instanceId: string) => Effect.Effect<S, LoadError>
  readonly lastSequenceNr: (instanceId: string) => Effect.Effect<number, LoadError>
  readonly history: (instanceId: string, fromSeqNr?: number) => Effect.Effect<ReadonlyArray<HistoryEntry<S, E>>, LoadError>
  readonly saveSnapshot: (instanceId: string) => Effect.Effect<number, LoadError | InvalidInput>
  readonly stop: (instanceId: string, options?: SendOptions) => Effect.Effect<Outcome<S>, StopError>
  readonly instances: Stream.Stream<string, PersistenceError | MachineNotRegistered>
}

/**
 * A typed client for one machine.
 *
 * @example
 * ```ts
 * const orders = yield* FSMRuntime.client(Order)
 * const outcome = yield* orders.send("order-1", { _tag: "Pay", amount: 42 }) // { _tag: "Goto", state: Paid, seqNr: 2 }
 * ```
 *
 * @since 0.1.0
 */
export const client = <S extends Machine.Tagged, E extends Machine.Tagged, R>(
  machine: Machine.Machine<S, E, R>
): Effect.Effect<Client<S, E>, never, FSMRuntime> =>
  Effect.map(FSMRuntime, (runtime) => ({
    create: (instanceId, initial, options) => runtime.create(machine, instanceId, initial, options),
    send: (instanceId, event, options) => runtime.send(machine, instanceId, event, options),
    inspect: (instanceId) => runtime.inspect(machine, instanceId),
    state: (instanceId) => Effect.map(runtime.inspect(machine, instanceId), (view) => view.state),
    lastSequenceNr: (instanceId) => Effect.map(runtime.inspect(machine, instanceId), (view) => view.seqNr),
    history: (instanceId, fromSeqNr) => runtime.history(machine, instanceId, fromSeqNr),
    saveSnapshot: (instanceId) => runtime.saveSnapshot(machine, instanceId),
    stop: (instanceId, options) => runtime.stop(machine, instanceId, options),
    instances: runtime.instances(machine)
  }))

/**
 * `send` through the `FSMRuntime` in context.
 *
 * @since 0.1.0
 */
export const send = <S extends Machine.Tagged, E extends Machine.Tagged, R>(
  machine: Machine.Machine<S, E, R>,
  instanceId: string,
  event: NoInfer<E>,
  options?: SendOptions
): Effect.Effect<Outcome<S>, SendError, FSMRuntime> =>
  Effect.flatMap(FSMRuntime, (runtime) => runtime.send(machine, instanceId, event, options))

/**
 * `create` through the `FSMRuntime` in context.
 *
 * @since 0.1.0
 */
export const create = <S extends Machine.Tagged, E extends Machine.Tagged, R>(
  machine: Machine.Machine<S, E, R>,
  instanceId: string,
  initial?: NoInfer<S>,
  options?: SendOptions
): Effect.Effect<Outcome<S>, CreateError, FSMRuntime> =>
  Effect.flatMap(FSMRuntime, (runtime) => runtime.create(machine, instanceId, initial, options))
