/**
 * The inspector: what operators ask of a running system, as typed Effects.
 * Which instances are where (the current-state table), one instance in
 * detail (its state, history, timers, outbox commands and lease), dead
 * letters with re-drive and discard, and the few interventions an operator
 * needs: fire a timer now, cancel it, stop an instance.
 *
 * It reads the stores directly and writes only through them or through the
 * runtime (a stop is an ordinary commit), so it is safe next to running
 * nodes: an API-only process (`TimeoutStrategy.layerDurable({ sweep: false
 * })`, `Outbox.layer({ dispatch: false })`) or the `effect-fsm` CLI can run
 * it against the production database. Machines are named by their `name`,
 * as operators type them; every machine must be registered with the
 * runtime under the inspector.
 *
 * @example
 * ```ts
 * const inspector = yield* Inspector.Inspector
 * const stuck = yield* inspector.instances({ machine: "order", stateTag: "Charging", enteredBefore: Date.now() - 600_000, limit: 50 })
 * const detail = yield* inspector.instance("order", "order-1")
 * // detail.summary.stateTag, detail.state (JSON), detail.timers, detail.commands, detail.lease
 * ```
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import {
  InstanceNotFound,
  InvalidInput,
  type InvalidInstanceId,
  type InvalidQuery,
  MachineNotRegistered,
  PersistenceError
} from "./Errors.js"
import * as EventStore from "./EventStore.js"
import * as FSMRuntime from "./FSMRuntime.js"
import * as LeaseStore from "./LeaseStore.js"
import type * as Machine from "./Machine.js"
import * as OutboxStore from "./OutboxStore.js"
import * as TimeoutStore from "./TimeoutStore.js"

/**
 * One instance, as an operator looks at it.
 *
 * @since 0.1.0
 */
export interface InstanceDetail {
  /** Its row of the current-state table. */
  readonly summary: EventStore.InstanceSummary
  /** The current state, recovered from the log and encoded with the machine's schema (JSON). */
  readonly state: unknown
  /** The deadlines the state armed that have not fired (from the log, whatever the timeout strategy). */
  readonly deadlines: ReadonlyArray<{ readonly name: string; readonly dueAt: number }>
  /** Its rows in the durable timer table (with attempts and last error). */
  readonly timers: ReadonlyArray<TimeoutStore.TimerRecord>
  /** Its outbox commands not yet completed. */
  readonly commands: ReadonlyArray<OutboxStore.CommandRecord>
  /** Who holds its lease now, under distributed locking. */
  readonly lease: Option.Option<LeaseStore.Lease>
}

/**
 * One page of an instance's log as stored (encoded payloads, full
 * metadata), readable even when the machine can no longer decode it.
 *
 * @since 0.1.0
 */
export interface HistoryPage {
  readonly entries: ReadonlyArray<EventStore.EventRecord>
  /** The `fromSeqNr` of the next page, when there may be one. */
  readonly next: Option.Option<number>
}

/**
 * Dead letters of one machine: timers and outbox commands that failed too
 * often, each with its last error.
 *
 * @since 0.1.0
 */
export interface DeadLetters {
  readonly timers: ReadonlyArray<TimeoutStore.DeadLetter>
  readonly commands: ReadonlyArray<OutboxStore.DeadLetter>
}

/**
 * Which timer an intervention is about (`TimeoutStore.TimerKey`).
 *
 * @since 0.1.0
 */
export type TimerKey = TimeoutStore.TimerKey

/**
 * The inspector service.
 *
 * @since 0.1.0
 */
export class Inspector extends Context.Tag("effect-fsm/Inspector")<Inspector, {
  /** The names of the machines it knows, in registration order. */
  readonly machines: ReadonlyArray<string>
  /** A page of instances from the current-state table (`EventStore.InstanceQuery`). */
  readonly instances: (
    query: EventStore.InstanceQuery
  ) => Effect.Effect<EventStore.InstancePage, MachineNotRegistered | InvalidQuery | PersistenceError>
  /** How many instances are in each state (`EventStore.stateCounts`). */
  readonly counts: (
    machine: string
  ) => Effect.Effect<ReadonlyArray<EventStore.StateCount>, MachineNotRegistered | InvalidQuery | PersistenceError>
  /** One instance's current-state row, without loading the instance; none when it has no log. */
  readonly summary: (
    machine: string,
    instanceId: string
  ) => Effect.Effect<Option.Option<EventStore.InstanceSummary>, MachineNotRegistered | InvalidInstanceId | PersistenceError>
  /**
   * The instances of the machine that have an event with this correlation
   * id (`EventStore.instancesByCorrelation`), as current-state rows, up to
   * `limit` (default 100), in id order.
   */
  readonly byCorrelationId: (
    machine: string,
    correlationId: string,
    options?: { readonly limit?: number | undefined }
  ) => Effect.Effect<ReadonlyArray<EventStore.InstanceSummary>, MachineNotRegistered | InvalidQuery | PersistenceError>
  /**
   * One instance in detail; `InstanceNotFound` when it has no log. Read
   * piece by piece, not as one snapshot: a commit landing meanwhile can make
   * the timers or commands newer than the state.
   */
  readonly instance: (machine: string, instanceId: string) => Effect.Effect<InstanceDetail, FSMRuntime.LoadError>
  /** A page of the stored log: up to `limit` (default 100) records from `fromSeqNr` (default 1). */
  readonly history: (
    machine: string,
    instanceId: string,
    options?: { readonly fromSeqNr?: number | undefined; readonly limit?: number | undefined }
  ) => Effect.Effect<HistoryPage, MachineNotRegistered | InstanceNotFound | InvalidInstanceId | InvalidInput | PersistenceError>
  /** The instance's whole history, decoded, with its machine: what `Visualize.trace` draws. */
  readonly decodedHistory: (
    machine: string,
    instanceId: string
  ) => Effect.Effect<
    { readonly machine: Machine.Any; readonly entries: ReadonlyArray<FSMRuntime.HistoryEntry<Machine.Tagged, Machine.Tagged>> },
    FSMRuntime.LoadError
  >
  /** Live timers of the machine due before `before`, soonest first (default: the next hour, 100 of them). */
  readonly upcomingTimers: (
    machine: string,
    options?: { readonly before?: number | undefined; readonly limit?: number | undefined }
  ) => Effect.Effect<ReadonlyArray<TimeoutStore.TimerRecord>, MachineNotRegistered | InvalidInput | PersistenceError>
  readonly deadLetters: (machine: string) => Effect.Effect<DeadLetters, MachineNotRegistered | PersistenceError>
  /** Moves a dead-lettered timer back, due now; `false` when there is none (or a live one of its name). */
  readonly redriveTimer: (
    timer: Omit<TimerKey, "generation">
  ) => Effect.Effect<boolean, MachineNotRegistered | InvalidInstanceId | PersistenceError>
  /** Deletes a dead-lettered timer for good; `false` when there is none. */
  readonly discardTimer: (
    timer: Omit<TimerKey, "generation">
  ) => Effect.Effect<boolean, MachineNotRegistered | InvalidInstanceId | PersistenceError>
  /** Moves a dead-lettered command back, due now; `false` when there is none. */
  readonly redriveCommand: (
    command: OutboxStore.CommandKey
  ) => Effect.Effect<boolean, MachineNotRegistered | InvalidInstanceId | PersistenceError>
  /** Deletes a dead-lettered command for good; `false` when there is none. */
  readonly discardCommand: (
    command: OutboxStore.CommandKey
  ) => Effect.Effect<boolean, MachineNotRegistered | InvalidInstanceId | PersistenceError>
  /**
   * Makes a live durable timer due now: the next sweep (of any node)
   * delivers it through the normal path, exactly once. `false` when it is
   * no longer armed with this generation.
   */
  readonly fireTimer: (timer: TimerKey) => Effect.Effect<boolean, MachineNotRegistered | InvalidInstanceId | PersistenceError>
  /** Deletes a live durable timer: it will not fire. `false` when it is no longer armed with this generation. */
  readonly cancelTimer: (timer: TimerKey) => Effect.Effect<boolean, MachineNotRegistered | InvalidInstanceId | PersistenceError>
  /** Stops the instance through the runtime (`FSMRuntime.stop`): a durable `@stopped` record. */
  readonly stop: (machine: string, instanceId: string) => Effect.Effect<FSMRuntime.Outcome<Machine.Tagged>, FSMRuntime.StopError>
}>() {}

/**
 * What the inspector reads and writes through: the runtime and the stores.
 *
 * @since 0.1.0
 */
export type Requirements =
  | FSMRuntime.FSMRuntime
  | EventStore.EventStore
  | TimeoutStore.TimeoutStore
  | OutboxStore.OutboxStore
  | LeaseStore.LeaseStore

/**
 * Builds the inspector for `machines` over the runtime and stores of the
 * context. Every machine must be registered with that runtime.
 *
 * @since 0.1.0
 */
export const make = (
  options: { readonly machines: ReadonlyArray<Machine.Any> }
): Effect.Effect<Inspector["Type"], never, Requirements> =>
  Effect.gen(function*() {
    const runtime = yield* FSMRuntime.FSMRuntime
    const store = yield* EventStore.EventStore
    const timers = yield* TimeoutStore.TimeoutStore
    const outbox = yield* OutboxStore.OutboxStore
    const leases = yield* LeaseStore.LeaseStore
    const byName = new Map(options.machines.map((machine) => [machine.name, machine]))

    const machineNamed = (name: string): Effect.Effect<Machine.Any, MachineNotRegistered> => {
      const machine = typeof name === "string" ? byName.get(name) : undefined
      return machine === undefined ? Effect.fail(new MachineNotRegistered({ machine: String(name) })) : Effect.succeed(machine)
    }

    /** The instance's id checked, and its existence: the current-state row. */
    const summaryOf = (machine: string, instanceId: string) =>
      Effect.flatMap(
        store.instance(machine, instanceId),
        Option.match({
          onNone: () => Effect.fail(new InstanceNotFound({ machine, instanceId })),
          onSome: Effect.succeed
        })
      )

    const encodeState = (machine: Machine.Any, state: unknown) =>
      Schema.encodeUnknown(machine.stateSchema as Schema.Schema<unknown, unknown>)(state).pipe(
        Effect.mapError((error) =>
          new PersistenceError({ operation: "inspect", reason: `the state does not encode: ${error.message}` })
        )
      )

    /** An action on one timer or command: its machine known, its id valid, then `run` at the Clock's now. */
    const keyed = <K extends { readonly machine: string; readonly instanceId: string }, A, E>(
      operation: string,
      key: K,
      run: (now: number) => Effect.Effect<A, E>
    ) =>
      machineNamed(key.machine).pipe(
        Effect.zipRight(EventStore.validateInstanceId(key.machine, key.instanceId)),
        Effect.zipRight(Clock.currentTimeMillis),
        Effect.flatMap(run),
        Effect.withSpan(`Inspector.${operation}`, { attributes: { ...key } })
      )

    const pageLimit = (limit: number | undefined, operation: string) =>
      limit === undefined
        ? Effect.succeed(100)
        : Number.isSafeInteger(limit) && limit >= 1 && limit <= EventStore.maxPageSize
        ? Effect.succeed(limit)
        : Effect.fail(
          new InvalidInput({
            machine: "",
            instanceId: "",
            reason: `${operation}: limit must be a whole number from 1 to ${EventStore.maxPageSize}, got ${String(limit)}`
          })
        )

    const inspector: Inspector["Type"] = {
      machines: options.machines.map((machine) => machine.name),
      instances: (query) =>
        Effect.suspend(() =>
          // A malformed query is the store's InvalidQuery; a well-formed one must name a known machine.
          typeof query === "object" && query !== null && typeof query.machine === "string"
            ? Effect.zipRight(machineNamed(query.machine), store.listInstances(query))
            : store.listInstances(query)
        ).pipe(Effect.withSpan("Inspector.instances", { attributes: { machine: typeof query === "object" && query !== null ? query.machine : undefined } })),
      summary: (name, instanceId) =>
        Effect.zipRight(machineNamed(name), store.instance(name, instanceId)).pipe(
          Effect.withSpan("Inspector.summary", { attributes: { machine: name, instanceId } })
        ),
      byCorrelationId: (name, correlationId, options) =>
        Effect.gen(function*() {
          yield* machineNamed(name)
          const ids = yield* store.instancesByCorrelation(name, correlationId, options?.limit ?? 100)
          const rows = yield* Effect.forEach(ids, (id) =>
            store.instance(name, id).pipe(
              // The ids come from the log, so they are valid; an odd one is left out.
              Effect.catchTag("InvalidInstanceId", () => Effect.succeed(Option.none()))
            ))
          return rows.flatMap(Option.toArray)
        }).pipe(Effect.withSpan("Inspector.byCorrelationId", { attributes: { machine: name } })),
      counts: (machine) =>
        Effect.zipRight(machineNamed(machine), store.stateCounts(machine)).pipe(
          Effect.withSpan("Inspector.counts", { attributes: { machine } })
        ),
      instance: (name, instanceId) =>
        Effect.gen(function*() {
          const machine = yield* machineNamed(name)
          const summary = yield* summaryOf(name, instanceId)
          const view = yield* runtime.inspect(machine, instanceId)
          const state = yield* encodeState(machine, view.state)
          const detail: InstanceDetail = {
            // The runtime caught up with the log; the row is re-read if it moved meanwhile.
            summary: summary.seqNr === view.seqNr ? summary : yield* summaryOf(name, instanceId),
            state,
            deadlines: view.timeouts,
            timers: yield* timers.pending(name, instanceId),
            commands: yield* outbox.pending(name, instanceId),
            lease: yield* leases.get({ machine: name, instanceId })
          }
          return detail
        }).pipe(
          Effect.withSpan("Inspector.instance", { attributes: { machine: name, instanceId } })
        ),
      history: (name, instanceId, options) =>
        Effect.gen(function*() {
          yield* machineNamed(name)
          const limit = yield* pageLimit(options?.limit, "history")
          const from = options?.fromSeqNr ?? 1
          if (!Number.isSafeInteger(from) || from < 1) {
            return yield* Effect.fail(
              new InvalidInput({ machine: name, instanceId, reason: `fromSeqNr must be a positive whole number, got ${String(from)}` })
            )
          }
          yield* summaryOf(name, instanceId)
          const entries = yield* store.eventsPage(name, instanceId, from, limit)
          const last = entries[entries.length - 1]
          return {
            entries,
            next: entries.length < limit || last === undefined ? Option.none() : Option.some(last.seqNr + 1)
          }
        }).pipe(Effect.withSpan("Inspector.history", { attributes: { machine: name, instanceId } })),
      decodedHistory: (name, instanceId) =>
        Effect.gen(function*() {
          const machine = yield* machineNamed(name)
          const entries = yield* runtime.history(machine, instanceId)
          return { machine, entries }
        }).pipe(Effect.withSpan("Inspector.decodedHistory", { attributes: { machine: name, instanceId } })),
      upcomingTimers: (name, options) =>
        Effect.gen(function*() {
          yield* machineNamed(name)
          const limit = yield* pageLimit(options?.limit, "upcomingTimers")
          const before = options?.before ?? (yield* Clock.currentTimeMillis) + 3_600_000
          if (!Number.isSafeInteger(before)) {
            return yield* Effect.fail(
              new InvalidInput({ machine: name, instanceId: "", reason: `before must be whole epoch milliseconds, got ${String(before)}` })
            )
          }
          return yield* timers.upcoming(name, { before, limit })
        }).pipe(Effect.withSpan("Inspector.upcomingTimers", { attributes: { machine: name } })),
      deadLetters: (name) =>
        Effect.gen(function*() {
          yield* machineNamed(name)
          return { timers: yield* timers.deadLetters(name), commands: yield* outbox.deadLetters(name) }
        }).pipe(Effect.withSpan("Inspector.deadLetters", { attributes: { machine: name } })),
      redriveTimer: (timer) => keyed("redriveTimer", timer, (now) => timers.redrive(timer, now)),
      discardTimer: (timer) => keyed("discardTimer", timer, () => timers.discard(timer)),
      redriveCommand: (command) => keyed("redriveCommand", command, (now) => outbox.redrive(command, now)),
      discardCommand: (command) => keyed("discardCommand", command, () => outbox.discard(command)),
      fireTimer: (timer) => keyed("fireTimer", timer, (now) => timers.reschedule(timer, now)),
      cancelTimer: (timer) => keyed("cancelTimer", timer, () => timers.cancel(timer)),
      stop: (name, instanceId) =>
        Effect.flatMap(machineNamed(name), (machine) => runtime.stop(machine, instanceId)).pipe(
          Effect.withSpan("Inspector.stop", { attributes: { machine: name, instanceId } })
        )
    }
    return inspector
  })

/**
 * The inspector as a layer, over the runtime and the stores of the context.
 *
 * @example
 * ```ts
 * const Operations = Inspector.layer({ machines: [Order] }).pipe(
 *   Layer.provideMerge(FSMRuntime.layer({ machines: [Order] })),
 *   Layer.provideMerge(TimeoutStrategy.layerDurable({ sweep: false })),
 *   Layer.provideMerge(SqliteEventStore.layer({ filename: "orders.db" }))
 * )
 * ```
 *
 * @since 0.1.0
 */
export const layer = (
  options: { readonly machines: ReadonlyArray<Machine.Any> }
): Layer.Layer<Inspector, never, Requirements> => Layer.effect(Inspector, make(options))
