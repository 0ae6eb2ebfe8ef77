import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Layer, Option, Ref, Schedule, Schema, Stream, TestClock } from "effect"
import { Errors, EventStore, FSMRuntime, Machine } from "effect-fsm"
import { Counter, CounterEvent, CounterState, Order } from "./fixtures/machines.js"
import { backends } from "./utils/backends.js"
import { buildStore, runtimeOn } from "./utils/runtime.js"

// Conflicts in these tests are retried at once: TestClock would otherwise
// hold the default schedule's back-off sleeps forever.
const retry = Schedule.recurs(1000)

const failPersistence = Effect.fail(new Errors.PersistenceError({ operation: "append", reason: "disk full (test)" }))

const pendingOrder = (orderId: string) => ({ _tag: "Pending", orderId }) as const

for (const backend of backends) {
  describe(`FSMRuntime on ${backend.name}`, () => {
    const setup = (options: Partial<FSMRuntime.Options<ReadonlyArray<Machine.Any>>> = {}) =>
      Effect.gen(function*() {
        const store = yield* buildStore(backend)
        const { log, runtime } = yield* runtimeOn(store, { machines: [Order, Counter], retry, ...options })
        return { store, runtime, log, eventStore: EventStore.EventStore.pipe(Effect.provide(store)) }
      })

    const logLength = (runtime: FSMRuntime.FSMRuntime["Type"], machine: Machine.Any, id: string) =>
      Effect.map(Effect.either(runtime.history(machine, id)), Either.match({ onLeft: () => 0, onRight: (h) => h.length }))

    it.scoped("historyPage reads a log page by page, each bounded by its limit, and says where the next one starts", () =>
      Effect.gen(function*() {
        const { runtime } = yield* setup()
        yield* runtime.create(Counter, "c")
        for (let i = 0; i < 24; i++) yield* runtime.send(Counter, "c", { _tag: "Add", by: 1 })
        const seen: Array<number> = []
        let from: Option.Option<number> = Option.some(1)
        while (Option.isSome(from)) {
          const page = yield* runtime.historyPage(Counter, "c", { fromSeqNr: from.value, limit: 10 })
          expect(page.entries.length).toBeLessThanOrEqual(10)
          seen.push(...page.entries.map((e) => e.seqNr))
          from = page.next
        }
        expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => i + 1))
        expect(seen).toEqual((yield* runtime.history(Counter, "c")).map((e) => e.seqNr))
        const exact = yield* runtime.historyPage(Counter, "c", { fromSeqNr: 16, limit: 10 })
        expect([exact.entries.length, exact.next]).toEqual([10, Option.none()])
        expect((yield* runtime.historyPage(Counter, "c")).entries.length).toBe(25)
        expect((yield* Effect.flip(runtime.historyPage(Counter, "missing")))._tag).toBe("InstanceNotFound")
        for (const bad of [{ limit: 0 }, { limit: 10_001 }, { fromSeqNr: 0 }, { fromSeqNr: Number.NaN }, { limit: 1.5 }]) {
          expect((yield* Effect.flip(runtime.historyPage(Counter, "c", bad)))._tag).toBe("InvalidInput")
        }
      }))

    it.scoped("runs an order end to end: Pending -> Paid -> Shipped -> Delivered", () =>
      Effect.gen(function*() {
        const { log, runtime } = yield* setup()
        yield* TestClock.setTime(1_000)
        expect(yield* runtime.create(Order, "o1", pendingOrder("o1"))).toEqual({
          _tag: "Goto",
          state: pendingOrder("o1"),
          seqNr: 1
        })
        const paid = yield* runtime.send(Order, "o1", { _tag: "Pay", amount: 42 }, { correlationId: "c-1" })
        expect(paid).toEqual({ _tag: "Goto", state: { _tag: "Paid", orderId: "o1", amount: 42 }, seqNr: 2 })
        yield* runtime.send(Order, "o1", { _tag: "Note", text: "gift wrap" })
        yield* TestClock.adjust("1 second")
        const shipped = yield* runtime.send(Order, "o1", { _tag: "Ship", tracking: "TRK" })
        expect(shipped).toEqual({ _tag: "Goto", state: { _tag: "Shipped", orderId: "o1", tracking: "TRK" }, seqNr: 4 })
        const delivered = yield* runtime.send(Order, "o1", { _tag: "Deliver" })
        expect(delivered).toEqual({ _tag: "Stop", state: { _tag: "Delivered", orderId: "o1" }, seqNr: 5 })
        expect(yield* runtime.inspect(Order, "o1")).toEqual({ state: delivered.state, seqNr: 5, stopped: true, timeouts: [] })

        const history = yield* runtime.history(Order, "o1")
        expect(history.map((h) => [h.seqNr, h._tag, h.stateTag])).toEqual([
          [1, "Created", "Pending"],
          [2, "Event", "Paid"],
          [3, "Event", "Paid"],
          [4, "Event", "Shipped"],
          [5, "Event", "Delivered"]
        ])
        expect(history[1]!.metadata).toEqual({
          timestamp: 1_000,
          source: "user",
          correlationId: "c-1",
          node: runtime.nodeId,
          commitId: expect.any(String),
          timer: null
        })
        expect(history[3]!.metadata.timestamp).toBe(2_000)
        expect(yield* Ref.get(log)).toEqual(["exit Pending o1", "entry Paid 42", "entry Shipped TRK"])
      }))

    it.scoped("cancels from any state of the group, and a stay in Cancelled is logged", () =>
      Effect.gen(function*() {
        const { runtime } = yield* setup()
        yield* runtime.create(Order, "a", pendingOrder("a"))
        yield* runtime.create(Order, "b", pendingOrder("b"))
        yield* runtime.send(Order, "b", { _tag: "Pay", amount: 5 })
        for (const id of ["a", "b"]) {
          const outcome = yield* runtime.send(Order, id, { _tag: "Cancel", reason: "changed mind" })
          expect(outcome.state).toEqual({ _tag: "Cancelled", orderId: id, reason: "changed mind" })
        }
        const again = yield* runtime.send(Order, "a", { _tag: "Cancel", reason: "twice" })
        expect(again).toEqual({
          _tag: "Stay",
          state: { _tag: "Cancelled", orderId: "a", reason: "changed mind" },
          seqNr: 3
        })
      }))

    it.scoped("rejects bad input with typed errors and writes nothing", () =>
      Effect.gen(function*() {
        const { runtime } = yield* setup()
        yield* runtime.create(Order, "o1", pendingOrder("o1"))
        const before = yield* runtime.history(Order, "o1")

        const guard = yield* Effect.flip(runtime.send(Order, "o1", { _tag: "Pay", amount: 0 }))
        expect(guard).toMatchObject({ _tag: "GuardRejected", machine: "order", instanceId: "o1", state: "Pending", event: "Pay" })

        const invalid = yield* Effect.flip(runtime.send(Order, "o1", { _tag: "Ship", tracking: "t" }))
        expect(invalid).toMatchObject({ _tag: "InvalidTransition", state: "Pending", event: "Ship" })

        const badEvent = yield* Effect.flip(
          runtime.send(Order, "o1", { _tag: "Pay", amount: "lots" } as unknown as typeof Order extends
            Machine.Machine<infer _S, infer E, infer _R> ? E : never)
        )
        expect(badEvent._tag).toBe("InvalidInput")

        const exists = yield* Effect.flip(runtime.create(Order, "o1", pendingOrder("o1")))
        expect(exists).toMatchObject({ _tag: "InstanceAlreadyExists", instanceId: "o1" })

        expect(yield* runtime.history(Order, "o1")).toEqual(before)

        const missing = yield* Effect.flip(runtime.send(Order, "nope", { _tag: "Pay", amount: 1 }))
        expect(missing).toMatchObject({ _tag: "InstanceNotFound", machine: "order", instanceId: "nope" })
        expect(yield* logLength(runtime, Order, "nope")).toBe(0)

        const emptyId = yield* Effect.flip(runtime.create(Order, "", pendingOrder("")))
        expect(emptyId._tag).toBe("InvalidInstanceId")

        const badInitial = yield* Effect.flip(
          runtime.create(Order, "o2", { _tag: "Pending" } as unknown as ReturnType<typeof pendingOrder>)
        )
        expect(badInitial._tag).toBe("InvalidInput")
        const noInitial = yield* Effect.flip(runtime.create(Order, "o3"))
        expect(noInitial._tag).toBe("InvalidInput")
        expect(yield* logLength(runtime, Order, "o2")).toBe(0)
        expect(yield* logLength(runtime, Order, "o3")).toBe(0)

        const Stranger = Machine.make({
          name: "stranger",
          version: 1,
          state: CounterState,
          event: CounterEvent,
          initial: { _tag: "Even", count: 0, trail: [] },
          transitions: {}
        })
        const unregistered = yield* Effect.flip(runtime.create(Stranger, "x"))
        expect(unregistered).toMatchObject({ _tag: "MachineNotRegistered", machine: "stranger" })
      }))

    it.scoped("rejects events after a stop, durably", () =>
      Effect.gen(function*() {
        const { runtime, store } = yield* setup()
        yield* runtime.create(Order, "o1", pendingOrder("o1"))
        expect(yield* runtime.stop(Order, "o1")).toEqual({ _tag: "Stop", state: pendingOrder("o1"), seqNr: 2 })
        const rejected = yield* Effect.flip(runtime.send(Order, "o1", { _tag: "Pay", amount: 1 }))
        expect(rejected).toMatchObject({ _tag: "InstanceStopped", state: "Pending", event: "Pay" })
        expect((yield* Effect.flip(runtime.stop(Order, "o1")))._tag).toBe("InstanceStopped")

        // A fresh runtime (another node, or after a restart) sees the stop in the log.
        const { runtime: other } = yield* runtimeOn(store, { machines: [Order, Counter], retry })
        expect((yield* Effect.flip(other.send(Order, "o1", { _tag: "Pay", amount: 1 })))._tag).toBe("InstanceStopped")
        expect(yield* other.inspect(Order, "o1")).toEqual({ state: pendingOrder("o1"), seqNr: 2, stopped: true, timeouts: [] })
      }))

    it.scoped("serializes 100 concurrent sends to one instance: all accepted, gapless, none lost", () =>
      Effect.gen(function*() {
        // No retries: a conflict between sends of one runtime would surface.
        const { runtime } = yield* setup({ retry: Schedule.stop })
        yield* runtime.create(Counter, "c")
        const outcomes = yield* Effect.forEach(
          Array.from({ length: 100 }, (_, i) => i + 1),
          (by) => runtime.send(Counter, "c", { _tag: "Add", by }),
          { concurrency: "unbounded" }
        )
        expect(outcomes.map((o) => o.seqNr).sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i + 2))
        const final = (yield* runtime.inspect(Counter, "c")).state
        expect(final.count).toBe(5050)
        expect([...final.trail].sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1))
        const history = yield* runtime.history(Counter, "c")
        expect(history.map((h) => h.seqNr)).toEqual(Array.from({ length: 101 }, (_, i) => i + 1))
      }))

    it.scoped("runs different instances concurrently and keeps them apart", () =>
      Effect.gen(function*() {
        const { runtime } = yield* setup()
        const ids = Array.from({ length: 20 }, (_, i) => `c-${i}`)
        yield* Effect.forEach(ids, (id) => runtime.create(Counter, id), { concurrency: "unbounded" })
        yield* Effect.forEach(
          ids.flatMap((id, i) => Array.from({ length: 5 }, () => ({ id, by: i }))),
          ({ by, id }) => runtime.send(Counter, id, { _tag: "Add", by }),
          { concurrency: "unbounded" }
        )
        for (const [i, id] of ids.entries()) {
          expect((yield* runtime.inspect(Counter, id)).state.count).toBe(5 * i)
        }
        const listed = yield* Stream.runCollect(runtime.instances(Counter))
        expect([...Chunk.toReadonlyArray(listed)].sort()).toEqual([...ids].sort())
      }))

    it.scoped("two runtimes on one store: conflicts are retried, nothing lost, nothing duplicated", () =>
      Effect.gen(function*() {
        const { runtime: a, store } = yield* setup()
        const { runtime: b } = yield* runtimeOn(store, { machines: [Order, Counter], retry })
        yield* a.create(Counter, "shared")
        // Both caches hold seqNr 1 now, so b's first write conflicts and must catch up.
        yield* b.inspect(Counter, "shared")
        const sends = Array.from({ length: 60 }, (_, i) => ({ runtime: i % 2 === 0 ? a : b, by: i + 1 }))
        yield* Effect.forEach(sends, ({ by, runtime }) => runtime.send(Counter, "shared", { _tag: "Add", by }), {
          concurrency: "unbounded"
        })
        const history = yield* a.history(Counter, "shared")
        expect(history.map((h) => h.seqNr)).toEqual(Array.from({ length: 61 }, (_, i) => i + 1))
        const added = history.flatMap((h) => (h._tag === "Event" && h.event._tag === "Add" ? [h.event.by] : []))
        expect([...added].sort((x, y) => x - y)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1))
        expect(new Set(history.map((h) => h.metadata.node))).toEqual(new Set([a.nodeId, b.nodeId]))
        for (const runtime of [a, b]) {
          const { state } = yield* runtime.inspect(Counter, "shared")
          expect(state.count).toBe(1830)
        }
      }))

    it.scoped("re-checks a rejection against the log when another runtime moved the instance", () =>
      Effect.gen(function*() {
        const { runtime: a, store } = yield* setup()
        const { runtime: b } = yield* runtimeOn(store, { machines: [Order, Counter], retry })
        yield* a.create(Order, "o1", pendingOrder("o1"))
        yield* b.inspect(Order, "o1") // b caches Pending
        yield* a.send(Order, "o1", { _tag: "Pay", amount: 3 })
        // In b's cache the order is still Pending, where Ship is invalid; the log says Paid.
        const shipped = yield* b.send(Order, "o1", { _tag: "Ship", tracking: "T" })
        expect(shipped).toEqual({ _tag: "Goto", state: { _tag: "Shipped", orderId: "o1", tracking: "T" }, seqNr: 3 })
      }))

    it.scoped("the default retry resolves a stale cache at once, without waiting on the clock", () =>
      Effect.gen(function*() {
        const { store } = yield* setup()
        // TestClock never moves here: a retry that slept would hang this test.
        const { runtime: a } = yield* runtimeOn(store, { machines: [Counter] })
        const { runtime: b } = yield* runtimeOn(store, { machines: [Counter] })
        yield* a.create(Counter, "c")
        yield* b.inspect(Counter, "c")
        yield* a.send(Counter, "c", { _tag: "Add", by: 1 })
        expect((yield* b.send(Counter, "c", { _tag: "Add", by: 2 })).seqNr).toBe(3)
        expect((yield* a.inspect(Counter, "c")).state.count).toBe(3)
      }))

    it.scoped("surfaces SequenceConflict when the retry schedule is exhausted", () =>
      Effect.gen(function*() {
        const { store } = yield* setup()
        const { runtime: a } = yield* runtimeOn(store, { machines: [Counter], retry: Schedule.stop })
        const { runtime: b } = yield* runtimeOn(store, { machines: [Counter], retry: Schedule.stop })
        yield* a.create(Counter, "c")
        yield* b.inspect(Counter, "c")
        yield* a.send(Counter, "c", { _tag: "Add", by: 1 })
        const conflict = yield* Effect.flip(b.send(Counter, "c", { _tag: "Add", by: 2 }))
        expect(conflict).toMatchObject({ _tag: "SequenceConflict", expected: 1, actual: 2 })
        // b caught up while failing: the next send goes through.
        expect((yield* b.send(Counter, "c", { _tag: "Add", by: 2 })).seqNr).toBe(3)
      }))

    it.scoped("recovers from snapshot + tail after a restart, any snapshot interval", () =>
      Effect.gen(function*() {
        for (const snapshotEvery of [0, 1, 3, 100]) {
          const store = yield* buildStore(backend)
          const { runtime } = yield* runtimeOn(store, { machines: [Counter], retry, snapshotEvery })
          yield* runtime.create(Counter, "c")
          for (let i = 1; i <= 10; i++) yield* runtime.send(Counter, "c", { _tag: "Add", by: i })
          const expected = yield* runtime.inspect(Counter, "c")
          const snapshot = yield* Effect.flatMap(EventStore.EventStore, (s) => s.loadSnapshot("counter", "c")).pipe(
            Effect.provide(store)
          )
          const snapshotSeqNr = snapshot._tag === "Some" ? snapshot.value.seqNr : 0
          expect(snapshotSeqNr).toBe(snapshotEvery === 0 ? 0 : snapshotEvery === 1 ? 11 : snapshotEvery === 3 ? 9 : 0)

          const { runtime: restarted } = yield* runtimeOn(store, { machines: [Counter], retry, snapshotEvery })
          expect(yield* restarted.inspect(Counter, "c")).toEqual(expected)
        }
      }))

    it.scoped("uses the snapshot instead of replaying what it covers", () =>
      Effect.gen(function*() {
        const { eventStore, runtime, store } = yield* setup({ snapshotEvery: 0 })
        yield* runtime.create(Counter, "c")
        for (let i = 1; i <= 4; i++) yield* runtime.send(Counter, "c", { _tag: "Add", by: i })
        expect(yield* runtime.saveSnapshot(Counter, "c")).toBe(5)
        // A snapshot that disagrees with the log proves recovery starts from it.
        const es = yield* eventStore
        const written = Option.getOrThrow(yield* es.loadSnapshot("counter", "c"))
        expect(written.seqNr).toBe(5)
        const planted: CounterState = { _tag: "Even", count: 1000, trail: [] }
        yield* es.saveSnapshot({
          ...written,
          seqNr: 6,
          state: { ...(written.state as object), value: Schema.encodeSync(Counter.stateSchema)(planted) }
        })
        yield* runtime.send(Counter, "c", { _tag: "Add", by: 2 }) // seqNr 6 is in the log after the plant
        const { runtime: restarted } = yield* runtimeOn(store, { machines: [Counter], retry, snapshotEvery: 0 })
        expect((yield* restarted.inspect(Counter, "c")).state.count).toBe(1000)
      }))

    it.scoped("discards a snapshot of another schema version and replays the whole log", () =>
      Effect.gen(function*() {
        const { eventStore, runtime, store } = yield* setup({ snapshotEvery: 0 })
        yield* runtime.create(Counter, "c")
        yield* runtime.send(Counter, "c", { _tag: "Add", by: 7 })
        const es = yield* eventStore
        yield* es.saveSnapshot({
          machine: "counter",
          instanceId: "c",
          seqNr: 2,
          state: { _tag: "Even", count: 1000, trail: [] },
          stopped: false,
          schemaVersion: 99,
          timestamp: 0
        })
        const { runtime: restarted } = yield* runtimeOn(store, { machines: [Counter], retry })
        expect((yield* restarted.inspect(Counter, "c")).state).toEqual({ _tag: "Odd", count: 7, trail: [7] })
      }))

    it.scoped("fails recovery with EventReplayError naming the seqNr when the log disagrees with the machine", () =>
      Effect.gen(function*() {
        const { eventStore, runtime, store } = yield* setup()
        yield* runtime.create(Counter, "c")
        const es = yield* eventStore
        const metadata = { timestamp: 0, source: "user", correlationId: null, node: null, commitId: null, timer: null } as const
        yield* es.append({
          machine: "counter",
          instanceId: "c",
          expectedSeqNr: 1,
          events: [{ tag: "Add", payload: { _tag: "Add", by: 1 }, stateTag: "Even", schemaVersion: 1, metadata }]
        })
        const { runtime: restarted } = yield* runtimeOn(store, { machines: [Counter], retry })
        const error = yield* Effect.flip(restarted.inspect(Counter, "c"))
        expect(error).toMatchObject({ _tag: "EventReplayError", seqNr: 2, expected: "Even", actual: "Odd" })
      }))

    it.scoped("fails with EventDecodeError naming machine, instance and seqNr for an undecodable row", () =>
      Effect.gen(function*() {
        const { eventStore, runtime, store } = yield* setup()
        yield* runtime.create(Counter, "c")
        const es = yield* eventStore
        const metadata = { timestamp: 0, source: "user", correlationId: null, node: null, commitId: null, timer: null } as const
        yield* es.append({
          machine: "counter",
          instanceId: "c",
          expectedSeqNr: 1,
          events: [{ tag: "Add", payload: { _tag: "Add", by: "x" }, stateTag: "Odd", schemaVersion: 1, metadata }]
        })
        const { runtime: restarted } = yield* runtimeOn(store, { machines: [Counter], retry })
        const error = yield* Effect.flip(restarted.inspect(Counter, "c"))
        expect(error).toMatchObject({ _tag: "EventDecodeError", machine: "counter", instanceId: "c", seqNr: 2 })
        expect((yield* Effect.flip(restarted.history(Counter, "c")))._tag).toBe("EventDecodeError")
      }))

    it.scoped("keeps at most cacheSize instances loaded and reloads evicted ones transparently", () =>
      Effect.gen(function*() {
        const { runtime } = yield* setup({ cacheSize: 2, snapshotEvery: 2 })
        const ids = ["a", "b", "c", "d", "e"]
        for (const id of ids) yield* runtime.create(Counter, id)
        for (let round = 1; round <= 3; round++) {
          for (const id of ids) yield* runtime.send(Counter, id, { _tag: "Add", by: round })
        }
        for (const id of ids) expect((yield* runtime.inspect(Counter, id)).state.count).toBe(6)
      }))

    it.scoped("reports a failing action as ActionFailed and keeps the event committed", () =>
      Effect.gen(function*() {
        const Fragile = Machine.make({
          name: "fragile",
          version: 1,
          state: Counter.stateSchema,
          event: Counter.eventSchema,
          initial: { _tag: "Even", count: 0, trail: [] },
          transitions: { Even: { Add: { to: "Odd", build: (s, e) => ({ count: s.count + e.by, trail: [] }) } } },
          entry: { Odd: () => Effect.fail("boom" as const) }
        })
        const store = yield* buildStore(backend)
        const { runtime } = yield* runtimeOn(store, { machines: [Fragile], retry })
        yield* runtime.create(Fragile, "f")
        const error = yield* Effect.flip(runtime.send(Fragile, "f", { _tag: "Add", by: 1 }))
        expect(error).toMatchObject({ _tag: "ActionFailed", seqNr: 2, state: "Odd", action: "entry", cause: "boom" })
        expect(yield* runtime.inspect(Fragile, "f")).toMatchObject({ seqNr: 2, state: { _tag: "Odd", count: 1 } })
      }))

    it.scoped("never fails a send because a snapshot write failed", () =>
      Effect.gen(function*() {
        const store = yield* buildStore(backend)
        const inner = EventStore.EventStore.pipe(Effect.provide(store))
        const failingSnapshots = Layer.effect(
          EventStore.EventStore,
          Effect.map(inner, (es) => ({
            ...es,
            append: (commit: EventStore.Commit) =>
              commit.snapshot !== undefined ? failPersistence : es.append(commit),
            saveSnapshot: () => failPersistence
          }))
        )
        const failing = yield* Layer.build(failingSnapshots)
        const { runtime } = yield* runtimeOn(failing, { machines: [Counter], retry, snapshotEvery: 1 })
        yield* runtime.create(Counter, "c")
        for (let i = 1; i <= 3; i++) yield* runtime.send(Counter, "c", { _tag: "Add", by: i })
        expect((yield* runtime.inspect(Counter, "c")).state.count).toBe(6)
        const snapshot = yield* Effect.flatMap(inner, (es) => es.loadSnapshot("counter", "c"))
        expect(snapshot._tag).toBe("None")
      }))
  })
}
