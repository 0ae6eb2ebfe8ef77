/**
 * Spans and metrics: each metric of `Metrics` moves when the thing it counts
 * happens (read before and after with `Metric.value`), and the runtime's
 * operations, recoveries, commits, sweeps and lease acquisitions are spans
 * with their machine, instance and seqNr, nested as the data path runs.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Metric, Option, Schema, TestClock, Tracer } from "effect"
import {
  Errors,
  EventStore,
  LeaseStore,
  LockingStrategy,
  Machine,
  Metrics,
  TimeoutStore
} from "effect-fsm"
import * as Statement from "@effect/sql/Statement"
import { Order } from "./fixtures/machines.js"
import { sqlite } from "./utils/backends.js"
import { eventually } from "./utils/eventually.js"
import { runtimeOn, withDurableTimeouts } from "./utils/runtime.js"

type Stores = EventStore.EventStore | TimeoutStore.TimeoutStore | LeaseStore.LeaseStore

const memoryStore = Layer.build(EventStore.layerMemory) as Effect.Effect<Context.Context<Stores>, never, never>

/** The value of a counter, with its tags in the order the engine records them. */
const countOf = (metric: Metric.Metric.Counter<number>, ...tags: ReadonlyArray<readonly [string, string]>) =>
  Effect.map(Metric.value(tags.reduce((m, [key, value]) => Metric.tagged(m, key, value), metric)), (state) => state.count)

const observationsOf = (metric: Metric.Metric.Histogram<number>, ...tags: ReadonlyArray<readonly [string, string]>) =>
  Effect.map(Metric.value(tags.reduce((m, [key, value]) => Metric.tagged(m, key, value), metric)), (state) => state.count)

/** How much `read` moved while `body` ran. */
const delta = <A, E, R>(read: Effect.Effect<number>, body: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const before = yield* read
    const result = yield* body
    return [(yield* read) - before, result] as const
  })

const order = ["machine", "order"] as const
const outcome = (tag: string) => ["outcome", tag] as const

/** A tracer that keeps every span it starts (the native tracer's spans). */
const recordingTracer = Effect.map(Effect.tracer, (native) => {
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (...args) => {
      const span = native.span(...args)
      spans.push(span)
      return span
    },
    context: native.context
  })
  const named = (name: string) => spans.filter((span) => span.name === name)
  const parentOf = (span: Tracer.Span) => Option.getOrUndefined(span.parent)
  /** Whether `span` is (transitively) inside a span named `ancestor`. */
  const inside = (span: Tracer.Span, ancestor: string): boolean => {
    let at = parentOf(span)
    while (at !== undefined) {
      if (at._tag === "Span" && at.name === ancestor) return true
      at = at._tag === "Span" ? parentOf(at) : undefined
    }
    return false
  }
  return { spans, tracer, named, inside }
})

/** A machine whose state can become unstorable (NaN does not survive JSON). */
const GaugeState = Schema.Union(Schema.TaggedStruct("Reading", { value: Schema.Number }))
const GaugeEvent = Schema.Union(Schema.TaggedStruct("Set", { value: Schema.Number }), Schema.TaggedStruct("Break", {}))
const Gauge = Machine.make({
  name: "obs-gauge",
  version: 1,
  state: GaugeState,
  event: GaugeEvent,
  transitions: {
    Reading: {
      Set: { to: "Reading", build: (_, e) => ({ value: e.value }) },
      Break: { to: "Reading", build: () => ({ value: Number.NaN }) }
    }
  }
})
const gauge = ["machine", "obs-gauge"] as const

/** A machine that, once created, pokes instance "t" of `Target`, which refuses pokes while Closed. */
const Target = Machine.make({
  name: "obs-target",
  version: 1,
  state: Schema.Union(Schema.TaggedStruct("Closed", {}), Schema.TaggedStruct("Open", {})),
  event: Schema.Union(Schema.TaggedStruct("Poke", {})),
  transitions: { Open: { Poke: Machine.stay } }
})
const Poker = Machine.make({
  name: "obs-poker",
  version: 1,
  state: Schema.Union(Schema.TaggedStruct("Poking", {})),
  event: Schema.Union(Schema.TaggedStruct("Noop", {})),
  transitions: { Poking: { Noop: Machine.stay } },
  commands: { Poking: () => [Machine.sendTo(Target, "t", { _tag: "Poke" })] }
})

describe("Metrics", () => {
  it.scoped("fsm_transitions counts each outcome by machine; a rejection is counted once", () =>
    Effect.gen(function*() {
      const { runtime } = yield* runtimeOn(yield* memoryStore, { machines: [Order] })
      const [gotos] = yield* delta(
        countOf(Metrics.transitions, order, outcome("Goto")),
        Effect.zipRight(
          runtime.create(Order, "t", { _tag: "Pending", orderId: "t" }),
          runtime.send(Order, "t", { _tag: "Pay", amount: 5 })
        )
      )
      expect(gotos).toBe(2) // the create and the Pay
      const [stays] = yield* delta(
        countOf(Metrics.transitions, order, outcome("Stay")),
        runtime.send(Order, "t", { _tag: "Note", text: "hi" })
      )
      expect(stays).toBe(1)
      const [rejected] = yield* delta(
        countOf(Metrics.transitions, order, outcome("rejected")),
        Effect.zipRight(
          Effect.flip(runtime.send(Order, "t", { _tag: "Pay", amount: 1 })), // no Pay in Paid
          Effect.flip(runtime.send(Order, "t", { _tag: "Deliver" }))
        )
      )
      expect(rejected).toBe(2)
      const [stops] = yield* delta(countOf(Metrics.transitions, order, outcome("Stop")), runtime.stop(Order, "t"))
      expect(stops).toBe(1)
      // Another machine's counters are its own.
      expect(yield* countOf(Metrics.transitions, gauge, outcome("Stop"))).toBe(0)
    }))

  it.scoped("fsm_conflicts and fsm_retries: a cached instance behind another writer decides again", () =>
    Effect.gen(function*() {
      const store = yield* memoryStore
      const a = (yield* runtimeOn(store, { machines: [Order] })).runtime
      const b = (yield* runtimeOn(store, { machines: [Order] })).runtime
      yield* a.create(Order, "c", { _tag: "Pending", orderId: "c" })
      yield* b.send(Order, "c", { _tag: "Note", text: "from b" })
      const conflicts = yield* countOf(Metrics.conflicts)
      const [retries, outcome] = yield* delta(
        countOf(Metrics.retries, order),
        a.send(Order, "c", { _tag: "Pay", amount: 3 })
      )
      expect(outcome.seqNr).toBe(3)
      expect(retries).toBe(1)
      expect((yield* countOf(Metrics.conflicts)) - conflicts).toBe(1)
    }))

  it.scoped("fsm_recovery_ms and fsm_replayed_events: recovery from snapshot + tail, and catch-up", () =>
    Effect.gen(function*() {
      const store = yield* memoryStore
      const writer = (yield* runtimeOn(store, { machines: [Order], snapshotEvery: 3 })).runtime
      const [written] = yield* delta(
        countOf(Metrics.snapshotsWritten, order),
        Effect.gen(function*() {
          yield* writer.create(Order, "r", { _tag: "Pending", orderId: "r" })
          for (let i = 0; i < 4; i++) yield* writer.send(Order, "r", { _tag: "Note", text: `${i}` })
        })
      )
      expect(written).toBe(1) // at seqNr 3
      const reader = (yield* runtimeOn(store, { machines: [Order], snapshotEvery: 3 })).runtime
      const recoveries = yield* observationsOf(Metrics.recoveryTime, order)
      const [replayed] = yield* delta(countOf(Metrics.replayedEvents, order), reader.inspect(Order, "r"))
      expect(replayed).toBe(2) // seqNr 4 and 5, after the snapshot
      expect((yield* observationsOf(Metrics.recoveryTime, order)) - recoveries).toBe(1)
      // Cached now: the writer's next events are caught up with, not recovered.
      yield* writer.send(Order, "r", { _tag: "Note", text: "more" })
      const [caughtUp] = yield* delta(countOf(Metrics.replayedEvents, order), reader.inspect(Order, "r"))
      expect(caughtUp).toBe(1)
      expect((yield* observationsOf(Metrics.recoveryTime, order)) - recoveries).toBe(1)
    }))

  it.scoped("fsm_snapshots_written and fsm_snapshot_failures: saveSnapshot, and a state that cannot be stored", () =>
    Effect.gen(function*() {
      const { runtime } = yield* runtimeOn(yield* memoryStore, { machines: [Gauge], snapshotEvery: 1 })
      const [written] = yield* delta(
        countOf(Metrics.snapshotsWritten, gauge),
        Effect.zipRight(runtime.create(Gauge, "g", { _tag: "Reading", value: 1 }), runtime.saveSnapshot(Gauge, "g"))
      )
      expect(written).toBe(2) // with the create's commit, and saveSnapshot's
      const [failed, broken] = yield* delta(countOf(Metrics.snapshotFailures, gauge), runtime.send(Gauge, "g", { _tag: "Break" }))
      expect(broken.seqNr).toBe(2) // the command is not failed by its snapshot
      expect(failed).toBe(1)
    }))

  it.scoped("timers: fired and their lateness (in-process)", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(0)
      const { runtime } = yield* runtimeOn(yield* memoryStore, { machines: [Order] })
      const fired = yield* countOf(Metrics.timeoutsFired)
      const lateness = yield* observationsOf(Metrics.timeoutsLateness)
      yield* runtime.create(Order, "f", { _tag: "Pending", orderId: "f" })
      yield* TestClock.adjust("5 minutes")
      yield* eventually(Effect.filterOrFail(countOf(Metrics.timeoutsFired), (n) => n > fired, () => "not fired"))
      expect((yield* countOf(Metrics.timeoutsFired)) - fired).toBe(1)
      expect((yield* observationsOf(Metrics.timeoutsLateness)) - lateness).toBe(1)
      expect((yield* runtime.inspect(Order, "f")).state._tag).toBe("Cancelled")
    }))

  it.scoped("timers: a row left behind by a non-durable writer is dropped as stale", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(0)
      const store = yield* memoryStore
      const durable = yield* withDurableTimeouts(store)
      const sweeping = (yield* runtimeOn(durable, { machines: [Order] })).runtime
      yield* sweeping.create(Order, "s", { _tag: "Pending", orderId: "s" })
      // Leaves Pending without cancelling the row: its commits carry no timer changes.
      const inProcess = (yield* runtimeOn(store, { machines: [Order] })).runtime
      yield* inProcess.send(Order, "s", { _tag: "Pay", amount: 1 })
      yield* sweeping.evictAll
      const stale = yield* countOf(Metrics.timeoutsStaleSkipped)
      yield* TestClock.adjust("5 minutes")
      yield* eventually(Effect.filterOrFail(countOf(Metrics.timeoutsStaleSkipped), (n) => n > stale, () => "not swept"))
      expect((yield* sweeping.inspect(Order, "s")).state._tag).toBe("Paid")
    }))

  it.scoped("timers: a failing delivery is retried, then dead-lettered", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(0)
      const store = yield* memoryStore
      const inner = Context.get(store, EventStore.EventStore)
      const failing = Context.add(store, EventStore.EventStore, {
        ...inner,
        append: (commit) =>
          commit.events.some((e) => e.metadata.source === "timeout")
            ? Effect.fail(new Errors.PersistenceError({ operation: "append", reason: "disk on fire (test)" }))
            : inner.append(commit)
      })
      const durable = yield* withDurableTimeouts(failing, { maxAttempts: 2, retryBase: "10 seconds" })
      const { runtime } = yield* runtimeOn(durable, { machines: [Order] })
      const retries = yield* countOf(Metrics.timeoutsRetries)
      const dead = yield* countOf(Metrics.timeoutsDeadLettered)
      yield* runtime.create(Order, "d", { _tag: "Pending", orderId: "d" })
      yield* TestClock.adjust("5 minutes")
      yield* eventually(Effect.filterOrFail(countOf(Metrics.timeoutsRetries), (n) => n > retries, () => "no retry"))
      yield* TestClock.adjust("10 seconds")
      yield* eventually(Effect.filterOrFail(countOf(Metrics.timeoutsDeadLettered), (n) => n > dead, () => "not dead"))
      expect((yield* countOf(Metrics.timeoutsRetries)) - retries).toBe(1)
      expect((yield* countOf(Metrics.timeoutsDeadLettered)) - dead).toBe(1)
    }))

  it.scoped("timers: a claimed timer whose row another node consumed first is a claim conflict", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(0)
      const store = yield* memoryStore
      const timers = Context.get(store, TimeoutStore.TimeoutStore)
      // Every timer this node claims is consumed elsewhere before its delivery commits.
      const racing = Context.add(store, TimeoutStore.TimeoutStore, {
        ...timers,
        claimDue: (options) => Effect.tap(timers.claimDue(options), (rows) => Effect.forEach(rows, (row) => timers.complete(row)))
      })
      const { runtime } = yield* runtimeOn(yield* withDurableTimeouts(racing), { machines: [Order] })
      const conflicts = yield* countOf(Metrics.timeoutsClaimConflicts)
      yield* runtime.create(Order, "cc", { _tag: "Pending", orderId: "cc" })
      yield* TestClock.adjust("5 minutes")
      yield* eventually(Effect.filterOrFail(countOf(Metrics.timeoutsClaimConflicts), (n) => n > conflicts, () => "no race"))
      expect((yield* runtime.inspect(Order, "cc")).state._tag).toBe("Pending") // nothing committed by the loser
    }))

  it.scoped("outbox: a command its target rejects is completed and counted; its dispatch is a span inside a poll", () =>
    Effect.gen(function*() {
      const recorder = yield* recordingTracer
      const rejected = yield* countOf(Metrics.outboxRejected)
      yield* Effect.gen(function*() {
        const { runtime } = yield* runtimeOn(yield* memoryStore, { machines: [Target, Poker] })
        yield* runtime.create(Target, "t", { _tag: "Closed" })
        yield* runtime.create(Poker, "p", { _tag: "Poking" })
        yield* eventually(Effect.filterOrFail(countOf(Metrics.outboxRejected), (n) => n > rejected, () => "not dispatched"))
      }).pipe(Effect.withTracer(recorder.tracer))
      expect((yield* countOf(Metrics.outboxRejected)) - rejected).toBe(1)
      const [dispatch] = recorder.named("FSMRuntime.dispatch")
      expect(Object.fromEntries(dispatch!.attributes)).toMatchObject({
        machine: "obs-poker",
        instanceId: "p",
        seqNr: 1,
        command: "Poke",
        kind: "send",
        result: "Rejected"
      })
      expect(recorder.inside(dispatch!, "Outbox.poll")).toBe(true)
    }))

  it.scoped("locks: a lease acquired per command, and a sticky lease lost when it cannot be renewed", () =>
    Effect.gen(function*() {
      const store = yield* memoryStore
      const leases = Context.get(store, LeaseStore.LeaseStore)
      let renewable = true
      const flaky = Context.add(store, LeaseStore.LeaseStore, {
        ...leases,
        extend: (lease, ttl) =>
          renewable
            ? leases.extend(lease, ttl)
            : Effect.fail(new Errors.LockLost({ machine: lease.machine, instanceId: lease.instanceId, owner: lease.owner, token: lease.token }))
      })
      const strategy = yield* Layer.build(
        Layer.provide(LockingStrategy.distributed({ ttl: "3 seconds", heartbeat: "1 second", scope: "sticky" }), Layer.succeedContext(flaky))
      )
      const { runtime } = yield* runtimeOn(Context.merge(flaky, strategy) as Context.Context<EventStore.EventStore>, {
        machines: [Order]
      })
      const [acquired] = yield* delta(
        countOf(Metrics.locksAcquired),
        runtime.create(Order, "l", { _tag: "Pending", orderId: "l" })
      )
      expect(acquired).toBe(1)
      renewable = false
      const lost = yield* countOf(Metrics.locksLost)
      yield* TestClock.adjust("1 second")
      yield* eventually(Effect.filterOrFail(countOf(Metrics.locksLost), (n) => n > lost, () => "not lost"))
      expect((yield* countOf(Metrics.locksLost)) - lost).toBe(1)
    }))
})

/** A machine whose entry action notes the span it runs in (its name, or "none"). */
const spansSeen: Array<string> = []
const Spotter = Machine.make({
  name: "obs-spotter",
  version: 1,
  state: Schema.Union(Schema.TaggedStruct("Idle", {}), Schema.TaggedStruct("Busy", {})),
  event: Schema.Union(Schema.TaggedStruct("Go", {})),
  transitions: { Idle: { Go: "Busy" } },
  entry: {
    Busy: () =>
      Effect.currentSpan.pipe(
        Effect.match({ onFailure: () => "none", onSuccess: (span) => span.name }),
        Effect.map((name) => void spansSeen.push(name))
      )
  }
})

describe("spans", () => {
  it.scoped("with Effect's default tracer (nothing exports) the runtime makes no spans: the action runs in the caller's span", () =>
    Effect.gen(function*() {
      spansSeen.length = 0
      const recorder = yield* recordingTracer
      const { runtime } = yield* runtimeOn(yield* memoryStore, { machines: [Spotter] })
      yield* runtime.create(Spotter, "a", { _tag: "Idle" })
      yield* runtime.create(Spotter, "b", { _tag: "Idle" })
      yield* runtime.send(Spotter, "a", { _tag: "Go" }).pipe(Effect.withSpan("caller"))
      yield* runtime.send(Spotter, "b", { _tag: "Go" }).pipe(Effect.withSpan("caller"), Effect.withTracer(recorder.tracer))
      // Under the default tracer the only span is the caller's own; with one installed, the runtime's are made.
      expect(spansSeen).toHaveLength(2)
      expect(spansSeen[0]).toBe("caller")
      expect(spansSeen[1]).not.toBe("caller")
      expect(recorder.named("FSMRuntime.send")).toHaveLength(1)
    }))

  it.scoped("send, create and stop are spans with machine, instanceId and the committed seqNr; the store's append is inside them", () =>
    Effect.gen(function*() {
      const recorder = yield* recordingTracer
      yield* Effect.gen(function*() {
        const store = (yield* Layer.build(sqlite.layer())) as Context.Context<Stores>
        const { runtime } = yield* runtimeOn(store, { machines: [Order] })
        yield* runtime.create(Order, "o", { _tag: "Pending", orderId: "o" })
        yield* runtime.send(Order, "o", { _tag: "Pay", amount: 2 })
        yield* Effect.flip(runtime.send(Order, "o", { _tag: "Pay", amount: 2 }))
        yield* runtime.stop(Order, "o")
      }).pipe(Effect.withTracer(recorder.tracer))

      const sends = recorder.named("FSMRuntime.send")
      expect(sends.map((s) => s.attributes.get("seqNr"))).toEqual([2, undefined]) // the rejected one commits nothing
      expect(Object.fromEntries(sends[0]!.attributes)).toMatchObject({
        machine: "order",
        instanceId: "o",
        event: "Pay",
        outcome: "Goto",
        state: "Paid"
      })
      expect(recorder.named("FSMRuntime.create")[0]!.attributes.get("seqNr")).toBe(1)
      expect(recorder.named("FSMRuntime.stop")[0]!.attributes.get("seqNr")).toBe(3)
      const appends = recorder.named("SqlEventStore.append")
      expect(appends.map((s) => [s.attributes.get("machine"), s.attributes.get("instanceId"), s.attributes.get("expectedSeqNr")]))
        .toEqual([["order", "o", 0], ["order", "o", 1], ["order", "o", 2]])
      expect(recorder.inside(appends[1]!, "FSMRuntime.send")).toBe(true)
      expect(recorder.inside(appends[0]!, "FSMRuntime.create")).toBe(true)
      expect(recorder.inside(appends[2]!, "FSMRuntime.stop")).toBe(true)
    }))

  it.scoped("on SQLite a commit's statements are sql.execute spans inside its append when a tracer is installed, and pass a statement transformer", () =>
    Effect.gen(function*() {
      const store = (yield* Layer.build(sqlite.layer())) as Context.Context<Stores>
      const { runtime } = yield* runtimeOn(store, { machines: [Order] })
      const recorder = yield* recordingTracer
      yield* runtime.create(Order, "o", { _tag: "Pending", orderId: "o" }).pipe(Effect.withTracer(recorder.tracer))
      const traced = recorder.named("sql.execute")
        .filter((span) => recorder.inside(span, "SqlEventStore.append"))
        .map((span) => String(span.attributes.get("db.query.text")))
      expect(traced.some((text) => text.startsWith(`INSERT INTO "fsm_events"`))).toBe(true)
      expect(traced.some((text) => text.startsWith(`INSERT INTO "fsm_instances"`))).toBe(true)
      // Under the default tracer, a statement transformer still sees every statement of a commit.
      const transformed: Array<string> = []
      yield* runtime.send(Order, "o", { _tag: "Pay", amount: 2 }).pipe(
        Statement.withTransformer((statement) =>
          Effect.sync(() => {
            transformed.push(statement.compile()[0])
            return statement
          })
        )
      )
      expect(transformed.some((text) => text.startsWith(`INSERT INTO "fsm_events"`))).toBe(true)
      expect(transformed.some((text) => text.startsWith(`INSERT INTO "fsm_instances"`))).toBe(true)
    }))

  it.scoped("a recovery is a span inside the operation that loaded the instance", () =>
    Effect.gen(function*() {
      const recorder = yield* recordingTracer
      yield* Effect.gen(function*() {
        const { runtime } = yield* runtimeOn(yield* memoryStore, { machines: [Order] })
        yield* runtime.create(Order, "o", { _tag: "Pending", orderId: "o" })
        yield* runtime.send(Order, "o", { _tag: "Note", text: "x" })
        yield* runtime.evictAll
        yield* runtime.inspect(Order, "o")
        yield* runtime.history(Order, "o")
        yield* runtime.historyPage(Order, "o", { limit: 1 })
        yield* runtime.saveSnapshot(Order, "o")
      }).pipe(Effect.withTracer(recorder.tracer))
      const [recover] = recorder.named("FSMRuntime.recover")
      expect(Object.fromEntries(recover!.attributes)).toMatchObject({
        machine: "order",
        instanceId: "o",
        seqNr: 2,
        snapshotSeqNr: 0,
        replayed: 2
      })
      expect(recorder.inside(recover!, "FSMRuntime.inspect")).toBe(true)
      expect(recorder.named("FSMRuntime.inspect")[0]!.attributes.get("seqNr")).toBe(2)
      expect(recorder.named("FSMRuntime.history")[0]!.attributes.get("entries")).toBe(2)
      expect(recorder.named("FSMRuntime.historyPage")[0]!.attributes.get("entries")).toBe(1)
      expect(recorder.named("FSMRuntime.saveSnapshot")[0]!.attributes.get("seqNr")).toBe(2)
      expect(recorder.named("FSMRuntime.evictAll")).toHaveLength(1)
    }))

  it.scoped("a sweep is a span, and the timer delivery it runs is inside it, with the seqNr it committed", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(0)
      const recorder = yield* recordingTracer
      yield* Effect.gen(function*() {
        const durable = yield* withDurableTimeouts(yield* memoryStore)
        const { runtime } = yield* runtimeOn(durable, { machines: [Order] })
        yield* runtime.create(Order, "w", { _tag: "Pending", orderId: "w" })
        yield* TestClock.adjust("5 minutes")
        yield* eventually(
          Effect.filterOrFail(runtime.inspect(Order, "w"), (view) => view.state._tag === "Cancelled", () => "not fired")
        )
      }).pipe(Effect.withTracer(recorder.tracer))
      const [delivery] = recorder.named("FSMRuntime.deliverTimeout")
      expect(Object.fromEntries(delivery!.attributes)).toMatchObject({
        machine: "order",
        instanceId: "w",
        timer: "payment",
        generation: 1,
        result: "Fired",
        seqNr: 2
      })
      expect(recorder.inside(delivery!, "TimeoutStrategy.sweep")).toBe(true)
      expect(recorder.named("TimeoutStrategy.sweep").some((s) => s.attributes.get("claimed") === 1)).toBe(true)
    }))

  it.scoped("a lease acquisition is a span inside the command that needed it, with its fencing token", () =>
    Effect.gen(function*() {
      const recorder = yield* recordingTracer
      yield* Effect.gen(function*() {
        const store = yield* memoryStore
        const strategy = yield* Layer.build(Layer.provide(LockingStrategy.distributed({}), Layer.succeedContext(store)))
        const { runtime } = yield* runtimeOn(Context.merge(store, strategy) as Context.Context<EventStore.EventStore>, {
          machines: [Order]
        })
        yield* runtime.create(Order, "k", { _tag: "Pending", orderId: "k" })
      }).pipe(Effect.withTracer(recorder.tracer))
      const [acquire] = recorder.named("LockingStrategy.acquire")
      expect(acquire!.attributes.get("machine")).toBe("order")
      expect(acquire!.attributes.get("instanceId")).toBe("k")
      expect(typeof acquire!.attributes.get("token")).toBe("number")
      expect(recorder.inside(acquire!, "FSMRuntime.create")).toBe(true)
    }))

  it.scoped("disableTracing: no runtime spans", () =>
    Effect.gen(function*() {
      const recorder = yield* recordingTracer
      yield* Effect.gen(function*() {
        const { runtime } = yield* runtimeOn(yield* memoryStore, { machines: [Order], disableTracing: true })
        yield* runtime.create(Order, "n", { _tag: "Pending", orderId: "n" })
        yield* runtime.send(Order, "n", { _tag: "Pay", amount: 1 })
      }).pipe(Effect.withSpan("caller"), Effect.withTracer(recorder.tracer))
      expect(recorder.spans.map((s) => s.name)).toEqual(["caller"])
      // Nothing annotated the caller's span either.
      expect(recorder.spans[0]!.attributes.get("seqNr")).toBeUndefined()
    }))
})
