/**
 * Committing one accepted command: build the commit record (the event, the
 * timer changes it implies, a snapshot when one is due), append it as one
 * atomic unit, and settle the cache.
 *
 * A failed append whose outcome is unknown (the acknowledgement of a commit
 * that landed was lost, a COMMIT failed after the write) is resolved from the
 * log: every commit carries a fresh commit id, and the first event after the
 * expected sequence number tells whether this commit landed; one that has not
 * is appended again with the same id. So a command is never decided twice. A
 * `PersistenceError` from here means the outcome is unknown (the database
 * kept failing, or an attempt may still be in flight): the instance is
 * evicted and its next use reloads it from the log.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Metric from "effect/Metric"
import type * as Schema from "effect/Schema"
import {
  type FencingRejected,
  InvalidInput,
  type LockLost,
  type InvalidInstanceId,
  PersistenceError,
  SequenceConflict,
  type StaleCommand,
  type StaleTimer
} from "../../Errors.js"
import * as EventStore from "../../EventStore.js"
import type * as LockingStrategy from "../../LockingStrategy.js"
import type * as Machine from "../../Machine.js"
import type * as OutboxStore from "../../OutboxStore.js"
import type * as TimeoutStore from "../../TimeoutStore.js"
import type * as Core from "../core.js"
import { describeValue } from "../describe.js"
import { jsonProblem } from "../jsonValue.js"
import { type MachineCodec, parseMessage, safeEncoder } from "./codec.js"
import type { Instances, Loaded } from "./instances.js"

export type CommitError =
  | SequenceConflict
  | StaleTimer
  | StaleCommand
  | FencingRejected
  | LockLost
  | PersistenceError
  | InvalidInstanceId
  | InvalidInput

/** What one commit writes, before the store-level record is built. */
export interface Proposal {
  readonly codec: MachineCodec
  readonly instanceId: string
  /** The instance before the command; `undefined` for `create`. */
  readonly loaded: Loaded | undefined
  readonly next: Core.InstanceState
  readonly tag: string
  /** The encoded event (or initial state), checked by the caller to be JSON-safe. */
  readonly payload: unknown
  readonly timers: Core.TimerPlan
  readonly timestamp: number
  readonly source: EventStore.Source
  readonly correlationId: string | null
  readonly timer: string | null
  /** Commands the command produces, for the outbox. */
  readonly commands: ReadonlyArray<Core.Produced>
  /** The outbox command this commit completes (its reply, or the event it delivers). */
  readonly completes?: OutboxStore.CommandKey | undefined
  /** The lease the commit is made under, checked in the same atomic commit. */
  readonly fence?: LockingStrategy.Fence | undefined
  /** Run as the commit begins (the locking strategy's last word before the write). */
  readonly committing?: Effect.Effect<void, LockLost> | undefined
}

export interface Committer {
  readonly commit: (proposal: Proposal) => Effect.Effect<Loaded, CommitError>
}

/** Encoders of the schemas built-in commands target, built once per schema. */
const encoders = new WeakMap<object, ReturnType<typeof safeEncoder>>()
const encoderOf = (schema: Schema.Schema<Machine.Tagged, unknown>) => {
  let encoder = encoders.get(schema)
  if (encoder === undefined) encoders.set(schema, encoder = safeEncoder(schema))
  return encoder
}

/** How often a failed commit that has not landed is appended again before its outcome is reported unknown. */
const maxReappends = 2

export const makeCommitter = (options: {
  readonly store: EventStore.EventStore["Type"]
  readonly instances: Instances
  readonly nodeId: string
  readonly snapshotEvery: number
  /** Timer rows belong in the commit (the durable strategy). */
  readonly durable: () => boolean
  /** Tells the timeout strategy the instance's new deadlines. */
  readonly arm: (codec: MachineCodec, instanceId: string, loaded: Loaded) => Effect.Effect<void>
  /** Hears of every durable commit that produced commands (to wake the outbox dispatcher). */
  readonly produced: () => void
}): Committer => {
  const { instances, nodeId, snapshotEvery, store } = options

  const snapshotDue = (p: Proposal): boolean =>
    snapshotEvery > 0 && p.next.seqNr - (p.loaded?.snapshotSeqNr ?? 0) >= snapshotEvery

  /** The snapshot of a commit for which one is due; `undefined` when the state cannot be stored exactly. */
  const snapshotOf = (p: Proposal): EventStore.SnapshotRecord | undefined => {
    const encoded = p.codec.encodeSnapshot({ value: p.next.state, generation: p.next.generation, deadlines: p.next.deadlines })
    // A snapshot is an optimisation: one that cannot be stored exactly is skipped.
    if (Either.isLeft(encoded) || jsonProblem(encoded.right) !== undefined) return undefined
    return {
      machine: p.codec.machine.name,
      instanceId: p.instanceId,
      seqNr: p.next.seqNr,
      state: encoded.right,
      stopped: p.next.stopped,
      schemaVersion: p.codec.machine.version,
      timestamp: p.timestamp
    }
  }

  const timerChanges = (p: Proposal): Either.Either<TimeoutStore.TimerChanges | undefined, string> => {
    if (!options.durable()) return Either.right(undefined)
    const plan = p.timers
    if (!plan.cancelAll && plan.fired === undefined) return Either.right(undefined)
    const schedule: Array<TimeoutStore.ScheduledTimer> = []
    for (const deadline of plan.schedule) {
      const payload = p.codec.encodeEvent(deadline.event)
      if (Either.isLeft(payload)) return Either.left(`timeout "${deadline.name}": ${parseMessage(payload.left)}`)
      const problem = jsonProblem(payload.right)
      if (problem !== undefined) return Either.left(`timeout "${deadline.name}": ${problem}`)
      schedule.push({
        name: deadline.name,
        stateTag: p.next.state._tag,
        generation: p.next.generation,
        dueAt: deadline.dueAt,
        payload: payload.right
      })
    }
    // A new instance has no rows to cancel.
    return Either.right({ cancelAll: plan.cancelAll && p.loaded !== undefined, schedule, fired: plan.fired })
  }

  const outboxChanges = (p: Proposal): Either.Either<OutboxStore.OutboxChanges | undefined, string> => {
    if (p.commands.length === 0 && p.completes === undefined) return Either.right(undefined)
    const produce: Array<OutboxStore.NewCommand> = []
    for (let index = 0; index < p.commands.length; index++) {
      const encoded = encodeCommand(p, p.commands[index]!, index)
      if (Either.isLeft(encoded)) return Either.left(`command ${index} (${p.commands[index]!._tag}): ${encoded.left}`)
      produce.push(encoded.right)
    }
    return Either.right({ produce, complete: p.completes })
  }

  /** Caches the committed instance and re-arms its deadlines when they changed. */
  const settle = (p: Proposal, snapshotted: boolean, durable: boolean): Effect.Effect<Loaded> => {
    const machine = p.codec.machine.name
    const loaded = p.loaded
    const result: Loaded = {
      state: p.next.state,
      seqNr: p.next.seqNr,
      stopped: p.next.stopped,
      generation: p.next.generation,
      deadlines: p.next.deadlines,
      snapshotSeqNr: snapshotted ? p.next.seqNr : (loaded?.snapshotSeqNr ?? 0)
    }
    // A write inside a caller's open transaction is not durable yet: it may
    // still roll back, so it must not be what the next command decides on.
    if (durable) instances.remember(machine, p.instanceId, result)
    else instances.evict(machine, p.instanceId)
    // Inside a caller's open transaction the commands are not visible yet: the dispatcher finds them by polling.
    if (durable && p.commands.length > 0) options.produced()
    // Deadlines are armed from committed state only: a write that may roll
    // back keeps the committed ones running (a stale one is dropped when it
    // fires), and the next load arms what was committed.
    const changed = result.generation !== loaded?.generation || result.deadlines !== loaded.deadlines
    const anyArmed = result.deadlines.length > 0 || (loaded !== undefined && loaded.deadlines.length > 0)
    const settled = durable && changed && anyArmed
      ? Effect.as(options.arm(p.codec, p.instanceId, result), result)
      : Effect.succeed(result)
    return snapshotted ? Effect.zipLeft(settled, Metric.increment(p.codec.metrics.snapshotsWritten)) : settled
  }

  /**
   * Whether the commit `commitId` landed: `true`, `false` (the log still
   * ends at the expected seqNr), or a `SequenceConflict` when another
   * writer's event is there instead.
   */
  const landed = (p: Proposal, commitId: string, expectedSeqNr: number) =>
    store.eventsPage(p.codec.machine.name, p.instanceId, expectedSeqNr + 1, 1).pipe(
      Effect.flatMap((page): Effect.Effect<boolean, SequenceConflict> => {
        const first = page[0]
        if (first === undefined) return Effect.succeed(false)
        if (first.metadata.commitId === commitId) return Effect.succeed(true)
        return Effect.fail(
          new SequenceConflict({
            machine: p.codec.machine.name,
            instanceId: p.instanceId,
            expected: expectedSeqNr,
            actual: first.seqNr
          })
        )
      })
    )

  // Builds the record at once: every caller calls it from inside the Effect that decided.
  const commit = (p: Proposal): Effect.Effect<Loaded, CommitError> => {
    const changes = timerChanges(p)
    if (Either.isLeft(changes)) {
      return Effect.fail(new InvalidInput({ machine: p.codec.machine.name, instanceId: p.instanceId, reason: changes.left }))
    }
    const outbox = outboxChanges(p)
    if (Either.isLeft(outbox)) {
      return Effect.fail(new InvalidInput({ machine: p.codec.machine.name, instanceId: p.instanceId, reason: outbox.left }))
    }
    const commitId = crypto.randomUUID()
    const expectedSeqNr = p.loaded?.seqNr ?? 0
    const due = snapshotDue(p)
    const snapshot = due ? snapshotOf(p) : undefined
    const record: EventStore.Commit = {
      machine: p.codec.machine.name,
      instanceId: p.instanceId,
      expectedSeqNr,
      events: [{
        tag: p.tag,
        payload: p.payload,
        stateTag: p.next.state._tag,
        schemaVersion: p.codec.machine.version,
        metadata: {
          timestamp: p.timestamp,
          source: p.source,
          correlationId: p.correlationId,
          node: nodeId,
          commitId,
          timer: p.timer
        }
      }],
      snapshot,
      timers: changes.right,
      outbox: outbox.right,
      fence: p.fence,
      // The instance's generation is the seqNr of the event that entered its state.
      current: { entered: p.next.generation === expectedSeqNr + 1, stopped: p.next.stopped }
    }
    // A snapshot is an optimisation: one that cannot be stored exactly is skipped, and counted.
    const write = due && snapshot === undefined
      ? Effect.zipRight(Metric.increment(p.codec.metrics.snapshotFailures), appendResolved(p, record, commitId))
      : appendResolved(p, record, commitId)
    // `Effect.void`: the optimistic strategy's, which has nothing to say.
    return p.committing === undefined || p.committing === Effect.void ? write : Effect.zipRight(p.committing, write)
  }

  /**
   * Appends `record`. After a `PersistenceError` the log tells whether the
   * commit landed. When it has not (yet), the same record (same commit id,
   * same expected seqNr, without its snapshot: a failed snapshot write never
   * fails a command) is appended again, up to `maxReappends` times: an
   * earlier attempt may still be in flight on the server, and only a later
   * attempt that lands, or that loses the slot to a commit which is not ours,
   * settles the outcome. A commit found in the log after a failure is cached
   * as committed (should it have joined a caller's transaction that then
   * rolls back, the next commit's conflict finds the log behind the cache
   * and reloads).
   */
  const appendResolved = (
    p: Proposal,
    record: EventStore.Commit,
    commitId: string,
    reappends = 0
  ): Effect.Effect<Loaded, CommitError> =>
    store.append(record).pipe(
      Effect.flatMap((result) => settle(p, record.snapshot !== undefined, result.durable)),
      Effect.catchAll((error): Effect.Effect<Loaded, CommitError> => {
        switch (error._tag) {
          // An earlier attempt may have landed after all, after it was looked
          // for: then this one finds the log moved on, or the timer row or outbox
          // command it consumes gone (consumed by that earlier attempt).
          case "SequenceConflict":
          case "StaleTimer":
          case "StaleCommand":
            return reappends > 0 ? landedAfterAll(p, record, commitId, error) : Effect.fail(error)
          case "PersistenceError":
            return afterFailure(p, record, commitId, reappends, error)
          default:
            return Effect.fail(error)
        }
      })
      // Interrupted mid-commit, the commit may or may not have landed: the
      // runtime's write lock drops the cached instance (see `withWriteLock`).
    )

  /**
   * After a `PersistenceError`: the commit landed (settled), has not landed
   * (appended again, or an unknown outcome once the reappends are spent), or
   * its slot went to another writer (`SequenceConflict`).
   */
  const afterFailure = (
    p: Proposal,
    record: EventStore.Commit,
    commitId: string,
    reappends: number,
    error: PersistenceError
  ): Effect.Effect<Loaded, CommitError> =>
    landed(p, commitId, record.expectedSeqNr).pipe(
      Effect.catchTag("PersistenceError", (unknown) => unknownOutcome(p, `${error.reason}; the log could not be read: ${unknown.reason}`, error)),
      Effect.flatMap((didLand): Effect.Effect<Loaded, CommitError> => {
        const where = `${p.codec.machine.name}/${p.instanceId}`
        if (didLand) {
          return Effect.zipRight(
            Effect.logWarning(`${where}: commit ${commitId} reported a failure but landed`, error),
            settle(p, record.snapshot !== undefined, true)
          )
        }
        if (reappends >= maxReappends) {
          return unknownOutcome(p, `${error.reason} (${reappends + 1} attempts; none has landed so far)`, error)
        }
        const again = Effect.zipRight(
          Effect.logWarning(`${where}: commit ${commitId} failed and has not landed; appending it again`, error),
          appendResolved(p, { ...record, snapshot: undefined }, commitId, reappends + 1)
        )
        return record.snapshot === undefined
          ? again
          : Effect.zipRight(Metric.increment(p.codec.metrics.snapshotFailures), again)
      })
    )

  /** Encodes one produced command as an outbox row, or says why it cannot be stored. */
  const encodeCommand = (
    p: Proposal,
    command: Core.Produced,
    index: number
  ): Either.Either<OutboxStore.NewCommand, string> => {
    const base = { index, correlationId: p.correlationId, fenceToken: p.fence?.token ?? null }
    if (command._tag === "@sendTo" || command._tag === "@spawn") {
      const builtIn = command as Machine.SendTo | Machine.Spawn
      const target = builtIn.target as Partial<Machine.Address<Machine.Tagged, Machine.Tagged>> | undefined
      if (typeof target !== "object" || target === null || typeof target.name !== "string") {
        return Either.left(`not built with Machine.sendTo / Machine.spawn: no target machine`)
      }
      const idProblem = EventStore.instanceIdProblem(builtIn.instanceId)
      if (idProblem !== undefined) return Either.left(`target instance id ${describeValue(builtIn.instanceId)} ${idProblem}`)
      const send = command._tag === "@sendTo"
      const value = send ? (builtIn as Machine.SendTo).event : (builtIn as Machine.Spawn).state
      const schema = send ? target.eventSchema : target.stateSchema
      if (schema === undefined) return Either.left(`the target machine "${target.name}" has no schema`)
      const encoded = encoderOf(schema)(value)
      if (Either.isLeft(encoded)) return Either.left(parseMessage(encoded.left))
      const problem = jsonProblem(encoded.right)
      if (problem !== undefined) return Either.left(problem)
      return Either.right({
        ...base,
        kind: send ? "send" : "spawn",
        tag: (value as Machine.Tagged)._tag,
        payload: encoded.right,
        target: { machine: target.name, instanceId: builtIn.instanceId }
      })
    }
    const encoded = p.codec.encodeCommand(command)
    if (Either.isLeft(encoded)) return Either.left(parseMessage(encoded.left))
    const problem = jsonProblem(encoded.right)
    if (problem !== undefined) return Either.left(problem)
    return Either.right({ ...base, kind: "handler", tag: command._tag, payload: encoded.right, target: null })
  }

  /** A re-appended commit refused with `error`: a success if an earlier attempt of it landed, else `error`. */
  const landedAfterAll = <E extends CommitError>(p: Proposal, record: EventStore.Commit, commitId: string, error: E) =>
    Effect.flatMap(
      Effect.catchTag(landed(p, commitId, record.expectedSeqNr), "SequenceConflict", () => Effect.succeed(false)),
      (didLand): Effect.Effect<Loaded, CommitError> => didLand ? settle(p, false, true) : Effect.fail(error)
    )

  /** The instance is dropped from the cache (its next use reloads it) and the caller is told the outcome is unknown. */
  const unknownOutcome = (p: Proposal, reason: string, cause: PersistenceError) =>
    Effect.suspend(() => {
      instances.evict(p.codec.machine.name, p.instanceId)
      return Effect.fail(
        new PersistenceError({
          operation: "append",
          reason: `the commit failed and whether it landed is unknown: ${reason}`,
          cause
        })
      )
    })

  return { commit }
}
