/**
 * The typed failures of effect-fsm.
 *
 * Every expected failure of a public operation is one of these classes, so a
 * caller can `Effect.catchTag` exactly the cases it cares about. Each carries
 * the fields that identify what failed (machine, instance id, sequence
 * numbers, tags) and a readable `message`.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * A machine definition is inconsistent in a way the types cannot express
 * (a timeout event its state does not handle, two entries for the same
 * state and event at the same level, a duplicate machine name in one runtime).
 *
 * @since 0.1.0
 */
export class MachineDefinitionError extends Schema.TaggedError<MachineDefinitionError>()(
  "MachineDefinitionError",
  { machine: Schema.String, reason: Schema.String }
) {
  override get message() {
    return `machine "${this.machine}": ${this.reason}`
  }
}

/**
 * The runtime was asked to work with a machine that was not registered in
 * its layer.
 *
 * @since 0.1.0
 */
export class MachineNotRegistered extends Schema.TaggedError<MachineNotRegistered>()(
  "MachineNotRegistered",
  { machine: Schema.String }
) {
  override get message() {
    return `machine "${this.machine}" is not registered with this runtime`
  }
}

/**
 * The current state has no transition for the event.
 *
 * @since 0.1.0
 */
export class InvalidTransition extends Schema.TaggedError<InvalidTransition>()(
  "InvalidTransition",
  { machine: Schema.String, instanceId: Schema.String, state: Schema.String, event: Schema.String }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: no transition for event "${this.event}" in state "${this.state}"`
  }
}

/**
 * Every guard of the matching transition entry rejected the event.
 *
 * @since 0.1.0
 */
export class GuardRejected extends Schema.TaggedError<GuardRejected>()(
  "GuardRejected",
  { machine: Schema.String, instanceId: Schema.String, state: Schema.String, event: Schema.String }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: guard rejected event "${this.event}" in state "${this.state}"`
  }
}

/**
 * The instance has never been created.
 *
 * @since 0.1.0
 */
export class InstanceNotFound extends Schema.TaggedError<InstanceNotFound>()(
  "InstanceNotFound",
  { machine: Schema.String, instanceId: Schema.String }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: instance not found`
  }
}

/**
 * `create` was called for an instance id that already has a log.
 *
 * @since 0.1.0
 */
export class InstanceAlreadyExists extends Schema.TaggedError<InstanceAlreadyExists>()(
  "InstanceAlreadyExists",
  { machine: Schema.String, instanceId: Schema.String }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: instance already exists`
  }
}

/**
 * The instance has stopped (a `stop` transition or `FSMRuntime.stop` is in
 * its log) and accepts no more events.
 *
 * @since 0.1.0
 */
export class InstanceStopped extends Schema.TaggedError<InstanceStopped>()(
  "InstanceStopped",
  { machine: Schema.String, instanceId: Schema.String, state: Schema.String, event: Schema.String }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: instance is stopped in state "${this.state}", event "${this.event}" rejected`
  }
}

/**
 * An append expected the log to end at `expected` but it ends at `actual`:
 * another writer got there first.
 *
 * @since 0.1.0
 */
export class SequenceConflict extends Schema.TaggedError<SequenceConflict>()(
  "SequenceConflict",
  { machine: Schema.String, instanceId: Schema.String, expected: Schema.Number, actual: Schema.Number }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: expected sequence number ${this.expected}, log is at ${this.actual}`
  }
}

/**
 * Replaying the log did not reproduce the state tag stored with an event:
 * the machine definition changed incompatibly, or the log was altered.
 *
 * @since 0.1.0
 */
export class EventReplayError extends Schema.TaggedError<EventReplayError>()(
  "EventReplayError",
  {
    machine: Schema.String,
    instanceId: Schema.String,
    seqNr: Schema.Number,
    expected: Schema.String,
    actual: Schema.String
  }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: replay of event ${this.seqNr} produced state "${this.actual}", the log recorded "${this.expected}"`
  }
}

/**
 * A stored event or snapshot could not be decoded with the machine's schemas.
 *
 * @since 0.1.0
 */
export class EventDecodeError extends Schema.TaggedError<EventDecodeError>()(
  "EventDecodeError",
  { machine: Schema.String, instanceId: Schema.String, seqNr: Schema.Number, reason: Schema.String }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: stored event ${this.seqNr} cannot be decoded: ${this.reason}`
  }
}

/**
 * An event or initial state given by the caller does not match the
 * machine's schema.
 *
 * @since 0.1.0
 */
export class InvalidInput extends Schema.TaggedError<InvalidInput>()(
  "InvalidInput",
  { machine: Schema.String, instanceId: Schema.String, reason: Schema.String }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: invalid input: ${this.reason}`
  }
}

/**
 * An instance id is not acceptable (empty, too long, or containing NUL).
 *
 * @since 0.1.0
 */
export class InvalidInstanceId extends Schema.TaggedError<InvalidInstanceId>()(
  "InvalidInstanceId",
  { machine: Schema.String, instanceId: Schema.String, reason: Schema.String }
) {
  override get message() {
    return `${this.machine}: invalid instance id ${JSON.stringify(this.instanceId)}: ${this.reason}`
  }
}

/**
 * The storage backend failed (connection, I/O, constraint other than the
 * sequence-number lock).
 *
 * @since 0.1.0
 */
export class PersistenceError extends Schema.TaggedError<PersistenceError>()(
  "PersistenceError",
  { operation: Schema.String, reason: Schema.String, cause: Schema.optional(Schema.Defect) }
) {
  override get message() {
    return `persistence failure in ${this.operation}: ${this.reason}`
  }
}

/**
 * An entry or exit action failed. The event that triggered it is committed
 * and stays committed: actions run after the commit.
 *
 * @since 0.1.0
 */
export class ActionFailed extends Schema.TaggedError<ActionFailed>()(
  "ActionFailed",
  {
    machine: Schema.String,
    instanceId: Schema.String,
    seqNr: Schema.Number,
    state: Schema.String,
    action: Schema.Literal("entry", "exit"),
    cause: Schema.Defect
  }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: ${this.action} action of state "${this.state}" failed after event ${this.seqNr} was committed`
  }
}

/**
 * A timer was delivered after its instance left (and maybe re-entered) the
 * state that armed it; the delivery wrote nothing.
 *
 * @since 0.1.0
 */
export class StaleTimer extends Schema.TaggedError<StaleTimer>()(
  "StaleTimer",
  { machine: Schema.String, instanceId: Schema.String, name: Schema.String, generation: Schema.Number }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: timer "${this.name}" of generation ${this.generation} is no longer armed`
  }
}

/**
 * The outbox command a commit completes is no longer pending: another
 * dispatcher committed its reply (or delivered it) first, or it was
 * dead-lettered or discarded. The commit wrote nothing.
 *
 * @since 0.1.0
 */
export class StaleCommand extends Schema.TaggedError<StaleCommand>()(
  "StaleCommand",
  { machine: Schema.String, instanceId: Schema.String, seqNr: Schema.Number, index: Schema.Number }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: outbox command ${this.index} of seqNr ${this.seqNr} is no longer pending`
  }
}

/**
 * A function of the machine threw while deciding an event: a `guard`, a
 * `build`, a timeout's `after` (which may also have returned something
 * that is not a duration), or a command builder (which may also have
 * returned something that is not a list of commands). Nothing was written;
 * `cause` is what it threw.
 *
 * @since 0.1.0
 */
export class TransitionFailed extends Schema.TaggedError<TransitionFailed>()(
  "TransitionFailed",
  {
    machine: Schema.String,
    instanceId: Schema.String,
    state: Schema.String,
    event: Schema.String,
    stage: Schema.Literal("guard", "build", "after", "commands"),
    reason: Schema.String,
    cause: Schema.Defect
  }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: deciding event "${this.event}" in state "${this.state}" failed: ${this.reason}`
  }
}

/**
 * An option given to a layer is unusable (a duration that does not parse, a
 * zero poll interval, a negative count). Reported when the layer is built,
 * never later.
 *
 * @since 0.1.0
 */
export class InvalidConfiguration extends Schema.TaggedError<InvalidConfiguration>()(
  "InvalidConfiguration",
  { component: Schema.String, option: Schema.String, reason: Schema.String }
) {
  override get message() {
    return `${this.component}: option "${this.option}" ${this.reason}`
  }
}

/**
 * A distributed lock (an instance lease) could not be acquired within the
 * wait bound: another node holds it.
 *
 * @since 0.1.0
 */
export class LockTimeout extends Schema.TaggedError<LockTimeout>()(
  "LockTimeout",
  { machine: Schema.String, instanceId: Schema.String, waitedMillis: Schema.Number }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: lock not acquired within ${this.waitedMillis} ms`
  }
}

/**
 * A lease held by this node was lost (it expired and another node may have
 * taken it over, or it could not be extended): the transition in flight was
 * interrupted (`FailFast`), or an `extend` / `release` found the lease gone.
 *
 * @since 0.1.0
 */
export class LockLost extends Schema.TaggedError<LockLost>()(
  "LockLost",
  { machine: Schema.String, instanceId: Schema.String, owner: Schema.String, token: Schema.Number }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: lease of ${this.owner} (token ${this.token}) was lost`
  }
}

/**
 * A commit made under a lease was refused because the lease is no longer
 * held with its fencing token (another node acquired it since): nothing was
 * written. This is what stops a paused "zombie" node from writing.
 *
 * @since 0.1.0
 */
export class FencingRejected extends Schema.TaggedError<FencingRejected>()(
  "FencingRejected",
  { machine: Schema.String, instanceId: Schema.String, owner: Schema.String, token: Schema.Number }
) {
  override get message() {
    return `${this.machine}/${this.instanceId}: commit fenced off, the lease is no longer held by ${this.owner} with token ${this.token}`
  }
}

/**
 * A query of the current-state table (`EventStore.listInstances`,
 * `EventStore.stateCounts`) was malformed: a page size outside
 * `1..EventStore.maxPageSize`, a time that is not a whole number of
 * milliseconds, a cursor that is not `{ enteredAt, instanceId }`. Nothing
 * was read.
 *
 * @example
 * ```ts
 * store.listInstances({ machine: "order", limit: 0 }) // fails with InvalidQuery
 * ```
 *
 * @since 0.1.0
 */
export class InvalidQuery extends Schema.TaggedError<InvalidQuery>()(
  "InvalidQuery",
  { operation: Schema.String, reason: Schema.String }
) {
  override get message() {
    return `invalid ${this.operation} query: ${this.reason}`
  }
}
