/**
 * Timeout semantics, for both strategies on every backend, driven by
 * TestClock only.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Metric, Ref, Schedule, Schema, TestClock } from "effect"
import { Errors, EventStore, FSMRuntime, Machine, Metrics, TimeoutStore, TimeoutStrategy } from "effect-fsm"
import { Order } from "./fixtures/machines.js"
import { backends } from "./utils/backends.js"
import { buildStore, runtimeOn, withDurableTimeouts } from "./utils/runtime.js"
import { countingReads } from "./utils/countingReads.js"
import { eventually } from "./utils/eventually.js"

const retry = Schedule.recurs(100)

const ReservationState = Schema.Union(
  Schema.TaggedStruct("Held", { seat: Schema.String, extensions: Schema.Number }),
  Schema.TaggedStruct("Confirmed", { seat: Schema.String }),
  Schema.TaggedStruct("Expired", { seat: Schema.String })
)
const ReservationEvent = Schema.Union(
  Schema.TaggedStruct("Touch", {}),
  Schema.TaggedStruct("Extend", {}),
  Schema.TaggedStruct("Confirm", {}),
  Schema.TaggedStruct("Expire", {}),
  Schema.TaggedStruct("Remind", {})
)

/** A seat hold: expires after 10 minutes, reminds after 2; Extend re-enters (restarting both), Touch only stays. */
const Reservation = Machine.make({
  name: "reservation",
  version: 1,
  state: ReservationState,
  event: ReservationEvent,
  transitions: {
    Held: {
      Touch: Machine.stay,
      Remind: Machine.stay,
      Extend: { to: "Held", reenter: true, build: (s) => ({ seat: s.seat, extensions: s.extensions + 1 }) },
      Confirm: { to: "Confirmed", build: (s) => ({ seat: s.seat }) },
      Expire: { to: "Expired", build: (s) => ({ seat: s.seat }) }
    },
    Confirmed: { Touch: Machine.stay }
  },
  timeouts: {
    Held: {
      expire: { after: "10 minutes", event: { _tag: "Expire" } },
      remind: { after: (s) => (s.extensions > 0 ? "1 minute" : "2 minutes"), event: { _tag: "Remind" } }
    }
  }
})

const held = (seat: string) => ({ _tag: "Held", seat, extensions: 0 }) as const

const strategies = [
  { name: "in-process", durable: false, layer: TimeoutStrategy.layerInProcess({ retryBase: "1 second" }) },
  {
    name: "durable",
    durable: true,
    layer: TimeoutStrategy.layerDurable({
      pollInterval: "1 second",
      maxIdleInterval: "10 minutes",
      claimLease: "30 seconds",
      retryBase: "1 second"
    })
  }
] as const

const timeoutEvents = (history: ReadonlyArray<FSMRuntime.HistoryEntry<unknown, { readonly _tag: string }>>) =>
  history.filter((h) => h.metadata.source === "timeout").map((h) => [h.seqNr, h._tag === "Event" ? h.event._tag : h._tag])

for (const backend of backends) {
  for (const strategy of strategies) {
    describe(`timeouts: ${strategy.name} on ${backend.name}`, () => {
      /** A runtime over `store` using this strategy (the durable one needs the store's TimeoutStore). */
      const runtimeWith = (store: Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>, nodeId?: string) =>
        Effect.flatMap(
          Layer.build(Layer.provide(strategy.layer, Layer.succeedContext(store))),
          (strategyContext) =>
            runtimeOn(
              Context.merge(store, strategyContext) as Context.Context<EventStore.EventStore>,
              { machines: [Order, Reservation], retry, ...(nodeId === undefined ? {} : { nodeId }) }
            )
        ).pipe(Effect.map(({ runtime }) => runtime))

      const setup = Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const runtime = yield* runtimeWith(store)
        return { store, runtime }
      })

      it.scoped("PaymentTimeout fires at 5 minutes and not before", () =>
        Effect.gen(function*() {
          const { runtime } = yield* setup
          yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
          expect((yield* runtime.inspect(Order, "o1")).timeouts).toEqual([{ name: "payment", dueAt: 300_000 }])
          yield* TestClock.adjust("4 minutes")
          yield* TestClock.adjust("59 seconds")
          yield* eventually(Effect.void)
          expect((yield* runtime.inspect(Order, "o1")).state._tag).toBe("Pending")
          yield* TestClock.adjust("1 second")
          const state = yield* eventually(
            Effect.filterOrFail(runtime.inspect(Order, "o1"), (v) => v.state._tag === "Cancelled", () => "still pending")
          )
          expect(state.state).toEqual({ _tag: "Cancelled", orderId: "o1", reason: "unpaid" })
          const history = yield* runtime.history(Order, "o1")
          expect(timeoutEvents(history)).toEqual([[2, "PaymentTimeout"]])
          expect(history[1]!.metadata.timestamp).toBeGreaterThanOrEqual(300_000)
        }))

      it.scoped("a stay at minute 4 does not push the deadline", () =>
        Effect.gen(function*() {
          const { runtime } = yield* setup
          yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
          yield* TestClock.adjust("4 minutes")
          yield* runtime.send(Order, "o1", { _tag: "Note", text: "customer called" })
          expect((yield* runtime.inspect(Order, "o1")).timeouts).toEqual([{ name: "payment", dueAt: 300_000 }])
          yield* TestClock.adjust("1 minute")
          yield* eventually(
            Effect.filterOrFail(runtime.inspect(Order, "o1"), (v) => v.state._tag === "Cancelled", () => "still pending")
          )
        }))

      it.scoped("paying at minute 4 cancels it", () =>
        Effect.gen(function*() {
          const { runtime, store } = yield* setup
          yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
          yield* TestClock.adjust("4 minutes")
          yield* runtime.send(Order, "o1", { _tag: "Pay", amount: 10 })
          expect((yield* runtime.inspect(Order, "o1")).timeouts).toEqual([])
          if (strategy.durable) {
            const timers = yield* Effect.flatMap(TimeoutStore.TimeoutStore, (t) => t.pending("order", "o1")).pipe(
              Effect.provide(store)
            )
            expect(timers).toEqual([])
          }
          yield* TestClock.adjust("10 minutes")
          yield* eventually(Effect.void)
          expect((yield* runtime.inspect(Order, "o1")).state._tag).toBe("Paid")
          expect(timeoutEvents(yield* runtime.history(Order, "o1"))).toEqual([])
        }))

      it.scoped("an explicit re-entry restarts the timers; a plain stay keeps them", () =>
        Effect.gen(function*() {
          const { runtime } = yield* setup
          yield* runtime.create(Reservation, "r", held("A1"))
          expect((yield* runtime.inspect(Reservation, "r")).timeouts).toEqual([
            { name: "expire", dueAt: 600_000 },
            { name: "remind", dueAt: 120_000 }
          ])
          yield* TestClock.adjust("3 minutes") // the reminder fires at 2 minutes (a stay)
          yield* eventually(
            Effect.filterOrFail(runtime.history(Reservation, "r"), (h) => timeoutEvents(h).length === 1, () => "no reminder")
          )
          yield* runtime.send(Reservation, "r", { _tag: "Touch" })
          expect((yield* runtime.inspect(Reservation, "r")).timeouts).toEqual([{ name: "expire", dueAt: 600_000 }])
          yield* runtime.send(Reservation, "r", { _tag: "Extend" }) // at 3 minutes: expire 13, remind 4
          expect((yield* runtime.inspect(Reservation, "r")).timeouts).toEqual([
            { name: "expire", dueAt: 780_000 },
            { name: "remind", dueAt: 240_000 }
          ])
          yield* TestClock.adjust("8 minutes") // 11 minutes: the old expiry (10) has passed, the new one (13) not
          yield* eventually(
            Effect.filterOrFail(runtime.history(Reservation, "r"), (h) => timeoutEvents(h).length === 2, () => "no reminder")
          )
          expect((yield* runtime.inspect(Reservation, "r")).state._tag).toBe("Held")
          yield* TestClock.adjust("2 minutes")
          yield* eventually(
            Effect.filterOrFail(runtime.inspect(Reservation, "r"), (v) => v.state._tag === "Expired", () => "held")
          )
          expect(timeoutEvents(yield* runtime.history(Reservation, "r"))).toEqual([
            [2, "Remind"],
            [5, "Remind"],
            [6, "Expire"]
          ])
        }))

      it.scoped("survives a restart: the timeout fires once, at its original deadline", () =>
        Effect.gen(function*() {
          const { store } = yield* setup
          yield* Effect.scoped(Effect.gen(function*() {
            const first = yield* runtimeWith(store)
            yield* first.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
            yield* TestClock.adjust("2 minutes")
          }))
          // The first runtime and its timers are gone. A new one starts at minute 2.
          const second = yield* runtimeWith(store)
          // In-process timers re-arm when the instance is loaded; the durable sweeper needs nothing.
          if (!strategy.durable) yield* second.inspect(Order, "o1")
          yield* TestClock.adjust("2 minutes")
          yield* eventually(Effect.void)
          expect((yield* second.inspect(Order, "o1")).state._tag).toBe("Pending")
          yield* TestClock.adjust("1 minute")
          yield* eventually(
            Effect.filterOrFail(second.inspect(Order, "o1"), (v) => v.state._tag === "Cancelled", () => "still pending")
          )
          yield* TestClock.adjust("10 minutes")
          yield* eventually(Effect.void)
          const history = yield* second.history(Order, "o1")
          expect(timeoutEvents(history)).toEqual([[2, "PaymentTimeout"]])
          expect(history[1]!.metadata.timestamp).toBe(300_000)
        }))

      it.scoped("a timeout whose event is now rejected is completed, not retried", () =>
        Effect.gen(function*() {
          const { runtime, store } = yield* setup
          yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
          yield* runtime.create(Order, "o2", { _tag: "Pending", orderId: "o2" })
          yield* runtime.stop(Order, "o1")
          const rejectedBefore = (yield* Metric.value(Metrics.timeoutsRejected)).count
          yield* TestClock.adjust("6 minutes")
          yield* eventually(
            Effect.filterOrFail(runtime.inspect(Order, "o2"), (v) => v.state._tag === "Cancelled", () => "pending")
          )
          expect((yield* runtime.history(Order, "o1")).length).toBe(2)
          if (strategy.durable) {
            // Stopping cancelled the row in the stop's own commit, so nothing was even claimed.
            const timers = yield* Effect.flatMap(TimeoutStore.TimeoutStore, (t) => t.pending("order", "o1")).pipe(
              Effect.provide(store)
            )
            expect(timers).toEqual([])
          }
          yield* TestClock.adjust("1 hour")
          yield* eventually(Effect.void)
          expect((yield* Metric.value(Metrics.timeoutsRejected)).count).toBe(rejectedBefore)
          expect((yield* runtime.history(Order, "o1")).length).toBe(2)
        }))
    })
  }

  describe(`durable timeouts on ${backend.name}`, () => {
    const durableRuntime = (
      store: Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>,
      options: TimeoutStrategy.DurableOptions = {}
    ) =>
      Effect.flatMap(withDurableTimeouts(store, options), (context) =>
        runtimeOn(context as Context.Context<EventStore.EventStore>, { machines: [Order, Reservation], retry })).pipe(
          Effect.map(({ runtime }) => runtime)
        )

    const timeoutStore = (store: Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>) =>
      Effect.provide(TimeoutStore.TimeoutStore, store)

    it.scoped("a delivered timeout runs the exit action of the state it left and the entry action of the state it entered", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const ran = yield* Ref.make<ReadonlyArray<string>>([])
        const record = (what: string) => Ref.update(ran, (all) => [...all, what])
        const Alarm = Machine.make({
          name: "alarm",
          version: 1,
          state: Schema.Union(Schema.TaggedStruct("Armed", {}), Schema.TaggedStruct("Rung", {})),
          event: Schema.Union(Schema.TaggedStruct("Ring", {})),
          transitions: { Armed: { Ring: "Rung" } },
          timeouts: { Armed: { ring: { after: "1 minute", event: { _tag: "Ring" } } } },
          exit: { Armed: () => record("exit Armed") },
          entry: { Rung: () => record("entry Rung") }
        })
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const context = yield* withDurableTimeouts(store)
        const { runtime } = yield* runtimeOn(context as Context.Context<EventStore.EventStore>, { machines: [Alarm], retry })
        yield* runtime.create(Alarm, "a", { _tag: "Armed" })
        yield* TestClock.adjust("1 minute")
        yield* eventually(Effect.filterOrFail(Ref.get(ran), (all) => all.length === 2, () => "actions not run"))
        expect(yield* Ref.get(ran)).toEqual(["exit Armed", "entry Rung"])
        expect((yield* runtime.inspect(Alarm, "a")).state._tag).toBe("Rung")
      }))

    it.scoped("a sweeper idling on a long interval is woken by a deadline armed before its next poll", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const runtime = yield* durableRuntime(store, { pollInterval: "1 second", maxIdleInterval: "1 hour", jitter: 0 })
        // Nothing to do for a while: the idle interval doubles up to an hour.
        for (let i = 0; i < 14; i++) {
          yield* TestClock.adjust("10 minutes")
          yield* eventually(Effect.void)
        }
        const createdAt = yield* TestClock.currentTimeMillis
        yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
        // Due in 5 minutes, long before the hour the sweeper planned to sleep: the commit's arming wakes it.
        yield* TestClock.adjust("5 minutes")
        const fired = yield* eventually(
          Effect.filterOrFail(runtime.inspect(Order, "o1"), (v) => v.state._tag === "Cancelled", () => "still pending")
        )
        expect(fired.state._tag).toBe("Cancelled")
        const history = yield* runtime.history(Order, "o1")
        expect(timeoutEvents(history)).toEqual([[2, "PaymentTimeout"]])
        expect(history[1]!.metadata.timestamp).toBe(createdAt + 300_000)
      }))

    it.scoped("an API-only node (sweep: false) writes timer rows and fires none; a sweeping node fires them", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const api = yield* durableRuntime(store, { sweep: false })
        yield* api.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
        expect((yield* (yield* timeoutStore(store)).pending("order", "o1")).map((t) => t.name)).toEqual(["payment"])
        yield* TestClock.adjust("10 minutes")
        yield* eventually(Effect.void)
        expect((yield* api.inspect(Order, "o1")).state._tag).toBe("Pending")
        yield* durableRuntime(store)
        yield* TestClock.adjust("1 second")
        yield* eventually(
          Effect.filterOrFail(Effect.zipRight(api.evictAll, api.inspect(Order, "o1")), (v) => v.state._tag === "Cancelled", () => "pending")
        )
        expect(timeoutEvents(yield* api.history(Order, "o1"))).toEqual([[2, "PaymentTimeout"]])
        const invalid = yield* Effect.flip(Layer.build(TimeoutStrategy.layerDurable({ sweep: "no" as never })).pipe(
          Effect.provide(store)
        ))
        expect(invalid._tag).toBe("InvalidConfiguration")
      }))

    it.scoped("fires a timer of an instance no node has loaded", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const writer = yield* durableRuntime(store)
        yield* writer.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
        const timers = yield* (yield* timeoutStore(store)).pending("order", "o1")
        expect(timers).toMatchObject([{ name: "payment", generation: 1, dueAt: 300_000, stateTag: "Pending", attempts: 0 }])
        const reader = yield* durableRuntime(store)
        yield* reader.evictAll
        yield* writer.evictAll
        yield* TestClock.adjust("5 minutes")
        yield* eventually(
          Effect.filterOrFail(reader.inspect(Order, "o1"), (v) => v.state._tag === "Cancelled", () => "pending")
        )
        expect(timeoutEvents(yield* reader.history(Order, "o1"))).toEqual([[2, "PaymentTimeout"]])
        expect(yield* (yield* timeoutStore(store)).pending("order", "o1")).toEqual([])
      }))

    it.scoped("a claimed batch of timers is loaded with one recoveryBatch: no recovery or catch-up read per timer", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const writer = yield* durableRuntime(store, { sweep: false })
        const ids = Array.from({ length: 12 }, (_, i) => `b${i}`)
        for (const id of ids) yield* writer.create(Order, id, { _tag: "Pending", orderId: id })
        // The sweeping node's store counts the reads it makes.
        const { reads, store: counted } = countingReads(store)
        const sweeper = yield* durableRuntime(counted, { pollInterval: "1 second", concurrency: 16 })
        yield* TestClock.adjust("5 minutes")
        yield* eventually(
          Effect.filterOrFail(
            Effect.zipRight(writer.evictAll, Effect.forEach(ids, (id) => writer.inspect(Order, id))),
            (views) => views.every((v) => v.state._tag === "Cancelled"),
            () => "pending"
          )
        )
        for (const id of ids) expect(timeoutEvents(yield* writer.history(Order, id))).toEqual([[2, "PaymentTimeout"]])
        expect(reads).toEqual({ batches: 1, batched: 12, snapshots: 0, pages: 0 })
        // The swept instances stay cached on the sweeping node.
        expect((yield* sweeper.inspect(Order, "b0")).state._tag).toBe("Cancelled")
      }))

    it.scoped("a batch read that is already behind the log never drops a live timer: the delivery catches up before calling it stale", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const writer = yield* durableRuntime(store, { sweep: false })
        // r1 is re-entered (its timers re-armed as generation 2); r2 keeps generation 1.
        yield* writer.create(Reservation, "r1", held("A1"))
        yield* writer.create(Reservation, "r2", held("A2"))
        yield* writer.send(Reservation, "r1", { _tag: "Extend" })
        // The sweeping node's batch read sees r1 as it was before the re-entry,
        // as if the re-entry had committed just after that read.
        const inner = Context.get(store, EventStore.EventStore)
        const behind = Context.add(store, EventStore.EventStore, {
          ...inner,
          recoveryBatch: (machine, instanceIds, limit) =>
            Effect.map(inner.recoveryBatch(machine, instanceIds, limit), (recoveries) =>
              recoveries.map((r) => r.instanceId === "r1" ? { ...r, events: r.events.slice(0, 1) } : r))
        })
        // Every timer due before the sweeper starts: its first poll claims them as one batch.
        yield* TestClock.adjust("11 minutes")
        yield* durableRuntime(behind, { pollInterval: "1 second" })
        yield* TestClock.adjust("1 second")
        yield* eventually(
          Effect.filterOrFail(
            Effect.zipRight(writer.evictAll, Effect.forEach(["r1", "r2"], (id) => writer.inspect(Reservation, id))),
            (views) => views.every((v) => v.state._tag === "Expired"),
            () => "pending"
          )
        )
        // Both of r1's generation-2 timers fired: the reminder first (it is due first), then the expiry.
        expect(timeoutEvents(yield* writer.history(Reservation, "r1"))).toEqual([[3, "Remind"], [4, "Expire"]])
      }))

    it.scoped("a timer of an instance the sweeping node has cached fires without reading the instance again", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const { reads, store: counted } = countingReads(store)
        const runtime = yield* durableRuntime(counted, { pollInterval: "1 second" })
        const ids = Array.from({ length: 12 }, (_, i) => `c${i}`)
        // Created here, so cached here: the node's own writes are all the log holds.
        for (const id of ids) yield* runtime.create(Order, id, { _tag: "Pending", orderId: id })
        const before = { ...reads }
        yield* TestClock.adjust("5 minutes")
        // Waited for through `history`, which reads the log as a stream, not through the counted reads.
        yield* eventually(
          Effect.filterOrFail(
            Effect.forEach(ids, (id) => Effect.map(runtime.history(Order, id), timeoutEvents)),
            (all) => all.every((events) => events.length === 1),
            () => "pending"
          )
        )
        for (const id of ids) expect(timeoutEvents(yield* runtime.history(Order, id))).toEqual([[2, "PaymentTimeout"]])
        // No batch load (all cached) and no catch-up page per timer.
        expect(reads).toEqual(before)
        expect((yield* runtime.inspect(Order, "c0")).state._tag).toBe("Cancelled")
      }))

    it.scoped("a cached instance behind the log, with the timer still armed there, is delivered on the log's state: its commit conflicts and the retry decides on the log", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const sweeper = yield* durableRuntime(store, { pollInterval: "1 second" })
        const other = yield* durableRuntime(store, { sweep: false })
        yield* sweeper.create(Reservation, "r", held("C3"))
        // Another node moves the instance on without touching its timers (a stay): the sweeper's cache is behind.
        yield* TestClock.adjust("1 minute")
        yield* other.send(Reservation, "r", { _tag: "Touch" })
        const conflicts = (yield* Metric.value(Metrics.conflicts)).count
        // The reminder (armed in the cached state too) comes due.
        yield* TestClock.adjust("1 minute")
        yield* eventually(
          Effect.filterOrFail(
            Effect.map(other.history(Reservation, "r"), timeoutEvents),
            (events) => events.length === 1,
            () => "not yet delivered"
          )
        )
        // Written once, after the other node's event, and only after the optimistic commit conflicted.
        expect(timeoutEvents(yield* other.history(Reservation, "r"))).toEqual([[3, "Remind"]])
        expect((yield* Metric.value(Metrics.conflicts)).count - conflicts).toBe(1)
        expect((yield* TimeoutStore.TimeoutStore.pipe(Effect.flatMap((t) => t.pending("reservation", "r")), Effect.provide(store)))
          .map((t) => t.name)).toEqual(["expire"])
      }))

    it.scoped("drops a stale generation: the state was left and re-entered before delivery", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const timers = yield* timeoutStore(store)
        yield* Effect.scoped(Effect.flatMap(durableRuntime(store), (first) => first.create(Reservation, "r", held("B2"))))
        // At 10 minutes a node claims both generation-1 timers and stalls.
        yield* TestClock.adjust("10 minutes")
        const claimed = yield* timers.claimDue({
          machines: ["reservation"],
          now: 600_000,
          limit: 10,
          nodeId: "stalled",
          claimUntil: 10_000_000
        })
        expect(claimed.map((t) => `${t.name}@${t.generation}`).sort()).toEqual(["expire@1", "remind@1"])
        // Meanwhile another node re-enters Held (generation 2), which replaces the rows.
        const runtime = yield* durableRuntime(store)
        yield* runtime.send(Reservation, "r", { _tag: "Extend" })
        // The stalled node finally delivers its generation-1 expiry: refused, nothing written.
        const result = yield* Effect.flatMap(EventStore.EventStore, (es) =>
          es.append({
            machine: "reservation",
            instanceId: "r",
            expectedSeqNr: 2,
            events: [{
              tag: "Expire",
              payload: { _tag: "Expire" },
              stateTag: "Expired",
              schemaVersion: 1,
              metadata: { timestamp: 600_000, source: "timeout", correlationId: null, node: "stalled", commitId: null, timer: "expire" }
            }],
            timers: { cancelAll: true, schedule: [], fired: { name: "expire", generation: 1 } }
          })).pipe(Effect.provide(store as Context.Context<EventStore.EventStore>), Effect.flip)
        expect(result).toBeInstanceOf(Errors.StaleTimer)
        expect((yield* runtime.history(Reservation, "r")).length).toBe(2)
        // The live generation-2 timers are untouched and fire on time.
        expect((yield* timers.pending("reservation", "r")).map((t) => `${t.name}@${t.generation}@${t.dueAt}`).sort())
          .toEqual(["expire@2@1200000", "remind@2@660000"])
        yield* TestClock.adjust("10 minutes")
        yield* eventually(
          Effect.filterOrFail(runtime.inspect(Reservation, "r"), (v) => v.state._tag === "Expired", () => "held")
        )
        expect(timeoutEvents(yield* runtime.history(Reservation, "r"))).toEqual([[3, "Remind"], [4, "Expire"]])
      }))

    it.scoped("a crashed node's claim is taken over after the lease: still exactly once", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const timers = yield* timeoutStore(store)
        const ids = Array.from({ length: 20 }, (_, i) => `o${i}`)
        yield* Effect.scoped(Effect.gen(function*() {
          const doomed = yield* durableRuntime(store)
          yield* Effect.forEach(ids, (id) => doomed.create(Order, id, { _tag: "Pending", orderId: id }), { discard: true })
        }))
        yield* TestClock.adjust("5 minutes")
        // The crashed node claimed every due timer and died before delivering.
        const claimed = yield* timers.claimDue({
          machines: ["order"],
          now: 300_000,
          limit: 100,
          nodeId: "crashed",
          claimUntil: 330_000
        })
        expect(claimed.length).toBe(20)
        const survivor = yield* durableRuntime(store)
        yield* TestClock.adjust("20 seconds") // lease still held
        yield* eventually(Effect.void)
        expect((yield* survivor.inspect(Order, "o0")).state._tag).toBe("Pending")
        yield* TestClock.adjust("15 seconds") // lease expired
        for (const id of ids) {
          yield* eventually(
            Effect.filterOrFail(survivor.inspect(Order, id), (v) => v.state._tag === "Cancelled", () => "pending")
          )
        }
        yield* TestClock.adjust("1 hour")
        yield* eventually(Effect.void)
        for (const id of ids) {
          expect(timeoutEvents(yield* survivor.history(Order, id))).toEqual([[2, "PaymentTimeout"]])
        }
      }))

    it.scoped("three nodes fire 1,000 due timers exactly once each (counted from the logs)", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const nodes = [
          yield* durableRuntime(store, { batchSize: 25 }),
          yield* durableRuntime(store, { batchSize: 25 }),
          yield* durableRuntime(store, { batchSize: 25 })
        ]
        const ids = Array.from({ length: 1000 }, (_, i) => `o${i}`)
        yield* Effect.forEach(ids, (id, i) => nodes[i % 3]!.create(Order, id, { _tag: "Pending", orderId: id }), {
          concurrency: 10,
          discard: true
        })
        yield* TestClock.adjust("5 minutes")
        yield* eventually(
          Effect.filterOrFail(
            Effect.flatMap(TimeoutStore.TimeoutStore, (t) => t.nextDueAt(["order"])).pipe(Effect.provide(store)),
            (next) => next._tag === "None",
            () => "timers left"
          )
        )
        const fired = yield* Effect.forEach(ids, (id) => Effect.map(nodes[0]!.history(Order, id), timeoutEvents))
        expect(fired.every((events) => events.length === 1 && events[0]![1] === "PaymentTimeout")).toBe(true)
      }))

    it.scoped("failing deliveries retry with backoff, then dead-letter; a dead letter can be re-driven", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const failing = yield* Ref.make(true)
        const inner = Context.get(store, EventStore.EventStore)
        const flaky = Context.add(store, EventStore.EventStore, {
          ...inner,
          append: (commit) =>
            Effect.flatMap(Ref.get(failing), (fail) =>
              fail && commit.events.some((e) => e.metadata.source === "timeout")
                ? Effect.fail(new Errors.PersistenceError({ operation: "append", reason: "disk on fire (test)" }))
                : inner.append(commit))
        })
        const runtime = yield* durableRuntime(flaky, { maxAttempts: 3, retryBase: "10 seconds" })
        yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
        const timers = yield* timeoutStore(store)
        yield* TestClock.adjust("5 minutes")
        yield* eventually(
          Effect.filterOrFail(timers.pending("order", "o1"), (t) => t[0]?.attempts === 1, () => "no attempt yet")
        )
        expect((yield* timers.pending("order", "o1"))[0]).toMatchObject({ attempts: 1, dueAt: 310_000 })
        expect((yield* timers.pending("order", "o1"))[0]!.lastError).toContain("disk on fire")
        yield* TestClock.adjust("10 seconds")
        yield* eventually(
          Effect.filterOrFail(timers.pending("order", "o1"), (t) => t[0]?.attempts === 2, () => "no second attempt")
        )
        yield* TestClock.adjust("20 seconds")
        const letters = yield* eventually(
          Effect.filterOrFail(timers.deadLetters("order"), (d) => d.length === 1, () => "not dead-lettered")
        )
        expect(letters[0]).toMatchObject({ instanceId: "o1", name: "payment", attempts: 3 })
        expect(letters[0]!.lastError).toContain("disk on fire")
        expect(yield* timers.pending("order", "o1")).toEqual([])
        expect((yield* runtime.inspect(Order, "o1")).state._tag).toBe("Pending")

        yield* Ref.set(failing, false)
        const now = yield* TestClock.currentTimeMillis
        expect(yield* timers.redrive({ machine: "order", instanceId: "o1", name: "payment" }, now)).toBe(true)
        expect(yield* timers.deadLetters("order")).toEqual([])
        // A re-drive wakes no sweeper: the row is found at the next poll,
        // at the latest after this test's idle interval (10 minutes).
        yield* TestClock.adjust("11 minutes")
        yield* eventually(
          Effect.filterOrFail(runtime.inspect(Order, "o1"), (v) => v.state._tag === "Cancelled", () => "pending")
        )
        expect(timeoutEvents(yield* runtime.history(Order, "o1"))).toEqual([[2, "PaymentTimeout"]])
      }))
  })
}
