/**
 * The decide-and-commit loop of one command, run under the instance's lock:
 *
 * 1. load the instance (cache hit, or snapshot + replay);
 * 2. decide the command with the pure core (`Core.decide`);
 * 3. a rejection or a stale delivery on a cached instance is checked again
 *    against the log (another writer may have moved the instance on);
 * 4. commit what was accepted; on a `SequenceConflict`, resync with the log
 *    and go back to 2 under the retry schedule. Every attempt decides from
 *    scratch, so a timer delivery is re-checked against the fresh instance
 *    each time and can never be committed twice.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import type * as Schedule from "effect/Schedule"
import {
  GuardRejected,
  InstanceStopped,
  InvalidInput,
  InvalidTransition,
  SequenceConflict,
  StaleTimer,
  TransitionFailed
} from "../../Errors.js"
import type * as EventStore from "../../EventStore.js"
import type * as LockingStrategy from "../../LockingStrategy.js"
import type * as OutboxStore from "../../OutboxStore.js"
import * as Metrics from "../../Metrics.js"
import { fiberNowMillis } from "../clock.js"
import * as Core from "../core.js"
import { jsonProblem } from "../jsonValue.js"
import { type MachineCodec, parseMessage } from "./codec.js"
import type { CommitError, Committer } from "./commit.js"
import type { Instances, LoadError, Loaded } from "./instances.js"

/** A committed command. */
export interface Executed {
  readonly accepted: Core.Accepted
  readonly loaded: Loaded
}

export type ExecuteError =
  | LoadError
  | CommitError
  | InvalidTransition
  | GuardRejected
  | InstanceStopped
  | TransitionFailed
  | StaleTimer

export interface CommandOptions {
  readonly source: EventStore.Source
  readonly correlationId: string | null
  /** The encoded event of a `Send` (already checked by the caller). */
  readonly payload?: unknown
  /** What the locking strategy gave: the fence of the commits, and whether the cache is authoritative. */
  readonly held: LockingStrategy.Held
  /** The outbox command the commit completes (the command delivers its reply or event). */
  readonly completes?: OutboxStore.CommandKey | undefined
}

export const makeExecutor = (options: {
  readonly instances: Instances
  readonly committer: Committer
  /** The conflict retry schedule of a machine. */
  readonly retry: (machine: string) => Schedule.Schedule<unknown, SequenceConflict>
}) => {
  const { committer, instances, retry } = options

  /** The payload the accepted record stores: JSON-safe encoded event, or `null` for `@stopped`. */
  const payloadOf = (
    codec: MachineCodec,
    instanceId: string,
    command: Core.Command,
    accepted: Core.Accepted,
    given: unknown
  ): Either.Either<unknown, InvalidInput> => {
    if (command._tag === "Stop") return Either.right(null)
    if (command._tag === "Send") return Either.right(given)
    const invalid = (reason: string) =>
      Either.left(new InvalidInput({ machine: codec.machine.name, instanceId, reason: `timeout event: ${reason}` }))
    const encoded = codec.encodeEvent(accepted.record.event)
    if (Either.isLeft(encoded)) return invalid(parseMessage(encoded.left))
    const problem = jsonProblem(encoded.right)
    return problem === undefined ? Either.right(encoded.right) : invalid(problem)
  }

  const attempt = (
    codec: MachineCodec,
    instanceId: string,
    command: Core.Command,
    commandOptions: CommandOptions
  ): Effect.Effect<Executed, ExecuteError> => {
    const machine = codec.machine
    /** Decides on `loaded` with the fiber's clock, and commits; the fiber's metric labels count the outcome. */
    const decideWith = (
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      loaded: Loaded,
      fromCache: boolean
    ): Effect.Effect<Executed, ExecuteError> => {
      const now = fiberNowMillis(fiber)
      const decided = Core.decide(machine, loaded, command, now)
      switch (decided._tag) {
        case "Rejected":
        case "Stale": {
          const failure = Core.notAcceptedError(machine.name, instanceId, loaded.state._tag, command, decided)
          // Counted once, when the rejection is final (a stale timer is no transition).
          const fail = decided._tag === "Rejected"
            ? Effect.zipRight(Metric.increment(codec.metrics.transitions.rejected), Effect.fail(failure))
            : Effect.fail(failure)
          // The cache may be behind another runtime's writes: ask the log once
          // (unless this node's lease has kept every other writer out since).
          if (!fromCache || commandOptions.held.continuous) return fail
          return Effect.flatMap(instances.catchUp(codec, instanceId, loaded), (fresh) => {
            if (fresh.seqNr !== loaded.seqNr) return decideOn(fresh, false)
            // Completing an outbox command on a rejection is for good:
            // make sure the cache is not ahead of the log first.
            if (commandOptions.completes === undefined) return fail
            return Effect.flatMap(
              instances.verifyBehind(codec, instanceId, loaded),
              (reloaded) => reloaded === undefined ? fail : decideOn(reloaded, false)
            )
          })
        }
        case "Failed":
          return Effect.fail(Core.notAcceptedError(machine.name, instanceId, loaded.state._tag, command, decided))
        case "Accepted": {
          const payload = payloadOf(codec, instanceId, command, decided, commandOptions.payload)
          if (Either.isLeft(payload)) return Effect.fail(payload.left)
          return committer.commit({
            codec,
            instanceId,
            loaded,
            next: decided.next,
            tag: decided.record.tag,
            payload: payload.right,
            timers: decided.timers,
            timestamp: now,
            source: command._tag === "Fire" ? "timeout" : commandOptions.source,
            correlationId: commandOptions.correlationId,
            timer: decided.record.timer ?? null,
            commands: decided.commands,
            completes: commandOptions.completes,
            fence: commandOptions.held.fence,
            committing: commandOptions.held.committing
          }).pipe(
            Effect.catchTag("SequenceConflict", (conflict) =>
              Metric.increment(Metrics.conflicts).pipe(
                Effect.zipRight(instances.resync(codec, instanceId, loaded, conflict)),
                Effect.zipRight(Effect.fail(conflict))
              )),
            Effect.map((committed) => {
              // What `Metric.increment` does, in this continuation.
              codec.metrics.transitions[decided.outcome].unsafeUpdate(1, fiber.getFiberRef(FiberRef.currentMetricLabels))
              return { accepted: decided, loaded: committed }
            })
          )
        }
      }
    }
    const decideOn = (loaded: Loaded, fromCache: boolean): Effect.Effect<Executed, ExecuteError> =>
      Effect.withFiberRuntime((fiber) => decideWith(fiber, loaded, fromCache))
    // On a cache hit one Effect reads the cache, the clock and the metric labels, and decides.
    return Effect.withFiberRuntime((fiber) => {
      const cached = instances.cached(machine.name, instanceId)
      return cached !== undefined
        ? decideWith(fiber, cached, true)
        : Effect.flatMap(instances.load(codec, instanceId), (loaded) => decideOn(loaded, false))
    })
  }

  /** Retries `effect` on `SequenceConflict` only, under the configured schedule. */
  const retryConflicts = <A, E>(
    retry: Schedule.Schedule<unknown, SequenceConflict>,
    retried: Metric.Metric.Counter<number>,
    effect: Effect.Effect<A, E | SequenceConflict>
  ): Effect.Effect<A, E | SequenceConflict> =>
    // The schedule (and its driver) is only set up after a first conflict;
    // that failure is replayed as its first input, so delays and the number
    // of retries are as if it had been running from the start.
    Effect.catchIf(effect, (error): error is SequenceConflict => error instanceof SequenceConflict, (conflict) => {
      let replayed = false
      return Effect.suspend(() =>
        replayed ? Effect.zipRight(Metric.increment(retried), effect) : (replayed = true, Effect.fail(conflict))
      ).pipe(
        Effect.map(Effect.succeed),
        Effect.catchIf(
          (error): error is E => !(error instanceof SequenceConflict),
          (error) => Effect.succeed(Effect.fail(error))
        ),
        Effect.retry(retry),
        Effect.flatten
      )
    })

  /** Decides and commits `command`, retrying conflicts. Call under the instance's lock. */
  const execute = (
    codec: MachineCodec,
    instanceId: string,
    command: Core.Command,
    commandOptions: CommandOptions
  ): Effect.Effect<Executed, ExecuteError> =>
    retryConflicts(retry(codec.machine.name), codec.metrics.retries, attempt(codec, instanceId, command, commandOptions))

  return { execute }
}
