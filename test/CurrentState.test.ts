/**
 * The current-state table, on every backend: each commit keeps its
 * instance's row (state, entered/updated times, seqNr, stopped) in the same
 * unit as its events; `listInstances` pages it by keyset, oldest entry first,
 * filtered by state, age and stoppedness; `stateCounts` counts per state.
 * (The store-level rules, malformed queries included, are in the
 * EventStore conformance suite, `effect-fsm/testing`; the property
 * runs of `Faults.property.test.ts` check the row against the fold of every
 * log, faults included.)
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Option, Schedule, TestClock } from "effect"
import { EventStore } from "effect-fsm"
import { Counter, Order } from "./fixtures/machines.js"
import { allBackends } from "./utils/backends.js"
import { countsOf, expectedSummary } from "./utils/currentState.js"
import { buildStore, runtimeOn } from "./utils/runtime.js"

const minute = 60_000
const second = 1_000

const summary = (
  instanceId: string,
  fields: Omit<EventStore.InstanceSummary, "machine" | "instanceId"> & { readonly machine?: string }
): EventStore.InstanceSummary => ({ machine: fields.machine ?? "order", instanceId, ...fields })

for (const backend of allBackends) {
  describe.skipIf(backend.skip !== undefined)(`current-state table on ${backend.name}`, () => {
    const setup = Effect.gen(function*() {
      const store = yield* buildStore(backend)
      const { runtime } = yield* runtimeOn(store, { machines: [Order, Counter], retry: Schedule.stop })
      return { runtime, events: Context.get(store, EventStore.EventStore) }
    })

    it.scoped("every commit keeps the row: a stay moves updatedAt only, an entry moves enteredAt, a stop sets stopped", () =>
      Effect.gen(function*() {
        const { events, runtime } = yield* setup
        const row = (id: string, machine = "order") => Effect.map(events.instance(machine, id), Option.getOrUndefined)
        expect(yield* row("o1")).toBeUndefined()

        yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
        expect(yield* row("o1")).toEqual(summary("o1", { stateTag: "Pending", seqNr: 1, enteredAt: 0, updatedAt: 0, stopped: false }))
        yield* TestClock.adjust(minute)
        yield* runtime.send(Order, "o1", { _tag: "Note", text: "hi" })
        expect(yield* row("o1")).toEqual(
          summary("o1", { stateTag: "Pending", seqNr: 2, enteredAt: 0, updatedAt: minute, stopped: false })
        )
        yield* TestClock.adjust(minute)
        yield* runtime.send(Order, "o1", { _tag: "Pay", amount: 5 })
        yield* TestClock.adjust(minute)
        // Rejected: nothing written, the row stays.
        yield* Effect.flip(runtime.send(Order, "o1", { _tag: "Deliver" }))
        expect(yield* row("o1")).toEqual(
          summary("o1", { stateTag: "Paid", seqNr: 3, enteredAt: 2 * minute, updatedAt: 2 * minute, stopped: false })
        )
        yield* runtime.send(Order, "o1", { _tag: "Ship", tracking: "t" })
        yield* TestClock.adjust(minute)
        // A stop transition that enters its target state.
        yield* runtime.send(Order, "o1", { _tag: "Deliver" })
        expect(yield* row("o1")).toEqual(
          summary("o1", { stateTag: "Delivered", seqNr: 5, enteredAt: 4 * minute, updatedAt: 4 * minute, stopped: true })
        )

        // `stop()` keeps the state and its entry time.
        yield* runtime.create(Order, "o2", { _tag: "Pending", orderId: "o2" })
        yield* TestClock.adjust(minute)
        yield* runtime.stop(Order, "o2")
        expect(yield* row("o2")).toEqual(
          summary("o2", { stateTag: "Pending", seqNr: 2, enteredAt: 4 * minute, updatedAt: 5 * minute, stopped: true })
        )

        // An explicit re-entry of the same state moves enteredAt; a plain move within it does not.
        yield* runtime.create(Counter, "c1")
        yield* TestClock.adjust(minute)
        yield* runtime.send(Counter, "c1", { _tag: "Add", by: 2 }) // Even -> Even, a stay
        expect((yield* row("c1", "counter"))?.enteredAt).toBe(5 * minute)
        yield* TestClock.adjust(minute)
        yield* runtime.send(Counter, "c1", { _tag: "Reset" }) // reenter: true
        expect(yield* row("c1", "counter")).toEqual(
          summary("c1", { machine: "counter", stateTag: "Even", seqNr: 3, enteredAt: 7 * minute, updatedAt: 7 * minute, stopped: false })
        )

        // Each row is the fold of its log.
        for (const [machine, id] of [[Order, "o1"], [Order, "o2"]] as const) {
          expect(yield* row(id)).toEqual(expectedSummary(machine, id, yield* runtime.history(machine, id)))
        }
        expect(yield* row("c1", "counter")).toEqual(expectedSummary(Counter, "c1", yield* runtime.history(Counter, "c1")))
      }))

    it.scoped("a commit that fails writes no row change", () =>
      Effect.gen(function*() {
        const { events, runtime } = yield* setup
        yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
        const before = yield* events.instance("order", "o1")
        const stale: EventStore.Commit = {
          machine: "order",
          instanceId: "o1",
          expectedSeqNr: 0,
          events: [{
            tag: "Pay",
            payload: { _tag: "Pay", amount: 1 },
            stateTag: "Paid",
            schemaVersion: 1,
            metadata: { timestamp: 99, source: "user", correlationId: null, node: null, commitId: null, timer: null }
          }]
        }
        expect((yield* Effect.flip(events.append(stale)))._tag).toBe("SequenceConflict")
        expect(yield* events.instance("order", "o1")).toEqual(before)
      }))

    it.scoped("listInstances pages by keyset, oldest entry first, filtered by state, age and stoppedness; stateCounts counts", () =>
      Effect.gen(function*() {
        const { events, runtime } = yield* setup
        // 12 orders created a second apart; every third paid, every fourth stopped.
        const ids = Array.from({ length: 12 }, (_, i) => `o${String(i).padStart(2, "0")}`)
        for (const [i, id] of ids.entries()) {
          yield* runtime.create(Order, id, { _tag: "Pending", orderId: id })
          if (i % 3 === 0) yield* runtime.send(Order, id, { _tag: "Pay", amount: 1 })
          if (i % 4 === 0) yield* runtime.stop(Order, id)
          yield* TestClock.adjust(second)
        }
        // Same entry time: ordered by id in code points (U+E000 before an astral character).
        for (const id of ["\u{1F600}", "\uE000", "a"]) yield* runtime.create(Order, id, { _tag: "Pending", orderId: id })

        const all = (query: Omit<EventStore.InstanceQuery, "limit" | "after">, limit: number) =>
          Effect.gen(function*() {
            const seen: Array<string> = []
            let after: EventStore.InstanceCursor | undefined
            for (let pages = 0; pages < 100; pages++) {
              const page: EventStore.InstancePage = yield* events.listInstances({ ...query, limit, after })
              expect(page.instances.length).toBeLessThanOrEqual(limit)
              seen.push(...page.instances.map((row) => row.instanceId))
              if (Option.isNone(page.next)) return seen
              after = page.next.value
            }
            throw new Error("listInstances never ended")
          })

        const everyone = [...ids, "a", "\uE000", "\u{1F600}"]
        for (const limit of [1, 5, 15, 100]) expect(yield* all({ machine: "order" }, limit)).toEqual(everyone)
        const pending = ids.filter((_, i) => i % 3 !== 0)
        expect(yield* all({ machine: "order", stateTag: "Pending" }, 4)).toEqual([...pending, "a", "\uE000", "\u{1F600}"])
        expect(yield* all({ machine: "order", stateTag: "Paid" }, 2)).toEqual(["o00", "o03", "o06", "o09"])
        // "Pending for longer than 8 seconds" at second 12: entered before second 4.
        expect(yield* all({ machine: "order", stateTag: "Pending", enteredBefore: 4 * second }, 10)).toEqual(["o01", "o02"])
        expect(yield* all({ machine: "order", stopped: true }, 10)).toEqual(["o00", "o04", "o08"])
        expect(yield* all({ machine: "order", stateTag: "Pending", stopped: true }, 10)).toEqual(["o04", "o08"])
        expect(yield* all({ machine: "counter" }, 10)).toEqual([])
        expect(yield* all({ machine: "order", stateTag: "Shipped" }, 10)).toEqual([])

        const page = yield* events.listInstances({ machine: "order", stateTag: "Paid", limit: 10 })
        expect(page.instances[1]).toEqual(
          summary("o03", { stateTag: "Paid", seqNr: 2, enteredAt: 3 * second, updatedAt: 3 * second, stopped: false })
        )
        expect(Option.isNone(page.next)).toBe(true)

        expect(yield* events.stateCounts("order")).toEqual([
          { stateTag: "Paid", stopped: false, count: 3 },
          { stateTag: "Paid", stopped: true, count: 1 },
          { stateTag: "Pending", stopped: false, count: 9 },
          { stateTag: "Pending", stopped: true, count: 2 }
        ])
        expect(yield* events.stateCounts("counter")).toEqual([])
      }))

    it.scoped("concurrent commits of many instances keep the counts per state exact", () =>
      Effect.gen(function*() {
        const { events, runtime } = yield* setup
        const ids = Array.from({ length: 48 }, (_, i) => `c${i}`)
        const all = { concurrency: "unbounded" } as const
        yield* Effect.forEach(ids, (id) => runtime.create(Order, id, { _tag: "Pending", orderId: id }), all)
        yield* Effect.forEach(ids.slice(0, 32), (id) => runtime.send(Order, id, { _tag: "Pay", amount: 1 }), all)
        yield* Effect.forEach(ids.slice(0, 16), (id) => runtime.send(Order, id, { _tag: "Ship", tracking: id }), all)
        yield* Effect.forEach(ids.slice(8, 40), (id) => runtime.stop(Order, id), all)
        const rows = (yield* events.listInstances({ machine: "order", limit: 1000 })).instances
        expect(rows.length).toBe(48)
        expect(yield* events.stateCounts("order")).toEqual(countsOf(rows))
        // Paid: 16..31, all stopped; Shipped: 0..15, 8..15 stopped; Pending: 32..47, 32..39 stopped.
        expect(yield* events.stateCounts("order")).toEqual([
          { stateTag: "Paid", stopped: true, count: 16 },
          { stateTag: "Pending", stopped: false, count: 8 },
          { stateTag: "Pending", stopped: true, count: 8 },
          { stateTag: "Shipped", stopped: false, count: 8 },
          { stateTag: "Shipped", stopped: true, count: 8 }
        ])
      }))
  })
}
