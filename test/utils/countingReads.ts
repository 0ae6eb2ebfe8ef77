/**
 * A store that counts the reads a runtime makes of it: one `recoveryBatch`
 * for a claimed batch, or one snapshot and one page per instance.
 */
import { Context, Effect } from "effect"
import { EventStore } from "effect-fsm"

export interface Reads {
  batches: number
  batched: number
  snapshots: number
  pages: number
}

/** `store` with its `EventStore` counting `recoveryBatch` calls (and ids), `loadSnapshot` and `eventsPage` / `replayPage` calls in `reads`. */
export const countingReads = <R>(store: Context.Context<R | EventStore.EventStore>) => {
  const reads: Reads = { batches: 0, batched: 0, snapshots: 0, pages: 0 }
  const inner = Context.get(store as Context.Context<EventStore.EventStore>, EventStore.EventStore)
  const counted: Context.Context<R | EventStore.EventStore> = Context.add(store, EventStore.EventStore, {
    ...inner,
    recoveryBatch: (machine, instanceIds, limit) => {
      reads.batches++
      reads.batched += instanceIds.length
      return inner.recoveryBatch(machine, instanceIds, limit)
    },
    loadSnapshot: (machine, instanceId) => Effect.zipRight(Effect.sync(() => reads.snapshots++), inner.loadSnapshot(machine, instanceId)),
    eventsPage: (machine, instanceId, from, limit) =>
      Effect.zipRight(Effect.sync(() => reads.pages++), inner.eventsPage(machine, instanceId, from, limit)),
    replayPage: (machine, instanceId, from, limit) =>
      Effect.zipRight(Effect.sync(() => reads.pages++), inner.replayPage(machine, instanceId, from, limit))
  })
  return { reads, store: counted }
}
