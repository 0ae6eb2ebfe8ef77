/**
 * The event log: where every accepted event of every instance is appended.
 *
 * Backends see encoded JSON only; the runtime encodes and decodes with the
 * machine's schemas. A backend implements `EventStore.Backend` and is turned
 * into the service by `EventStore.make`, which adds the checks every backend
 * must share (instance ids, commit shape), so that memory, SQLite and
 * PostgreSQL behave the same.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { InvalidInstanceId, PersistenceError, SequenceConflict, StaleTimer } from "./Errors.js"
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
}

/**
 * What a storage backend implements. Instance ids and commits reaching it
 * have already been validated by `EventStore.make`.
 *
 * @since 0.1.0
 */
export interface Backend {
  readonly append: (commit: Commit) => Effect.Effect<void, SequenceConflict | StaleTimer | PersistenceError>
  readonly events: (
    machine: string,
    instanceId: string,
    fromSeqNr: number
  ) => Stream.Stream<EventRecord, PersistenceError>
  readonly highestSequenceNr: (machine: string, instanceId: string) => Effect.Effect<number, PersistenceError>
  readonly saveSnapshot: (snapshot: SnapshotRecord) => Effect.Effect<void, PersistenceError>
  readonly loadSnapshot: (
    machine: string,
    instanceId: string
  ) => Effect.Effect<Option.Option<SnapshotRecord>, PersistenceError>
  readonly instances: (machine: string) => Stream.Stream<string, PersistenceError>
}

/**
 * The event store service.
 *
 * @since 0.1.0
 */
export class EventStore extends Context.Tag("effect-fsm/EventStore")<EventStore, {
  /**
   * Applies a commit atomically, or fails and writes nothing: with
   * `SequenceConflict` when the log does not end at `expectedSeqNr`, with
   * `StaleTimer` when the timer it delivers is no longer armed.
   */
  readonly append: (
    commit: Commit
  ) => Effect.Effect<void, SequenceConflict | StaleTimer | PersistenceError | InvalidInstanceId>
  /** The events of an instance with `seqNr >= fromSeqNr`, in order. */
  readonly events: (
    machine: string,
    instanceId: string,
    fromSeqNr: number
  ) => Stream.Stream<EventRecord, PersistenceError | InvalidInstanceId>
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
}>() {}

/**
 * Longest accepted instance id, in UTF-16 code units.
 *
 * @since 0.1.0
 */
export const maxInstanceIdLength = 255

/**
 * Why an instance id is invalid, or `undefined` when it is fine: non-empty,
 * at most 255 characters, no NUL. Quotes, SQL fragments and any other
 * Unicode are fine: backends bind ids as parameters, never as SQL text.
 *
 * @since 0.1.0
 */
export const instanceIdProblem = (instanceId: string): string | undefined =>
  typeof instanceId !== "string"
    ? "must be a string"
    : instanceId.length === 0
    ? "must not be empty"
    : instanceId.length > maxInstanceIdLength
    ? `must be at most ${maxInstanceIdLength} characters`
    : instanceId.includes("\u0000")
    ? "must not contain NUL"
    : undefined

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

const invalidCommit = (reason: string) => Effect.fail(new PersistenceError({ operation: "append", reason }))

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
  return undefined
}

/**
 * Wraps a backend into the service, adding the validation every backend shares.
 *
 * @since 0.1.0
 */
export const make = (backend: Backend): EventStore["Type"] => ({
  append: (commit) =>
    Effect.suspend((): Effect.Effect<void, SequenceConflict | StaleTimer | PersistenceError | InvalidInstanceId> =>
      commitProblem(commit) ?? backend.append(commit)
    ),
  events: (machine, instanceId, fromSeqNr) =>
    Stream.unwrap(Effect.as(validateInstanceId(machine, instanceId), backend.events(machine, instanceId, fromSeqNr))),
  highestSequenceNr: (machine, instanceId) =>
    Effect.zipRight(validateInstanceId(machine, instanceId), backend.highestSequenceNr(machine, instanceId)),
  saveSnapshot: (snapshot) =>
    Effect.zipRight(validateInstanceId(snapshot.machine, snapshot.instanceId), backend.saveSnapshot(snapshot)),
  loadSnapshot: (machine, instanceId) =>
    Effect.zipRight(validateInstanceId(machine, instanceId), backend.loadSnapshot(machine, instanceId)),
  instances: backend.instances
})

// ---------------------------------------------------------------------------
// In-memory backend
// ---------------------------------------------------------------------------

const keyOf = (machine: string, instanceId: string) => `${machine}\u0000${instanceId}`

interface MemoryTimer extends TimeoutStore.TimerRecord {
  readonly claimedUntil: number | null
}

/**
 * An in-memory database: the event log, snapshots and timers. Each commit is
 * applied in one synchronous step, so it is atomic even under interruption;
 * `expectedSeqNr` is honoured exactly as a database would; nothing is ever
 * evicted.
 *
 * @since 0.1.0
 */
export const makeMemory = (): { readonly backend: Backend; readonly timeouts: TimeoutStore.TimeoutStore["Type"] } => {
  const logs = new Map<string, Array<EventRecord>>()
  const snapshots = new Map<string, SnapshotRecord>()
  const byMachine = new Map<string, Set<string>>()
  /** instance key -> timer name -> timer */
  const timers = new Map<string, Map<string, MemoryTimer>>()
  const deadLetters = new Map<string, Map<string, TimeoutStore.DeadLetter>>()

  const putSnapshot = (snapshot: SnapshotRecord) => {
    const key = keyOf(snapshot.machine, snapshot.instanceId)
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

  const applyTimers = (commit: Commit, changes: TimeoutStore.TimerChanges) => {
    if (changes.fired !== undefined) deleteTimer(commit.machine, commit.instanceId, changes.fired.name)
    if (changes.cancelAll) timers.delete(keyOf(commit.machine, commit.instanceId))
    for (const timer of changes.schedule) {
      putTimer({
        ...timer,
        machine: commit.machine,
        instanceId: commit.instanceId,
        attempts: 0,
        lastError: null,
        claimedUntil: null
      })
    }
  }

  const publicTimer = ({ claimedUntil: _, ...timer }: MemoryTimer): TimeoutStore.TimerRecord => timer

  const backend: Backend = {
    append: (commit) =>
      Effect.suspend((): Effect.Effect<void, SequenceConflict | StaleTimer> => {
        const key = keyOf(commit.machine, commit.instanceId)
        const log = logs.get(key)
        const actual = log === undefined ? 0 : log.length
        if (actual !== commit.expectedSeqNr) {
          return Effect.fail(
            new SequenceConflict({
              machine: commit.machine,
              instanceId: commit.instanceId,
              expected: commit.expectedSeqNr,
              actual
            })
          )
        }
        const fired = commit.timers?.fired
        if (fired !== undefined && timerOf({ ...fired, machine: commit.machine, instanceId: commit.instanceId }) === undefined) {
          return Effect.fail(
            new StaleTimer({ machine: commit.machine, instanceId: commit.instanceId, ...fired })
          )
        }
        const target = log ?? []
        let seqNr = commit.expectedSeqNr
        for (const event of commit.events) {
          // Spelt out: on Node 20 (V8 11) a spread followed by more properties
          // takes a slow path costing microseconds per record.
          target.push({
            machine: commit.machine,
            instanceId: commit.instanceId,
            seqNr: ++seqNr,
            tag: event.tag,
            payload: event.payload,
            stateTag: event.stateTag,
            schemaVersion: event.schemaVersion,
            metadata: event.metadata
          })
        }
        if (log === undefined) {
          logs.set(key, target)
          let ids = byMachine.get(commit.machine)
          if (ids === undefined) byMachine.set(commit.machine, ids = new Set())
          ids.add(commit.instanceId)
        }
        if (commit.snapshot !== undefined) putSnapshot(commit.snapshot)
        if (commit.timers !== undefined) applyTimers(commit, commit.timers)
        return Effect.void
      }),
    events: (machine, instanceId, fromSeqNr) =>
      Stream.suspend(() => {
        const log = logs.get(keyOf(machine, instanceId)) ?? []
        return Stream.fromIterable(log.slice(Math.max(0, fromSeqNr - 1)))
      }),
    highestSequenceNr: (machine, instanceId) => Effect.sync(() => logs.get(keyOf(machine, instanceId))?.length ?? 0),
    saveSnapshot: (snapshot) => Effect.sync(() => putSnapshot(snapshot)),
    loadSnapshot: (machine, instanceId) => Effect.sync(() => Option.fromNullable(snapshots.get(keyOf(machine, instanceId)))),
    instances: (machine) => Stream.suspend(() => Stream.fromIterable([...(byMachine.get(machine) ?? [])]))
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
        return due.map(publicTimer)
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
          ...publicTimer(found),
          attempts: found.attempts + 1,
          lastError: options.error,
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
      Effect.sync(() => [...(timers.get(keyOf(machine, instanceId))?.values() ?? [])].map(publicTimer)),
    deadLetters: (machine) =>
      Effect.sync(() =>
        [...deadLetters.values()].flatMap((named) => [...named.values()]).filter((d) => d.machine === machine)
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
      })
  }

  return { backend, timeouts }
}

/**
 * An in-memory event store and timer store over one in-memory database, for
 * tests and single-process experiments. Each build of the layer is a new,
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
export const layerMemory: Layer.Layer<EventStore | TimeoutStore.TimeoutStore> = Layer.effectContext(
  Effect.sync(() => {
    const memory = makeMemory()
    return Context.make(EventStore, make(memory.backend)).pipe(Context.add(TimeoutStore.TimeoutStore, memory.timeouts))
  })
)
