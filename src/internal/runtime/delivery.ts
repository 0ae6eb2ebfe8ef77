/**
 * Timer deliveries: a due deadline, handed over by the timeout strategy, is
 * decided as a `Fire` command through the same loop as a send, under the
 * same instance lock. It is valid only while its deadline is armed —
 * checked against the loaded instance (caught up with the log first when the
 * deadline is not armed in the cached one), and again by every retry; a
 * cache behind the log makes the commit conflict (its expected seqNr) and
 * the retry decide on the log — so an arming fires at most once whatever the
 * strategy; the durable strategy's timer row (consumed in the same commit)
 * adds the same guarantee across nodes.
 *
 * Entry and exit actions of a delivered timeout run in their own fiber, so a
 * slow or hung action never holds up the sweeper or other deliveries.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import * as EventStore from "../../EventStore.js"
import type * as LockingStrategy from "../../LockingStrategy.js"
import type * as TimeoutStrategy from "../../TimeoutStrategy.js"
import * as Core from "../core.js"
import { forkActions, type Transition } from "./actions.js"
import { type MachineCodec, parseMessage } from "./codec.js"
import type { ExecuteError, Executed } from "./execute.js"
import type { Instances, Loaded, LoadError } from "./instances.js"
import type { Traced } from "./tracing.js"

/** What a failed delivery means for its timer. One case per error: a new error must be placed here. */
export const deliveryResultOf = (error: ExecuteError | LockingStrategy.LockError): TimeoutStrategy.DeliveryResult => {
  switch (error._tag) {
    case "StaleTimer":
    // A timer delivery completes no command; should one ever be stale, the
    // delivery did not land either.
    case "StaleCommand":
      // The deadline was armed when the delivery started: another writer
      // (another node's delivery, or a send) got there first.
      return { _tag: "Stale", raced: true }
    case "InvalidTransition":
    case "GuardRejected":
    case "InstanceStopped":
      return { _tag: "Rejected", reason: error.message }
    case "InstanceNotFound":
    case "InvalidInstanceId":
      return { _tag: "Rejected", reason: error.message }
    case "TransitionFailed":
    case "InvalidInput":
    case "EventDecodeError":
    case "EventReplayError":
      // Trying again decides the same thing: keep the timer for inspection and re-drive after a fix.
      return { _tag: "Undeliverable", error: error.message }
    case "PersistenceError":
    case "SequenceConflict":
      return { _tag: "Failed", error: error.message }
    case "LockTimeout":
    case "LockLost":
    case "FencingRejected":
      // Another node holds (or took) the instance: not a failure of this timer.
      return { _tag: "Busy", reason: error.message }
  }
}

export const makeDeliver = (options: {
  readonly codecs: ReadonlyMap<string, MachineCodec>
  readonly instances: Instances
  /** The runtime's write lock of one instance (its own serialization, and the locking strategy's). */
  readonly writeLock: <A, E>(
    machine: string,
    instanceId: string,
    use: (held: LockingStrategy.Held) => Effect.Effect<A, E>
  ) => Effect.Effect<A, E | LockingStrategy.LockError>
  readonly execute: (
    codec: MachineCodec,
    instanceId: string,
    command: Core.Command,
    held: LockingStrategy.Held
  ) => Effect.Effect<Executed, ExecuteError>
  /** The actions of a delivered timeout's transition; `undefined` when it has none to run. */
  readonly runActions: (codec: MachineCodec, transition: Transition) => Effect.Effect<void, unknown> | undefined
  /** Where the actions of delivered timeouts run. */
  readonly scope: Scope.Scope
  readonly traced: Traced
}) =>
(delivery: TimeoutStrategy.Delivery): Effect.Effect<TimeoutStrategy.DeliveryResult> => {
  const { instances } = options
  const codec = options.codecs.get(delivery.machine)
  if (codec === undefined) return Effect.succeed({ _tag: "Rejected", reason: "machine not registered" })
  const idProblem = EventStore.instanceIdProblem(delivery.instanceId)
  if (idProblem !== undefined) return Effect.succeed({ _tag: "Rejected", reason: `invalid instance id: ${idProblem}` })

  /**
   * The instance to decide on: the cached one as it is, as a send would use
   * it; only when the timer is not armed there does the delivery catch up
   * first (the cache may be behind a write of another node that armed it),
   * so a live timer is never dropped as stale on a cache's word. A cache
   * behind the log in any other way makes the commit conflict, and the
   * retry decides on the log (`execute`). With this node's lease kept
   * since (`held.continuous`) no other writer came between.
   */
  const loadForDelivery = (held: LockingStrategy.Held) =>
    Effect.suspend((): Effect.Effect<Loaded, LoadError> => {
      const hit = instances.cached(codec.machine.name, delivery.instanceId)
      if (hit === undefined) return instances.load(codec, delivery.instanceId)
      return held.continuous || Core.armedDeadline(hit, delivery.name, delivery.generation) !== undefined
        ? Effect.succeed(hit)
        : instances.catchUp(codec, delivery.instanceId, hit)
    })

  const underLock = (held: LockingStrategy.Held) => Effect.flatMap(
    loadForDelivery(held),
    (loaded): Effect.Effect<TimeoutStrategy.DeliveryResult | Executed, ExecuteError> => {
      if (Core.armedDeadline(loaded, delivery.name, delivery.generation) === undefined) {
        return Effect.succeed({ _tag: "Stale", raced: false })
      }
      let event: Core.Command & { readonly _tag: "Fire" }
      if (delivery.payload !== undefined) {
        const decoded = codec.decodeEvent(delivery.payload)
        if (Either.isLeft(decoded)) {
          return Effect.succeed({
            _tag: "Undeliverable",
            error: `the stored timeout event does not decode: ${parseMessage(decoded.left)}`
          })
        }
        event = { _tag: "Fire", name: delivery.name, generation: delivery.generation, event: decoded.right }
      } else {
        event = { _tag: "Fire", name: delivery.name, generation: delivery.generation }
      }
      return options.execute(codec, delivery.instanceId, event, held)
    }
  )

  return options.writeLock(codec.machine.name, delivery.instanceId, underLock).pipe(
    Effect.flatMap((result): Effect.Effect<TimeoutStrategy.DeliveryResult> => {
      if (!("accepted" in result)) return Effect.succeed(result)
      const { accepted, loaded } = result
      const actions = options.runActions(codec, {
        instanceId: delivery.instanceId,
        seqNr: loaded.seqNr,
        previous: accepted.previous,
        state: accepted.next.state,
        event: accepted.record.event,
        entered: accepted.entered,
        initial: false
      })
      return Effect.as(
        forkActions(actions, options.scope, "timeout delivered, but an action failed"),
        { _tag: "Fired", seqNr: loaded.seqNr } as const
      )
    }),
    Effect.catchAll((error) => Effect.succeed(deliveryResultOf(error))),
    Effect.catchAllDefect((defect) => Effect.succeed({ _tag: "Failed", error: String(defect) } as const)),
    options.traced("FSMRuntime.deliverTimeout", {
      machine: delivery.machine,
      instanceId: delivery.instanceId,
      timer: delivery.name,
      generation: delivery.generation,
      dueAt: delivery.dueAt
    }, (result: TimeoutStrategy.DeliveryResult) => result._tag === "Fired" ? { result: "Fired", seqNr: result.seqNr } : { result: result._tag })
  )
}
