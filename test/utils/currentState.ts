/**
 * The current-state row an instance's log implies, folded with
 * `Machine.step` (the reference semantics the store's row must equal): the
 * state of the last record, entered at the last event whose decision entered
 * a state (`Goto`, or a `Stop` that enters), stopped after a `Stop` or an
 * `@stopped` record.
 */
import { type EventStore, type FSMRuntime, Machine } from "effect-fsm"

export const expectedSummary = <S extends Machine.Tagged, E extends Machine.Tagged, R>(
  machine: Machine.Machine<S, E, R>,
  instanceId: string,
  history: ReadonlyArray<FSMRuntime.HistoryEntry<S, E>>
): EventStore.InstanceSummary | undefined => {
  const first = history[0]
  if (first === undefined || first._tag !== "Created") return undefined
  let state = first.state
  let stopped = false
  let enteredAt = first.metadata.timestamp
  for (const entry of history.slice(1)) {
    if (entry._tag === "Stopped") {
      stopped = true
      continue
    }
    if (entry._tag !== "Event") continue
    const decision = Machine.step(machine, state, entry.event, { stopped })
    if (decision._tag === "Rejected" || decision._tag === "Failed") {
      throw new Error(`${instanceId}: the log holds an event its state rejects at seqNr ${entry.seqNr}`)
    }
    state = decision.state
    if (decision._tag === "Goto" || (decision._tag === "Stop" && decision.entered)) enteredAt = entry.metadata.timestamp
    if (decision._tag === "Stop") stopped = true
  }
  const last = history[history.length - 1]!
  return {
    machine: machine.name,
    instanceId,
    stateTag: state._tag,
    seqNr: last.seqNr,
    enteredAt,
    updatedAt: last.metadata.timestamp,
    stopped
  }
}

/** The counts per state that rows imply, in `stateCounts` order (state tag in code points, running first). */
export const countsOf = (rows: ReadonlyArray<EventStore.InstanceSummary>): ReadonlyArray<EventStore.StateCount> => {
  const counts = new Map<string, EventStore.StateCount>()
  for (const row of rows) {
    const key = `${row.stateTag}\u0000${row.stopped}`
    counts.set(key, { stateTag: row.stateTag, stopped: row.stopped, count: (counts.get(key)?.count ?? 0) + 1 })
  }
  const codePoints = (s: string) => [...s].map((c) => c.codePointAt(0)!)
  const compare = (a: string, b: string) => {
    const x = codePoints(a)
    const y = codePoints(b)
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! - y[i]!
    return x.length - y.length
  }
  return [...counts.values()].sort((a, b) => compare(a.stateTag, b.stateTag) || Number(a.stopped) - Number(b.stopped))
}
