/**
 * Loading instances: the bounded cache of loaded instances, and recovery
 * from the latest valid snapshot plus a replay of the tail through
 * `Core.evolve`.
 *
 * The cache only ever holds committed state: the committer puts an instance
 * there after a commit the store reports durable, and evicts it after any
 * commit whose outcome is not known. Every function here is called under the
 * instance's lock.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import {
  EventDecodeError,
  EventReplayError,
  InstanceNotFound,
  type InvalidInstanceId,
  PersistenceError,
  SequenceConflict as SequenceConflictError,
  type SequenceConflict
} from "../../Errors.js"
import * as EventStore from "../../EventStore.js"
import * as Core from "../core.js"
import { Lru } from "../lru.js"
import { decodeRecord, type MachineCodec, parseMessage } from "./codec.js"
import type { Traced } from "./tracing.js"

/** A loaded instance: the core's view plus where its latest snapshot is. */
export interface Loaded extends Core.InstanceState {
  readonly snapshotSeqNr: number
}

export type ReplayError = EventReplayError | EventDecodeError | PersistenceError | InvalidInstanceId

export type LoadError = ReplayError | InstanceNotFound

export interface Instances {
  readonly cached: (machine: string, instanceId: string) => Loaded | undefined
  readonly remember: (machine: string, instanceId: string, loaded: Loaded) => void
  readonly evict: (machine: string, instanceId: string) => void
  readonly clear: () => void
  /** Cache hit, or snapshot + tail replay (which re-arms the instance's deadlines). */
  readonly load: (codec: MachineCodec, instanceId: string) => Effect.Effect<Loaded, LoadError>
  /** Up to date with the log: a cached instance catches up; a store load has just read to the end. */
  readonly loadFresh: (codec: MachineCodec, instanceId: string) => Effect.Effect<Loaded, LoadError>
  /**
   * After a cached instance found nothing new in the log: reloads it when
   * the log ends before it (the cache holds a write that never became
   * durable), else `undefined`. One cheap query; for decisions that must not
   * rest on such a cache (a rejection that completes an outbox command).
   */
  readonly verifyBehind: (
    codec: MachineCodec,
    instanceId: string,
    loaded: Loaded
  ) => Effect.Effect<Loaded | undefined, LoadError>
  /** Loads the uncached instances of `instanceIds` in one batch read, ahead of commands to them (see `preload`). */
  readonly preload: (codec: MachineCodec, instanceIds: ReadonlyArray<string>) => Effect.Effect<void>
  /** Applies the events written after `loaded` (by other writers). */
  readonly catchUp: (codec: MachineCodec, instanceId: string, loaded: Loaded) => Effect.Effect<Loaded, ReplayError>
  /**
   * After a `SequenceConflict`: catch up when the log is ahead of `loaded`,
   * or drop `loaded` and load again when the log is behind it (the cache held
   * a write that never became durable).
   */
  readonly resync: (
    codec: MachineCodec,
    instanceId: string,
    loaded: Loaded,
    conflict: SequenceConflict
  ) => Effect.Effect<Loaded, LoadError>
}

export const cacheKey = (machine: string, instanceId: string) => `${machine}\u0000${instanceId}`

/**
 * Events read per query when an instance is recovered: a 100,000-event
 * replay took 4,000 events a page at 680k events/s on PostgreSQL against
 * 550k at 1,000 (one round trip a page), and about 2.5% more on SQLite.
 */
const replayPage = 4_000

/**
 * The tail `preload` reads of each instance of a batch (up to `maxPreload`
 * of them in one read); an instance with a longer one is left to `load`.
 */
const preloadTail = 1_000

/** Instances one `preload` reads at most. */
const maxPreload = 256

export const makeInstances = (options: {
  readonly store: EventStore.EventStore["Type"]
  readonly cacheSize: number
  /** Tells the timeout strategy the instance's deadlines (after a load that changed them). */
  readonly arm: (codec: MachineCodec, instanceId: string, loaded: Loaded) => Effect.Effect<void>
  /** Hears of every instance dropped from the cache to make room, or by `clear` (synchronously: do not block). */
  readonly unloaded: (machine: string, instanceId: string) => void
  readonly traced: Traced
}): Instances => {
  const { arm, store, traced } = options
  const unload = (key: string) => {
    const at = key.indexOf("\u0000")
    options.unloaded(key.slice(0, at), key.slice(at + 1))
  }
  const cache = new Lru<string, Loaded>(options.cacheSize, unload)

  /** The typed failure of a record that does not follow from the instance. */
  const replayFailure = (machine: string, instanceId: string, problem: Core.EvolveProblem): ReplayError => {
    switch (problem.kind) {
      case "sequence":
        return new PersistenceError({
          operation: "replay",
          reason: `${machine}/${instanceId}: expected event ${problem.expected}, the store returned ${problem.actual}`
        })
      case "lifecycle":
        return new EventDecodeError({ machine, instanceId, seqNr: problem.seqNr, reason: problem.actual })
      case "replay":
        return new EventReplayError({
          machine,
          instanceId,
          seqNr: problem.seqNr,
          expected: problem.expected,
          actual: problem.actual
        })
    }
  }

  /**
   * Replays the log after `start` (from the beginning without one): reads
   * pages of `replayPage` events and folds each with `Core.evolve` in a plain
   * loop, one Effect per page rather than per event.
   */
  const replayFrom = (
    codec: MachineCodec,
    instanceId: string,
    start: Loaded | undefined
  ): Effect.Effect<Loaded | undefined, ReplayError> => {
    const machine = codec.machine
    // Per run of the returned Effect (a retry replays from `start` again).
    let acc: Core.InstanceState | undefined
    const page = (from: number): Effect.Effect<Loaded | undefined, ReplayError> =>
      Effect.flatMap(store.replayPage(machine.name, instanceId, from, replayPage), (records) => {
        const folded = fold(codec, instanceId, acc, records)
        if (Either.isLeft(folded)) return Effect.fail(folded.left)
        acc = folded.right
        if (records.length === replayPage) return page(records[records.length - 1]!.seqNr + 1)
        return Effect.succeed(loadedAfter(start, acc))
      })
    return Effect.suspend(() => {
      acc = start
      return page((start?.seqNr ?? 0) + 1)
    })
  }

  /** Folds `records` into `acc` with `Core.evolve`, in a plain loop. */
  const fold = (
    codec: MachineCodec,
    instanceId: string,
    acc: Core.InstanceState | undefined,
    records: ReadonlyArray<EventStore.ReplayRecord>
  ): Either.Either<Core.InstanceState | undefined, ReplayError> => {
    const machine = codec.machine
    for (let i = 0; i < records.length; i++) {
      const record = records[i]!
      const decoded = decodeRecord(codec, record)
      if (Either.isLeft(decoded)) {
        return Either.left(new EventDecodeError({ machine: machine.name, instanceId, seqNr: record.seqNr, reason: decoded.left }))
      }
      const next = Core.evolve(machine, acc, decoded.right)
      if (Either.isLeft(next)) return Either.left(replayFailure(machine.name, instanceId, next.left))
      acc = next.right
    }
    return Either.right(acc)
  }

  /** The loaded instance a replay from `start` ended at (`start` itself when nothing followed it). */
  const loadedAfter = (start: Loaded | undefined, acc: Core.InstanceState | undefined): Loaded | undefined =>
    acc === undefined || acc === start ? start : {
      state: acc.state,
      seqNr: acc.seqNr,
      stopped: acc.stopped,
      generation: acc.generation,
      deadlines: acc.deadlines,
      snapshotSeqNr: start?.snapshotSeqNr ?? 0
    }

  /** The instance as of its snapshot; `undefined` (and why, to log) when the snapshot cannot be used. */
  const snapshotStart = (
    codec: MachineCodec,
    instanceId: string,
    s: EventStore.SnapshotRecord
  ): Either.Either<Loaded, string> => {
    const where = `${codec.machine.name}/${instanceId}`
    if (s.schemaVersion !== codec.machine.version) {
      return Either.left(
        `${where}: snapshot of schema version ${s.schemaVersion} discarded (machine is at ${codec.machine.version}), replaying the whole log`
      )
    }
    const envelope = codec.decodeSnapshot(s.state)
    if (Either.isLeft(envelope)) {
      return Either.left(`${where}: snapshot at ${s.seqNr} does not decode, replaying the whole log: ${parseMessage(envelope.left)}`)
    }
    return Either.right({
      state: envelope.right.value,
      seqNr: s.seqNr,
      stopped: s.stopped,
      snapshotSeqNr: s.seqNr,
      generation: envelope.right.generation,
      deadlines: envelope.right.deadlines
    })
  }

  const fromSnapshot = (codec: MachineCodec, instanceId: string) =>
    Effect.flatMap(
      store.loadSnapshot(codec.machine.name, instanceId),
      (snapshot): Effect.Effect<Loaded | undefined> => {
        if (Option.isNone(snapshot)) return Effect.succeed(undefined)
        const start = snapshotStart(codec, instanceId, snapshot.value)
        if (Either.isRight(start)) return Effect.succeed(start.right)
        const s = snapshot.value
        return Effect.as(
          s.schemaVersion !== codec.machine.version ? Effect.logInfo(start.left) : Effect.logWarning(start.left),
          undefined
        )
      }
    )

  /**
   * Loads the instances of `instanceIds` that are not cached with one
   * `recoveryBatch` (two reads), ahead of commands about to reach them (a
   * batch of claimed timers), at most half the cache's size of them. Only
   * what recovers exactly as `load` would is cached: an instance whose
   * snapshot cannot be used, whose log does not replay or runs past
   * `preloadTail` events, or that got cached meanwhile is left to `load`.
   * Failures are ignored (it is a shortcut), and so are concurrent writers: an instance
   * cached here is committed state, and a commit that moved it on since
   * makes the next command's commit conflict and catch up, as after any
   * other writer.
   */
  const preload = (codec: MachineCodec, instanceIds: ReadonlyArray<string>): Effect.Effect<void> =>
    Effect.suspend(() => {
      const name = codec.machine.name
      // At most half the cache: a batch must not push out every instance in use.
      const room = Math.min(maxPreload, Math.floor(options.cacheSize / 2))
      const missing = [...new Set(instanceIds)].filter((id) => !cache.has(cacheKey(name, id))).slice(0, room)
      if (missing.length < 2) return Effect.void
      return store.recoveryBatch(name, missing, preloadTail).pipe(
        Effect.flatMap((recoveries) => {
          const loaded: Array<readonly [string, Loaded]> = []
          for (const recovery of recoveries) {
            if (recovery.events.length >= preloadTail) continue
            let start: Loaded | undefined
            if (Option.isSome(recovery.snapshot)) {
              const fromSnapshot = snapshotStart(codec, recovery.instanceId, recovery.snapshot.value)
              if (Either.isLeft(fromSnapshot)) continue
              start = fromSnapshot.right
            }
            const folded = fold(codec, recovery.instanceId, start, recovery.events.map(EventStore.replayRecord))
            if (Either.isLeft(folded)) continue
            const instance = loadedAfter(start, folded.right)
            const key = cacheKey(name, recovery.instanceId)
            if (instance === undefined || cache.has(key)) continue
            cache.set(key, instance)
            loaded.push([recovery.instanceId, instance])
          }
          return Effect.forEach(loaded, ([instanceId, instance]) => arm(codec, instanceId, instance), { discard: true })
        }),
        Effect.catchAll((error) => Effect.logDebug(`${name}: batch load of ${missing.length} instances skipped`, error)),
        traced("FSMRuntime.preload", { machine: name, instances: missing.length })
      )
    })

  const load = (codec: MachineCodec, instanceId: string): Effect.Effect<Loaded, LoadError> =>
    Effect.suspend(() => {
      const key = cacheKey(codec.machine.name, instanceId)
      const hit = cache.get(key)
      if (hit !== undefined) return Effect.succeed(hit)
      return fromSnapshot(codec, instanceId).pipe(
        Effect.flatMap((start) => replayFrom(codec, instanceId, start)),
        Effect.timed,
        Effect.flatMap(([took, loaded]) => {
          if (loaded === undefined) return Effect.fail(new InstanceNotFound({ machine: codec.machine.name, instanceId }))
          cache.set(key, loaded)
          const { metrics } = codec
          const replayed = loaded.seqNr - loaded.snapshotSeqNr
          return arm(codec, instanceId, loaded).pipe(
            Effect.zipRight(Metric.update(metrics.recoveryTime, Duration.toMillis(took))),
            Effect.zipRight(replayed > 0 ? Metric.incrementBy(metrics.replayedEvents, replayed) : Effect.void),
            Effect.as(loaded)
          )
        }),
        traced("FSMRuntime.recover", { machine: codec.machine.name, instanceId }, (loaded: Loaded) => ({
          seqNr: loaded.seqNr,
          snapshotSeqNr: loaded.snapshotSeqNr,
          replayed: loaded.seqNr - loaded.snapshotSeqNr
        }))
      )
    })

  const catchUp = (codec: MachineCodec, instanceId: string, loaded: Loaded) =>
    Effect.flatMap(replayFrom(codec, instanceId, loaded), (fresh) => {
      const next = fresh ?? loaded
      const key = cacheKey(codec.machine.name, instanceId)
      cache.set(key, next)
      return next.seqNr === loaded.seqNr ? Effect.succeed(next) : arm(codec, instanceId, next).pipe(
        Effect.zipRight(Metric.incrementBy(codec.metrics.replayedEvents, next.seqNr - loaded.seqNr)),
        Effect.as(next)
      )
    }).pipe(
      traced("FSMRuntime.catchUp", { machine: codec.machine.name, instanceId, fromSeqNr: loaded.seqNr + 1 }, (next: Loaded) => ({
        seqNr: next.seqNr,
        replayed: next.seqNr - loaded.seqNr
      }))
    )

  const loadFresh = (codec: MachineCodec, instanceId: string) =>
    Effect.suspend(() => {
      const key = cacheKey(codec.machine.name, instanceId)
      const hit = cache.get(key)
      if (hit === undefined) return load(codec, instanceId)
      return catchUp(codec, instanceId, hit)
    })

  const evict = (machine: string, instanceId: string) => cache.delete(cacheKey(machine, instanceId))

  const resync = (codec: MachineCodec, instanceId: string, loaded: Loaded, conflict: SequenceConflict) =>
    conflict.actual > loaded.seqNr
      ? catchUp(codec, instanceId, loaded)
      : Effect.suspend(() => {
        evict(codec.machine.name, instanceId)
        return Effect.zipRight(
          Effect.logWarning(
            `${codec.machine.name}/${instanceId}: the log ends at ${conflict.actual}, before the loaded instance (${loaded.seqNr}); reloading`
          ),
          load(codec, instanceId)
        )
      })

  const verifyBehind = (codec: MachineCodec, instanceId: string, loaded: Loaded) =>
    Effect.flatMap(store.highestSequenceNr(codec.machine.name, instanceId), (highest) =>
      highest >= loaded.seqNr ? Effect.succeed(undefined) : resync(
        codec,
        instanceId,
        loaded,
        new SequenceConflictError({ machine: codec.machine.name, instanceId, expected: loaded.seqNr, actual: highest })
      ))

  return {
    cached: (machine, instanceId) => cache.get(cacheKey(machine, instanceId)),
    verifyBehind,
    remember: (machine, instanceId, loaded) => cache.set(cacheKey(machine, instanceId), loaded),
    evict,
    clear: () => {
      const keys = [...cache.keys()]
      cache.clear()
      keys.forEach(unload)
    },
    load,
    loadFresh,
    preload,
    catchUp,
    resync
  }
}
