/**
 * Running one claimed outbox command, for the dispatcher:
 *
 * - `handler`: decode the command with the producing machine's schema, run
 *   its handler (outside any lock: it may be slow), and commit the reply it
 *   returns, if any, to the producing instance;
 * - `send`: commit the event to the target instance;
 * - `spawn`: create the target instance.
 *
 * Every commit here goes through the normal path (instance lock, locking
 * strategy, decide, commit) with `source: "outbox"`, the command's
 * correlation id, and the command as the one the commit completes: the
 * store deletes the pending row in the same atomic commit, or refuses the
 * whole commit (`StaleCommand`) when another node completed it first. So
 * each command has at most one reply, event or creation, however often it
 * ran.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import type * as Errors from "../../Errors.js"
import type * as FSMRuntime from "../../FSMRuntime.js"
import type * as LockingStrategy from "../../LockingStrategy.js"
import type * as Machine from "../../Machine.js"
import type * as Outbox from "../../Outbox.js"
import type * as OutboxStore from "../../OutboxStore.js"
import { describeValue } from "../describe.js"
import { jsonProblem } from "../jsonValue.js"
import { forkActions, type Transition } from "./actions.js"
import { type MachineCodec, parseMessage } from "./codec.js"
import type { ExecuteError, Executed } from "./execute.js"

/** What a failed commit of a command's reply, event or creation means for the command. One case per error. */
export const commandResultOf = (
  error: ExecuteError | LockingStrategy.LockError | FSMRuntime.CreateError | Errors.StaleCommand
): Outbox.CommandResult => {
  switch (error._tag) {
    case "StaleCommand":
      return { _tag: "Stale" }
    case "InvalidTransition":
    case "GuardRejected":
    case "InstanceStopped":
    case "InstanceAlreadyExists":
      return { _tag: "Rejected", reason: error.message }
    case "InstanceNotFound":
      // Not yet, maybe: the spawn that creates it may still be on its way.
      return { _tag: "Failed", error: `${error.message} (yet)` }
    case "TransitionFailed":
    case "InvalidInput":
    case "InvalidInstanceId":
    case "EventDecodeError":
    case "EventReplayError":
      return { _tag: "Undeliverable", error: error.message }
    case "MachineNotRegistered":
      // Another node (a newer deploy) may know it: retried, dead-lettered only in the end.
      return { _tag: "Failed", error: error.message }
    case "PersistenceError":
    case "SequenceConflict":
    case "StaleTimer":
    case "ActionFailed":
      return { _tag: "Failed", error: error.message }
    case "LockTimeout":
    case "LockLost":
    case "FencingRejected":
      return { _tag: "Busy", reason: error.message }
  }
}

export const makeRunCommand = (options: {
  readonly codecs: ReadonlyMap<string, MachineCodec>
  readonly handlers: ReadonlyMap<string, Outbox.HandlerSet>
  /** The runtime's write lock of one instance. */
  readonly writeLock: <A, E>(
    machine: string,
    instanceId: string,
    use: (held: LockingStrategy.Held) => Effect.Effect<A, E>
  ) => Effect.Effect<A, E | LockingStrategy.LockError>
  /** Decides and commits `event` (encoded as `payload`), completing `completes`. */
  readonly execute: (
    codec: MachineCodec,
    instanceId: string,
    event: Machine.Tagged,
    payload: unknown,
    command: OutboxStore.CommandRecord,
    held: LockingStrategy.Held
  ) => Effect.Effect<Executed, ExecuteError>
  /** Creates an instance, completing the command. */
  readonly create: (
    codec: MachineCodec,
    instanceId: string,
    state: Machine.Tagged,
    payload: unknown,
    command: OutboxStore.CommandRecord
  ) => Effect.Effect<FSMRuntime.Outcome<Machine.Tagged>, FSMRuntime.CreateError | Errors.StaleCommand>
  /** The actions of a delivered event's transition; `undefined` when it has none to run. */
  readonly runActions: (codec: MachineCodec, transition: Transition) => Effect.Effect<void, unknown> | undefined
  /** Where the actions of delivered events run. */
  readonly scope: Scope.Scope
}) => {
  const undeliverable = (error: string): Effect.Effect<Outbox.CommandResult> =>
    Effect.succeed({ _tag: "Undeliverable", error })
  /** What this node cannot run but a node of another deploy may: retried, dead-lettered only in the end. */
  const notHere = (error: string): Effect.Effect<Outbox.CommandResult> => Effect.succeed({ _tag: "Failed", error })

  /** Commits `event` to `instanceId` of `codec`'s machine, completing `command`; the actions run in their own fiber. */
  const deliverEvent = (
    codec: MachineCodec,
    instanceId: string,
    event: unknown,
    command: OutboxStore.CommandRecord
  ): Effect.Effect<Outbox.CommandResult> => {
    if (typeof event !== "object" || event === null || typeof (event as Machine.Tagged)._tag !== "string") {
      return undeliverable(`${describeValue(event)} is not an event of machine "${codec.machine.name}"`)
    }
    const payload = codec.encodeEvent(event)
    if (Either.isLeft(payload)) {
      return undeliverable(`not an event of machine "${codec.machine.name}": ${parseMessage(payload.left)}`)
    }
    const problem = jsonProblem(payload.right)
    if (problem !== undefined) return undeliverable(`the event cannot be stored: ${problem}`)
    return options.writeLock(codec.machine.name, instanceId, (held) =>
      options.execute(codec, instanceId, event as Machine.Tagged, payload.right, command, held)).pipe(
        Effect.flatMap(({ accepted, loaded }) => {
          const actions = options.runActions(codec, {
            instanceId,
            seqNr: loaded.seqNr,
            previous: accepted.previous,
            state: accepted.next.state,
            event: accepted.record.event,
            entered: accepted.entered,
            initial: false
          })
          return Effect.as(
            forkActions(actions, options.scope, "outbox event committed, but an action failed"),
            { _tag: "Delivered", seqNr: loaded.seqNr } as const
          )
        }),
        Effect.catchAll((error) => Effect.succeed(commandResultOf(error)))
      )
  }

  const runHandler = (
    command: OutboxStore.CommandRecord,
    context: Outbox.CommandContext
  ): Effect.Effect<Outbox.CommandResult> => {
    const codec = options.codecs.get(command.machine)
    if (codec === undefined) return notHere(`machine "${command.machine}" is not registered in this runtime`)
    const handler = options.handlers.get(command.machine)?.handlers.get(command.tag)
    if (handler === undefined) return notHere(`machine "${command.machine}" has no handler for command "${command.tag}" in this runtime`)
    const decoded = codec.decodeCommand(command.payload)
    if (Either.isLeft(decoded)) return undeliverable(`the stored command does not decode: ${parseMessage(decoded.left)}`)
    return handler(decoded.right, context).pipe(
      Effect.matchCauseEffect({
        onFailure: (cause) => Effect.failCause(cause),
        onSuccess: (reply): Effect.Effect<Outbox.CommandResult> =>
          reply === undefined || reply === null
            ? Effect.succeed({ _tag: "Completed" })
            : deliverEvent(codec, command.instanceId, reply, command)
      })
    ) as Effect.Effect<Outbox.CommandResult>
  }

  return (command: OutboxStore.CommandRecord, context: Outbox.CommandContext): Effect.Effect<Outbox.CommandResult> => {
    if (command.kind === "handler") return runHandler(command, context)
    const target = command.target
    if (target === null) return undeliverable(`a ${command.kind} command without a target`)
    const codec = options.codecs.get(target.machine)
    if (codec === undefined) return notHere(`the target machine "${target.machine}" is not registered in this runtime`)
    if (command.kind === "send") {
      const event = codec.decodeEvent(command.payload)
      if (Either.isLeft(event)) return undeliverable(`the stored event does not decode: ${parseMessage(event.left)}`)
      return deliverEvent(codec, target.instanceId, event.right, command)
    }
    const state = codec.decodeState(command.payload)
    if (Either.isLeft(state)) return undeliverable(`the stored state does not decode: ${parseMessage(state.left)}`)
    const payload = codec.encodeState(state.right)
    if (Either.isLeft(payload)) return undeliverable(`the stored state does not encode: ${parseMessage(payload.left)}`)
    return options.create(codec, target.instanceId, state.right, payload.right, command).pipe(
      Effect.map((outcome): Outbox.CommandResult => ({ _tag: "Delivered", seqNr: outcome.seqNr })),
      // The creation (and the completion) is committed; only its entry action failed.
      Effect.catchTag("ActionFailed", (error) =>
        Effect.as(
          Effect.logWarning("outbox spawn committed, but an action failed", error),
          { _tag: "Delivered", seqNr: error.seqNr } as const
        )),
      Effect.catchAll((error) => Effect.succeed(commandResultOf(error)))
    )
  }
}
