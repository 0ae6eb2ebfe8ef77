/**
 * The current-state conformance tests, part of the EventStore suite: every
 * commit keeps its instance's row and the counts per state, in the same
 * unit as its events; `listInstances` pages by keyset in code-point order;
 * malformed queries are `InvalidQuery`.
 *
 * @internal
 */
import { expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as EventStore from "../../EventStore.js"
import { commit, event, machine, metadata } from "./records.js"

const at = (timestamp: number) => metadata({ timestamp })

/** Registers the tests inside the EventStore suite's `describe`; `setup` builds a fresh store. */
export const currentStateTests = <E>(
  setup: Effect.Effect<{ readonly store: EventStore.EventStore["Type"] }, E, Scope.Scope>
) => {
  const rowOf = (store: EventStore.EventStore["Type"], instanceId: string) =>
    Effect.map(store.instance(machine, instanceId), Option.getOrUndefined)

  const row = (instanceId: string, fields: Omit<EventStore.InstanceSummary, "machine" | "instanceId">) => ({
    machine,
    instanceId,
    ...fields
  })

  it.scoped("every commit keeps its instance's current-state row and the counts per state, as its `current` says", () =>
    Effect.gen(function*() {
      const { store } = yield* setup
      expect(yield* rowOf(store, "o1")).toBeUndefined()
      yield* store.append({ ...commit("o1", 0, [event("@created", {}, "Pending", at(100))]), current: { entered: true, stopped: false } })
      expect(yield* rowOf(store, "o1")).toEqual(row("o1", { stateTag: "Pending", seqNr: 1, enteredAt: 100, updatedAt: 100, stopped: false }))
      // A stay moves updatedAt only.
      yield* store.append({ ...commit("o1", 1, [event("Note", {}, "Pending", at(200))]), current: { entered: false, stopped: false } })
      expect(yield* rowOf(store, "o1")).toEqual(row("o1", { stateTag: "Pending", seqNr: 2, enteredAt: 100, updatedAt: 200, stopped: false }))
      // A re-entry of the same state moves enteredAt.
      yield* store.append({ ...commit("o1", 2, [event("Again", {}, "Pending", at(300))]), current: { entered: true, stopped: false } })
      expect((yield* rowOf(store, "o1"))?.enteredAt).toBe(300)
      yield* store.append({ ...commit("o1", 3, [event("Pay", {}, "Paid", at(400))]), current: { entered: true, stopped: false } })
      yield* store.append({ ...commit("o2", 0, [event("@created", {}, "Pending", at(150))]), current: { entered: true, stopped: false } })
      expect(yield* store.stateCounts(machine)).toEqual([
        { stateTag: "Paid", stopped: false, count: 1 },
        { stateTag: "Pending", stopped: false, count: 1 }
      ])
      // A stop keeps the state and its entry time.
      yield* store.append({ ...commit("o1", 4, [event("@stopped", null, "Paid", at(500))]), current: { entered: false, stopped: true } })
      expect(yield* rowOf(store, "o1")).toEqual(row("o1", { stateTag: "Paid", seqNr: 5, enteredAt: 400, updatedAt: 500, stopped: true }))
      expect(yield* store.stateCounts(machine)).toEqual([
        { stateTag: "Paid", stopped: true, count: 1 },
        { stateTag: "Pending", stopped: false, count: 1 }
      ])
      expect(yield* store.stateCounts("other")).toEqual([])

      // A commit that fails changes neither the row nor the counts.
      const before = yield* rowOf(store, "o2")
      const conflict = yield* Effect.flip(
        store.append({ ...commit("o2", 0, [event("@created", {}, "Paid", at(900))]), current: { entered: true, stopped: false } })
      )
      expect(conflict._tag).toBe("SequenceConflict")
      expect(yield* rowOf(store, "o2")).toEqual(before)
      expect((yield* store.stateCounts(machine)).reduce((sum, c) => sum + c.count, 0)).toBe(2)
    }))

  it.scoped("the counts follow the stored rows whatever `current` claims; a log's first commit always enters", () =>
    Effect.gen(function*() {
      const { store } = yield* setup
      // A first commit that claims not to enter, and one that changes the tag while claiming to stay.
      yield* store.append({ ...commit("x", 0, [event("@created", {}, "A", at(10))]), current: { entered: false, stopped: false } })
      expect(yield* rowOf(store, "x")).toEqual(row("x", { stateTag: "A", seqNr: 1, enteredAt: 10, updatedAt: 10, stopped: false }))
      yield* store.append({ ...commit("x", 1, [event("Go", {}, "B", at(20))]), current: { entered: false, stopped: false } })
      yield* store.append({ ...commit("y", 0, [event("@created", {}, "A", at(30))]), current: { entered: false, stopped: false } })
      expect((yield* rowOf(store, "x"))?.stateTag).toBe("B")
      expect(yield* store.stateCounts(machine)).toEqual([
        { stateTag: "A", stopped: false, count: 1 },
        { stateTag: "B", stopped: false, count: 1 }
      ])
    }))

  it.scoped("without `current`, a commit enters at the first event of the run of its final state tag; @stopped stops", () =>
    Effect.gen(function*() {
      const { store } = yield* setup
      yield* store.append(commit("o1", 0, [
        event("@created", {}, "Pending", at(100)),
        event("Note", {}, "Pending", at(110)),
        event("Pay", {}, "Paid", at(120)),
        event("Note", {}, "Paid", at(130))
      ]))
      expect(yield* rowOf(store, "o1")).toEqual(row("o1", { stateTag: "Paid", seqNr: 4, enteredAt: 120, updatedAt: 130, stopped: false }))
      // Same tag as stored: entry time kept; another tag: entered at this commit's run.
      yield* store.append(commit("o1", 4, [event("Note", {}, "Paid", at(140))]))
      expect((yield* rowOf(store, "o1"))?.enteredAt).toBe(120)
      yield* store.append(commit("o1", 5, [event("Ship", {}, "Shipped", at(150)), event("Note", {}, "Shipped", at(160))]))
      expect((yield* rowOf(store, "o1"))?.enteredAt).toBe(150)
      yield* store.append(commit("o1", 7, [event("@stopped", null, "Shipped", at(170))]))
      expect(yield* rowOf(store, "o1")).toEqual(row("o1", { stateTag: "Shipped", seqNr: 8, enteredAt: 150, updatedAt: 170, stopped: true }))
      expect(yield* store.stateCounts(machine)).toEqual([{ stateTag: "Shipped", stopped: true, count: 1 }])
    }))

  it.scoped("listInstances pages by (enteredAt, instanceId in code points), filtered by state, age and stoppedness", () =>
    Effect.gen(function*() {
      const { store } = yield* setup
      const create = (id: string, stateTag: string, timestamp: number, stopped = false) =>
        store.append({ ...commit(id, 0, [event("@created", {}, stateTag, at(timestamp))]), current: { entered: true, stopped } })
      // Same entry time: "a" (U+0061) < U+E000 < U+1F600, as UTF-8 bytes order them (not UTF-16 code units).
      for (const id of ["\u{1F600}", "\uE000", "a"]) yield* create(id, "Pending", 50)
      for (let i = 0; i < 10; i++) yield* create(`o${i}`, i % 2 === 0 ? "Pending" : "Paid", 100 + i, i % 3 === 0)
      const all = (query: Omit<EventStore.InstanceQuery, "limit" | "after">, limit: number) =>
        Effect.gen(function*() {
          const ids: Array<string> = []
          let after: EventStore.InstanceCursor | undefined
          for (let pages = 0; pages < 100; pages++) {
            const page: EventStore.InstancePage = yield* store.listInstances({ ...query, limit, after })
            expect(page.instances.length).toBeLessThanOrEqual(limit)
            ids.push(...page.instances.map((r) => r.instanceId))
            if (Option.isNone(page.next)) return ids
            after = page.next.value
          }
          return ids
        })
      const everyone = ["a", "\uE000", "\u{1F600}", ...Array.from({ length: 10 }, (_, i) => `o${i}`)]
      for (const limit of [1, 4, 13, 50]) expect(yield* all({ machine }, limit)).toEqual(everyone)
      expect(yield* all({ machine, stateTag: "Paid" }, 2)).toEqual(["o1", "o3", "o5", "o7", "o9"])
      expect(yield* all({ machine, stateTag: "Pending", enteredBefore: 104 }, 2)).toEqual(["a", "\uE000", "\u{1F600}", "o0", "o2"])
      expect(yield* all({ machine, stopped: true }, 3)).toEqual(["o0", "o3", "o6", "o9"])
      expect(yield* all({ machine: "other" }, 3)).toEqual([])
      expect(yield* store.stateCounts(machine)).toEqual([
        { stateTag: "Paid", stopped: false, count: 3 },
        { stateTag: "Paid", stopped: true, count: 2 },
        { stateTag: "Pending", stopped: false, count: 6 },
        { stateTag: "Pending", stopped: true, count: 2 }
      ])
    }))

  it.scoped("instancesByCorrelation: the ids with an event of that correlation id, in code-point order, up to the limit", () =>
    Effect.gen(function*() {
      const { store } = yield* setup
      const tagged = (correlationId: string | null) => metadata({ timestamp: 1, correlationId })
      for (const id of ["\u{1F600}", "\uE000", "b", "a"]) {
        yield* store.append(commit(id, 0, [event("@created", {}, "Pending", tagged(null)), event("Pay", {}, "Paid", tagged("req-1"))]))
      }
      yield* store.append(commit("c", 0, [event("@created", {}, "Pending", tagged("req-2"))]))
      yield* store.append(commit("a", 2, [event("Note", {}, "Paid", tagged("req-2"))]))
      yield* store.append(commit("z", 0, [event("@created", {}, "Pending", tagged("req-1"))], { machine: "other" }))
      expect(yield* store.instancesByCorrelation(machine, "req-1", 10)).toEqual(["a", "b", "\uE000", "\u{1F600}"])
      expect(yield* store.instancesByCorrelation(machine, "req-1", 2)).toEqual(["a", "b"])
      expect(yield* store.instancesByCorrelation(machine, "req-2", 10)).toEqual(["a", "c"])
      expect(yield* store.instancesByCorrelation(machine, "req-3", 10)).toEqual([])
      expect(yield* store.instancesByCorrelation("other", "req-1", 10)).toEqual(["z"])
      for (const [correlationId, limit] of [["", 1], ["x\uD800", 1], ["x", 0], ["x", EventStore.maxPageSize + 1], [null, 1]] as const) {
        const error = yield* Effect.flip(store.instancesByCorrelation(machine, correlationId as string, limit))
        expect(error._tag, `${String(correlationId)} / ${limit}`).toBe("InvalidQuery")
      }
    }))

  it.scoped("a malformed current-state query is an InvalidQuery; a malformed id an InvalidInstanceId", () =>
    Effect.gen(function*() {
      const { store } = yield* setup
      const bad: ReadonlyArray<unknown> = [
        null,
        { machine, limit: 0 },
        { machine, limit: EventStore.maxPageSize + 1 },
        { machine, limit: Number.NaN },
        { machine },
        { machine: 1, limit: 1 },
        { machine, limit: 1, enteredBefore: 1.5 },
        { machine, limit: 1, enteredBefore: Number.NaN },
        { machine, limit: 1, stateTag: "s\uD800" },
        { machine, limit: 1, stopped: 1 },
        { machine, limit: 1, after: "x" },
        { machine, limit: 1, after: { enteredAt: 0, instanceId: "" } },
        { machine, limit: 1, after: { enteredAt: Number.POSITIVE_INFINITY, instanceId: "x" } }
      ]
      for (const query of bad) {
        const error = yield* Effect.flip(store.listInstances(query as EventStore.InstanceQuery))
        expect(error._tag, JSON.stringify(query)).toBe("InvalidQuery")
      }
      expect((yield* Effect.flip(store.stateCounts(undefined as never)))._tag).toBe("InvalidQuery")
      expect((yield* Effect.flip(store.instance(machine, "x\u0000")))._tag).toBe("InvalidInstanceId")
      // A malformed `current` is refused like any malformed commit.
      const malformed = yield* Effect.flip(
        store.append({ ...commit("o1", 0, [event("@created")]), current: { entered: "yes", stopped: false } as never })
      )
      expect(malformed._tag).toBe("PersistenceError")
      expect(yield* store.instance(machine, "o1")).toEqual(Option.none())
    }))
}
