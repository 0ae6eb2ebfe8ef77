/**
 * The inspector on every backend: instance detail (summary, encoded state,
 * deadlines, timer rows, commands, lease), stored history pages, upcoming
 * timers, dead letters with re-drive and discard, firing a timer now (it is
 * delivered once, by a sweeper), cancelling it (it never fires), stopping an
 * instance; typed errors for unknown machines, instances and bad input.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Schedule, TestClock } from "effect"
import { FSMRuntime, Inspector, type SqlEventStore, TimeoutStore } from "effect-fsm"
import { Counter, Order } from "./fixtures/machines.js"
import { allBackends } from "./utils/backends.js"
import { eventually } from "./utils/eventually.js"
import { runtimeOn, withDurableTimeouts } from "./utils/runtime.js"

const minute = 60_000

/** Waits, moving TestClock 10 ms per look (so sweeps run, far from any other deadline), until the order is Cancelled. */
const cancelledSoon = (runtime: FSMRuntime.FSMRuntime["Type"], id: string) =>
  eventually(
    Effect.zipRight(
      TestClock.adjust("10 millis"),
      Effect.flatMap(runtime.inspect(Order, id), (view) =>
        view.state._tag === "Cancelled" ? Effect.void : Effect.fail(`${id} not fired yet`))
    )
  )

for (const backend of allBackends) {
  describe.skipIf(backend.skip !== undefined)(`Inspector on ${backend.name}`, () => {
    const setup = Effect.gen(function*() {
      const stores = (yield* Layer.build(backend.layer())) as Context.Context<SqlEventStore.Stores>
      const store = yield* withDurableTimeouts(stores, { pollInterval: "1 second", maxIdleInterval: "1 second" })
      const { runtime } = yield* runtimeOn(store, { machines: [Order, Counter], retry: Schedule.stop })
      const inspector = yield* Effect.provide(
        Inspector.make({ machines: [Order, Counter] }),
        Context.add(stores, FSMRuntime.FSMRuntime, runtime)
      )
      return { runtime, inspector, timers: Context.get(stores, TimeoutStore.TimeoutStore) }
    })

    it.scoped("instance detail: summary, encoded state, deadlines, timer rows, commands, lease; history pages", () =>
      Effect.gen(function*() {
        const { inspector, runtime } = yield* setup
        yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
        yield* TestClock.adjust(1000)
        yield* runtime.send(Order, "o1", { _tag: "Note", text: "<script>alert(1)</script>" })
        const detail = yield* inspector.instance("order", "o1")
        expect(detail.summary).toEqual({
          machine: "order",
          instanceId: "o1",
          stateTag: "Pending",
          seqNr: 2,
          enteredAt: 0,
          updatedAt: 1000,
          stopped: false
        })
        expect(detail.state).toEqual({ _tag: "Pending", orderId: "o1" })
        expect(detail.deadlines).toEqual([{ name: "payment", dueAt: 5 * minute }])
        expect(detail.timers.map((t) => [t.name, t.generation, t.dueAt, t.attempts])).toEqual([["payment", 1, 5 * minute, 0]])
        expect(detail.commands).toEqual([])
        expect(detail.lease).toEqual(Option.none())

        const first = yield* inspector.history("order", "o1", { limit: 1 })
        expect(first.entries.map((e) => [e.seqNr, e.tag])).toEqual([[1, "@created"]])
        expect(first.next).toEqual(Option.some(2))
        const second = yield* inspector.history("order", "o1", { fromSeqNr: 2, limit: 1 })
        expect(second.entries.map((e) => [e.seqNr, e.tag, e.payload, e.metadata.source])).toEqual([
          [2, "Note", { _tag: "Note", text: "<script>alert(1)</script>" }, "user"]
        ])
        const rest = yield* inspector.history("order", "o1", { fromSeqNr: 3 })
        expect(rest).toEqual({ entries: [], next: Option.none() })
        const decoded = yield* inspector.decodedHistory("order", "o1")
        expect(decoded.machine).toBe(Order)
        expect(decoded.entries.map((e) => e._tag)).toEqual(["Created", "Event"])

        expect(yield* inspector.counts("order")).toEqual([{ stateTag: "Pending", stopped: false, count: 1 }])
        yield* runtime.create(Order, "o2", { _tag: "Pending", orderId: "o2" }, { correlationId: "req-9" })
        yield* runtime.send(Order, "o1", { _tag: "Note", text: "again" }, { correlationId: "req-9" })
        expect((yield* inspector.byCorrelationId("order", "req-9")).map((row) => [row.instanceId, row.seqNr])).toEqual([["o1", 3], ["o2", 1]])
        expect(yield* inspector.byCorrelationId("order", "req-0")).toEqual([])
        expect(Option.map(yield* inspector.summary("order", "o2"), (row) => [row.stateTag, row.seqNr])).toEqual(Option.some(["Pending", 1]))
        expect(yield* inspector.summary("order", "missing")).toEqual(Option.none())
        expect((yield* Effect.flip(inspector.summary("nope", "o2")))._tag).toBe("MachineNotRegistered")
        expect((yield* Effect.flip(inspector.byCorrelationId("nope", "req-9")))._tag).toBe("MachineNotRegistered")
        const page = yield* inspector.instances({ machine: "order", limit: 10 })
        expect(page.instances.map((row) => row.instanceId)).toEqual(["o1", "o2"])
        expect(inspector.machines).toEqual(["order", "counter"])
      }))

    it.scoped("fire a timer now: the next sweep delivers it once; cancel one: it never fires; stop an instance", () =>
      Effect.gen(function*() {
        const { inspector, runtime } = yield* setup
        for (const id of ["o1", "o2", "o3"]) yield* runtime.create(Order, id, { _tag: "Pending", orderId: id })
        const upcoming = yield* inspector.upcomingTimers("order")
        expect(upcoming.map((t) => [t.instanceId, t.name, t.dueAt])).toEqual([
          ["o1", "payment", 5 * minute],
          ["o2", "payment", 5 * minute],
          ["o3", "payment", 5 * minute]
        ])
        expect(yield* inspector.upcomingTimers("order", { before: 5 * minute })).toEqual([])
        expect((yield* inspector.upcomingTimers("order", { limit: 1 })).length).toBe(1)

        expect(yield* inspector.fireTimer({ machine: "order", instanceId: "o1", name: "payment", generation: 1 })).toBe(true)
        // A wrong generation or name is not the armed timer.
        expect(yield* inspector.fireTimer({ machine: "order", instanceId: "o2", name: "payment", generation: 7 })).toBe(false)
        expect(yield* inspector.cancelTimer({ machine: "order", instanceId: "o2", name: "nope", generation: 1 })).toBe(false)
        expect(yield* inspector.cancelTimer({ machine: "order", instanceId: "o2", name: "payment", generation: 1 })).toBe(true)
        yield* cancelledSoon(runtime, "o1")
        expect((yield* runtime.history(Order, "o1")).map((e) => [e.seqNr, e.metadata.source])).toEqual([
          [1, "user"],
          [2, "timeout"]
        ])
        // Past every deadline: o2's cancelled timer never fires, o3's does.
        yield* TestClock.adjust(6 * minute)
        yield* cancelledSoon(runtime, "o3")
        expect((yield* runtime.inspect(Order, "o2")).state._tag).toBe("Pending")
        expect((yield* inspector.instance("order", "o2")).timers).toEqual([])

        const stopped = yield* inspector.stop("order", "o2")
        expect(stopped._tag).toBe("Stop")
        expect((yield* inspector.instance("order", "o2")).summary.stopped).toBe(true)
        expect((yield* Effect.flip(inspector.stop("order", "o2")))._tag).toBe("InstanceStopped")
      }))

    it.scoped("dead letters: listed with their last error, re-driven (due now) or discarded", () =>
      Effect.gen(function*() {
        const { inspector, runtime, timers } = yield* setup
        yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
        yield* runtime.create(Order, "o2", { _tag: "Pending", orderId: "o2" })
        for (const id of ["o1", "o2"]) {
          yield* timers.deadLetter({ machine: "order", instanceId: id, name: "payment", generation: 1 }, {
            error: `gave up on ${id}`,
            now: 10
          })
        }
        const letters = yield* inspector.deadLetters("order")
        expect(letters.timers.map((d) => [d.instanceId, d.lastError, d.failedAt])).toEqual([
          ["o1", "gave up on o1", 10],
          ["o2", "gave up on o2", 10]
        ])
        expect(letters.commands).toEqual([])
        yield* TestClock.adjust(1000)
        expect(yield* inspector.redriveTimer({ machine: "order", instanceId: "o1", name: "payment" })).toBe(true)
        expect(yield* inspector.redriveTimer({ machine: "order", instanceId: "o1", name: "payment" })).toBe(false)
        expect(yield* inspector.discardTimer({ machine: "order", instanceId: "o2", name: "payment" })).toBe(true)
        expect(yield* inspector.discardTimer({ machine: "order", instanceId: "o2", name: "payment" })).toBe(false)
        expect(yield* inspector.deadLetters("order")).toEqual({ timers: [], commands: [] })
        // Re-driven: due now, and fired by the sweeper.
        yield* cancelledSoon(runtime, "o1")
        expect((yield* runtime.inspect(Order, "o2")).state._tag).toBe("Pending")
        const command = { machine: "order", instanceId: "o1", seqNr: 1, index: 0 }
        expect(yield* inspector.redriveCommand(command)).toBe(false)
        expect(yield* inspector.discardCommand(command)).toBe(false)
      }))

    it.scoped("typed errors: unknown machine, unknown instance, bad ids and bad paging", () =>
      Effect.gen(function*() {
        const { inspector, runtime } = yield* setup
        yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
        const tag = <A, E extends { readonly _tag: string }>(effect: Effect.Effect<A, E>) =>
          Effect.map(Effect.flip(effect), (error) => error._tag)
        expect(yield* tag(inspector.instance("nope", "o1"))).toBe("MachineNotRegistered")
        expect(yield* tag(inspector.instance("order", "missing"))).toBe("InstanceNotFound")
        expect(yield* tag(inspector.instance("order", "s\uD800"))).toBe("InvalidInstanceId")
        expect(yield* tag(inspector.history("order", "missing"))).toBe("InstanceNotFound")
        expect(yield* tag(inspector.history("order", "o1", { limit: 0 }))).toBe("InvalidInput")
        expect(yield* tag(inspector.history("order", "o1", { fromSeqNr: Number.NaN }))).toBe("InvalidInput")
        expect(yield* tag(inspector.counts("nope"))).toBe("MachineNotRegistered")
        expect(yield* tag(inspector.instances({ machine: "nope", limit: 1 }))).toBe("MachineNotRegistered")
        expect(yield* tag(inspector.instances({ machine: "order", limit: -1 }))).toBe("InvalidQuery")
        expect(yield* tag(inspector.instances(null as never))).toBe("InvalidQuery")
        expect(yield* tag(inspector.upcomingTimers("order", { before: Number.NaN }))).toBe("InvalidInput")
        expect(yield* tag(inspector.deadLetters("nope"))).toBe("MachineNotRegistered")
        expect(yield* tag(inspector.fireTimer({ machine: "order", instanceId: "", name: "payment", generation: 1 }))).toBe(
          "InvalidInstanceId"
        )
        expect(yield* tag(inspector.redriveCommand({ machine: "nope", instanceId: "o1", seqNr: 1, index: 0 }))).toBe(
          "MachineNotRegistered"
        )
        expect(yield* tag(inspector.stop("order", "missing"))).toBe("InstanceNotFound")
      }))
  })
}
