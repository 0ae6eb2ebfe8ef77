/**
 * What a commit writes to the current-state table, worked out once for every
 * backend (memory applies it, SQL turns it into one upsert).
 *
 * @internal
 */
import * as Option from "effect/Option"
import type * as EventStore from "../EventStore.js"

/** The change a commit makes to its instance's current-state row. */
export interface CurrentChange {
  readonly stateTag: string
  readonly seqNr: number
  /** The timestamp of the commit's last event. */
  readonly updatedAt: number
  /**
   * `"yes"`: `enteredAt` becomes `enteredAt`; `"no"`: it keeps the stored
   * one; `"ifTagChanged"`: it becomes `enteredAt` unless the stored row is
   * in the same state (a commit that did not say, see `Commit.current`).
   */
  readonly entered: "yes" | "no" | "ifTagChanged"
  readonly enteredAt: number
  readonly stopped: boolean
}

const stoppedTag = "@stopped"

/** The current-state change of a validated commit (it has at least one event). */
export const currentChange = (commit: EventStore.Commit): CurrentChange => {
  const events = commit.events
  const last = events[events.length - 1]!
  const seqNr = commit.expectedSeqNr + events.length
  const updatedAt = last.metadata.timestamp
  const current = commit.current
  if (current !== undefined) {
    return {
      stateTag: last.stateTag,
      seqNr,
      updatedAt,
      // The first commit of a log enters its state, whatever it says.
      entered: current.entered || commit.expectedSeqNr === 0 ? "yes" : "no",
      enteredAt: updatedAt,
      stopped: current.stopped
    }
  }
  // Judged by the events: the run of events naming the final state entered it
  // at its first event, if that run starts inside the commit or the log.
  let first = events.length - 1
  while (first > 0 && events[first - 1]!.stateTag === last.stateTag) first--
  return {
    stateTag: last.stateTag,
    seqNr,
    updatedAt,
    entered: first > 0 || commit.expectedSeqNr === 0 ? "yes" : "ifTagChanged",
    enteredAt: events[first]!.metadata.timestamp,
    stopped: last.tag === stoppedTag
  }
}

/**
 * The slot of an instance's count rows, `0..slots-1` (FNV-1a of its id):
 * concurrent commits of different instances entering the same state update
 * different rows, so they do not queue on one row lock.
 */
export const countSlot = (instanceId: string, slots: number): number => {
  let hash = 0x811c9dc5
  for (let i = 0; i < instanceId.length; i++) {
    hash ^= instanceId.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return (hash >>> 0) % slots
}

/** The row after `change`, given the stored one (if any). */
export const applyChange = (
  machine: string,
  instanceId: string,
  previous: EventStore.InstanceSummary | undefined,
  change: CurrentChange
): EventStore.InstanceSummary => {
  const enters = previous === undefined || change.entered === "yes" ||
    (change.entered === "ifTagChanged" && previous.stateTag !== change.stateTag)
  return {
    machine,
    instanceId,
    stateTag: change.stateTag,
    seqNr: change.seqNr,
    enteredAt: enters ? change.enteredAt : previous.enteredAt,
    updatedAt: change.updatedAt,
    stopped: change.stopped
  }
}

/**
 * Code-point order of two strings: the order of UTF-8 bytes, which is how
 * SQLite (`BINARY`) and PostgreSQL (`COLLATE "C"`, the collation of the
 * table's `instance_id`) order ids. JavaScript's `<` compares UTF-16 code
 * units, which puts U+E000..U+FFFF after astral characters.
 */
export const compareCodePoints = (a: string, b: string): number => {
  const length = Math.min(a.length, b.length)
  for (let i = 0; i < length; i++) {
    const x = a.codePointAt(i)!
    const y = b.codePointAt(i)!
    if (x !== y) return x - y
    if (x > 0xffff) i++
  }
  return a.length - b.length
}

/** Keyset order of the current-state table: `enteredAt`, then `instanceId`. */
export const compareEntry = (
  a: { readonly enteredAt: number; readonly instanceId: string },
  b: { readonly enteredAt: number; readonly instanceId: string }
): number => a.enteredAt !== b.enteredAt ? a.enteredAt - b.enteredAt : compareCodePoints(a.instanceId, b.instanceId)

/**
 * A page of the current-state table, from rows in keyset order: `next` is
 * the last row's position when the page is full.
 */
export const instancePage = (instances: ReadonlyArray<EventStore.InstanceSummary>, limit: number): EventStore.InstancePage => {
  const last = instances[instances.length - 1]
  return {
    instances,
    next: instances.length < limit || last === undefined
      ? Option.none()
      : Option.some({ enteredAt: last.enteredAt, instanceId: last.instanceId })
  }
}

/**
 * The order of `stateCounts`: by state tag (code points), running first.
 */
export const compareStateCounts = (a: EventStore.StateCount, b: EventStore.StateCount): number =>
  a.stateTag !== b.stateTag ? compareCodePoints(a.stateTag, b.stateTag) : Number(a.stopped) - Number(b.stopped)
