/**
 * Records the store conformance suites append and compare: encoded events,
 * commits, snapshots and timers of one machine (`order`), with fixed
 * metadata, and the ids and values every backend must refuse.
 *
 * @internal
 */
import type * as EventStore from "../../EventStore.js"
export const machine = "order"

export const metadata = (overrides: Partial<EventStore.Metadata> = {}): EventStore.Metadata => ({
  timestamp: 1_700_000_000_000,
  source: "user",
  correlationId: null,
  node: "node-a",
  commitId: null,
  timer: null,
  ...overrides
})

export const event = (
  tag: string,
  payload: unknown = { _tag: tag },
  stateTag = "Pending",
  meta: EventStore.Metadata = metadata(),
  schemaVersion = 1
): EventStore.NewEvent => ({ tag, payload, stateTag, schemaVersion, metadata: meta })

export const commit = (
  instanceId: string,
  expectedSeqNr: number,
  events: ReadonlyArray<EventStore.NewEvent>,
  extra: Partial<Pick<EventStore.Commit, "snapshot" | "timers" | "outbox" | "machine">> = {}
): EventStore.Commit => ({ machine, instanceId, expectedSeqNr, events, ...extra })

export const snapshot = (
  instanceId: string,
  seqNr: number,
  state: unknown,
  extra: Partial<EventStore.SnapshotRecord> = {}
): EventStore.SnapshotRecord => ({
  machine,
  instanceId,
  seqNr,
  state,
  stopped: false,
  schemaVersion: 1,
  timestamp: 1_700_000_000_500,
  ...extra
})

export const timer = (name: string, generation: number, dueAt: number, payload: unknown = { _tag: "Timeout", name }) => ({
  name,
  stateTag: "Pending",
  generation,
  dueAt,
  payload
})

/** Well-formed Unicode is required of ids: each of these is rejected (NUL, or a lone surrogate). */
export const badWellFormedIds = ["nul\u0000byte", "s\uD800", "s\uDBFF", "\uDC00x", "\uD800", "x\uDFFF", "a\uDC00\uD800b"]

/** Values that JSON does not carry exactly, or that some backend cannot store: each must be refused. */
export const badJsonValues = (): ReadonlyArray<readonly [string, unknown]> => {
  const cycle: Record<string, unknown> = { _tag: "Loop" }
  cycle["self"] = { back: cycle }
  const sparse: Array<number> = [1]
  sparse[2] = 3
  return [
    ["NaN", { _tag: "Pay", amount: Number.NaN }],
    ["Infinity", { _tag: "Pay", amount: Number.POSITIVE_INFINITY }],
    ["-Infinity", [1, Number.NEGATIVE_INFINITY]],
    ["NUL in a string", { note: "a\u0000b" }],
    ["lone high surrogate in a string", { note: "s\uD800" }],
    ["lone low surrogate in a string", ["\uDC00x"]],
    ["lone surrogate in a key", { ["k\uDBFF"]: 1 }],
    ["NUL in a key", { ["k\u0000"]: 1 }],
    ["an undefined property", { _tag: "Pay", amount: undefined }],
    ["an undefined element", [1, undefined]],
    ["a hole", sparse],
    ["undefined", undefined],
    ["a Date", { at: new Date(0) }],
    ["a Map", new Map([["a", 1]])],
    ["a class instance", new (class Money { amount = 1 })()],
    ["a bigint", { amount: BigInt(1) }],
    ["a function", { f: () => 1 }],
    ["a cycle", cycle]
  ]
}

export const byName = <A extends { readonly name: string }>(timers: ReadonlyArray<A>) =>
  [...timers].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
