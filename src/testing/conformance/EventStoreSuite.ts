/**
 * The EventStore conformance suite (with the timer rows a commit writes):
 * what every backend must do, as `@effect/vitest` tests over a layer.
 *
 * @internal
 */
import { describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as EventStore from "../../EventStore.js"
import * as TimeoutStore from "../../TimeoutStore.js"
import { machine, metadata, event, commit, snapshot, timer, badWellFormedIds, badJsonValues, byName } from "./records.js"
import { currentStateTests } from "./CurrentStateSuite.js"
import { isSkipped, type SuiteOptions } from "./options.js"

/** The services the suite needs of `layer`. */
type Stores = EventStore.EventStore | TimeoutStore.TimeoutStore

/**
 * Registers the EventStore conformance tests (a vitest `describe` named
 * "EventStore conformance on <name>"): appends with the expected sequence number (exactly one of 100 racing appends wins), reads back in order and by page, snapshots (monotonic, atomic with their commit), instance listing, the current-state table (rows, counts per state, keyset pages, malformed queries), hostile and malformed ids, values JSON cannot carry, copies on write and read, and the timer rows a commit writes.
 *
 * `layer` provides `EventStore.EventStore` and `TimeoutStore.TimeoutStore`. Every build of it must give a
 * fresh, empty store (its own database, file or schema): each test builds it
 * once, in the test's scope, so tests never see each other's rows. The tests
 * use `TestClock` (through `it.scoped`).
 *
 * @example
 * ```ts
 * import { Conformance } from "effect-fsm/testing"
 * import { EventStore } from "effect-fsm"
 *
 * Conformance.eventStoreSuite("memory", EventStore.layerMemory)
 * ```
 *
 * @since 0.1.0
 */
export const eventStoreSuite = (name: string, layer: Layer.Layer<Stores, unknown>, options: SuiteOptions = {}) =>
  describe.skipIf(isSkipped(options))(`EventStore conformance on ${name}`, () => {
    const setup = Effect.map(Layer.build(layer), (context) => ({
      store: Context.get(context, EventStore.EventStore),
      timers: Context.get(context, TimeoutStore.TimeoutStore)
    }))

    const readAll = (store: EventStore.EventStore["Type"], instanceId: string, fromSeqNr = 1, ofMachine = machine) =>
      Effect.map(Stream.runCollect(store.events(ofMachine, instanceId, fromSeqNr)), Chunk.toArray)

    const instancesOf = (store: EventStore.EventStore["Type"], ofMachine: string) =>
      Effect.map(Stream.runCollect(store.instances(ofMachine)), (ids) => [...ids].sort())

    it.scoped("appends and reads back events in order with their metadata", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const created = event("@created", { _tag: "Pending", orderId: "o1" }, "Pending", metadata({
          timestamp: 1_000,
          correlationId: "corr-1"
        }))
        const paid = event("Pay", { _tag: "Pay", amount: 42.5 }, "Paid", metadata({
          timestamp: 2_000,
          source: "timeout",
          node: null
        }), 2)
        const stopped = event("@stopped", null, "Paid", metadata({ timestamp: 3_000, source: "outbox", node: "node-b" }), 2)
        yield* store.append(commit("o1", 0, [created, paid]))
        yield* store.append(commit("o1", 2, [stopped]))

        expect(yield* readAll(store, "o1")).toEqual([
          { ...created, machine, instanceId: "o1", seqNr: 1 },
          { ...paid, machine, instanceId: "o1", seqNr: 2 },
          { ...stopped, machine, instanceId: "o1", seqNr: 3 }
        ])
        expect(yield* store.highestSequenceNr(machine, "o1")).toBe(3)
      }))

    it.scoped("an unknown instance has highestSequenceNr 0, no events and no snapshot", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        yield* store.append(commit("known", 0, [event("@created")]))
        expect(yield* store.highestSequenceNr(machine, "unknown")).toBe(0)
        expect(yield* store.highestSequenceNr("other-machine", "known")).toBe(0)
        expect(yield* readAll(store, "unknown")).toEqual([])
        expect(yield* store.loadSnapshot(machine, "unknown")).toEqual(Option.none())
      }))

    it.scoped("events(fromSeqNr) starts in the middle of the log", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        yield* store.append(commit("o1", 0, ["a", "b", "c", "d", "e"].map((tag) => event(tag))))
        const seqNrs = (from: number) => Effect.map(readAll(store, "o1", from), (records) => records.map((r) => r.seqNr))
        expect(yield* seqNrs(3)).toEqual([3, 4, 5])
        expect((yield* readAll(store, "o1", 3)).map((r) => r.tag)).toEqual(["c", "d", "e"])
        expect(yield* seqNrs(5)).toEqual([5])
        expect(yield* seqNrs(6)).toEqual([])
        expect(yield* seqNrs(0)).toEqual([1, 2, 3, 4, 5])
      }))

    it.scoped("streams a long log in order, from the start and from the middle", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        // 512 rows: a multiple of the SQL stores' page size (256) as well as more than one page.
        for (let batch = 0; batch < 4; batch++) {
          yield* store.append(
            commit("long", batch * 128, Array.from({ length: 128 }, (_, i) => event(`e${batch * 128 + i + 1}`)))
          )
        }
        const all = yield* readAll(store, "long")
        expect(all.map((r) => r.seqNr)).toEqual(Array.from({ length: 512 }, (_, i) => i + 1))
        expect(all.every((r) => r.tag === `e${r.seqNr}`)).toBe(true)
        const tail = yield* readAll(store, "long", 200)
        expect(tail.map((r) => r.seqNr)).toEqual(Array.from({ length: 313 }, (_, i) => i + 200))
      }))

    it.scoped("eventsPage reads one page: at most limit events from fromSeqNr, the same records as events", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        yield* store.append(commit("p", 0, ["a", "b", "c", "d", "e"].map((tag) => event(tag))))
        const seqNrs = (from: number, limit: number) =>
          Effect.map(store.eventsPage(machine, "p", from, limit), (records) => records.map((r) => r.seqNr))
        expect(yield* seqNrs(1, 2)).toEqual([1, 2])
        expect(yield* seqNrs(2, 10)).toEqual([2, 3, 4, 5])
        expect(yield* seqNrs(5, 1)).toEqual([5])
        expect(yield* seqNrs(6, 3)).toEqual([])
        expect(yield* seqNrs(Number.NaN, 3)).toEqual([1, 2, 3])
        expect(yield* seqNrs(2.7, 1)).toEqual([2])
        expect(yield* store.eventsPage(machine, "unknown", 1, 5)).toEqual([])
        expect(yield* store.eventsPage(machine, "p", 1, EventStore.maxPageSize)).toEqual(yield* readAll(store, "p"))
        for (const limit of [0, -1, 1.5, Number.NaN, EventStore.maxPageSize + 1]) {
          const refused = yield* Effect.flip(store.eventsPage(machine, "p", 1, limit))
          expect(refused._tag).toBe("PersistenceError")
        }
        expect((yield* Effect.flip(store.eventsPage(machine, "s\uD800", 1, 5)))._tag).toBe("InvalidInstanceId")
      }))

    it.scoped("replayPage reads the page eventsPage reads, each event as its ReplayRecord", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        yield* store.append(commit("r", 0, [
          event("@created", { _tag: "Pending", items: [1, 2] }),
          event("Paid", { _tag: "Paid", amount: 12.5, note: "ünï ✓" }, "Paid", metadata({ commitId: "c-1", correlationId: "k", timestamp: 7 })),
          event("Expired", { _tag: "Expired" }, "Expired", metadata({ source: "timeout", commitId: "c-2", timer: "expire" })),
          event("Expired", { _tag: "Expired" }, "Expired", metadata({ source: "timeout", node: null })),
          event("@stopped", null, "Expired", metadata({ source: "outbox" }), 2)
        ]))
        const replayed = yield* store.replayPage(machine, "r", 1, 10)
        expect(replayed).toEqual((yield* store.eventsPage(machine, "r", 1, 10)).map(EventStore.replayRecord))
        expect(replayed.map((r) => [r.seqNr, r.source, r.timer, r.hasCommitId])).toEqual([
          [1, "user", null, false],
          [2, "user", null, true],
          [3, "timeout", "expire", true],
          [4, "timeout", null, false],
          [5, "outbox", null, false]
        ])
        expect(replayed[1]).toEqual({
          seqNr: 2,
          tag: "Paid",
          payload: { _tag: "Paid", amount: 12.5, note: "ünï ✓" },
          stateTag: "Paid",
          timestamp: 7,
          source: "user",
          timer: null,
          hasCommitId: true
        })
        const seqNrs = (from: number, limit: number) =>
          Effect.map(store.replayPage(machine, "r", from, limit), (records) => records.map((r) => r.seqNr))
        expect(yield* seqNrs(2, 2)).toEqual([2, 3])
        expect(yield* seqNrs(6, 3)).toEqual([])
        expect(yield* seqNrs(Number.NaN, 1)).toEqual([1])
        expect(yield* seqNrs(Number.POSITIVE_INFINITY, 1)).toEqual([])
        expect(yield* store.replayPage(machine, "unknown", 1, 5)).toEqual([])
        for (const limit of [0, 1.5, Number.NaN, EventStore.maxPageSize + 1]) {
          expect(yield* Effect.flip(store.replayPage(machine, "r", 1, limit))).toMatchObject({
            _tag: "PersistenceError",
            operation: "replayPage"
          })
        }
        expect((yield* Effect.flip(store.replayPage(machine, "s\uD800", 1, 5)))._tag).toBe("InvalidInstanceId")
      }))

    it.scoped("recoveryBatch reads each instance's latest snapshot and the events after it, in the order asked; malformed requests are refused", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const tags = (n: number, from = 1) => Array.from({ length: n }, (_, i) => event(`e${from + i}`))
        yield* store.append(commit("a", 0, tags(5)))
        yield* store.append(commit("b", 0, tags(4), { snapshot: snapshot("b", 4, { at: 4 }) }))
        yield* store.append(commit("b", 4, tags(3, 5)))
        yield* store.append(commit("c", 0, tags(3), { snapshot: snapshot("c", 3, { at: 3 }) }))
        yield* store.append(commit("a", 0, tags(9), { machine: "invoice" }))
        const page = (id: string, from: number, limit: number) => store.eventsPage(machine, id, from, limit)

        const all = yield* store.recoveryBatch(machine, ["c", "zz", "b", "a"], 100)
        expect(all.map((r) => r.instanceId)).toEqual(["c", "b", "a"])
        const [c, b, a] = all
        expect(c).toEqual({ instanceId: "c", snapshot: yield* store.loadSnapshot(machine, "c"), events: [] })
        expect(b!.snapshot).toEqual(yield* store.loadSnapshot(machine, "b"))
        expect(b!.events).toEqual(yield* page("b", 5, 100))
        expect(a).toEqual({ instanceId: "a", snapshot: Option.none(), events: yield* page("a", 1, 100) })

        const limited = yield* store.recoveryBatch(machine, ["a", "b"], 2)
        expect(limited.map((r) => [r.instanceId, r.events.map((e) => e.seqNr)])).toEqual([["a", [1, 2]], ["b", [5, 6]]])
        expect(yield* store.recoveryBatch(machine, [], 10)).toEqual([])
        expect(yield* store.recoveryBatch("nothing", ["a"], 10)).toEqual([])

        for (const limit of [0, -1, 1.5, Number.NaN, EventStore.maxPageSize + 1]) {
          expect(yield* Effect.flip(store.recoveryBatch(machine, ["a"], limit))).toMatchObject({
            _tag: "PersistenceError",
            operation: "recoveryBatch"
          })
        }
        expect((yield* Effect.flip(store.recoveryBatch(machine, ["a", "a"], 10)))._tag).toBe("PersistenceError")
        const tooMany = Array.from({ length: EventStore.maxBatchIds + 1 }, (_, i) => `x${i}`)
        expect((yield* Effect.flip(store.recoveryBatch(machine, tooMany, 10)))._tag).toBe("PersistenceError")
        expect((yield* Effect.flip(store.recoveryBatch(machine, ["a", "s\uD800"], 10)))._tag).toBe("InvalidInstanceId")
        // The most ids one batch takes are read in one call.
        const most = yield* store.recoveryBatch(machine, [...Array.from({ length: EventStore.maxBatchIds - 1 }, (_, i) => `x${i}`), "a"], 1)
        expect(most.map((r) => r.instanceId)).toEqual(["a"])
      }))

    it.scoped("an expectedSeqNr behind or ahead of the log is a SequenceConflict with the actual end, and writes nothing", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const early = yield* Effect.flip(store.append(commit("o1", 2, [event("x")])))
        expect(early).toMatchObject({ _tag: "SequenceConflict", machine, instanceId: "o1", expected: 2, actual: 0 })
        expect(yield* store.highestSequenceNr(machine, "o1")).toBe(0)
        expect(yield* instancesOf(store, machine)).toEqual([])

        yield* store.append(commit("o1", 0, [event("a"), event("b"), event("c")]))
        const behind = yield* Effect.flip(store.append(commit("o1", 1, [event("x"), event("y")])))
        expect(behind).toMatchObject({ _tag: "SequenceConflict", expected: 1, actual: 3 })
        const ahead = yield* Effect.flip(store.append(commit("o1", 5, [event("x")])))
        expect(ahead).toMatchObject({ _tag: "SequenceConflict", expected: 5, actual: 3 })
        const again = yield* Effect.flip(store.append(commit("o1", 0, [event("x")])))
        expect(again).toMatchObject({ _tag: "SequenceConflict", expected: 0, actual: 3 })
        expect((yield* readAll(store, "o1")).map((r) => r.tag)).toEqual(["a", "b", "c"])
      }))

    it.scoped("100 concurrent appends at the same expectedSeqNr: exactly 1 succeeds, 99 get SequenceConflict", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const race = (expectedSeqNr: number) =>
          Effect.all(
            Array.from({ length: 100 }, (_, i) => Effect.either(store.append(commit("hot", expectedSeqNr, [event(`w${i}`)])))),
            { concurrency: "unbounded" }
          )
        for (const expectedSeqNr of [0, 1]) {
          const results = yield* race(expectedSeqNr)
          const winners = results.flatMap((result, i) => Either.isRight(result) ? [i] : [])
          const losers = results.flatMap((result) => Either.isLeft(result) ? [result.left] : [])
          expect(winners).toHaveLength(1)
          expect(losers).toHaveLength(99)
          for (const loser of losers) {
            expect(loser).toMatchObject({ _tag: "SequenceConflict", expected: expectedSeqNr, actual: expectedSeqNr + 1 })
          }
          const log = yield* readAll(store, "hot")
          expect(log).toHaveLength(expectedSeqNr + 1)
          expect(log[expectedSeqNr]!.tag).toBe(`w${winners[0]}`)
        }
      }))

    it.scoped("50 instances x 10 appends, concurrently: every log is present and gapless", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const ids = Array.from({ length: 50 }, (_, i) => `inst-${i}`)
        yield* Effect.forEach(
          ids,
          (id) =>
            Effect.forEach(
              Array.from({ length: 10 }, (_, n) => n),
              (n) => store.append(commit(id, n, [event(`${id}:${n + 1}`)])),
              { discard: true }
            ),
          { concurrency: "unbounded", discard: true }
        )
        expect(yield* instancesOf(store, machine)).toEqual([...ids].sort())
        for (const id of ids) {
          const log = yield* readAll(store, id)
          expect(log.map((r) => [r.seqNr, r.tag])).toEqual(
            Array.from({ length: 10 }, (_, n) => [n + 1, `${id}:${n + 1}`])
          )
          expect(yield* store.highestSequenceNr(machine, id)).toBe(10)
        }
      }))

    it.scoped("commits of many instances at once are each checked on their own: the refused ones write nothing, the others everything", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        const at = (timestamp: number) => metadata({ timestamp })
        const ids = Array.from({ length: 24 }, (_, i) => `g${String(i).padStart(2, "0")}`)
        for (const id of ids) {
          yield* store.append(commit(id, 0, [event("@created", { id }, "Pending", at(1_000))], {
            timers: { cancelAll: false, schedule: [timer("t", 1, 5_000), timer("u", 1, 6_000)] }
          }))
        }
        const move = (id: string, extra: Partial<Pick<EventStore.Commit, "snapshot" | "timers" | "outbox">> = {}) =>
          commit(id, 1, [event("Next", { id }, "Paid", at(2_000))], extra)
        const produced = { index: 0, kind: "handler" as const, tag: "Charge", payload: { _tag: "Charge" }, target: null, correlationId: null, fenceToken: null }
        const attempts: ReadonlyArray<EventStore.Commit> = [
          ...ids.slice(0, 8).map((id) => move(id)),
          // Each kind of write a commit can carry, in one group.
          move("g08", { snapshot: snapshot("g08", 2, { at: 2 }) }),
          move("g09", { timers: { cancelAll: true, schedule: [timer("v", 2, 9_000)] } }),
          move("g10", { timers: { cancelAll: false, schedule: [timer("t", 2, 8_000)], fired: { name: "t", generation: 1 } } }),
          move("g11", { outbox: { produce: [produced] } }),
          { ...commit("g12", 1, [event("Stay", null, "Pending", at(2_000))]), current: { entered: false, stopped: false } },
          commit("g13", 1, [event("@stopped", null, "Pending", at(2_000))]),
          // Refused, each for its own reason.
          commit("g14", 0, [event("Late", null, "Paid", at(2_000))]),
          move("g15", { timers: { cancelAll: true, schedule: [], fired: { name: "t", generation: 7 } } }),
          { ...move("g16"), fence: { owner: "nobody", token: 3 } },
          move("g17", { outbox: { produce: [], complete: { machine, instanceId: "g17", seqNr: 1, index: 0 } } }),
          // Two reasons at once: the first in the order lone commits report them.
          { ...commit("g19", 0, [event("Late", null, "Paid", at(2_000))]), fence: { owner: "nobody", token: 3 } },
          commit("g20", 0, [event("Late", null, "Paid", at(2_000))], {
            timers: { cancelAll: true, schedule: [], fired: { name: "t", generation: 7 } }
          }),
          // Two writes of one instance: one wins, the other conflicts.
          move("g18"),
          commit("g18", 1, [event("Other", null, "Paid", at(2_000))]),
          // New instances.
          ...["n0", "n1", "n2"].map((id) => commit(id, 0, [event("@created", { id }, "Pending", at(2_000))]))
        ]
        const outcomes = yield* Effect.all(attempts.map((c) => Effect.either(store.append(c))), { concurrency: "unbounded" })
        const refused = outcomes.flatMap((outcome, index) =>
          Either.isLeft(outcome) ? [[attempts[index]!.instanceId, outcome.left._tag]] : []
        )
        const g18 = refused.filter(([id]) => id === "g18")
        expect(g18).toEqual([["g18", "SequenceConflict"]])
        expect(refused.filter(([id]) => id !== "g18")).toEqual([
          ["g14", "SequenceConflict"],
          ["g15", "StaleTimer"],
          ["g16", "FencingRejected"],
          ["g17", "StaleCommand"],
          ["g19", "FencingRejected"],
          ["g20", "SequenceConflict"]
        ])
        const conflict = outcomes[attempts.findIndex((c) => c.instanceId === "g14")]!
        expect(Either.isLeft(conflict) && conflict.left).toMatchObject({ expected: 0, actual: 1 })

        const tags = (id: string) => Effect.map(readAll(store, id), (log) => log.map((r) => r.tag))
        for (const id of [...ids.slice(0, 12), "g18"]) {
          expect((yield* tags(id))[0]).toBe("@created")
          expect(yield* store.highestSequenceNr(machine, id)).toBe(2)
        }
        for (const id of ["g14", "g15", "g16", "g17", "g19", "g20"]) expect(yield* tags(id)).toEqual(["@created"])
        expect(yield* tags("g12")).toEqual(["@created", "Stay"])
        for (const id of ["n0", "n1", "n2"]) expect(yield* tags(id)).toEqual(["@created"])

        // Snapshot, timers and outbox rows of the written commits, none of the refused ones.
        expect(Option.map(yield* store.loadSnapshot(machine, "g08"), (s) => s.state)).toEqual(Option.some({ at: 2 }))
        expect(yield* store.loadSnapshot(machine, "g15")).toEqual(Option.none())
        const names = (id: string) => Effect.map(timers.pending(machine, id), (rows) => byName(rows).map((t) => `${t.name}:${t.generation}`))
        expect(yield* names("g09")).toEqual(["v:2"])
        expect(yield* names("g10")).toEqual(["t:2", "u:1"])
        expect(yield* names("g15")).toEqual(["t:1", "u:1"])
        expect(yield* names("g00")).toEqual(["t:1", "u:1"])
        // The command g11 produced is pending: a commit completing it is accepted.
        yield* store.append(commit("g11", 2, [event("Charged", null, "Paid", at(3_000))], {
          outbox: { produce: [], complete: { machine, instanceId: "g11", seqNr: 2, index: 0 } }
        }))

        // The current-state rows and the counts follow the written commits only.
        const row = (id: string) => Effect.map(store.instance(machine, id), Option.getOrUndefined)
        expect(yield* row("g00")).toMatchObject({ stateTag: "Paid", seqNr: 2, enteredAt: 2_000, updatedAt: 2_000, stopped: false })
        expect(yield* row("g12")).toMatchObject({ stateTag: "Pending", seqNr: 2, enteredAt: 1_000, updatedAt: 2_000, stopped: false })
        expect(yield* row("g13")).toMatchObject({ stateTag: "Pending", seqNr: 2, stopped: true })
        expect(yield* row("g14")).toMatchObject({ stateTag: "Pending", seqNr: 1, enteredAt: 1_000, stopped: false })
        expect(yield* row("n0")).toMatchObject({ stateTag: "Pending", seqNr: 1, enteredAt: 2_000 })
        expect(yield* store.stateCounts(machine)).toEqual([
          { stateTag: "Paid", stopped: false, count: 13 },
          { stateTag: "Pending", stopped: false, count: 13 },
          { stateTag: "Pending", stopped: true, count: 1 }
        ])
      }))

    it.scoped("a multi-event commit with a snapshot is atomic: a conflicting one writes neither events nor snapshot", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const first = snapshot("o1", 2, { _tag: "Paid", at: 2 })
        yield* store.append(commit("o1", 0, [event("@created"), event("Pay"), event("Note")], { snapshot: first }))
        expect((yield* readAll(store, "o1")).map((r) => r.tag)).toEqual(["@created", "Pay", "Note"])
        expect(yield* store.loadSnapshot(machine, "o1")).toEqual(Option.some(first))

        // Its snapshot (seqNr 4) would replace the stored one (seqNr 2) if anything of it were written.
        const loser = commit("o1", 1, [event("X"), event("Y"), event("Z")], { snapshot: snapshot("o1", 4, { lost: true }) })
        expect(yield* Effect.flip(store.append(loser))).toMatchObject({ _tag: "SequenceConflict", actual: 3 })
        expect((yield* readAll(store, "o1")).map((r) => r.tag)).toEqual(["@created", "Pay", "Note"])
        expect(yield* store.loadSnapshot(machine, "o1")).toEqual(Option.some(first))
      }))

    it.scoped("snapshots are monotonic: an older one never replaces a newer one, via saveSnapshot or a commit", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const at5 = snapshot("s", 5, { v: 5 }, { stopped: true, schemaVersion: 3, timestamp: 55 })
        yield* store.saveSnapshot(at5)
        yield* store.saveSnapshot(snapshot("s", 3, { v: 3 }))
        yield* store.saveSnapshot(snapshot("s", 5, { v: "same seqNr" }))
        expect(yield* store.loadSnapshot(machine, "s")).toEqual(Option.some(at5))
        const at7 = snapshot("s", 7, { v: 7 })
        yield* store.saveSnapshot(at7)
        expect(yield* store.loadSnapshot(machine, "s")).toEqual(Option.some(at7))

        // Through commits: the log is at 2, a newer snapshot (8) is stored.
        yield* store.append(commit("c", 0, [event("@created"), event("a")]))
        const at8 = snapshot("c", 8, { v: 8 })
        yield* store.saveSnapshot(at8)
        yield* store.append(commit("c", 2, [event("b"), event("c"), event("d")], { snapshot: snapshot("c", 5, { v: 5 }) }))
        expect(yield* store.highestSequenceNr(machine, "c")).toBe(5)
        expect(yield* store.loadSnapshot(machine, "c")).toEqual(Option.some(at8))
        const at9 = snapshot("c", 9, { v: 9 })
        yield* store.append(commit("c", 5, [event("e"), event("f"), event("g"), event("h")], { snapshot: at9 }))
        expect(yield* store.loadSnapshot(machine, "c")).toEqual(Option.some(at9))
      }))

    it.scoped("lists the instances of a machine, and of no other", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        for (const id of ["o2", "o1", "o3"]) yield* store.append(commit(id, 0, [event("@created")]))
        yield* store.append(commit("o1", 1, [event("more")]))
        for (const id of ["o1", "i9"]) yield* store.append(commit(id, 0, [event("@created")], { machine: "invoice" }))
        expect(yield* instancesOf(store, machine)).toEqual(["o1", "o2", "o3"])
        expect(yield* instancesOf(store, "invoice")).toEqual(["i9", "o1"])
        expect(yield* instancesOf(store, "nothing")).toEqual([])

        // More than one page (256) of the SQL stores' instance listing.
        const bulk = Array.from({ length: 300 }, (_, i) => `bulk-${String(i).padStart(4, "0")}`)
        yield* Effect.forEach(bulk, (id) => store.append(commit(id, 0, [event("@created")], { machine: "bulk" })), {
          concurrency: 20,
          discard: true
        })
        const listed = yield* Effect.map(Stream.runCollect(store.instances("bulk")), Chunk.toArray)
        expect(listed).toHaveLength(300)
        expect([...listed].sort()).toEqual(bulk)
      }))

    it.scoped("unicode and 1 MiB payloads round-trip exactly", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const unicode = {
          text: "Grüße, 世界, مرحبا, שלום, 🎉👩‍👩‍👧‍👦, e\u0301, \u2028\u2029 tab\t nl\n quote\" backslash\\ slash/",
          "clé avec espaces & ü": "ß",
          "": "empty key",
          nested: { emoji: "🦄", list: [1, -2.5, 1e21, 0.1, 9007199254740991, true, false, null, "ä", []] },
          // Numbers at the edges of a double and a control character JSON.stringify escapes.
          edges: [5e-324, 1.7976931348623157e308, -1e-7, 2 ** 60, 0.1 + 0.2, "\u001f\u007f"],
          empty: {}
        }
        const big = { blob: "ab€😀\"\\\n".repeat(Math.ceil((1024 * 1024) / 8)) }
        expect(big.blob.length).toBeGreaterThanOrEqual(1024 * 1024)
        const withUnicode = event("Ünïcödé ✓", unicode, "Zustand-ä", metadata({ correlationId: "корреляция-🔗" }))
        yield* store.append(
          commit("u", 0, [withUnicode, event("Big", big)], { snapshot: snapshot("u", 2, { unicode, big }) })
        )
        const [first, second] = yield* readAll(store, "u")
        expect(first).toEqual({ ...withUnicode, machine, instanceId: "u", seqNr: 1 })
        expect(second!.payload).toEqual(big)
        expect(yield* store.loadSnapshot(machine, "u")).toEqual(Option.some(snapshot("u", 2, { unicode, big })))
      }))

    it.scoped("hostile instance ids are stored and read back; empty, over-long and NUL ids are InvalidInstanceId", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const hostile = [
          "it's",
          "\"double\"",
          "'; DROP TABLE fsm_events; --",
          "Robert'); DROP TABLE fsm_snapshots;--",
          "back\\slash",
          "%_like*?[]",
          "$1 ? :name @p0",
          "line\nbreak\ttab",
          "ユニコード🚀",
          " leading and trailing ",
          "x".repeat(EventStore.maxInstanceIdLength)
        ]
        for (const id of hostile) {
          yield* store.append(commit(id, 0, [event("@created", { id })], { snapshot: snapshot(id, 1, { id }) }))
        }
        for (const id of hostile) {
          const log = yield* readAll(store, id)
          expect(log.map((r) => [r.instanceId, r.payload])).toEqual([[id, { id }]])
          expect(yield* store.highestSequenceNr(machine, id)).toBe(1)
          expect(Option.map(yield* store.loadSnapshot(machine, id), (s) => s.state)).toEqual(Option.some({ id }))
        }
        expect(yield* instancesOf(store, machine)).toEqual([...hostile].sort())
        // The tables are still there.
        yield* store.append(commit("after", 0, [event("@created")]))
        expect(yield* store.highestSequenceNr(machine, "after")).toBe(1)

        for (const bad of ["", "x".repeat(EventStore.maxInstanceIdLength + 1), ...badWellFormedIds]) {
          const failures = [
            yield* Effect.flip(store.append(commit(bad, 0, [event("@created")]))),
            yield* Effect.flip(readAll(store, bad)),
            yield* Effect.flip(store.highestSequenceNr(machine, bad)),
            yield* Effect.flip(store.saveSnapshot(snapshot(bad, 1, {}))),
            yield* Effect.flip(store.loadSnapshot(machine, bad))
          ]
          for (const failure of failures) expect(failure).toMatchObject({ _tag: "InvalidInstanceId", instanceId: bad })
        }
        expect(yield* instancesOf(store, machine)).toEqual([...hostile, "after"].sort())
      }))

    it.scoped("ids with lone surrogates or NUL are InvalidInstanceId on every operation and write nothing", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        for (const bad of badWellFormedIds) {
          const failures = [
            yield* Effect.flip(store.append(commit(bad, 0, [event("@created")], {
              snapshot: snapshot(bad, 1, {}),
              timers: { cancelAll: false, schedule: [timer("t", 1, 10)] }
            }))),
            yield* Effect.flip(readAll(store, bad)),
            yield* Effect.flip(store.highestSequenceNr(machine, bad)),
            yield* Effect.flip(store.saveSnapshot(snapshot(bad, 1, {}))),
            yield* Effect.flip(store.loadSnapshot(machine, bad))
          ]
          for (const failure of failures) {
            expect(failure).toMatchObject({ _tag: "InvalidInstanceId", machine, instanceId: bad })
          }
        }
        expect(yield* instancesOf(store, machine)).toEqual([])
        expect(yield* timers.nextDueAt([machine])).toEqual(Option.none())
        // What a lossy encoder would have turned them into: nothing was written there either.
        for (const collapsed of ["s\uFFFD", "\uFFFDx", "s", "x"]) {
          expect(yield* store.highestSequenceNr(machine, collapsed)).toBe(0)
          expect(yield* store.loadSnapshot(machine, collapsed)).toEqual(Option.none())
        }
      }))

    it.scoped("\"s\\uD800\" and \"s\\uDBFF\" are both rejected, not collapsed into one id next to a real \"s\\uFFFD\"", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        yield* store.append(commit("s\uFFFD", 0, [event("@created", { id: "s\uFFFD" })]))
        for (const lone of ["s\uD800", "s\uDBFF"]) {
          expect(yield* Effect.flip(store.append(commit(lone, 0, [event("@created")])))).toMatchObject({
            _tag: "InvalidInstanceId",
            instanceId: lone
          })
          expect(yield* Effect.flip(store.append(commit(lone, 1, [event("more")])))).toMatchObject({
            _tag: "InvalidInstanceId",
            instanceId: lone
          })
        }
        expect(yield* instancesOf(store, machine)).toEqual(["s\uFFFD"])
        expect((yield* readAll(store, "s\uFFFD")).map((r) => [r.instanceId, r.tag, r.payload])).toEqual([
          ["s\uFFFD", "@created", { id: "s\uFFFD" }]
        ])
      }))

    it.scoped("ids with surrogate pairs round-trip exactly, up to 255 UTF-16 code units", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const paired = ["🔗", "a\uD83D\uDD17b", "👩‍👩‍👧‍👦", "\uDBFF\uDFFF", "x".repeat(EventStore.maxInstanceIdLength - 2) + "🔗"]
        expect(paired.at(-1)).toHaveLength(EventStore.maxInstanceIdLength)
        for (const id of paired) {
          expect(EventStore.instanceIdProblem(id)).toBeUndefined()
          yield* store.append(commit(id, 0, [event("@created", { id })], { snapshot: snapshot(id, 1, { id }) }))
        }
        for (const id of paired) {
          const log = yield* readAll(store, id)
          expect(log.map((r) => [r.instanceId, r.payload])).toEqual([[id, { id }]])
          expect(log[0]!.instanceId === id).toBe(true)
          expect(Option.map(yield* store.loadSnapshot(machine, id), (s) => [s.instanceId, s.state])).toEqual(
            Option.some([id, { id }])
          )
        }
        const listed = yield* instancesOf(store, machine)
        expect(listed).toEqual([...paired].sort())
        expect(listed.every((id) => paired.includes(id))).toBe(true)
        const tooLong = "x".repeat(EventStore.maxInstanceIdLength - 1) + "🔗"
        expect(yield* Effect.flip(store.append(commit(tooLong, 0, [event("@created")])))).toMatchObject({
          _tag: "InvalidInstanceId"
        })
      }))

    it.scoped("values JSON cannot carry exactly, in payloads, snapshot states or timer payloads, are a PersistenceError and write nothing", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        const armed = timer("t", 1, 100)
        const first = snapshot("p", 1, { ok: true })
        yield* store.append(commit("p", 0, [event("@created")], { snapshot: first, timers: { cancelAll: false, schedule: [armed] } }))
        const unchanged = Effect.gen(function*() {
          expect((yield* readAll(store, "p")).map((r) => r.tag)).toEqual(["@created"])
          expect(yield* store.loadSnapshot(machine, "p")).toEqual(Option.some(first))
          expect(yield* timers.pending(machine, "p")).toEqual([
            { ...armed, machine, instanceId: "p", attempts: 0, lastError: null }
          ])
          expect(yield* store.highestSequenceNr(machine, "fresh")).toBe(0)
          expect(yield* store.loadSnapshot(machine, "fresh")).toEqual(Option.none())
          expect(yield* timers.pending(machine, "fresh")).toEqual([])
          expect(yield* instancesOf(store, machine)).toEqual(["p"])
        })
        for (const [name, bad] of badJsonValues()) {
          // Spelt out rather than through `event(tag, payload)`, which puts a default in place of `undefined`.
          const withPayload = (tag: string, payload: unknown): EventStore.NewEvent => ({ ...event(tag), payload })
          const timerWith = (payload: unknown) => ({ ...timer("u", 2, 5), payload })
          const attempts = [
            commit("p", 1, [withPayload("Pay", bad)]),
            commit("p", 1, [event("Ok"), event("Pay", { _tag: "Pay", nested: [bad] })]),
            commit("fresh", 0, [withPayload("@created", bad)]),
            commit("p", 1, [event("Ok")], { snapshot: snapshot("p", 2, bad) }),
            commit("fresh", 0, [event("@created")], { snapshot: snapshot("fresh", 1, { state: bad }) }),
            commit("p", 1, [event("Ok")], { timers: { cancelAll: true, schedule: [timerWith(bad)] } }),
            commit("fresh", 0, [event("@created")], {
              timers: { cancelAll: false, schedule: [timer("v", 1, 5), timerWith({ bad })] }
            })
          ]
          for (const [i, attempt] of attempts.entries()) {
            const result = yield* Effect.either(store.append(attempt))
            expect(Either.isLeft(result) ? result.left : "the append succeeded", `${name}, attempt ${i}`).toMatchObject({
              _tag: "PersistenceError",
              operation: "append"
            })
          }
          for (const id of ["p", "fresh"]) {
            const result = yield* Effect.either(store.saveSnapshot(snapshot(id, 9, bad)))
            expect(Either.isLeft(result) ? result.left : "the save succeeded", `${name}, saveSnapshot ${id}`).toMatchObject({
              _tag: "PersistenceError",
              operation: "saveSnapshot"
            })
          }
          yield* unchanged
        }
      }))

    it.scoped("metadata strings and tags with NUL or a lone surrogate are a PersistenceError and write nothing", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        yield* store.append(commit("m", 0, [event("@created")]))
        const bad = ["nul\u0000", "lone\uD800", "\uDC00lone"]
        for (const text of bad) {
          const attempts = [
            event("Pay", null, "Paid", metadata({ correlationId: text })),
            event("Pay", null, "Paid", metadata({ node: text })),
            event("Pay", null, "Paid", metadata({ commitId: text })),
            event("Pay", null, "Paid", metadata({ source: "timeout", timer: text })),
            event(text, null, "Paid"),
            event("Pay", null, text)
          ]
          for (const attempt of attempts) {
            const failure = yield* Effect.flip(store.append(commit("m", 1, [event("Ok"), attempt])))
            expect(failure).toMatchObject({ _tag: "PersistenceError", operation: "append" })
          }
          const badTimer = { ...timer("t", 2, 5), name: text }
          const failure = yield* Effect.flip(
            store.append(commit("m", 1, [event("Ok")], { timers: { cancelAll: false, schedule: [badTimer] } }))
          )
          expect(failure).toMatchObject({ _tag: "PersistenceError", operation: "append" })
        }
        expect((yield* readAll(store, "m")).map((r) => r.tag)).toEqual(["@created"])
        // Well-formed metadata with every kind of character is stored as given.
        const fancy = metadata({ correlationId: "🔗 корр \u2028", node: "n\uFFFD", commitId: "c-😀", timer: "⏰" })
        yield* store.append(commit("m", 1, [event("Ok", null, "Paid", fancy)]))
        expect((yield* readAll(store, "m", 2))[0]!.metadata).toEqual(fancy)
      }))

    it.scoped("a 5 MiB payload round-trips exactly, as an event, a snapshot and a timer payload", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        const items = Array.from({ length: 20_000 }, (_, i) => ({
          sku: `sku-${i}-ü`,
          qty: i % 7,
          price: i / 8,
          tags: ["a", "😀", ""],
          ok: i % 2 === 0,
          note: null
        }))
        const big = { _tag: "Big", items, blob: "ab€😀\"\\\n\u2028".repeat(300_000) }
        expect(JSON.stringify(big).length).toBeGreaterThan(5 * 1024 * 1024)
        yield* store.append(commit("big", 0, [event("@created", big)], {
          snapshot: snapshot("big", 1, big),
          timers: { cancelAll: false, schedule: [timer("t", 1, 100, big)] }
        }))
        const [record] = yield* readAll(store, "big")
        expect(record!.payload).toEqual(big)
        expect(Option.map(yield* store.loadSnapshot(machine, "big"), (s) => s.state)).toEqual(Option.some(big))
        expect((yield* timers.pending(machine, "big"))[0]!.payload).toEqual(big)
      }))

    it.scoped("nesting up to 1000 levels is stored; deeper is a PersistenceError", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const nested = (levels: number): unknown => {
          let value: unknown = "leaf"
          for (let i = 0; i < levels; i++) value = i % 2 === 0 ? [value] : { next: value }
          return value
        }
        yield* store.append(commit("deep", 0, [event("@created", nested(1000))]))
        expect((yield* readAll(store, "deep"))[0]!.payload).toEqual(nested(1000))
        expect(yield* Effect.flip(store.append(commit("deep", 1, [event("Deeper", nested(1001))])))).toMatchObject({
          _tag: "PersistenceError",
          operation: "append"
        })
        expect(yield* store.highestSequenceNr(machine, "deep")).toBe(1)
      }))

    it.scoped("what is stored is a copy: mutating what was appended, or what was read, changes nothing stored", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        const fresh = () => ({
          payload: { _tag: "Pay", items: [{ sku: "a", qty: 1 }] as Array<{ sku: string; qty: number }> },
          state: { _tag: "Paid", items: [{ sku: "a", qty: 1 }] as Array<{ sku: string; qty: number }> },
          timerPayload: { _tag: "Timeout", nested: { n: 1 } as { n: number; extra?: boolean } },
          meta: { ...metadata({ correlationId: "c-1" }) }
        })
        const given = fresh()
        const expected = fresh()
        const armed = timer("t", 1, 100, given.timerPayload)
        yield* store.append(commit("copy", 0, [event("@created", given.payload, "Paid", given.meta)], {
          snapshot: snapshot("copy", 1, given.state),
          timers: { cancelAll: false, schedule: [armed] }
        }))
        given.payload.items[0]!.qty = 99
        given.payload.items.push({ sku: "b", qty: 2 })
        given.state.items.length = 0
        given.timerPayload.nested.n = 99
        Object.assign(given.meta, { node: "mutated", correlationId: "mutated" })
        Object.assign(armed, { dueAt: 1, name: "mutated" })

        const expectedEvent = { ...event("@created", expected.payload, "Paid", expected.meta), machine, instanceId: "copy", seqNr: 1 }
        const expectedTimer = { ...timer("t", 1, 100, expected.timerPayload), machine, instanceId: "copy", attempts: 0, lastError: null }
        const expectedSnapshot = snapshot("copy", 1, expected.state)

        for (let round = 0; round < 2; round++) {
          const [read] = yield* readAll(store, "copy")
          expect(read).toEqual(expectedEvent)
          expect(read!.payload).not.toBe(given.payload)
          const loaded = Option.getOrThrow(yield* store.loadSnapshot(machine, "copy"))
          expect(loaded).toEqual(expectedSnapshot)
          expect(loaded.state).not.toBe(given.state)
          const [pending] = yield* timers.pending(machine, "copy")
          expect(pending).toEqual(expectedTimer)
          expect(pending!.payload).not.toBe(given.timerPayload)
          // Vandalize everything that was handed out; the next round must not see it.
          ;(read!.payload as typeof given.payload).items[0]!.qty = -1
          Object.assign(read!.metadata, { node: "vandal" })
          Object.assign(read!, { seqNr: 42, tag: "vandal" })
          ;(loaded.state as typeof given.state).items.push({ sku: "vandal", qty: 0 })
          Object.assign(loaded, { seqNr: 42 })
          ;(pending!.payload as typeof given.timerPayload).nested.extra = true
          Object.assign(pending!, { dueAt: -1, generation: 42 })
        }

        const [claimed] = yield* timers.claimDue({ machines: [machine], now: 100, limit: 10, nodeId: "n", claimUntil: 200 })
        expect(claimed).toEqual(expectedTimer)
        ;(claimed!.payload as typeof given.timerPayload).nested.n = -1
        yield* timers.deadLetter({ machine, instanceId: "copy", name: "t", generation: 1 }, { error: "boom", now: 300 })
        const expectedLetter = { ...expectedTimer, attempts: 1, lastError: "boom", failedAt: 300 }
        const [letter] = yield* timers.deadLetters(machine)
        expect(letter).toEqual(expectedLetter)
        ;(letter!.payload as typeof given.timerPayload).nested.n = -1
        expect(yield* timers.deadLetters(machine)).toEqual([expectedLetter])
        expect(yield* timers.redrive({ machine, instanceId: "copy", name: "t" }, 400)).toBe(true)
        expect(yield* timers.pending(machine, "copy")).toEqual([{ ...expectedTimer, dueAt: 400, lastError: "boom" }])
      }))

    it.scoped("a commit writes its timer changes with its events; a stale fired timer fails it and writes nothing", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        const pending = Effect.map(timers.pending(machine, "t"), byName)
        const stored = (t: ReturnType<typeof timer>) => ({ ...t, machine, instanceId: "t", attempts: 0, lastError: null })
        const payment = timer("payment", 1, 300_000)
        const reminder = timer("reminder", 1, 60_000, { _tag: "Remind", text: "ü😀" })
        yield* store.append(commit("t", 0, [event("@created")], { timers: { cancelAll: false, schedule: [payment, reminder] } }))
        expect(yield* pending).toEqual([stored(payment), stored(reminder)])

        // A conflicting commit's timers are not written.
        const lost = { cancelAll: true, schedule: [timer("lost", 1, 1)] }
        expect(yield* Effect.flip(store.append(commit("t", 0, [event("x")], { timers: lost })))).toMatchObject({
          _tag: "SequenceConflict"
        })
        // A delivery of a timer that is not armed (wrong generation) writes nothing at all.
        const stale = yield* Effect.flip(
          store.append(commit("t", 1, [event("PaymentTimeout")], {
            snapshot: snapshot("t", 2, { stale: true }),
            timers: { cancelAll: true, schedule: [], fired: { name: "payment", generation: 9 } }
          }))
        )
        expect(stale).toMatchObject({ _tag: "StaleTimer", machine, instanceId: "t", name: "payment", generation: 9 })
        expect(yield* store.highestSequenceNr(machine, "t")).toBe(1)
        expect(yield* store.loadSnapshot(machine, "t")).toEqual(Option.none())
        expect(yield* pending).toEqual([stored(payment), stored(reminder)])

        // A stay that delivers "reminder": only that timer goes.
        yield* store.append(commit("t", 1, [event("Remind")], {
          timers: { cancelAll: false, schedule: [], fired: { name: "reminder", generation: 1 } }
        }))
        expect(yield* pending).toEqual([stored(payment)])

        // Leaving the state on "payment": everything is cancelled, the new state's timers armed.
        const shipping = timer("shipping", 3, 900_000)
        const paymentAgain = timer("payment", 3, 600_000)
        yield* store.append(commit("t", 2, [event("PaymentTimeout")], {
          timers: { cancelAll: true, schedule: [shipping, paymentAgain], fired: { name: "payment", generation: 1 } }
        }))
        expect(yield* pending).toEqual([stored(paymentAgain), stored(shipping)])

        // Re-arming a name without cancelAll replaces that timer (attempts reset), keeps the others.
        yield* timers.retryLater({ machine, instanceId: "t", name: "shipping", generation: 3 }, { dueAt: 5, error: "boom" })
        const rearmed = timer("shipping", 4, 950_000)
        yield* store.append(commit("t", 3, [event("Touch")], { timers: { cancelAll: false, schedule: [rearmed] } }))
        expect(yield* pending).toEqual([stored(paymentAgain), stored(rearmed)])
        expect(yield* store.highestSequenceNr(machine, "t")).toBe(4)
      }))

    currentStateTests(setup)
  })
