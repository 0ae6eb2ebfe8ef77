/**
 * The runtime that runs machines against an `EventStore`.
 *
 * Each `send` is serialized per instance inside one runtime, decided by the
 * pure core (`decide`, over `Machine.step`) and written as one atomic commit
 * with optimistic sequence-number locking; entry and exit actions run after
 * the commit. Loaded instances live in a bounded LRU cache that only ever
 * holds committed state, and are recovered from the latest snapshot plus a
 * replay of the tail (a fold of the core's `evolve`) when needed. Timer
 * deliveries go through the same path as sends.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as ParseResult from "effect/ParseResult"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import {
  type ActionFailed,
  EventDecodeError,
  type FencingRejected,
  type EventReplayError,
  type GuardRejected,
  InstanceAlreadyExists,
  InstanceNotFound,
  type InstanceStopped,
  InvalidConfiguration,
  InvalidInput,
  InvalidInstanceId,
  type InvalidTransition,
  MachineDefinitionError,
  MachineNotRegistered,
  type PersistenceError,
  type SequenceConflict,
  type StaleCommand,
  type StaleTimer,
  TransitionFailed
} from "./Errors.js"
import * as EventStore from "./EventStore.js"
import * as Core from "./internal/core.js"
import { nowMillis } from "./internal/clock.js"
import { describeValue } from "./internal/describe.js"
import { jsonProblem, stringProblem } from "./internal/jsonValue.js"
import { makeKeyedLock } from "./internal/keyedLock.js"
import { makeActions, type Transition } from "./internal/runtime/actions.js"
import { makeCodec, type MachineCodec, parseMessage } from "./internal/runtime/codec.js"
import { type CommitError, makeCommitter } from "./internal/runtime/commit.js"
import { makeDeliver } from "./internal/runtime/delivery.js"
import { makeRunCommand } from "./internal/runtime/dispatch.js"
import { makeExecutor } from "./internal/runtime/execute.js"
import { cacheKey, type Loaded, makeInstances } from "./internal/runtime/instances.js"
import { makeTraced } from "./internal/runtime/tracing.js"
import * as LockingStrategy from "./LockingStrategy.js"
import * as Machine from "./Machine.js"
import * as Metrics from "./Metrics.js"
import * as Outbox from "./Outbox.js"
import * as OutboxStore from "./OutboxStore.js"
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
 * One page of an instance's history (`historyPage`).
 *
 * @since 0.1.0
 */
export interface HistoryPage<S, E> {
  readonly entries: ReadonlyArray<HistoryEntry<S, E>>
  /** The `fromSeqNr` of the next page, `None` after the last one. */
  readonly next: Option.Option<number>
}

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
  | TransitionFailed
  | LockingStrategy.LockError
  | FencingRejected
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
  | TransitionFailed
  | LockingStrategy.LockError
  | FencingRejected
  | ActionFailed

/**
 * Failures of `stop`.
 *
 * @since 0.1.0
 */
export type StopError =
  | LoadError
  | InstanceStopped
  | InvalidInput
  | SequenceConflict
  | LockingStrategy.LockError
  | FencingRejected

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
  /**
   * Every event of the instance, decoded, from `fromSeqNr` (default 1), in
   * one array: for long logs, read `historyPage` by page instead.
   */
  readonly history: <S extends Machine.Tagged, E extends Machine.Tagged, R>(
    machine: Machine.Machine<S, E, R>,
    instanceId: string,
    fromSeqNr?: number
  ) => Effect.Effect<ReadonlyArray<HistoryEntry<S, E>>, LoadError>
  /**
   * One page of the instance's history: up to `limit` (default 100, at most
   * `EventStore.maxPageSize`) entries from `fromSeqNr` (default 1), and the
   * `fromSeqNr` of the next page when there is one. Memory stays bounded by
   * the page, whatever the length of the log.
   */
  readonly historyPage: <S extends Machine.Tagged, E extends Machine.Tagged, R>(
    machine: Machine.Machine<S, E, R>,
    instanceId: string,
    options?: { readonly fromSeqNr?: number; readonly limit?: number }
  ) => Effect.Effect<HistoryPage<S, E>, LoadError | InvalidInput>
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
  /** A retry schedule per machine name, overriding `retry` for that machine. */
  readonly retryByMachine?: { readonly [machine: string]: Schedule.Schedule<unknown, SequenceConflict> }
  /** Defaults to a random UUID. */
  readonly nodeId?: string
  /**
   * No spans for the runtime's operations and their steps (`send`,
   * `append`, `recover`, `deliverTimeout`, `dispatch`, ...); metrics are
   * still recorded, and the background loops' spans (`TimeoutStrategy.sweep`,
   * `Outbox.poll`, `LockingStrategy.acquire` / `renew`) stay. A span costs
   * several microseconds per command, which matters only in memory; the same
   * option as `@effect/rpc`'s servers and clients.
   */
  readonly disableTracing?: boolean
}

/**
 * The default conflict retry schedule: one immediate retry (the conflicting
 * runtime has just read the events it missed, so deciding again at once
 * usually succeeds), then jittered exponential delays from 1 ms, each at most
 * 50 ms, for up to 10 seconds in all. A budget of time rather than a count:
 * a hot instance under sustained contention from many writers is not given
 * up on after a handful of lost races.
 *
 * @example
 * ```ts
 * FSMRuntime.layer({ machines: [Order], retry: FSMRuntime.defaultRetry.pipe(Schedule.upTo("2 seconds")) })
 * ```
 *
 * @since 0.1.0
 */
export const defaultRetry: Schedule.Schedule<unknown, SequenceConflict> = Schedule.recurs(1).pipe(
  Schedule.andThen(
    Schedule.exponential("1 millis").pipe(
      Schedule.modifyDelay((_, delay) => Duration.min(delay, Duration.millis(50))),
      Schedule.jittered,
      Schedule.upTo("10 seconds")
    )
  )
)

// ---------------------------------------------------------------------------
// Implementation: the data path is `send → load → decide → commit →
// actions`, each step in its own internal module (src/internal/runtime/):
// `instances` (cache, snapshot + replay), `execute` (the decide-and-commit
// loop over the pure core), `commit` (the atomic commit and its ambiguous
// outcomes), `actions`, and `delivery` (timer deliveries).
// ---------------------------------------------------------------------------

const componentName = "FSMRuntime"

/** Options checked once, when the runtime is built. */
const resolveOptions = (options: Options<ReadonlyArray<Machine.Any>>) =>
  Effect.gen(function*() {
    const invalid = (option: string, reason: string) =>
      Effect.fail(new InvalidConfiguration({ component: componentName, option, reason }))
    const snapshotEvery = options.snapshotEvery ?? 100
    if (!Number.isSafeInteger(snapshotEvery) || snapshotEvery < 0) {
      return yield* invalid("snapshotEvery", `must be a whole number >= 0 (0 disables snapshots), got ${describeValue(snapshotEvery)}`)
    }
    const cacheSize = options.cacheSize ?? 10_000
    if (!Number.isSafeInteger(cacheSize) || cacheSize < 1) {
      return yield* invalid("cacheSize", `must be a whole number >= 1, got ${describeValue(cacheSize)}`)
    }
    const nodeId = options.nodeId ?? crypto.randomUUID()
    if (typeof nodeId !== "string" || nodeId.length === 0 || stringProblem(nodeId) !== undefined) {
      return yield* invalid("nodeId", `must be a non-empty, well-formed string without NUL, got ${describeValue(nodeId)}`)
    }
    if (!Array.isArray(options.machines)) return yield* invalid("machines", "must be an array of machines")
    const retry = options.retry ?? defaultRetry
    const byMachine = options.retryByMachine ?? {}
    if (typeof byMachine !== "object" || byMachine === null) return yield* invalid("retryByMachine", "must be an object")
    const retryOf = (machine: string) => Object.hasOwn(byMachine, machine) ? byMachine[machine]! : retry
    return { snapshotEvery, cacheSize, nodeId, retryOf }
  })

/** The tag of an event or state given by a caller, if it has one: for span attributes and messages. */
const tagOf = (value: unknown): string =>
  typeof value === "object" && value !== null && typeof (value as { _tag?: unknown })._tag === "string"
    ? (value as Machine.Tagged)._tag
    : "(no _tag)"

const nameOf = (machine: unknown): string =>
  typeof machine === "object" && machine !== null && typeof (machine as { name?: unknown }).name === "string"
    ? (machine as Machine.Any).name
    : String(machine)

/** Why a typed value (an event, a state) given by a caller cannot be encoded and stored, if it cannot. */
const encodedInput = (
  encode: (u: unknown) => Either.Either<unknown, ParseResult.ParseError>,
  value: unknown
): Either.Either<unknown, string> => {
  if (typeof value !== "object" || value === null) return Either.left(`expected a tagged object, got ${describeValue(value)}`)
  const encoded = encode(value)
  if (Either.isLeft(encoded)) return Either.left(parseMessage(encoded.left))
  // The schema accepted it, but it must also survive JSON exactly (NaN, NUL, lone surrogates do not).
  const problem = jsonProblem(encoded.right)
  return problem === undefined ? Either.right(encoded.right) : Either.left(problem)
}

/** Why the options of a command are unusable, if they are. */
const sendOptionsProblem = (options: SendOptions | undefined, allowTimeoutSource: boolean): string | undefined => {
  if (options === undefined) return undefined
  if (typeof options !== "object" || options === null) return `options must be an object, got ${describeValue(options)}`
  const { correlationId, source } = options
  if (correlationId !== undefined) {
    if (typeof correlationId !== "string") return `correlationId must be a string, got ${describeValue(correlationId)}`
    const problem = stringProblem(correlationId)
    if (problem !== undefined) return `correlationId ${problem}`
  }
  if (source !== undefined && source !== "user" && source !== "outbox" && !(allowTimeoutSource && source === "timeout")) {
    return source === "timeout"
      ? `source "timeout" is reserved for timer deliveries`
      : `source must be "user" or "outbox", got ${describeValue(source)}`
  }
  return undefined
}

/**
 * Builds the runtime service. Fails with `MachineDefinitionError` when a
 * machine's definition is inconsistent or two machines share a name, and
 * with `InvalidConfiguration` for unusable options. Its timeout strategy
 * (the one in context, or in-process timers) runs in the scope.
 *
 * @since 0.1.0
 */
export const make = <const Ms extends ReadonlyArray<Machine.Any>>(
  options: Options<Ms>
): Effect.Effect<
  FSMRuntime["Type"],
  MachineDefinitionError | InvalidConfiguration,
  EventStore.EventStore | Scope.Scope | Machine.Context<Ms[number]>
> =>
  Effect.gen(function*() {
    const store = yield* EventStore.EventStore
    const context = yield* Effect.context<Machine.Context<Ms[number]>>()
    const scope = yield* Effect.scope
    const { cacheSize, nodeId, retryOf, snapshotEvery } = yield* resolveOptions(options)
    const strategy = yield* Option.match(yield* Effect.serviceOption(TimeoutStrategy.TimeoutStrategy), {
      onNone: () => TimeoutStrategy.makeInProcess(),
      onSome: Effect.succeed
    })

    // --- Registration ---------------------------------------------------
    const codecs = new Map<string, MachineCodec>()
    for (const machine of options.machines) {
      yield* Machine.validate(machine)
      if (codecs.has(machine.name)) {
        return yield* new MachineDefinitionError({
          machine: machine.name,
          reason: "two machines with this name are registered in one runtime"
        })
      }
      codecs.set(machine.name, makeCodec(machine))
      // Without a static initial state any state may be a creation state, so
      // only machines with one get the warning.
      const unreachable = Option.isSome(machine.initial) ? Machine.unreachableStates(machine) : []
      if (unreachable.length > 0) {
        yield* Effect.logWarning(`machine "${machine.name}": no transition reaches ${unreachable.join(", ")}`)
      }
    }

    /** The machine's codec and a valid instance id, checked synchronously (no Effect on the hot path). */
    const resolve = (machine: Machine.Any, instanceId: string): MachineCodec | MachineNotRegistered | InvalidInstanceId => {
      const codec = typeof machine === "object" && machine !== null ? codecs.get(machine.name) : undefined
      if (codec === undefined || codec.machine !== machine) return new MachineNotRegistered({ machine: nameOf(machine) })
      const problem = EventStore.instanceIdProblem(instanceId)
      return problem === undefined
        ? codec
        : new InvalidInstanceId({ machine: machine.name, instanceId: String(instanceId), reason: problem })
    }
    const isCodec = (r: MachineCodec | MachineNotRegistered | InvalidInstanceId): r is MachineCodec =>
      !(r instanceof MachineNotRegistered || r instanceof InvalidInstanceId)

    // Spans without the call site's stack trace (see `tracing`).
    const traced = makeTraced(options.disableTracing === true)
    /** What a span learns from an outcome, once it is committed. */
    const outcomeAttributes = (outcome: Outcome<Machine.Tagged>) => ({
      seqNr: outcome.seqNr,
      outcome: outcome._tag,
      state: outcome.state._tag
    })

    // --- The data path ---------------------------------------------------
    // Assigned once the strategy starts, at the end of construction; nothing
    // can commit before then.
    let timers: TimeoutStrategy.Running = { durable: false, armed: () => Effect.void }
    const arm = (codec: MachineCodec, instanceId: string, loaded: Loaded) =>
      timers.armed(codec.machine.name, instanceId, loaded.generation, loaded.deadlines)
    const locks = makeKeyedLock()
    const withLock = (machine: string, instanceId: string) => locks.withLock(cacheKey(machine, instanceId))
    /**
     * The lock of a write: interrupted while holding it, a command may have
     * committed without hearing so (mid-commit), so the cached instance is
     * dropped and the next use reloads it from the log.
     */
    const withWriteLock = (machine: string, instanceId: string) =>
      locks.withLock(cacheKey(machine, instanceId), () => instances.evict(machine, instanceId))
    const locking = yield* Option.getOrElse(
      yield* Effect.serviceOption(LockingStrategy.LockingStrategy),
      () => LockingStrategy.defaultStrategy
    ).start({ nodeId, isLoaded: (machine, instanceId) => instances.cached(machine, instanceId) !== undefined })
    // Instances dropped from the cache give back their sticky leases, in the background.
    const unloads = yield* Queue.unbounded<readonly [machine: string, instanceId: string]>()
    yield* Queue.take(unloads).pipe(
      Effect.flatMap(([machine, instanceId]) => locking.unloaded(machine, instanceId)),
      Effect.forever,
      Effect.forkScoped
    )
    const instances = makeInstances({
      store,
      cacheSize,
      arm,
      unloaded: (machine, instanceId) => Queue.unsafeOffer(unloads, [machine, instanceId]),
      traced
    })
    /**
     * Runs a write to one instance: serialized with this runtime's other
     * commands to it, and under the locking strategy's lock. A commit fenced
     * off means the lease is gone: it and the cached instance are dropped.
     */
    const writeLock = <A, E>(
      machine: string,
      instanceId: string,
      use: (held: LockingStrategy.Held) => Effect.Effect<A, E>
    ) =>
      withWriteLock(machine, instanceId)(
        locking.withLock(machine, instanceId, use).pipe(
          Effect.tapError((error) =>
            typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "FencingRejected"
              ? Effect.sync(() => instances.evict(machine, instanceId)).pipe(
                Effect.zipRight(Metric.increment(Metrics.fencingRejected)),
                Effect.zipRight(locking.fenced(machine, instanceId, error as unknown as FencingRejected))
              )
              : Effect.void
          )
        )
      )
    // Assigned once the dispatcher starts, at the end of construction.
    let dispatcher: Outbox.Running = { committed: () => {} }
    const committer = makeCommitter({
      store,
      instances,
      nodeId,
      snapshotEvery,
      durable: () => timers.durable,
      arm,
      produced: () => dispatcher.committed()
    })
    const { execute } = makeExecutor({ instances, committer, retry: retryOf })
    const actions = makeActions(context as Context.Context<never>, traced)
    const hasActions = (codec: MachineCodec) => codec.machine.entry.size > 0 || codec.machine.exit.size > 0

    // --- Operations --------------------------------------------------------

    /**
     * Creates an instance in `state` (already encoded as `payload`), then
     * runs the entry action of the state: the path of `create` and of an
     * outbox `spawn` (which completes its command in the same commit).
     */
    const createInstance = (
      codec: MachineCodec,
      instanceId: string,
      state: Machine.Tagged,
      payload: unknown,
      commandOptions: {
        readonly source: EventStore.Source
        readonly correlationId: string | null
        readonly completes?: OutboxStore.CommandKey | undefined
      }
    ): Effect.Effect<Outcome<Machine.Tagged>, CreateError | StaleCommand> => {
      const machine = codec.machine
      const committed = (held: LockingStrategy.Held) =>
        Effect.suspend(() => {
          if (instances.cached(machine.name, instanceId) !== undefined) {
            return Effect.fail(new InstanceAlreadyExists({ machine: machine.name, instanceId }))
          }
          return Effect.flatMap(nowMillis, (now): Effect.Effect<Loaded, CommitError | TransitionFailed> => {
            const created = Core.create(machine, state, now)
            if (Either.isLeft(created)) {
              const failure = created.left
              return Effect.fail(
                failure._tag === "Failed"
                  ? new TransitionFailed({
                    machine: machine.name,
                    instanceId,
                    state: state._tag,
                    event: EventStore.CreatedTag,
                    stage: failure.stage,
                    reason: `${failure.reason}: ${describeValue(failure.error)}`,
                    cause: failure.error
                  })
                  : new InvalidInput({ machine: machine.name, instanceId, reason: "the initial state cannot be entered" })
              )
            }
            const next = created.right.next
            return committer.commit({
              codec,
              instanceId,
              loaded: undefined,
              next,
              tag: EventStore.CreatedTag,
              payload,
              timers: { cancelAll: true, schedule: next.deadlines, fired: undefined },
              timestamp: now,
              source: commandOptions.source,
              correlationId: commandOptions.correlationId,
              timer: null,
              commands: created.right.commands,
              completes: commandOptions.completes,
              fence: held.fence,
              committing: held.committing
            })
          }).pipe(
            Effect.catchTags({
              SequenceConflict: () => Effect.fail(new InstanceAlreadyExists({ machine: machine.name, instanceId })),
              StaleTimer: (error: StaleTimer) => Effect.die(error)
            })
          )
        })
      return writeLock(machine.name, instanceId, committed).pipe(
        Effect.tap(() => Metric.increment(codec.metrics.transitions.Goto)),
        Effect.flatMap((loaded) => {
          const outcome: Outcome<Machine.Tagged> = { _tag: "Goto", state, seqNr: loaded.seqNr }
          if (!hasActions(codec)) return Effect.succeed(outcome)
          return Effect.as(
            actions.runTransition(codec, {
              instanceId,
              seqNr: loaded.seqNr,
              previous: state,
              state,
              event: undefined,
              entered: true,
              initial: true
            }),
            outcome
          )
        })
      )
    }

    const create = (machine: Machine.Any, instanceId: string, initial?: Machine.Tagged, sendOptions?: SendOptions) =>
      Effect.suspend((): Effect.Effect<Outcome<Machine.Tagged>, CreateError> => {
        const codec = resolve(machine, instanceId)
        if (!isCodec(codec)) return Effect.fail(codec)
        const invalid = (reason: string) => Effect.fail(new InvalidInput({ machine: machine.name, instanceId, reason }))
        const optionsProblem = sendOptionsProblem(sendOptions, false)
        if (optionsProblem !== undefined) return invalid(optionsProblem)
        const state = initial ?? Option.getOrUndefined(machine.initial as Option.Option<Machine.Tagged>)
        if (state === undefined) return invalid("no initial state was given and the machine has no static initial state")
        const payload = encodedInput(codec.encodeState, state)
        if (Either.isLeft(payload)) return invalid(payload.left)
        return createInstance(codec, instanceId, state, payload.right, {
          source: sendOptions?.source ?? "user",
          correlationId: sendOptions?.correlationId ?? null
        }).pipe(
          // Only an outbox spawn completes a command.
          Effect.catchTag("StaleCommand", (error) => Effect.die(error))
        )
      }).pipe(traced("FSMRuntime.create", { machine: nameOf(machine), instanceId: String(instanceId) }, outcomeAttributes))

    const send = (machine: Machine.Any, instanceId: string, event: Machine.Tagged, sendOptions?: SendOptions) =>
      // Registration, id, options and encoding are checked synchronously; the
      // only Effects on the path are the lock, the commit and the actions.
      Effect.suspend((): Effect.Effect<Outcome<Machine.Tagged>, SendError> => {
        const codec = resolve(machine, instanceId)
        if (!isCodec(codec)) return Effect.fail(codec)
        const invalid = (reason: string) => Effect.fail(new InvalidInput({ machine: machine.name, instanceId, reason }))
        const optionsProblem = sendOptionsProblem(sendOptions, false)
        if (optionsProblem !== undefined) return invalid(optionsProblem)
        const payload = encodedInput(codec.encodeEvent, event)
        if (Either.isLeft(payload)) return invalid(payload.left)
        const executed = writeLock(machine.name, instanceId, (held) =>
          execute(codec, instanceId, { _tag: "Send", event }, {
            source: sendOptions?.source ?? "user",
            correlationId: sendOptions?.correlationId ?? null,
            payload: payload.right,
            held
          })).pipe(
          // Only a timer delivery can be stale, only an outbox delivery complete a command.
          Effect.catchTags({
            StaleTimer: (error) => Effect.die(error),
            StaleCommand: (error) => Effect.die(error)
          })
        )
        return Effect.flatMap(executed, ({ accepted, loaded }) => {
          const outcome: Outcome<Machine.Tagged> = { _tag: accepted.outcome, state: accepted.next.state, seqNr: loaded.seqNr }
          if (!accepted.entered || !hasActions(codec)) return Effect.succeed(outcome)
          // After the lock is released, so that an action may send to its own instance.
          return Effect.as(
            actions.runTransition(codec, {
              instanceId,
              seqNr: loaded.seqNr,
              previous: accepted.previous,
              state: accepted.next.state,
              event,
              entered: true,
              initial: false
            }),
            outcome
          )
        })
      }).pipe(
        traced("FSMRuntime.send", { machine: nameOf(machine), instanceId: String(instanceId), event: tagOf(event) }, outcomeAttributes)
      )

    const stop = (machine: Machine.Any, instanceId: string, sendOptions?: SendOptions) =>
      Effect.suspend((): Effect.Effect<Outcome<Machine.Tagged>, StopError> => {
        const codec = resolve(machine, instanceId)
        if (!isCodec(codec)) return Effect.fail(codec)
        const optionsProblem = sendOptionsProblem(sendOptions, false)
        if (optionsProblem !== undefined) {
          return Effect.fail(new InvalidInput({ machine: machine.name, instanceId, reason: optionsProblem }))
        }
        return writeLock(machine.name, instanceId, (held) =>
          execute(codec, instanceId, { _tag: "Stop" }, {
            source: sendOptions?.source ?? "user",
            correlationId: sendOptions?.correlationId ?? null,
            held
          })).pipe(
          Effect.catchTags({
            // A stop decides nothing of the machine's, and writes no payload.
            InvalidTransition: (error) => Effect.die(error),
            GuardRejected: (error) => Effect.die(error),
            TransitionFailed: (error) => Effect.die(error),
            StaleTimer: (error) => Effect.die(error),
            StaleCommand: (error) => Effect.die(error)
          }),
          Effect.map(({ accepted, loaded }): Outcome<Machine.Tagged> => ({
            _tag: "Stop",
            state: accepted.next.state,
            seqNr: loaded.seqNr
          }))
        )
      }).pipe(traced("FSMRuntime.stop", { machine: nameOf(machine), instanceId: String(instanceId) }, outcomeAttributes))

    /** Runs `body` under the instance's lock, after the synchronous checks. */
    const withInstance = <A, E>(
      machine: Machine.Any,
      instanceId: string,
      body: (codec: MachineCodec) => Effect.Effect<A, E>
    ): Effect.Effect<A, E | MachineNotRegistered | InvalidInstanceId> =>
      Effect.suspend((): Effect.Effect<A, E | MachineNotRegistered | InvalidInstanceId> => {
        const codec = resolve(machine, instanceId)
        return isCodec(codec) ? withLock(machine.name, instanceId)(body(codec)) : Effect.fail(codec)
      })

    const inspect = (machine: Machine.Any, instanceId: string) =>
      withInstance(machine, instanceId, (codec) => instances.loadFresh(codec, instanceId)).pipe(
        Effect.map((loaded): InstanceView<Machine.Tagged> => ({
          state: loaded.state,
          seqNr: loaded.seqNr,
          stopped: loaded.stopped,
          timeouts: loaded.deadlines.map(({ dueAt, name }) => ({ name, dueAt }))
        })),
        traced("FSMRuntime.inspect", { machine: nameOf(machine), instanceId: String(instanceId) }, (view: InstanceView<Machine.Tagged>) => ({
          seqNr: view.seqNr,
          state: view.state._tag
        }))
      )

    /** A stored record as a history entry, or why it does not decode. */
    const historyEntry = (
      codec: MachineCodec,
      instanceId: string,
      record: EventStore.EventRecord
    ): Either.Either<HistoryEntry<Machine.Tagged, Machine.Tagged>, EventDecodeError> => {
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
          ? Either.map(codec.decodeState(record.payload), (state) => ({ ...common, _tag: "Created" as const, state }))
          : Either.map(codec.decodeEvent(record.payload), (event) => ({ ...common, _tag: "Event" as const, event }))
      return Either.mapLeft(decoded, (error) =>
        new EventDecodeError({
          machine: codec.machine.name,
          instanceId,
          seqNr: record.seqNr,
          reason: parseMessage(error)
        }))
    }

    const historyPage = (
      machine: Machine.Any,
      instanceId: string,
      pageOptions?: { readonly fromSeqNr?: number; readonly limit?: number }
    ) =>
      Effect.suspend((): Effect.Effect<HistoryPage<Machine.Tagged, Machine.Tagged>, LoadError | InvalidInput> => {
        const codec = resolve(machine, instanceId)
        if (!isCodec(codec)) return Effect.fail(codec)
        const fromSeqNr = pageOptions?.fromSeqNr ?? 1
        const limit = pageOptions?.limit ?? 100
        if (!Number.isSafeInteger(fromSeqNr) || fromSeqNr < 1) {
          return Effect.fail(
            new InvalidInput({ machine: machine.name, instanceId, reason: `fromSeqNr must be a whole number >= 1, got ${describeValue(fromSeqNr)}` })
          )
        }
        if (!Number.isSafeInteger(limit) || limit < 1 || limit > EventStore.maxPageSize) {
          return Effect.fail(
            new InvalidInput({
              machine: machine.name,
              instanceId,
              reason: `limit must be a whole number from 1 to ${EventStore.maxPageSize}, got ${describeValue(limit)}`
            })
          )
        }
        // One more than asked for tells whether there is a next page.
        const read = Math.min(limit + 1, EventStore.maxPageSize)
        return Effect.flatMap(store.eventsPage(machine.name, instanceId, fromSeqNr, read), (
          records
        ): Effect.Effect<HistoryPage<Machine.Tagged, Machine.Tagged>, LoadError> => {
          if (records.length === 0 && fromSeqNr === 1) return Effect.fail(new InstanceNotFound({ machine: machine.name, instanceId }))
          const entries: Array<HistoryEntry<Machine.Tagged, Machine.Tagged>> = []
          for (let i = 0; i < Math.min(limit, records.length); i++) {
            const entry = historyEntry(codec, instanceId, records[i]!)
            if (Either.isLeft(entry)) return Effect.fail(entry.left)
            entries.push(entry.right)
          }
          const last = entries[entries.length - 1]
          const page = (more: boolean): HistoryPage<Machine.Tagged, Machine.Tagged> => ({
            entries,
            next: more && last !== undefined ? Option.some(last.seqNr + 1) : Option.none()
          })
          if (records.length > limit) return Effect.succeed(page(true))
          if (read > limit || records.length < limit || last === undefined) return Effect.succeed(page(false))
          // A full page of the largest size: whether another follows takes one more look.
          return Effect.map(store.eventsPage(machine.name, instanceId, last.seqNr + 1, 1), (after) => page(after.length > 0))
        })
      }).pipe(traced("FSMRuntime.historyPage", { machine: nameOf(machine), instanceId: String(instanceId) }, (page: HistoryPage<Machine.Tagged, Machine.Tagged>) => ({
        entries: page.entries.length
      })))

    const history = (machine: Machine.Any, instanceId: string, fromSeqNr = 1) =>
      Effect.suspend((): Effect.Effect<ReadonlyArray<HistoryEntry<Machine.Tagged, Machine.Tagged>>, LoadError> => {
        const codec = resolve(machine, instanceId)
        if (!isCodec(codec)) return Effect.fail(codec)
        return store.events(machine.name, instanceId, fromSeqNr).pipe(
          Stream.mapEffect((record) => historyEntry(codec, instanceId, record)),
          Stream.runCollect,
          Effect.flatMap((chunk) =>
            chunk.length === 0 && !(fromSeqNr > 1)
              ? Effect.fail(new InstanceNotFound({ machine: machine.name, instanceId }))
              : Effect.succeed([...chunk])
          )
        )
      }).pipe(traced("FSMRuntime.history", { machine: nameOf(machine), instanceId: String(instanceId) }, (entries: ReadonlyArray<unknown>) => ({
        entries: entries.length
      })))

    const saveSnapshot = (machine: Machine.Any, instanceId: string) =>
      withInstance(machine, instanceId, (codec) =>
        Effect.gen(function*() {
          const loaded = yield* instances.loadFresh(codec, instanceId)
          const encoded = codec.encodeSnapshot({ value: loaded.state, generation: loaded.generation, deadlines: loaded.deadlines })
          const problem = Either.isLeft(encoded) ? parseMessage(encoded.left) : jsonProblem(encoded.right)
          if (problem !== undefined || Either.isLeft(encoded)) {
            return yield* new InvalidInput({ machine: machine.name, instanceId, reason: `the state does not encode: ${problem}` })
          }
          yield* store.saveSnapshot({
            machine: machine.name,
            instanceId,
            seqNr: loaded.seqNr,
            state: encoded.right,
            stopped: loaded.stopped,
            schemaVersion: machine.version,
            timestamp: yield* nowMillis
          }).pipe(Effect.tapError(() => Metric.increment(codec.metrics.snapshotFailures)))
          yield* Metric.increment(codec.metrics.snapshotsWritten)
          instances.remember(machine.name, instanceId, { ...loaded, snapshotSeqNr: loaded.seqNr })
          return loaded.seqNr
        })).pipe(traced("FSMRuntime.saveSnapshot", { machine: nameOf(machine), instanceId: String(instanceId) }, (seqNr: number) => ({ seqNr })))

    const listInstances = (machine: Machine.Any) => {
      const listed = Stream.unwrap(Effect.suspend(() => {
        const codec = typeof machine === "object" && machine !== null ? codecs.get(machine.name) : undefined
        return codec === undefined || codec.machine !== machine
          ? Effect.fail(new MachineNotRegistered({ machine: nameOf(machine) }))
          : Effect.succeed(store.instances(machine.name))
      }))
      return options.disableTracing === true
        ? listed
        : Stream.withSpan(listed, "FSMRuntime.instances", { attributes: { machine: nameOf(machine) }, captureStackTrace: false })
    }

    /** The actions of a transition committed by a timer or an outbox event; `undefined` when none runs. */
    const transitionActions = (codec: MachineCodec, transition: Transition) =>
      transition.entered && hasActions(codec) ? actions.runTransition(codec, transition) : undefined

    const deliver = makeDeliver({
      codecs,
      instances,
      writeLock,
      execute: (codec, instanceId, command, held) =>
        execute(codec, instanceId, command, { source: "timeout", correlationId: null, held }),
      runActions: transitionActions,
      scope,
      traced
    })

    /** Loads the instances at `keys` that are not cached, one batch read per machine (see `Instances.preload`). */
    const preloadAll = (keys: Iterable<{ readonly machine: string; readonly instanceId: string }>) =>
      Effect.suspend(() => {
        const byMachine = new Map<string, Array<string>>()
        for (const key of keys) {
          let ids = byMachine.get(key.machine)
          if (ids === undefined) byMachine.set(key.machine, ids = [])
          ids.push(key.instanceId)
        }
        return Effect.forEach(byMachine, ([machine, ids]) => {
          const codec = codecs.get(machine)
          return codec === undefined ? Effect.void : instances.preload(codec, ids)
        }, { discard: true })
      })

    // A batch of claimed timers: their instances are loaded together.
    timers = yield* strategy.start({
      nodeId,
      machines: [...codecs.keys()],
      deliver,
      prepare: preloadAll
    })

    // --- The outbox ----------------------------------------------------------
    const producers = [...codecs.values()].filter((codec) => codec.machine.producesCommands).map((codec) => codec.machine)
    if (producers.length > 0) {
      const outboxStore = yield* Effect.serviceOption(OutboxStore.OutboxStore)
      if (Option.isNone(outboxStore)) {
        return yield* new InvalidConfiguration({
          component: componentName,
          option: "machines",
          reason: `machine "${producers[0]!.name}" produces commands, but no OutboxStore is provided (every store layer of effect-fsm provides one)`
        })
      }
      const config = yield* Option.match(yield* Effect.serviceOption(Outbox.Dispatcher), {
        onNone: () => Outbox.resolveOptions(),
        onSome: Effect.succeed
      })
      const handlerSets = new Map<string, Outbox.HandlerSet>()
      for (const machine of producers) {
        if (machine.commandTags.length === 0) continue
        const set = yield* Effect.serviceOption(Outbox.handlersTag(machine.name))
        const missing = Option.match(set, {
          onNone: () => machine.commandTags,
          onSome: (found) => machine.commandTags.filter((tag) => !found.handlers.has(tag))
        })
        // A node that dispatches nothing needs no handlers.
        if (missing.length > 0 && config.dispatch) {
          return yield* new MachineDefinitionError({
            machine: machine.name,
            reason: `its commands ${missing.join(", ")} have no handler in this runtime: provide Outbox.handlers(${machine.name}, { ... })`
          })
        }
        if (Option.isSome(set)) handlerSets.set(machine.name, set.value)
      }
      const run = makeRunCommand({
        codecs,
        handlers: handlerSets,
        writeLock,
        execute: (codec, instanceId, event, payload, command, held) =>
          execute(codec, instanceId, { _tag: "Send", event }, {
            source: "outbox",
            correlationId: command.correlationId,
            payload,
            held,
            completes: command
          }),
        create: (codec, instanceId, state, payload, command) =>
          createInstance(codec, instanceId, state, payload, {
            source: "outbox",
            correlationId: command.correlationId,
            completes: command
          }),
        runActions: transitionActions,
        scope
      })
      dispatcher = yield* Outbox.start(outboxStore.value, {
        nodeId,
        machines: producers.map((machine) => machine.name),
        // A batch of claimed commands: the instances their replies and events go to are loaded together.
        prepare: (commands) =>
          preloadAll(commands.flatMap((command) =>
            command.kind === "handler"
              ? [{ machine: command.machine, instanceId: command.instanceId }]
              : command.kind === "send" && command.target !== null
              ? [command.target]
              : []
          )),
        run: (command, context) =>
          run(command, context).pipe(
            traced("FSMRuntime.dispatch", {
              machine: command.machine,
              instanceId: command.instanceId,
              seqNr: command.seqNr,
              index: command.index,
              command: command.tag,
              kind: command.kind,
              attempt: context.attempt
            }, (result: Outbox.CommandResult) =>
              result._tag === "Delivered" ? { result: "Delivered", deliveredSeqNr: result.seqNr } : { result: result._tag })
          )
      }, config)
    }

    // The operations are written against `Machine.Any`; the service's
    // signatures restore the per-machine types at the boundary.
    return FSMRuntime.of({
      nodeId,
      create: create as FSMRuntime["Type"]["create"],
      send: send as FSMRuntime["Type"]["send"],
      inspect: inspect as FSMRuntime["Type"]["inspect"],
      history: history as FSMRuntime["Type"]["history"],
      historyPage: historyPage as FSMRuntime["Type"]["historyPage"],
      saveSnapshot,
      stop: stop as FSMRuntime["Type"]["stop"],
      instances: listInstances,
      evictAll: Effect.sync(() => instances.clear()).pipe(traced("FSMRuntime.evictAll", {}))
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
): Layer.Layer<
  FSMRuntime,
  MachineDefinitionError | InvalidConfiguration,
  EventStore.EventStore | Machine.Context<Ms[number]>
> =>
  Layer.scoped(FSMRuntime, make(options))

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
  readonly historyPage: (
    instanceId: string,
    options?: { readonly fromSeqNr?: number; readonly limit?: number }
  ) => Effect.Effect<HistoryPage<S, E>, LoadError | InvalidInput>
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
    historyPage: (instanceId, options) => runtime.historyPage(machine, instanceId, options),
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
