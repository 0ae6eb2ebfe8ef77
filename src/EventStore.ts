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
import { InvalidInstanceId, PersistenceError, SequenceConflict } from "./Errors.js"

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
}

/**
 * What a storage backend implements. Instance ids and commits reaching it
 * have already been validated by `EventStore.make`.
 *
 * @since 0.1.0
 */
export interface Backend {
  readonly append: (commit: Commit) => Effect.Effect<void, SequenceConflict | PersistenceError>
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
  /** Applies a commit atomically, or fails with `SequenceConflict` and writes nothing. */
  readonly append: (commit: Commit) => Effect.Effect<void, SequenceConflict | PersistenceError | InvalidInstanceId>
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
 * Checks an instance id: non-empty, at most 255 characters, no NUL. Quotes,
 * SQL fragments and any other Unicode are fine: backends bind ids as
 * parameters, never as SQL text.
 *
 * @since 0.1.0
 */
export const validateInstanceId = (
  machine: string,
  instanceId: string
): Effect.Effect<void, InvalidInstanceId> => {
  const reason = typeof instanceId !== "string"
    ? "must be a string"
    : instanceId.length === 0
    ? "must not be empty"
    : instanceId.length > maxInstanceIdLength
    ? `must be at most ${maxInstanceIdLength} characters`
    : instanceId.includes("\u0000")
    ? "must not contain NUL"
    : undefined
  return reason === undefined
    ? Effect.void
    : Effect.fail(new InvalidInstanceId({ machine, instanceId: String(instanceId), reason }))
}

const invalidCommit = (reason: string) => Effect.fail(new PersistenceError({ operation: "append", reason }))

const checkCommit = (commit: Commit): Effect.Effect<void, InvalidInstanceId | PersistenceError> =>
  Effect.flatMap(validateInstanceId(commit.machine, commit.instanceId), () => {
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
    return Effect.void
  })

/**
 * Wraps a backend into the service, adding the validation every backend shares.
 *
 * @since 0.1.0
 */
export const make = (backend: Backend): EventStore["Type"] => ({
  append: (commit) => Effect.zipRight(checkCommit(commit), backend.append(commit)),
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

/**
 * An in-memory backend. It honours `expectedSeqNr` exactly as a database
 * would, applies each commit in one synchronous step (so it is atomic even
 * under interruption) and never evicts anything.
 *
 * @since 0.1.0
 */
export const makeMemoryBackend = (): Backend => {
  const logs = new Map<string, Array<EventRecord>>()
  const snapshots = new Map<string, SnapshotRecord>()
  const byMachine = new Map<string, Set<string>>()
  return {
    append: (commit) =>
      Effect.suspend(() => {
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
        const target = log ?? []
        let seqNr = commit.expectedSeqNr
        for (const event of commit.events) {
          target.push({ ...event, machine: commit.machine, instanceId: commit.instanceId, seqNr: ++seqNr })
        }
        if (log === undefined) {
          logs.set(key, target)
          let ids = byMachine.get(commit.machine)
          if (ids === undefined) byMachine.set(commit.machine, ids = new Set())
          ids.add(commit.instanceId)
        }
        if (commit.snapshot !== undefined) putSnapshot(commit.snapshot)
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

  function putSnapshot(snapshot: SnapshotRecord) {
    const key = keyOf(snapshot.machine, snapshot.instanceId)
    const current = snapshots.get(key)
    if (current === undefined || snapshot.seqNr > current.seqNr) snapshots.set(key, snapshot)
  }
}

/**
 * An in-memory event store, for tests and single-process experiments. Each
 * build of the layer is a new, empty store; share one store between runtimes
 * by providing the same built layer to both.
 *
 * @example
 * ```ts
 * program.pipe(Effect.provide(FSMRuntime.layer({ machines: [Order] })), Effect.provide(EventStore.layerMemory))
 * ```
 *
 * @since 0.1.0
 */
export const layerMemory: Layer.Layer<EventStore> = Layer.sync(EventStore, () => make(makeMemoryBackend()))
