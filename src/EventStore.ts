/**
 * The event log: where every accepted event of every instance is appended.
 *
 * Backends see encoded JSON only; the runtime encodes and decodes with the
 * machine's schemas. A backend implements `EventStore.Backend` and is turned
 * into the service by `EventStore.make`, which adds the checks every backend
 * must share (instance ids, commit shape, values that JSON and every
 * database store exactly), so that memory, SQLite and PostgreSQL behave the
 * same. The memory backend stores JSON text too, so it cannot hide a
 * difference.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import {
  FencingRejected,
  InvalidInstanceId,
  InvalidQuery,
  PersistenceError,
  SequenceConflict,
  StaleCommand,
  StaleTimer
} from "./Errors.js"
import {
  applyChange,
  compareCodePoints,
  compareEntry,
  compareStateCounts,
  currentChange,
  instancePage
} from "./internal/currentState.js"
import { jsonProblem, stringProblem } from "./internal/jsonValue.js"
import { makeMemoryOutbox } from "./internal/memoryOutbox.js"
// A cycle (LeaseStore validates keys with `instanceIdProblem`): only used
// inside functions here, never while the modules load.
import * as LeaseStore from "./LeaseStore.js"
import * as OutboxStore from "./OutboxStore.js"
import * as TimeoutStore from "./TimeoutStore.js"

/**
 * Where an event came from.
 *
 * @since 0.1.0
 */
export type Source = "user" | "timeout" | "outbox"

/**
 * Metadata stored with every event.
 *
 * @since 0.1.0
 */
export interface Metadata {
  /** Epoch milliseconds, from Effect's `Clock`. */
  readonly timestamp: number
  readonly source: Source
  readonly correlationId: string | null
  /** The runtime node that wrote the event. */
  readonly node: string | null
  /**
   * Unique id of the commit that wrote the event (shared by the events of
   * one commit). After a failure whose outcome is unknown (a lost
   * acknowledgement), the runtime reads the log and looks for its commit id
   * to learn whether the write landed, so it never decides a command twice.
   */
  readonly commitId: string | null
  /** For `source: "timeout"`: the name of the timeout that fired; replay disarms exactly that one. */
  readonly timer: string | null
}

/**
 * Tag of the record that starts every log; its payload is the encoded initial state.
 *
 * @since 0.1.0
 */
export const CreatedTag = "@created"

/**
 * Tag of the record written by `FSMRuntime.stop`; its payload is `null`.
 *
 * @since 0.1.0
 */
export const StoppedTag = "@stopped"

/**
 * An event as the runtime hands it to `append`; the store assigns `seqNr`.
 *
 * @since 0.1.0
 */
export interface NewEvent {
  /** The event's `_tag`, or `@created` / `@stopped` for lifecycle records. */
  readonly tag: string
  /** Encoded (JSON-safe) event, or the encoded initial state for `@created`. */
  readonly payload: unknown
  /** Tag of the state the instance is in after this event. */
  readonly stateTag: string
  readonly schemaVersion: number
  readonly metadata: Metadata
}

/**
 * A stored event.
 *
 * @since 0.1.0
 */
export interface EventRecord extends NewEvent {
  readonly machine: string
  readonly instanceId: string
  /** Gapless from 1 per instance. */
  readonly seqNr: number
}

/**
 * What replaying a stored event reads of it (`EventStore.replayPage`): an
 * `EventRecord` without the metadata a fold has no use for (the
 * correlation id, the node, the commit id itself, the schema version),
 * which a backend then need not read or decode.
 *
 * @example
 * ```ts
 * const record: EventStore.ReplayRecord = {
 *   seqNr: 2,
 *   tag: "Paid",
 *   payload: { _tag: "Paid", amount: 10 },
 *   stateTag: "Paid",
 *   timestamp: 1_700_000_000_000,
 *   source: "user",
 *   timer: null,
 *   hasCommitId: true
 * }
 * ```
 *
 * @since 0.1.0
 */
export interface ReplayRecord {
  readonly seqNr: number
  readonly tag: string
  readonly payload: unknown
  readonly stateTag: string
  /** `Metadata.timestamp`. */
  readonly timestamp: number
  /** `Metadata.source`. */
  readonly source: Source
  /** `Metadata.timer`. */
  readonly timer: string | null
  /** Whether `Metadata.commitId` is set (events written before commit ids were stored have none). */
  readonly hasCommitId: boolean
}

/**
 * The `ReplayRecord` of a stored event: what a backend without its own
 * `replayPage` answers, from `eventsPage`.
 *
 * @example
 * ```ts
 * const replayed = EventStore.replayRecord(record) // record: an EventRecord
 * replayed.hasCommitId // record.metadata.commitId !== null
 * ```
 *
 * @since 0.1.0
 */
export const replayRecord = (record: EventRecord): ReplayRecord => ({
  seqNr: record.seqNr,
  tag: record.tag,
  payload: record.payload,
  stateTag: record.stateTag,
  timestamp: record.metadata.timestamp,
  source: record.metadata.source,
  timer: record.metadata.timer ?? null,
  hasCommitId: record.metadata.commitId !== null && record.metadata.commitId !== undefined
})

/**
 * A stored snapshot: the encoded state after event `seqNr`.
 *
 * @since 0.1.0
 */
export interface SnapshotRecord {
  readonly machine: string
  readonly instanceId: string
  readonly seqNr: number
  readonly state: unknown
  readonly stopped: boolean
  readonly schemaVersion: number
  readonly timestamp: number
}

/**
 * Everything one accepted command writes, applied as a unit: all of it or
 * none of it. `events` get sequence numbers `expectedSeqNr + 1, + 2, ...`;
 * if the log does not end at `expectedSeqNr` the commit fails with
 * `SequenceConflict` and writes nothing. An optional snapshot is written in
 * the same unit (monotonically: an older snapshot never replaces a newer one).
 * A commit made under a lease carries its `fence`.
 *
 * @example
 * ```ts
 * const lease = yield* leases.acquire({ machine: "order", instanceId: "o-1" }, nodeId, { ttl: "10 seconds", wait: "5 seconds" })
 * yield* store.append({
 *   machine: "order", instanceId: "o-1", expectedSeqNr: 3, events: [paid],
 *   fence: { owner: lease.owner, token: lease.token }
 * }) // FencingRejected once another node has acquired the lease since
 * ```
 *
 * @since 0.1.0
 */
export interface Commit {
  readonly machine: string
  readonly instanceId: string
  /** The sequence number the writer last saw; 0 for a new instance. */
  readonly expectedSeqNr: number
  readonly events: ReadonlyArray<NewEvent>
  readonly snapshot?: SnapshotRecord | undefined
  /** Timer rows to cancel, schedule and deliver, for the durable timeout strategy. */
  readonly timers?: TimeoutStore.TimerChanges | undefined
  /**
   * Outbox rows the commit produces (keyed by its last event's seqNr) and
   * the pending command it completes, for the outbox dispatcher.
   */
  readonly outbox?: OutboxStore.OutboxChanges | undefined
  /**
   * The lease (`LeaseStore`) of `(machine, instanceId)` the commit is made
   * under. The commit is written only if the lease row still carries this
   * owner and token, i.e. nobody acquired the key since (and its holder did
   * not release it); this is checked in the same atomic commit, and otherwise
   * the commit fails with `FencingRejected` and writes nothing: no events, no
   * timer rows, no snapshot. That check comes before the others: a commit
   * that is fenced off and also conflicting reports `FencingRejected`.
   *
   * The rule is the classic fencing-token one: token equality, not expiry. A
   * lease that expired but that nobody has taken over still lets its holder
   * commit. Expiry only says when others may take over; a takeover gives a
   * new token, and from then on the old holder is refused, which is what
   * keeps two writers apart (the store orders the commit and the takeover
   * itself, in one atomic step). Refusing on expiry as well would add no
   * safety, and would fail the commits of a holder whose heartbeat merely ran
   * late while nobody wanted the instance.
   */
  readonly fence?: { readonly owner: string; readonly token: number } | undefined
  /**
   * What the commit does to the instance's row in the current-state table
   * (see `InstanceSummary`): whether its last event enters the state it
   * names (a transition to a state, the same one included: `enteredAt`
   * becomes the event's timestamp) and whether the instance is stopped
   * after it. The runtime always says; without it the store judges by the
   * events alone: the first event of a log and a change of state tag enter,
   * an `@stopped` last event stops.
   */
  readonly current?: { readonly entered: boolean; readonly stopped: boolean } | undefined
}

/**
 * One instance's row of the current-state table, which every commit keeps
 * up to date in the same atomic unit as its events: the state it is in,
 * since when, and its last sequence number. It answers "which instances are
 * in state S, oldest first" and "how many are in each state" with an index,
 * without reading any log.
 *
 * `enteredAt` is the timestamp of the event that last entered the state
 * (`Machine.stay` and a stop do not move it; a transition back into the
 * same state does), `updatedAt` that of the last event.
 *
 * @since 0.1.0
 */
export interface InstanceSummary {
  readonly machine: string
  readonly instanceId: string
  readonly stateTag: string
  readonly seqNr: number
  readonly enteredAt: number
  readonly updatedAt: number
  readonly stopped: boolean
}

/**
 * Where a page of `listInstances` ends: pass it as the next query's `after`.
 *
 * @since 0.1.0
 */
export interface InstanceCursor {
  readonly enteredAt: number
  readonly instanceId: string
}

/**
 * A query of the current-state table: the instances of one machine, oldest
 * entry first (`enteredAt`, then `instanceId`), optionally only those in
 * one state, those that entered their state before a time ("in this state
 * for longer than D" is `enteredBefore: now - D`), stopped or running ones.
 * Paged by keyset: `after` is the `next` of the previous page.
 *
 * @example
 * ```ts
 * const page = yield* store.listInstances({
 *   machine: "order", stateTag: "Pending", enteredBefore: Date.now() - 3_600_000, limit: 100
 * })
 * // page.instances: the orders pending for more than an hour, oldest first
 * ```
 *
 * @since 0.1.0
 */
export interface InstanceQuery {
  readonly machine: string
  readonly stateTag?: string | undefined
  /** Only instances whose `enteredAt` is before this time (epoch milliseconds). */
  readonly enteredBefore?: number | undefined
  readonly stopped?: boolean | undefined
  readonly after?: InstanceCursor | undefined
  /** Page size, a whole number from 1 to `maxPageSize`. */
  readonly limit: number
}

/**
 * One page of `listInstances`; `next` is there when more may follow.
 *
 * @since 0.1.0
 */
export interface InstancePage {
  readonly instances: ReadonlyArray<InstanceSummary>
  readonly next: Option.Option<InstanceCursor>
}

/**
 * How many instances of a machine are in one state (running and stopped
 * ones counted apart).
 *
 * @since 0.1.0
 */
export interface StateCount {
  readonly stateTag: string
  readonly stopped: boolean
  readonly count: number
}

/**
 * What `append` reports about a commit that succeeded.
 *
 * @since 0.1.0
 */
export interface AppendResult {
  /**
   * `true` when the commit is durable now. `false` when it joined a
   * transaction the caller has open (an `@effect/sql` transaction around the
   * call): it becomes durable only if that transaction commits, and vanishes
   * if it rolls back, so the runtime does not cache what it wrote.
   */
  readonly durable: boolean
}

/**
 * Why a commit fails without writing anything.
 *
 * @since 0.1.0
 */
export type AppendError = SequenceConflict | StaleTimer | StaleCommand | FencingRejected | PersistenceError

/** The result of every commit that is durable when `append` returns. */
const committed: Effect.Effect<AppendResult> = Effect.succeed({ durable: true })

/**
 * What a storage backend implements. Instance ids and commits reaching it
 * have already been validated by `EventStore.make`.
 *
 * @since 0.1.0
 */
export interface Backend {
  readonly append: (commit: Commit) => Effect.Effect<AppendResult, AppendError>
  readonly events: (
    machine: string,
    instanceId: string,
    fromSeqNr: number
  ) => Stream.Stream<EventRecord, PersistenceError>
  /** Up to `limit` (a whole number from 1 to `maxPageSize`) events with `seqNr >= fromSeqNr`, in order. */
  readonly eventsPage: (
    machine: string,
    instanceId: string,
    fromSeqNr: number,
    limit: number
  ) => Effect.Effect<ReadonlyArray<EventRecord>, PersistenceError>
  /**
   * `replayPage`, with the same arguments as `eventsPage`. Optional: a
   * backend without it replays from `eventsPage` (each record through
   * `replayRecord`).
   */
  readonly replayPage?: (
    machine: string,
    instanceId: string,
    fromSeqNr: number,
    limit: number
  ) => Effect.Effect<ReadonlyArray<ReplayRecord>, PersistenceError>
  /** `recoveryBatch`, with ids validated and distinct and `limit` a whole number from 1 to `maxPageSize`. */
  readonly recoveryBatch: (
    machine: string,
    instanceIds: ReadonlyArray<string>,
    limit: number
  ) => Effect.Effect<ReadonlyArray<Recovery>, PersistenceError>
  readonly highestSequenceNr: (machine: string, instanceId: string) => Effect.Effect<number, PersistenceError>
  readonly saveSnapshot: (snapshot: SnapshotRecord) => Effect.Effect<void, PersistenceError>
  readonly loadSnapshot: (
    machine: string,
    instanceId: string
  ) => Effect.Effect<Option.Option<SnapshotRecord>, PersistenceError>
  readonly instances: (machine: string) => Stream.Stream<string, PersistenceError>
  /** The instance's current-state row. */
  readonly instance: (machine: string, instanceId: string) => Effect.Effect<Option.Option<InstanceSummary>, PersistenceError>
  /** A page of the current-state table (the query is validated); `next` when the page is full. */
  readonly listInstances: (query: InstanceQuery) => Effect.Effect<InstancePage, PersistenceError>
  /** Counts per state, ordered by state tag, running before stopped. */
  readonly stateCounts: (machine: string) => Effect.Effect<ReadonlyArray<StateCount>, PersistenceError>
  /** Up to `limit` ids of instances with an event of this correlation id, in code-point order. */
  readonly instancesByCorrelation: (
    machine: string,
    correlationId: string,
    limit: number
  ) => Effect.Effect<ReadonlyArray<string>, PersistenceError>
}

/**
 * The event store service.
 *
 * @since 0.1.0
 */
export class EventStore extends Context.Tag("effect-fsm/EventStore")<EventStore, {
  /**
   * Applies a commit atomically, or fails and writes nothing: with
   * `FencingRejected` when its `fence` is no longer the lease's, with
   * `SequenceConflict` when the log does not end at `expectedSeqNr`, with
   * `StaleTimer` when the timer it delivers is no longer armed, with
   * `StaleCommand` when the outbox command it completes is no longer
   * pending (checked in that order).
   */
  readonly append: (commit: Commit) => Effect.Effect<AppendResult, AppendError | InvalidInstanceId>
  /** The events of an instance with `seqNr >= fromSeqNr`, in order. */
  readonly events: (
    machine: string,
    instanceId: string,
    fromSeqNr: number
  ) => Stream.Stream<EventRecord, PersistenceError | InvalidInstanceId>
  /**
   * One page of `events`: up to `limit` events with `seqNr >= fromSeqNr`, in
   * order, in one read (what recovery folds, without a Stream per event). A
   * page shorter than `limit` is the end of the log. `limit` is a whole
   * number from 1 to `maxPageSize`; another is a `PersistenceError`.
   */
  readonly eventsPage: (
    machine: string,
    instanceId: string,
    fromSeqNr: number,
    limit: number
  ) => Effect.Effect<ReadonlyArray<EventRecord>, PersistenceError | InvalidInstanceId>
  /**
   * `eventsPage` as a replay reads it: the same events, each as its
   * `ReplayRecord`. The runtime recovers and catches up instances with it,
   * not with `eventsPage`: a wrapper of the service that changes what is
   * read (decrypts payloads, injects faults) wraps both. Same arguments and
   * errors as `eventsPage`.
   *
   * @example
   * ```ts
   * const page = yield* store.replayPage("order", "o1", 1, 100)
   * // page[0]: { seqNr: 1, tag: "@created", payload, stateTag, timestamp, source, timer, hasCommitId }
   * ```
   */
  readonly replayPage: (
    machine: string,
    instanceId: string,
    fromSeqNr: number,
    limit: number
  ) => Effect.Effect<ReadonlyArray<ReplayRecord>, PersistenceError | InvalidInstanceId>
  /**
   * What recovering many instances of one machine needs, in two reads
   * whatever their number (the timeout sweeper loads the instances of a
   * claimed batch with it): for each id with a log, its latest snapshot
   * and the first `limit` events after it (after seqNr 0 without one). An
   * id without a log is left out; the others come in the order asked.
   * `instanceIds` holds at most `maxBatchIds` distinct valid ids, `limit` is
   * a whole number from 1 to `maxPageSize`; anything else is a
   * `PersistenceError` (an invalid id, `InvalidInstanceId`).
   */
  readonly recoveryBatch: (
    machine: string,
    instanceIds: ReadonlyArray<string>,
    limit: number
  ) => Effect.Effect<ReadonlyArray<Recovery>, PersistenceError | InvalidInstanceId>
  /** The sequence number of the last event, 0 when the instance has no log. */
  readonly highestSequenceNr: (
    machine: string,
    instanceId: string
  ) => Effect.Effect<number, PersistenceError | InvalidInstanceId>
  /** Writes a snapshot unless a newer one (higher `seqNr`) is already stored. */
  readonly saveSnapshot: (snapshot: SnapshotRecord) => Effect.Effect<void, PersistenceError | InvalidInstanceId>
  readonly loadSnapshot: (
    machine: string,
    instanceId: string
  ) => Effect.Effect<Option.Option<SnapshotRecord>, PersistenceError | InvalidInstanceId>
  /** The ids of every instance of a machine that has a log. */
  readonly instances: (machine: string) => Stream.Stream<string, PersistenceError>
  /** The instance's row of the current-state table (`InstanceSummary`); none when it has no log. */
  readonly instance: (
    machine: string,
    instanceId: string
  ) => Effect.Effect<Option.Option<InstanceSummary>, PersistenceError | InvalidInstanceId>
  /**
   * A page of instances from the current-state table (`InstanceQuery`),
   * read through an index whatever the number of instances. A malformed
   * query fails with `InvalidQuery`.
   */
  readonly listInstances: (query: InstanceQuery) => Effect.Effect<InstancePage, PersistenceError | InvalidQuery>
  /** How many instances of the machine are in each state, ordered by state tag, running before stopped. */
  readonly stateCounts: (machine: string) => Effect.Effect<ReadonlyArray<StateCount>, PersistenceError | InvalidQuery>
  /**
   * The ids of the machine's instances that have an event with this
   * correlation id (`Metadata.correlationId`), in code-point order, up to
   * `limit` (1 to `maxPageSize`): "which orders did this request touch".
   * Read through an index on the events.
   */
  readonly instancesByCorrelation: (
    machine: string,
    correlationId: string,
    limit: number
  ) => Effect.Effect<ReadonlyArray<string>, PersistenceError | InvalidQuery>
}>() {}

/**
 * The largest page `eventsPage` returns.
 *
 * @since 0.1.0
 */
export const maxPageSize = 10_000

/**
 * The most ids one `recoveryBatch` takes.
 *
 * @example
 * ```ts
 * EventStore.maxBatchIds // 1000
 * ```
 *
 * @since 0.1.0
 */
export const maxBatchIds = 1_000

/**
 * One instance of a `recoveryBatch`: its latest snapshot, if any, and the
 * first events after it. Fewer than the `limit` asked for means the log
 * ends there.
 *
 * @since 0.1.0
 */
export interface Recovery {
  readonly instanceId: string
  readonly snapshot: Option.Option<SnapshotRecord>
  readonly events: ReadonlyArray<EventRecord>
}

/**
 * Longest accepted instance id, in UTF-16 code units.
 *
 * @since 0.1.0
 */
export const maxInstanceIdLength = 255

/**
 * Why an instance id is invalid, or `undefined` when it is fine. The rule is
 * the same on every backend: a string, non-empty, at most 255 UTF-16 code
 * units, well-formed Unicode (no lone surrogate: database drivers would turn
 * one into U+FFFD, so `"s\uD800"` and `"s\uDBFF"` would become the same
 * row) and without NUL (PostgreSQL cannot store it). A surrogate pair such
 * as `"🔗"` is fine and counts as two code units; quotes, SQL fragments and
 * any other Unicode are fine too: backends bind ids as parameters, never as
 * SQL text.
 *
 * @example
 * ```ts
 * EventStore.instanceIdProblem("order-🔗") // undefined
 * EventStore.instanceIdProblem("s\uD800") // "contains a lone surrogate (U+D800) at index 1"
 * ```
 *
 * @since 0.1.0
 */
export const instanceIdProblem = (instanceId: string): string | undefined =>
  typeof instanceId !== "string"
    ? "must be a string"
    : instanceId.length === 0
    ? "must not be empty"
    : instanceId.length > maxInstanceIdLength
    ? `must be at most ${maxInstanceIdLength} UTF-16 code units, got ${instanceId.length}`
    : stringProblem(instanceId)

/**
 * `instanceIdProblem` as an Effect.
 *
 * @since 0.1.0
 */
export const validateInstanceId = (
  machine: string,
  instanceId: string
): Effect.Effect<void, InvalidInstanceId> => {
  const reason = instanceIdProblem(instanceId)
  return reason === undefined
    ? Effect.void
    : Effect.fail(new InvalidInstanceId({ machine, instanceId: String(instanceId), reason }))
}

const staleCommand = (key: OutboxStore.CommandKey) =>
  new StaleCommand({ machine: key.machine, instanceId: key.instanceId, seqNr: key.seqNr, index: key.index })

/** The failure of a page read whose `limit` is not a whole number from 1 to `maxPageSize`, or `undefined`. */
const pageProblem = (operation: string, limit: number): Effect.Effect<never, PersistenceError> | undefined =>
  Number.isSafeInteger(limit) && limit >= 1 && limit <= maxPageSize ? undefined : Effect.fail(
    new PersistenceError({ operation, reason: `limit must be a whole number from 1 to ${maxPageSize}, got ${limit}` })
  )

const invalidCommit = (reason: string) => Effect.fail(new PersistenceError({ operation: "append", reason }))

/** Why a nullable string field cannot be stored, or `undefined`. */
const nullableStringProblem = (value: string | null): string | undefined =>
  value === null ? undefined : typeof value === "string" ? stringProblem(value) : "must be a string or null"

/** Why a required string field cannot be stored, or `undefined`. */
const requiredStringProblem = (value: string): string | undefined =>
  typeof value === "string" ? stringProblem(value) : "must be a string"

const eventValuesProblem = (event: NewEvent): string | undefined => {
  const tag = requiredStringProblem(event.tag)
  if (tag !== undefined) return `tag ${tag}`
  const stateTag = requiredStringProblem(event.stateTag)
  if (stateTag !== undefined) return `stateTag ${stateTag}`
  return jsonProblem(event.payload, "payload") ?? metadataStringsProblem(event.metadata)
}

const metadataStringsProblem = (metadata: Metadata): string | undefined => {
  const correlationId = nullableStringProblem(metadata.correlationId)
  if (correlationId !== undefined) return `metadata.correlationId ${correlationId}`
  const node = nullableStringProblem(metadata.node)
  if (node !== undefined) return `metadata.node ${node}`
  const commitId = nullableStringProblem(metadata.commitId)
  if (commitId !== undefined) return `metadata.commitId ${commitId}`
  const timer = nullableStringProblem(metadata.timer)
  if (timer !== undefined) return `metadata.timer ${timer}`
  return undefined
}

/**
 * Why a value of a commit cannot be stored exactly by every backend (see
 * `internal/jsonValue.ts`), or `undefined`. Synchronous, allocation-free when
 * everything is fine: it runs on every commit.
 */
const commitValuesProblem = (commit: Commit): string | undefined => {
  const events = commit.events
  for (let i = 0; i < events.length; i++) {
    const problem = eventValuesProblem(events[i]!)
    if (problem !== undefined) return `events[${i}] ${problem}`
  }
  if (commit.snapshot !== undefined) {
    const problem = jsonProblem(commit.snapshot.state, "state")
    if (problem !== undefined) return `snapshot ${problem}`
  }
  const schedule = commit.timers?.schedule
  if (schedule !== undefined) {
    for (let i = 0; i < schedule.length; i++) {
      const timer = schedule[i]!
      const nameProblem = requiredStringProblem(timer.name)
      if (nameProblem !== undefined) return `timers.schedule[${i}] name ${nameProblem}`
      const stateTagProblem = requiredStringProblem(timer.stateTag)
      if (stateTagProblem !== undefined) return `timers.schedule[${i}] stateTag ${stateTagProblem}`
      const problem = jsonProblem(timer.payload, "payload")
      if (problem !== undefined) return `timers.schedule[${i}] ${problem}`
    }
  }
  const outbox = commit.outbox
  if (outbox !== undefined) return outboxProblem(outbox)
  return undefined
}

const commandKinds: ReadonlySet<string> = new Set(["handler", "send", "spawn"])

const commandKeyProblem = (key: OutboxStore.CommandKey): string | undefined => {
  const machine = requiredStringProblem(key.machine)
  if (machine !== undefined) return `machine ${machine}`
  const id = instanceIdProblem(key.instanceId)
  if (id !== undefined) return `instanceId ${id}`
  if (!Number.isSafeInteger(key.seqNr) || key.seqNr < 1) return `seqNr must be a positive integer, got ${key.seqNr}`
  if (!Number.isSafeInteger(key.index) || key.index < 0) return `index must be a non-negative integer, got ${key.index}`
  return undefined
}

const outboxProblem = (outbox: OutboxStore.OutboxChanges): string | undefined => {
  const produce = outbox.produce
  if (!Array.isArray(produce)) return "outbox.produce must be an array"
  const indexes = new Set<number>()
  for (let i = 0; i < produce.length; i++) {
    const command = produce[i]!
    const where = `outbox.produce[${i}]`
    if (!Number.isSafeInteger(command.index) || command.index < 0) {
      return `${where} index must be a non-negative integer, got ${command.index}`
    }
    if (indexes.has(command.index)) return `${where} index ${command.index} is used twice`
    indexes.add(command.index)
    if (!commandKinds.has(command.kind)) return `${where} kind must be "handler", "send" or "spawn", got ${String(command.kind)}`
    const tag = requiredStringProblem(command.tag)
    if (tag !== undefined) return `${where} tag ${tag}`
    const payload = jsonProblem(command.payload, "payload")
    if (payload !== undefined) return `${where} ${payload}`
    if ((command.target === null) !== (command.kind === "handler")) {
      return `${where} target must be given exactly for "send" and "spawn" commands`
    }
    if (command.target !== null) {
      const machine = requiredStringProblem(command.target.machine)
      if (machine !== undefined) return `${where} target.machine ${machine}`
      const id = instanceIdProblem(command.target.instanceId)
      if (id !== undefined) return `${where} target.instanceId ${id}`
    }
    const correlationId = nullableStringProblem(command.correlationId)
    if (correlationId !== undefined) return `${where} correlationId ${correlationId}`
    if (command.fenceToken !== null && (!Number.isSafeInteger(command.fenceToken) || command.fenceToken < 1)) {
      return `${where} fenceToken must be a positive integer or null, got ${command.fenceToken}`
    }
  }
  if (outbox.complete !== undefined) {
    const problem = commandKeyProblem(outbox.complete)
    if (problem !== undefined) return `outbox.complete ${problem}`
  }
  return undefined
}

/** A failure when `commit` is malformed, `undefined` when it is fine: checked without an Effect per commit. */
const commitProblem = (commit: Commit): Effect.Effect<never, InvalidInstanceId | PersistenceError> | undefined => {
  const idProblem = instanceIdProblem(commit.instanceId)
  if (idProblem !== undefined) {
    return Effect.fail(new InvalidInstanceId({ machine: commit.machine, instanceId: String(commit.instanceId), reason: idProblem }))
  }
  if (!Number.isInteger(commit.expectedSeqNr) || commit.expectedSeqNr < 0) {
    return invalidCommit(`expectedSeqNr must be a non-negative integer, got ${commit.expectedSeqNr}`)
  }
  if (commit.events.length === 0) return invalidCommit("a commit needs at least one event")
  const snapshot = commit.snapshot
  if (snapshot !== undefined) {
    const last = commit.expectedSeqNr + commit.events.length
    if (
      snapshot.machine !== commit.machine || snapshot.instanceId !== commit.instanceId ||
      snapshot.seqNr < 1 || snapshot.seqNr > last
    ) {
      return invalidCommit(`the snapshot must belong to the committed instance and to a seqNr in 1..${last}`)
    }
  }
  const fence = commit.fence
  if (fence !== undefined) {
    const owner = typeof fence.owner === "string" && fence.owner.length > 0
      ? stringProblem(fence.owner)
      : "must be a non-empty string"
    if (owner !== undefined) return invalidCommit(`fence.owner ${owner}`)
    if (!Number.isSafeInteger(fence.token) || fence.token < 1) {
      return invalidCommit(`fence.token must be a positive integer, got ${fence.token}`)
    }
  }
  const current = commit.current
  if (current !== undefined && (typeof current.entered !== "boolean" || typeof current.stopped !== "boolean")) {
    return invalidCommit("current.entered and current.stopped must be booleans")
  }
  const valuesProblem = commitValuesProblem(commit)
  return valuesProblem === undefined ? undefined : invalidCommit(`cannot be stored exactly: ${valuesProblem}`)
}

/** A failure when `snapshot` cannot be saved, `undefined` when it is fine. */
const snapshotProblem = (snapshot: SnapshotRecord): Effect.Effect<never, InvalidInstanceId | PersistenceError> | undefined => {
  const idProblem = instanceIdProblem(snapshot.instanceId)
  if (idProblem !== undefined) {
    return Effect.fail(
      new InvalidInstanceId({ machine: snapshot.machine, instanceId: String(snapshot.instanceId), reason: idProblem })
    )
  }
  const stateProblem = jsonProblem(snapshot.state, "state")
  return stateProblem === undefined
    ? undefined
    : Effect.fail(new PersistenceError({ operation: "saveSnapshot", reason: `cannot be stored exactly: ${stateProblem}` }))
}

/**
 * Wraps a backend into the service, adding the validation every backend
 * shares: instance ids (`instanceIdProblem`, failing with
 * `InvalidInstanceId`), the commit's shape, and the values it writes (event
 * payloads, snapshot states, timer payloads, tags and metadata strings must
 * be JSON values that every backend stores and returns exactly: finite
 * numbers, well-formed strings without NUL, plain objects and arrays). A
 * value that is not fails the commit or `saveSnapshot` with
 * `PersistenceError` naming where it is, and nothing is written.
 *
 * @since 0.1.0
 */
export const make = (backend: Backend): EventStore["Type"] => ({
  append: (commit) =>
    Effect.suspend((): Effect.Effect<AppendResult, AppendError | InvalidInstanceId> =>
      commitProblem(commit) ?? backend.append(commit)
    ),
  events: (machine, instanceId, fromSeqNr) =>
    Stream.unwrap(Effect.as(validateInstanceId(machine, instanceId), backend.events(machine, instanceId, fromSeqNr))),
  eventsPage: (machine, instanceId, fromSeqNr, limit) =>
    pageProblem("eventsPage", limit) ??
      Effect.zipRight(validateInstanceId(machine, instanceId), backend.eventsPage(machine, instanceId, fromSeqNr, limit)),
  replayPage: (machine, instanceId, fromSeqNr, limit) =>
    pageProblem("replayPage", limit) ??
      Effect.zipRight(
        validateInstanceId(machine, instanceId),
        backend.replayPage !== undefined
          ? backend.replayPage(machine, instanceId, fromSeqNr, limit)
          : Effect.map(backend.eventsPage(machine, instanceId, fromSeqNr, limit), (records) => records.map(replayRecord))
      ),
  recoveryBatch: (machine, instanceIds, limit) =>
    Effect.suspend((): Effect.Effect<ReadonlyArray<Recovery>, PersistenceError | InvalidInstanceId> => {
      const refuse = (reason: string) => Effect.fail(new PersistenceError({ operation: "recoveryBatch", reason }))
      if (!Number.isSafeInteger(limit) || limit < 1 || limit > maxPageSize) {
        return refuse(`limit must be a whole number from 1 to ${maxPageSize}, got ${limit}`)
      }
      if (!Array.isArray(instanceIds)) return refuse("instanceIds must be an array")
      if (instanceIds.length > maxBatchIds) return refuse(`at most ${maxBatchIds} ids, got ${instanceIds.length}`)
      for (const id of instanceIds) {
        const reason = instanceIdProblem(id)
        if (reason !== undefined) return Effect.fail(new InvalidInstanceId({ machine, instanceId: String(id), reason }))
      }
      if (new Set(instanceIds).size !== instanceIds.length) return refuse("instanceIds must be distinct")
      return instanceIds.length === 0 ? Effect.succeed([]) : backend.recoveryBatch(machine, instanceIds, limit)
    }),
  highestSequenceNr: (machine, instanceId) =>
    Effect.zipRight(validateInstanceId(machine, instanceId), backend.highestSequenceNr(machine, instanceId)),
  saveSnapshot: (snapshot) =>
    Effect.suspend((): Effect.Effect<void, PersistenceError | InvalidInstanceId> =>
      snapshotProblem(snapshot) ?? backend.saveSnapshot(snapshot)
    ),
  loadSnapshot: (machine, instanceId) =>
    Effect.zipRight(validateInstanceId(machine, instanceId), backend.loadSnapshot(machine, instanceId)),
  instances: backend.instances,
  instance: (machine, instanceId) => Effect.zipRight(validateInstanceId(machine, instanceId), backend.instance(machine, instanceId)),
  listInstances: (query) =>
    Effect.suspend((): Effect.Effect<InstancePage, PersistenceError | InvalidQuery> => {
      const problem = instanceQueryProblem(query)
      return problem === undefined
        ? backend.listInstances(query)
        : Effect.fail(new InvalidQuery({ operation: "listInstances", reason: problem }))
    }),
  stateCounts: (machine) =>
    typeof machine === "string"
      ? backend.stateCounts(machine)
      : Effect.fail(new InvalidQuery({ operation: "stateCounts", reason: "machine must be a string" })),
  instancesByCorrelation: (machine, correlationId, limit) =>
    Effect.suspend((): Effect.Effect<ReadonlyArray<string>, PersistenceError | InvalidQuery> => {
      const problem = typeof machine !== "string"
        ? "machine must be a string"
        : typeof correlationId !== "string" || correlationId.length === 0
        ? "correlationId must be a non-empty string"
        : stringProblem(correlationId) !== undefined
        ? `correlationId ${stringProblem(correlationId)}`
        : !Number.isSafeInteger(limit) || limit < 1 || limit > maxPageSize
        ? `limit must be a whole number from 1 to ${maxPageSize}, got ${String(limit)}`
        : undefined
      return problem === undefined
        ? backend.instancesByCorrelation(machine, correlationId, limit)
        : Effect.fail(new InvalidQuery({ operation: "instancesByCorrelation", reason: problem }))
    })
})

/** A time the current-state table can compare with: a safe integer of epoch milliseconds. */
const timeProblem = (value: unknown, name: string): string | undefined =>
  Number.isSafeInteger(value) ? undefined : `${name} must be a whole number of epoch milliseconds, got ${String(value)}`

/** Why an `InstanceQuery` is malformed, or `undefined`. */
const instanceQueryProblem = (query: InstanceQuery): string | undefined => {
  if (typeof query !== "object" || query === null) return "the query must be an object"
  if (typeof query.machine !== "string") return "machine must be a string"
  if (!Number.isSafeInteger(query.limit) || query.limit < 1 || query.limit > maxPageSize) {
    return `limit must be a whole number from 1 to ${maxPageSize}, got ${String(query.limit)}`
  }
  if (query.stateTag !== undefined) {
    const problem = requiredStringProblem(query.stateTag)
    if (problem !== undefined) return `stateTag ${problem}`
  }
  if (query.enteredBefore !== undefined) {
    const problem = timeProblem(query.enteredBefore, "enteredBefore")
    if (problem !== undefined) return problem
  }
  if (query.stopped !== undefined && typeof query.stopped !== "boolean") return "stopped must be a boolean"
  const after = query.after
  if (after !== undefined) {
    if (typeof after !== "object" || after === null) return "after must be the next cursor of a page"
    const problem = timeProblem(after.enteredAt, "after.enteredAt")
    if (problem !== undefined) return problem
    const id = instanceIdProblem(after.instanceId)
    if (id !== undefined) return `after.instanceId ${id}`
  }
  return undefined
}

// ---------------------------------------------------------------------------
// In-memory backend
// ---------------------------------------------------------------------------

const keyOf = (machine: string, instanceId: string) => `${machine}\u0000${instanceId}`

// What the memory backend keeps is what the SQL backends keep: rows whose
// payloads and states are JSON text. Every read parses a fresh value, so a
// caller mutating what it passed in or got back cannot change the store, and
// a value that does not survive JSON is as visible here as on SQL.

/** An event row; the metadata is spelt out, as in the SQL tables. */
interface MemoryEvent {
  readonly seqNr: number
  readonly tag: string
  readonly payload: string
  readonly stateTag: string
  readonly schemaVersion: number
  readonly timestamp: number
  readonly source: Source
  readonly correlationId: string | null
  readonly node: string | null
  readonly commitId: string | null
  readonly timer: string | null
}

interface MemorySnapshot {
  readonly seqNr: number
  readonly state: string
  readonly stopped: boolean
  readonly schemaVersion: number
  readonly timestamp: number
}

interface MemoryTimer {
  readonly machine: string
  readonly instanceId: string
  readonly name: string
  readonly stateTag: string
  readonly generation: number
  readonly dueAt: number
  readonly payload: string
  readonly attempts: number
  readonly lastError: string | null
  readonly claimedUntil: number | null
}

interface MemoryDeadLetter extends MemoryTimer {
  readonly failedAt: number
}

/** A lease row; kept after a release (`owner: null`) so the next token follows it. */
interface MemoryLease {
  readonly owner: string | null
  readonly token: number
  readonly expiresAt: number
}

/** JSON text of a value, or `undefined` when JSON cannot write it. Never throws. */
const toJsonText = (value: unknown): string | undefined => {
  try {
    return JSON.stringify(value)
  } catch {
    return undefined
  }
}

const notJson = (operation: string, what: string) =>
  Effect.fail(new PersistenceError({ operation, reason: `${what} is not JSON-serializable` }))

const eventRecord = (machine: string, instanceId: string, row: MemoryEvent): EventRecord => ({
  machine,
  instanceId,
  seqNr: row.seqNr,
  tag: row.tag,
  payload: JSON.parse(row.payload),
  stateTag: row.stateTag,
  schemaVersion: row.schemaVersion,
  metadata: {
    timestamp: row.timestamp,
    source: row.source,
    correlationId: row.correlationId,
    node: row.node,
    commitId: row.commitId,
    timer: row.timer
  }
})

const snapshotRecord = (machine: string, instanceId: string, row: MemorySnapshot): SnapshotRecord => ({
  machine,
  instanceId,
  seqNr: row.seqNr,
  state: JSON.parse(row.state),
  stopped: row.stopped,
  schemaVersion: row.schemaVersion,
  timestamp: row.timestamp
})

const timerRecord = (row: MemoryTimer): TimeoutStore.TimerRecord => ({
  machine: row.machine,
  instanceId: row.instanceId,
  name: row.name,
  stateTag: row.stateTag,
  generation: row.generation,
  dueAt: row.dueAt,
  payload: JSON.parse(row.payload),
  attempts: row.attempts,
  lastError: row.lastError
})

const deadLetterRecord = (row: MemoryDeadLetter): TimeoutStore.DeadLetter => ({ ...timerRecord(row), failedAt: row.failedAt })

const memorySnapshot = (snapshot: SnapshotRecord, state: string): MemorySnapshot => ({
  seqNr: snapshot.seqNr,
  state,
  stopped: snapshot.stopped,
  schemaVersion: snapshot.schemaVersion,
  timestamp: snapshot.timestamp
})

/**
 * An in-memory database: the event log, snapshots, timers and leases, kept
 * as the SQL backends keep them (payloads and states as JSON text, read back
 * as fresh values). Each commit is encoded first, then applied in one
 * synchronous step, so it is atomic even under interruption;
 * `expectedSeqNr` and the lease fence are honoured exactly as a database
 * would; nothing is ever evicted. Lease expiry is judged by the caller's
 * `now` (the Effect `Clock`).
 *
 * @since 0.1.0
 */
export const makeMemory = (): {
  readonly backend: Backend
  readonly timeouts: TimeoutStore.TimeoutStore["Type"]
  readonly outbox: OutboxStore.OutboxStore["Type"]
  readonly leases: LeaseStore.Backend
} => {
  const outbox = makeMemoryOutbox()
  const logs = new Map<string, Array<MemoryEvent>>()
  const snapshots = new Map<string, MemorySnapshot>()
  const byMachine = new Map<string, Set<string>>()
  /** instance key -> timer name -> timer */
  const timers = new Map<string, Map<string, MemoryTimer>>()
  const deadLetters = new Map<string, Map<string, MemoryDeadLetter>>()
  const leaseRows = new Map<string, MemoryLease>()
  /** machine -> instance id -> current-state row */
  const currentRows = new Map<string, Map<string, InstanceSummary>>()
  /** machine -> countKey -> instances, kept by the commits as the SQL count rows are */
  const stateCountRows = new Map<string, Map<string, number>>()
  const countKey = (row: InstanceSummary) => `${row.stopped ? "1" : "0"}${row.stateTag}`

  const putSnapshot = (key: string, snapshot: MemorySnapshot) => {
    const current = snapshots.get(key)
    if (current === undefined || snapshot.seqNr > current.seqNr) snapshots.set(key, snapshot)
  }

  const timerOf = (timer: TimeoutStore.TimerKey) => {
    const found = timers.get(keyOf(timer.machine, timer.instanceId))?.get(timer.name)
    return found !== undefined && found.generation === timer.generation ? found : undefined
  }

  const putTimer = (timer: MemoryTimer) => {
    const key = keyOf(timer.machine, timer.instanceId)
    let named = timers.get(key)
    if (named === undefined) timers.set(key, named = new Map())
    named.set(timer.name, timer)
  }

  const deleteTimer = (machine: string, instanceId: string, name: string) => {
    const key = keyOf(machine, instanceId)
    const named = timers.get(key)
    named?.delete(name)
    if (named?.size === 0) timers.delete(key)
  }

  /** Up to `limit` records of the log from `fromSeqNr`, read as the SQL stores read it. */
  const readLog = (machine: string, instanceId: string, fromSeqNr: number, limit: number): Array<EventRecord> => {
    const log = logs.get(keyOf(machine, instanceId))
    const records: Array<EventRecord> = []
    if (log === undefined) return records
    // As the SQL stores read `fromSeqNr`: NaN means from the start, a fraction is rounded down.
    const start = Number.isNaN(fromSeqNr) ? 0 : Math.max(0, Math.floor(fromSeqNr) - 1)
    const end = Math.min(log.length, start + limit)
    for (let i = start; i < end; i++) records.push(eventRecord(machine, instanceId, log[i]!))
    return records
  }

  const backend: Backend = {
    append: (commit) =>
      Effect.suspend((): Effect.Effect<AppendResult, AppendError> => {
        const { machine, instanceId } = commit
        const key = keyOf(machine, instanceId)
        const fence = commit.fence
        if (fence !== undefined) {
          const lease = leaseRows.get(key)
          if (lease === undefined || lease.owner !== fence.owner || lease.token !== fence.token) {
            return Effect.fail(new FencingRejected({ machine, instanceId, owner: fence.owner, token: fence.token }))
          }
        }
        const log = logs.get(key)
        const actual = log === undefined ? 0 : log.length
        if (actual !== commit.expectedSeqNr) {
          return Effect.fail(new SequenceConflict({ machine, instanceId, expected: commit.expectedSeqNr, actual }))
        }
        const changes = commit.timers
        const fired = changes?.fired
        if (fired !== undefined && timerOf({ machine, instanceId, name: fired.name, generation: fired.generation }) === undefined) {
          return Effect.fail(new StaleTimer({ machine, instanceId, name: fired.name, generation: fired.generation }))
        }
        const complete = commit.outbox?.complete
        if (!outbox.isPending(complete)) return Effect.fail(staleCommand(complete!))

        // Encode everything first: a value JSON cannot write fails the commit before anything changes.
        const rows: Array<MemoryEvent> = []
        let seqNr = commit.expectedSeqNr
        for (const event of commit.events) {
          const payload = toJsonText(event.payload)
          if (payload === undefined) return notJson("append", `the payload of event ${event.tag}`)
          const metadata = event.metadata
          rows.push({
            seqNr: ++seqNr,
            tag: event.tag,
            payload,
            stateTag: event.stateTag,
            schemaVersion: event.schemaVersion,
            timestamp: metadata.timestamp,
            source: metadata.source,
            correlationId: metadata.correlationId,
            node: metadata.node,
            commitId: metadata.commitId,
            timer: metadata.timer
          })
        }
        let snapshot: MemorySnapshot | undefined
        if (commit.snapshot !== undefined) {
          const state = toJsonText(commit.snapshot.state)
          if (state === undefined) return notJson("append", "the snapshot state")
          snapshot = memorySnapshot(commit.snapshot, state)
        }
        let scheduled: Array<MemoryTimer> | undefined
        if (changes !== undefined) {
          scheduled = []
          for (const timer of changes.schedule) {
            const payload = toJsonText(timer.payload)
            if (payload === undefined) return notJson("append", `the payload of timer ${timer.name}`)
            scheduled.push({
              machine,
              instanceId,
              name: timer.name,
              stateTag: timer.stateTag,
              generation: timer.generation,
              dueAt: timer.dueAt,
              payload,
              attempts: 0,
              lastError: null,
              claimedUntil: null
            })
          }
        }

        let commands: ReturnType<typeof outbox.prepare> = []
        if (commit.outbox !== undefined) {
          commands = outbox.prepare(commit.outbox, {
            machine,
            instanceId,
            seqNr,
            createdAt: commit.events[commit.events.length - 1]!.metadata.timestamp
          })
          if (commands instanceof PersistenceError) return Effect.fail(commands)
        }

        // Then apply it in one synchronous step.
        if (log === undefined) {
          logs.set(key, rows)
          let ids = byMachine.get(machine)
          if (ids === undefined) byMachine.set(machine, ids = new Set())
          ids.add(instanceId)
        } else {
          for (const row of rows) log.push(row)
        }
        if (snapshot !== undefined) putSnapshot(key, snapshot)
        if (changes !== undefined && scheduled !== undefined) {
          if (fired !== undefined) deleteTimer(machine, instanceId, fired.name)
          if (changes.cancelAll) timers.delete(key)
          for (const timer of scheduled) putTimer(timer)
        }
        if (commit.outbox !== undefined) outbox.apply(commands, complete)
        let current = currentRows.get(machine)
        if (current === undefined) currentRows.set(machine, current = new Map())
        const before = current.get(instanceId)
        const after = applyChange(machine, instanceId, before, currentChange(commit))
        current.set(instanceId, after)
        let counts = stateCountRows.get(machine)
        if (counts === undefined) stateCountRows.set(machine, counts = new Map())
        if (before !== undefined) {
          const key = countKey(before)
          const n = counts.get(key)! - 1
          if (n === 0) counts.delete(key)
          else counts.set(key, n)
        }
        counts.set(countKey(after), (counts.get(countKey(after)) ?? 0) + 1)
        return committed
      }),
    events: (machine, instanceId, fromSeqNr) =>
      Stream.suspend(() => Stream.fromIterable(readLog(machine, instanceId, fromSeqNr, Number.POSITIVE_INFINITY))),
    eventsPage: (machine, instanceId, fromSeqNr, limit) => Effect.sync(() => readLog(machine, instanceId, fromSeqNr, limit)),
    recoveryBatch: (machine, instanceIds, limit) =>
      Effect.sync(() =>
        instanceIds.flatMap((instanceId): Array<Recovery> => {
          const key = keyOf(machine, instanceId)
          if (!logs.has(key)) return []
          const row = snapshots.get(key)
          return [{
            instanceId,
            snapshot: row === undefined ? Option.none() : Option.some(snapshotRecord(machine, instanceId, row)),
            events: readLog(machine, instanceId, (row?.seqNr ?? 0) + 1, limit)
          }]
        })
      ),
    highestSequenceNr: (machine, instanceId) => Effect.sync(() => logs.get(keyOf(machine, instanceId))?.length ?? 0),
    saveSnapshot: (snapshot) =>
      Effect.suspend(() => {
        const state = toJsonText(snapshot.state)
        if (state === undefined) return notJson("saveSnapshot", "the snapshot state")
        putSnapshot(keyOf(snapshot.machine, snapshot.instanceId), memorySnapshot(snapshot, state))
        return Effect.void
      }),
    loadSnapshot: (machine, instanceId) =>
      Effect.sync(() => {
        const row = snapshots.get(keyOf(machine, instanceId))
        return row === undefined ? Option.none() : Option.some(snapshotRecord(machine, instanceId, row))
      }),
    instances: (machine) => Stream.suspend(() => Stream.fromIterable([...(byMachine.get(machine) ?? [])])),
    instance: (machine, instanceId) => Effect.sync(() => Option.fromNullable(currentRows.get(machine)?.get(instanceId))),
    listInstances: (query) =>
      Effect.sync(() => {
        const after = query.after
        const matching = [...(currentRows.get(query.machine)?.values() ?? [])].filter((row) =>
          (query.stateTag === undefined || row.stateTag === query.stateTag) &&
          (query.enteredBefore === undefined || row.enteredAt < query.enteredBefore) &&
          (query.stopped === undefined || row.stopped === query.stopped) &&
          (after === undefined || compareEntry(row, after) > 0)
        ).sort(compareEntry)
        return instancePage(matching.slice(0, query.limit), query.limit)
      }),
    instancesByCorrelation: (machine, correlationId, limit) =>
      Effect.sync(() =>
        [...(byMachine.get(machine) ?? [])]
          .filter((id) => logs.get(keyOf(machine, id))!.some((row) => row.correlationId === correlationId))
          .sort(compareCodePoints)
          .slice(0, limit)
      ),
    stateCounts: (machine) =>
      Effect.sync(() =>
        [...(stateCountRows.get(machine) ?? new Map<string, number>())].map(([key, count]): StateCount => ({
          stateTag: key.slice(1),
          stopped: key[0] === "1",
          count
        })).sort(compareStateCounts)
      )
  }

  const allTimers = function*(machines: ReadonlyArray<string>) {
    for (const named of timers.values()) {
      for (const timer of named.values()) {
        if (machines.includes(timer.machine)) yield timer
      }
    }
  }

  const timeouts: TimeoutStore.TimeoutStore["Type"] = {
    claimDue: (options) =>
      Effect.sync(() => {
        const due = [...allTimers(options.machines)]
          .filter((t) => t.dueAt <= options.now && (t.claimedUntil === null || t.claimedUntil <= options.now))
          .sort((a, b) => a.dueAt - b.dueAt)
          .slice(0, Math.max(0, options.limit))
        for (const timer of due) putTimer({ ...timer, claimedUntil: options.claimUntil })
        return due.map(timerRecord)
      }),
    complete: (timer) =>
      Effect.sync(() => {
        if (timerOf(timer) !== undefined) deleteTimer(timer.machine, timer.instanceId, timer.name)
      }),
    retryLater: (timer, options) =>
      Effect.sync(() => {
        const found = timerOf(timer)
        if (found !== undefined) {
          putTimer({
            ...found,
            dueAt: options.dueAt,
            attempts: found.attempts + 1,
            lastError: options.error,
            claimedUntil: null
          })
        }
      }),
    deadLetter: (timer, options) =>
      Effect.sync(() => {
        const found = timerOf(timer)
        if (found === undefined) return
        deleteTimer(timer.machine, timer.instanceId, timer.name)
        const key = keyOf(timer.machine, timer.instanceId)
        let named = deadLetters.get(key)
        if (named === undefined) deadLetters.set(key, named = new Map())
        named.set(timer.name, {
          ...found,
          attempts: found.attempts + 1,
          lastError: options.error,
          claimedUntil: null,
          failedAt: options.now
        })
      }),
    nextDueAt: (machines) =>
      Effect.sync(() => {
        let next: number | undefined
        for (const timer of allTimers(machines)) {
          const claimableAt = Math.max(timer.dueAt, timer.claimedUntil ?? 0)
          if (next === undefined || claimableAt < next) next = claimableAt
        }
        return Option.fromNullable(next)
      }),
    pending: (machine, instanceId) =>
      Effect.sync(() => [...(timers.get(keyOf(machine, instanceId))?.values() ?? [])].map(timerRecord)),
    deadLetters: (machine) =>
      Effect.sync(() =>
        [...deadLetters.values()].flatMap((named) => [...named.values()]).filter((d) => d.machine === machine).map(
          deadLetterRecord
        )
      ),
    redrive: (timer, now) =>
      Effect.sync(() => {
        const key = keyOf(timer.machine, timer.instanceId)
        const letter = deadLetters.get(key)?.get(timer.name)
        if (letter === undefined || timers.get(key)?.has(timer.name)) return false
        deadLetters.get(key)!.delete(timer.name)
        const { failedAt: _, ...live } = letter
        putTimer({ ...live, dueAt: now, attempts: 0, claimedUntil: null })
        return true
      }),
    discard: (timer) =>
      Effect.sync(() => {
        const key = keyOf(timer.machine, timer.instanceId)
        const named = deadLetters.get(key)
        const found = named?.delete(timer.name) ?? false
        if (named?.size === 0) deadLetters.delete(key)
        return found
      }),
    reschedule: (timer, dueAt) =>
      Effect.sync(() => {
        const found = timerOf(timer)
        if (found === undefined) return false
        putTimer({ ...found, dueAt, claimedUntil: null })
        return true
      }),
    cancel: (timer) =>
      Effect.sync(() => {
        if (timerOf(timer) === undefined) return false
        deleteTimer(timer.machine, timer.instanceId, timer.name)
        return true
      }),
    upcoming: (machine, options) =>
      Effect.sync(() =>
        [...allTimers([machine])]
          .filter((t) => t.dueAt < options.before)
          .sort((a, b) =>
            a.dueAt - b.dueAt || compareCodePoints(a.instanceId, b.instanceId) || compareCodePoints(a.name, b.name)
          )
          .slice(0, Math.max(0, options.limit))
          .map(timerRecord)
      )
  }

  const heldRow = (lease: LeaseStore.Lease) => {
    const row = leaseRows.get(keyOf(lease.machine, lease.instanceId))
    return row !== undefined && row.owner === lease.owner && row.token === lease.token ? row : undefined
  }

  const leases: LeaseStore.Backend = {
    tryAcquire: (key, owner, ttlMillis, now) =>
      Effect.sync(() => {
        const k = keyOf(key.machine, key.instanceId)
        const row = leaseRows.get(k)
        if (row !== undefined && row.owner !== null && row.expiresAt > now) return Option.none()
        const token = (row?.token ?? 0) + 1
        leaseRows.set(k, { owner, token, expiresAt: now + ttlMillis })
        return Option.some({ machine: key.machine, instanceId: key.instanceId, owner, token, expiresAt: now + ttlMillis })
      }),
    extend: (lease, ttlMillis, now) =>
      Effect.sync(() => {
        const row = heldRow(lease)
        if (row === undefined || row.expiresAt <= now) return Option.none()
        leaseRows.set(keyOf(lease.machine, lease.instanceId), { ...row, expiresAt: now + ttlMillis })
        return Option.some({ ...lease, expiresAt: now + ttlMillis })
      }),
    release: (lease, now) =>
      Effect.sync(() => {
        const row = heldRow(lease)
        if (row === undefined) return false
        leaseRows.set(keyOf(lease.machine, lease.instanceId), { owner: null, token: row.token, expiresAt: now })
        return true
      }),
    get: (key, now) =>
      Effect.sync(() => {
        const row = leaseRows.get(keyOf(key.machine, key.instanceId))
        return row === undefined || row.owner === null || row.expiresAt <= now ? Option.none() : Option.some({
          machine: key.machine,
          instanceId: key.instanceId,
          owner: row.owner,
          token: row.token,
          expiresAt: row.expiresAt
        })
      })
  }

  return { backend, timeouts, outbox: outbox.store, leases }
}

/**
 * An in-memory event store, timer store, outbox store and lease store over one in-memory
 * database, for tests and single-process experiments. Each build of the layer is a new,
 * empty database; share one between runtimes by providing the same built
 * layer to both.
 *
 * @example
 * ```ts
 * program.pipe(Effect.provide(FSMRuntime.layer({ machines: [Order] })), Effect.provide(EventStore.layerMemory))
 * ```
 *
 * @since 0.1.0
 */
export const layerMemory: Layer.Layer<
  EventStore | TimeoutStore.TimeoutStore | OutboxStore.OutboxStore | LeaseStore.LeaseStore
> = Layer
  .effectContext(
    Effect.sync(() => {
      const memory = makeMemory()
      return Context.make(EventStore, make(memory.backend)).pipe(
        Context.add(TimeoutStore.TimeoutStore, memory.timeouts),
        Context.add(OutboxStore.OutboxStore, memory.outbox),
        Context.add(LeaseStore.LeaseStore, LeaseStore.make(memory.leases))
      )
    })
  )
