/**
 * Integrity under faults, bad input and several runtimes: each test here
 * reproduces a way the engine once lost, duplicated or corrupted data, on
 * every backend, and checks the log.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Layer, Schedule, Schema, TestClock } from "effect"
import { Errors, EventStore, FSMRuntime, Machine, SqlEventStore, TimeoutStore, TimeoutStrategy } from "effect-fsm"
import { Counter, Order } from "./fixtures/machines.js"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import * as SqlClient from "@effect/sql/SqlClient"
import * as path from "node:path"
import { backends, postgres, tempDirectory } from "./utils/backends.js"
import * as Pg from "./utils/pg.js"
import { eventually } from "./utils/eventually.js"
import { faulty, withStore } from "./utils/faults.js"
import { buildStore, runtimeOn, withDurableTimeouts } from "./utils/runtime.js"

// Conflicts retried at once: TestClock would hold back-off sleeps forever.
const retry = Schedule.recurs(1000)

/** Two timeouts of one state that share their event, each a stay that counts. */
const Pinger = Machine.make({
  name: "pinger",
  version: 1,
  state: Schema.Union(Schema.TaggedStruct("Waiting", { count: Schema.Number })),
  event: Schema.Union(Schema.TaggedStruct("Ping", {}), Schema.TaggedStruct("Poke", {})),
  transitions: {
    Waiting: {
      Ping: { to: "Waiting", build: (s) => ({ count: s.count + 1 }) },
      Poke: { to: "Waiting", build: (s) => ({ count: s.count + 1 }) }
    }
  },
  timeouts: {
    Waiting: {
      early: { after: "1 minute", event: { _tag: "Ping" } },
      late: { after: "3 minutes", event: { _tag: "Ping" } }
    }
  }
})

class Unlucky extends Error {}

/** Machine functions that throw (or give no duration) for some inputs. */
const Fragile = Machine.make({
  name: "fragile",
  version: 1,
  state: Schema.Union(
    Schema.TaggedStruct("Idle", { n: Schema.Number }),
    Schema.TaggedStruct("Busy", { n: Schema.Number })
  ),
  event: Schema.Union(Schema.TaggedStruct("Go", { n: Schema.Number })),
  transitions: {
    Idle: {
      Go: {
        to: "Busy",
        guard: (_, e) => {
          if (e.n === 13) throw new Unlucky("guard: unlucky")
          return true
        },
        build: (_, e) => {
          if (e.n === 7) throw new Unlucky("build: seven")
          return { n: e.n }
        }
      }
    },
    Busy: { Go: { to: "Idle", build: (_, e) => ({ n: e.n }) } }
  },
  timeouts: {
    Busy: {
      back: {
        after: (s) => {
          if (s.n === 99) throw new Unlucky("after: ninety-nine")
          return s.n === 98 ? ("soon" as never) : "1 minute"
        },
        event: { _tag: "Go", n: 0 }
      }
    }
  }
})

const counterAt = (count: number) => ({ _tag: "Even", count, trail: [] }) as const

const logOf = (runtime: FSMRuntime.FSMRuntime["Type"], machine: Machine.Any, id: string) =>
  Effect.map(runtime.history(machine, id), (h) =>
    h.map((e) => e._tag === "Event" ? `${e.event._tag}${e.metadata.timer === null ? "" : `@${e.metadata.timer}`}` : e._tag))

for (const backend of backends) {
  describe(`integrity on ${backend.name}`, () => {
    const setup = (options: Partial<FSMRuntime.Options<ReadonlyArray<Machine.Any>>> = {}) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const { runtime } = yield* runtimeOn(store, { machines: [Order, Counter, Pinger, Fragile], retry, ...options })
        return { store, runtime }
      })

    it.scoped("values that do not survive JSON are InvalidInput at send and create, and nothing is written", () =>
      Effect.gen(function*() {
        const { runtime } = yield* setup()
        yield* runtime.create(Counter, "c")
        for (const by of [NaN, Infinity, -Infinity]) {
          expect(yield* Effect.flip(runtime.send(Counter, "c", { _tag: "Add", by }))).toBeInstanceOf(Errors.InvalidInput)
        }
        for (const text of ["nul\u0000", "lone \uD800", "lone \uDC00 low"]) {
          expect(yield* Effect.flip(runtime.send(Order, "o", { _tag: "Note", text }))).toMatchObject({
            _tag: "InvalidInput"
          })
          expect(yield* Effect.flip(runtime.create(Order, `o-${text.length}`, { _tag: "Pending", orderId: text })))
            .toBeInstanceOf(Errors.InvalidInput)
          expect(
            yield* Effect.flip(runtime.send(Counter, "c", { _tag: "Add", by: 1 }, { correlationId: text }))
          ).toBeInstanceOf(Errors.InvalidInput)
        }
        expect(
          yield* Effect.flip(runtime.create(Counter, "nan", { _tag: "Even", count: NaN, trail: [] }))
        ).toBeInstanceOf(Errors.InvalidInput)
        // The instance is intact and still loads from the store.
        yield* runtime.evictAll
        expect(yield* runtime.inspect(Counter, "c")).toMatchObject({ state: counterAt(0), seqNr: 1 })
        expect((yield* runtime.history(Counter, "c")).length).toBe(1)
        expect(yield* Effect.flip(runtime.inspect(Counter, "nan"))).toBeInstanceOf(Errors.InstanceNotFound)
      }))

    it.scoped("ids that are not well-formed Unicode are InvalidInstanceId, never merged", () =>
      Effect.gen(function*() {
        const { runtime } = yield* setup()
        for (const id of ["s\uD800", "s\uDBFF", "\uDC00x", "a\u0000b"]) {
          expect(yield* Effect.flip(runtime.create(Counter, id))).toBeInstanceOf(Errors.InvalidInstanceId)
          expect(yield* Effect.flip(runtime.inspect(Counter, id))).toBeInstanceOf(Errors.InvalidInstanceId)
        }
        const pair = "pair-🔗"
        yield* runtime.create(Counter, pair)
        expect((yield* runtime.inspect(Counter, pair)).seqNr).toBe(1)
      }))

    it.scoped("no public operation throws, whatever it is given", () =>
      Effect.gen(function*() {
        const { runtime } = yield* setup()
        yield* runtime.create(Counter, "c")
        const odd: ReadonlyArray<Effect.Effect<unknown, unknown>> = [
          runtime.send(Counter, "c", null as never),
          runtime.send(Counter, "c", undefined as never),
          runtime.send(Counter, "c", 42 as never),
          runtime.send(Counter, "c", { _tag: "Add" } as never),
          runtime.send(Counter, "c", { _tag: "Add", by: 1 }, null as never),
          runtime.send(Counter, "c", { _tag: "Add", by: 1 }, { correlationId: 5 } as never),
          runtime.send(Counter, "c", { _tag: "Add", by: 1 }, { source: "timeout" }),
          runtime.send(null as never, "c", { _tag: "Add", by: 1 } as never),
          runtime.send(Counter, null as never, { _tag: "Add", by: 1 }),
          runtime.create(Order, "o", null as never),
          runtime.create(Order, "o", 7 as never),
          runtime.inspect(undefined as never, "c"),
          runtime.inspect(Counter, 12 as never),
          runtime.history(Counter, "c", NaN),
          runtime.stop(Counter, "c", null as never)
        ]
        for (const operation of odd) {
          const exit = yield* Effect.exit(operation)
          // A typed failure or a success: never a defect, never a throw.
          if (Exit.isFailure(exit)) expect(exit.cause._tag).toBe("Fail")
        }
        expect(yield* Effect.flip(runtime.send(Counter, "c", null as never))).toBeInstanceOf(Errors.InvalidInput)
        expect(yield* Effect.flip(runtime.send(null as never, "c", { _tag: "Add", by: 1 } as never))).toBeInstanceOf(
          Errors.MachineNotRegistered
        )
        expect((yield* runtime.history(Counter, "c")).length).toBe(1)
      }))

    it.scoped("a throwing guard, build or after is TransitionFailed naming the stage, and writes nothing", () =>
      Effect.gen(function*() {
        const { runtime } = yield* setup()
        yield* runtime.create(Fragile, "f", { _tag: "Idle", n: 0 })
        for (const [n, stage] of [[13, "guard"], [7, "build"], [99, "after"], [98, "after"]] as const) {
          const error = yield* Effect.flip(runtime.send(Fragile, "f", { _tag: "Go", n }))
          expect(error).toMatchObject({ _tag: "TransitionFailed", stage, machine: "fragile", state: "Idle", event: "Go" })
        }
        expect(yield* Effect.flip(runtime.create(Fragile, "g", { _tag: "Busy", n: 99 }))).toMatchObject({
          _tag: "TransitionFailed",
          stage: "after"
        })
        expect((yield* runtime.history(Fragile, "f")).length).toBe(1)
        expect((yield* runtime.send(Fragile, "f", { _tag: "Go", n: 1 })).state).toEqual({ _tag: "Busy", n: 1 })
      }))

    for (const snapshotEvery of [0, 1]) {
      it.scoped(`a lost acknowledgement never duplicates the event (snapshotEvery ${snapshotEvery})`, () =>
        Effect.gen(function*() {
          const store = yield* buildStore(backend)
          const wrapped = faulty(Context.get(store, EventStore.EventStore))
          const { runtime } = yield* runtimeOn(withStore(store, wrapped.store), { machines: [Counter], retry, snapshotEvery })
          yield* runtime.create(Counter, "c")
          wrapped.setPlan((commit) => commit.events[0]?.tag === "Add" ? { _tag: "FailAfter" } : undefined)
          const outcome = yield* runtime.send(Counter, "c", { _tag: "Add", by: 5 })
          expect(outcome).toEqual({ _tag: "Goto", state: { _tag: "Odd", count: 5, trail: [5] }, seqNr: 2 })
          wrapped.setPlan(() => undefined)
          yield* runtime.send(Counter, "c", { _tag: "Add", by: 1 })
          const fresh = (yield* runtimeOn(store, { machines: [Counter], retry })).runtime
          expect(yield* fresh.inspect(Counter, "c")).toEqual(yield* runtime.inspect(Counter, "c"))
          expect((yield* fresh.inspect(Counter, "c")).state).toEqual({ _tag: "Even", count: 6, trail: [5, 1] })
        }))
    }

    it.scoped("a commit that may still be in flight is never reported as not landed: the same commit is appended again", () =>
      Effect.gen(function*() {
        const store = yield* buildStore(backend)
        const wrapped = faulty(Context.get(store, EventStore.EventStore))
        const { runtime } = yield* runtimeOn(withStore(store, wrapped.store), { machines: [Counter], retry })
        yield* runtime.create(Counter, "c")
        const release = yield* Deferred.make<void>()
        let ghosts = 0
        wrapped.setPlan((commit) =>
          commit.events[0]?.tag === "Add" && ghosts++ === 0 ? { _tag: "Ghost", release: Deferred.await(release) } : undefined)
        expect(yield* runtime.send(Counter, "c", { _tag: "Add", by: 5 })).toMatchObject({ seqNr: 2 })
        yield* Deferred.succeed(release, void 0) // the first attempt reaches the database now, too late
        yield* eventually(Effect.void)
        const history = yield* runtime.history(Counter, "c")
        expect(history.map((h) => h._tag === "Event" ? h.event._tag : h._tag)).toEqual(["Created", "Add"])
        expect((yield* runtime.send(Counter, "c", { _tag: "Add", by: 1 })).seqNr).toBe(3)
      }))

    it.scoped("a failure before the write is a PersistenceError, writes nothing, and the next send works", () =>
      Effect.gen(function*() {
        const store = yield* buildStore(backend)
        const wrapped = faulty(Context.get(store, EventStore.EventStore))
        const { runtime } = yield* runtimeOn(withStore(store, wrapped.store), { machines: [Counter], retry })
        yield* runtime.create(Counter, "c")
        wrapped.setPlan(() => ({ _tag: "FailBefore" }))
        expect(yield* Effect.flip(runtime.send(Counter, "c", { _tag: "Add", by: 5 }))).toBeInstanceOf(Errors.PersistenceError)
        wrapped.setPlan(() => undefined)
        expect((yield* runtime.send(Counter, "c", { _tag: "Add", by: 2 })).seqNr).toBe(2)
        expect((yield* runtime.inspect(Counter, "c")).state).toEqual({ _tag: "Even", count: 2, trail: [2] })
      }))

    it.scoped("an interruption after the write leaves the runtime consistent with the log", () =>
      Effect.gen(function*() {
        const store = yield* buildStore(backend)
        const wrapped = faulty(Context.get(store, EventStore.EventStore))
        const { runtime } = yield* runtimeOn(withStore(store, wrapped.store), {
          machines: [Counter],
          retry: Schedule.recurs(3)
        })
        yield* runtime.create(Counter, "c")
        wrapped.setPlan(() => ({ _tag: "InterruptAfter" }))
        const exit = yield* Effect.exit(runtime.send(Counter, "c", { _tag: "Add", by: 5 }))
        expect(Exit.isInterrupted(exit)).toBe(true)
        wrapped.setPlan(() => undefined)
        const next = yield* runtime.send(Counter, "c", { _tag: "Add", by: 1 })
        expect(next).toMatchObject({ seqNr: 3, state: { count: 6, trail: [5, 1] } })
      }))

    it.scoped("a conflict showing the log behind the cache reloads the instance instead of looping", () =>
      Effect.gen(function*() {
        const store = yield* buildStore(backend)
        const wrapped = faulty(Context.get(store, EventStore.EventStore))
        const { runtime } = yield* runtimeOn(withStore(store, wrapped.store), { machines: [Counter], retry: Schedule.recurs(3) })
        yield* runtime.create(Counter, "c")
        wrapped.setPlan(() => ({ _tag: "Phantom" }))
        expect((yield* runtime.send(Counter, "c", { _tag: "Add", by: 5 })).seqNr).toBe(2) // believed, never written
        wrapped.setPlan(() => undefined)
        expect(yield* runtime.send(Counter, "c", { _tag: "Add", by: 1 })).toEqual({
          _tag: "Goto",
          state: { _tag: "Odd", count: 1, trail: [1] },
          seqNr: 2
        })
      }))

    it.scoped("two runtimes with in-process timers commit one timeout event per arming", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = yield* buildStore(backend)
        const inner = Context.get(store, EventStore.EventStore)
        const bReached = yield* Deferred.make<void>()
        const aDone = yield* Deferred.make<void>()
        const isTimeout = (commit: EventStore.Commit) => commit.events[0]?.metadata.source === "timeout"
        // A's delivery commits only once B's has decided on the same state,
        // and B's commits only after A's: B loses the race and retries.
        const a = faulty(inner, (commit) =>
          isTimeout(commit) ? { _tag: "Around", before: Deferred.await(bReached), after: Deferred.succeed(aDone, void 0) } : undefined)
        const b = faulty(inner, (commit) =>
          isTimeout(commit)
            ? { _tag: "Around", before: Effect.zipRight(Deferred.succeed(bReached, void 0), Deferred.await(aDone)), after: Effect.void }
            : undefined)
        const runtimeA = (yield* runtimeOn(withStore(store, a.store), { machines: [Pinger], retry })).runtime
        const runtimeB = (yield* runtimeOn(withStore(store, b.store), { machines: [Pinger], retry })).runtime
        yield* runtimeA.create(Pinger, "p", { _tag: "Waiting", count: 0 })
        yield* runtimeB.inspect(Pinger, "p") // B loads it and arms its timers too
        yield* TestClock.adjust("2 minutes")
        yield* eventually(Effect.filterOrFail(logOf(runtimeA, Pinger, "p"), (log) => log.length >= 2, () => "not fired"))
        yield* eventually(Effect.filterOrFail(
          Effect.sync(() => b.seen.filter((s) => isTimeout(s.commit)).length),
          (n) => n >= 1,
          () => "B did not try"
        ))
        yield* TestClock.adjust("2 minutes")
        yield* eventually(Effect.filterOrFail(logOf(runtimeA, Pinger, "p"), (log) => log.length >= 3, () => "late not fired"))
        yield* TestClock.adjust("10 minutes")
        yield* eventually(Effect.void)
        expect(yield* logOf(runtimeA, Pinger, "p")).toEqual(["Created", "Ping@early", "Ping@late"])
      }))

    it.scoped("a delivery of an arming that already fired is stale, even carrying its stored event (a re-driven timer)", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = yield* buildStore(backend)
        let captured: TimeoutStrategy.Target | undefined
        const capture = TimeoutStrategy.TimeoutStrategy.of({
          start: (target) =>
            Effect.sync(() => {
              captured = target
              return { durable: false, armed: () => Effect.void }
            })
        })
        const { runtime } = yield* runtimeOn(
          Context.add(store, TimeoutStrategy.TimeoutStrategy, capture) as Context.Context<EventStore.EventStore>,
          { machines: [Pinger], retry }
        )
        yield* runtime.create(Pinger, "p", { _tag: "Waiting", count: 0 })
        const delivery: TimeoutStrategy.Delivery = {
          machine: "pinger",
          instanceId: "p",
          name: "early",
          generation: 1,
          dueAt: 60_000,
          payload: { _tag: "Ping" }
        }
        yield* TestClock.adjust("1 minute")
        expect(yield* captured!.deliver(delivery)).toEqual({ _tag: "Fired", seqNr: 2 })
        expect(yield* captured!.deliver(delivery)).toEqual({ _tag: "Stale", raced: false })
        yield* runtime.evictAll
        expect(yield* captured!.deliver(delivery)).toEqual({ _tag: "Stale", raced: false })
        expect(yield* logOf(runtime, Pinger, "p")).toEqual(["Created", "Ping@early"])
      }))

    it.scoped("replay disarms the timeout that fired, by name, when timeouts share an event", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const wrapped = faulty(Context.get(store, EventStore.EventStore))
        let failedEarly = false
        let earlyAttempts = 0
        // The early timer's first delivery fails (each of its commit attempts), so the late one fires first.
        wrapped.setPlan((commit) => {
          if (commit.events[0]?.metadata.timer !== "early" || ++earlyAttempts > 3) return undefined
          failedEarly = true
          return { _tag: "FailBefore" }
        })
        const context = yield* withDurableTimeouts(withStore(store, wrapped.store), { retryBase: "10 minutes" })
        const { runtime } = yield* runtimeOn(context as Context.Context<EventStore.EventStore>, { machines: [Pinger], retry })
        yield* runtime.create(Pinger, "p", { _tag: "Waiting", count: 0 })
        yield* TestClock.adjust("2 minutes")
        yield* eventually(Effect.filterOrFail(Effect.sync(() => failedEarly), (f) => f, () => "early not tried"))
        // Its retry is stored before time moves on: a claim still held when its
        // lease runs out would be claimed again, with the late one.
        const timers = Context.get(store, TimeoutStore.TimeoutStore)
        yield* eventually(Effect.filterOrFail(
          timers.pending("pinger", "p"),
          (rows) => rows.some((row) => row.name === "early" && row.attempts === 1),
          () => "early's retry not stored"
        ))
        yield* TestClock.adjust("2 minutes")
        yield* eventually(Effect.filterOrFail(logOf(runtime, Pinger, "p"), (log) => log.length === 2, () => "late not fired"))
        const live = yield* runtime.inspect(Pinger, "p")
        expect(live.timeouts).toEqual([{ name: "early", dueAt: 60_000 }])
        yield* runtime.evictAll
        expect(yield* runtime.inspect(Pinger, "p")).toEqual(live)
        yield* TestClock.adjust("20 minutes")
        yield* eventually(Effect.filterOrFail(logOf(runtime, Pinger, "p"), (log) => log.length === 3, () => "early not fired"))
        expect(yield* logOf(runtime, Pinger, "p")).toEqual(["Created", "Ping@late", "Ping@early"])
      }))

    it.scoped("a hung entry action of a delivered timeout does not hold up later timeouts", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const Alarm = Machine.make({
          name: "alarm",
          version: 1,
          state: Schema.Union(
            Schema.TaggedStruct("Armed", { minutes: Schema.Number }),
            Schema.TaggedStruct("Rung", {})
          ),
          event: Schema.Union(Schema.TaggedStruct("Ring", {})),
          transitions: { Armed: { Ring: "Rung" } },
          timeouts: { Armed: { ring: { after: (s) => `${s.minutes} minutes` as const, event: { _tag: "Ring" } } } },
          entry: { Rung: () => Effect.never }
        })
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const context = yield* withDurableTimeouts(store)
        const { runtime } = yield* runtimeOn(context as Context.Context<EventStore.EventStore>, { machines: [Alarm], retry })
        yield* runtime.create(Alarm, "first", { _tag: "Armed", minutes: 1 })
        yield* runtime.create(Alarm, "second", { _tag: "Armed", minutes: 3 })
        yield* TestClock.adjust("2 minutes")
        yield* eventually(Effect.filterOrFail(runtime.inspect(Alarm, "first"), (v) => v.state._tag === "Rung", () => "armed"))
        yield* TestClock.adjust("2 minutes")
        yield* eventually(Effect.filterOrFail(runtime.inspect(Alarm, "second"), (v) => v.state._tag === "Rung", () => "armed"))
      }))

    it.scoped("a delivery stuck in the database does not hold up later timeouts", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const wrapped = faulty(Context.get(store, EventStore.EventStore), (commit) =>
          commit.instanceId === "first" && commit.events[0]?.metadata.source === "timeout"
            ? { _tag: "Around", before: Effect.never, after: Effect.void }
            : undefined)
        const context = yield* withDurableTimeouts(withStore(store, wrapped.store), { deliveryTimeout: "5 seconds" })
        const { runtime } = yield* runtimeOn(context as Context.Context<EventStore.EventStore>, { machines: [Order], retry })
        yield* runtime.create(Order, "first", { _tag: "Pending", orderId: "first" })
        yield* TestClock.adjust("1 minute")
        yield* runtime.create(Order, "second", { _tag: "Pending", orderId: "second" })
        yield* TestClock.adjust("4 minutes") // first's deadline: its delivery hangs
        yield* eventually(Effect.filterOrFail(
          Effect.sync(() => wrapped.seen.filter((s) => s.commit.instanceId === "first").length),
          (n) => n >= 2,
          () => "first not delivered"
        ))
        yield* TestClock.adjust("10 seconds") // the poll stops waiting for it
        yield* TestClock.adjust("1 minute") // second's deadline
        // Time keeps moving: a poll that was under way during the jump (its
        // database I/O is real) waits for first's stuck delivery again, and
        // goes on once its deliveryTimeout has passed on the clock.
        yield* eventually(
          Effect.zipRight(
            TestClock.adjust("1 second"),
            Effect.filterOrFail(runtime.inspect(Order, "second"), (v) => v.state._tag === "Cancelled", () => "second pending")
          )
        )
        // (Not `inspect`: the stuck delivery still holds first's lock, as a stuck database call would.)
        expect((yield* runtime.history(Order, "first")).map((h) => h._tag)).toEqual(["Created"])
      }))

    it.scoped("with a backlog, the next batch is claimed and delivered while the batch before it is still committing", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const gate = yield* Deferred.make<void>()
        // The first batch's timeout commits wait on the gate: a slow database.
        const wrapped = faulty(Context.get(store, EventStore.EventStore), (commit) =>
          commit.instanceId.startsWith("early") && commit.events[0]?.metadata.source === "timeout"
            ? { _tag: "Around", before: Deferred.await(gate), after: Effect.void }
            : undefined)
        // Batches of 2 among 4 places: the second batch fits while the first
        // runs. A deliveryTimeout longer than the clock moves below: the poll
        // must not merely stop waiting for the first batch.
        const context = yield* withDurableTimeouts(withStore(store, wrapped.store), {
          batchSize: 2,
          concurrency: 4,
          deliveryTimeout: "1 hour",
          claimLease: "2 hours"
        })
        const { runtime } = yield* runtimeOn(context as Context.Context<EventStore.EventStore>, { machines: [Order], retry })
        for (const id of ["early1", "early2"]) yield* runtime.create(Order, id, { _tag: "Pending", orderId: id })
        yield* TestClock.adjust("1 second")
        for (const id of ["late1", "late2"]) yield* runtime.create(Order, id, { _tag: "Pending", orderId: id })
        yield* TestClock.adjust("10 minutes") // every deadline has passed: the early ones are claimed first
        const state = (id: string) => Effect.map(runtime.inspect(Order, id), (v) => v.state._tag)
        // No clock moves from here on: a poll waiting for its batch would wait for the gate (or its deliveryTimeout).
        yield* eventually(Effect.filterOrFail(
          Effect.all([state("late1"), state("late2")]),
          (tags) => tags.every((tag) => tag === "Cancelled"),
          () => "the late timers wait for the early batch"
        ))
        expect(wrapped.seen.filter((s) => s.commit.instanceId.startsWith("early")).length).toBe(4) // 2 creates, 2 held deliveries
        yield* Deferred.succeed(gate, undefined)
        for (const id of ["early1", "early2", "late1", "late2"]) {
          yield* eventually(Effect.filterOrFail(state(id), (tag) => tag === "Cancelled", () => `${id} pending`))
          const timeouts = (yield* runtime.history(Order, id)).filter((h) => h.metadata.source === "timeout")
          expect(timeouts.map((h) => h._tag === "Event" ? h.event._tag : h._tag)).toEqual(["PaymentTimeout"])
        }
      }))

    it.scoped("a timer whose delivery fails with NUL or a lone surrogate in the error is still dead-lettered", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const Bomb = Machine.make({
          name: "bomb",
          version: 1,
          state: Schema.Union(Schema.TaggedStruct("Ticking", {}), Schema.TaggedStruct("Done", {})),
          event: Schema.Union(Schema.TaggedStruct("Boom", {})),
          transitions: {
            Ticking: {
              Boom: {
                to: "Done",
                guard: () => {
                  throw new Error("bad \u0000 byte and a lone \uD800 half")
                }
              }
            }
          },
          timeouts: { Ticking: { boom: { after: "1 minute", event: { _tag: "Boom" } } } }
        })
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        const context = yield* withDurableTimeouts(store)
        const { runtime } = yield* runtimeOn(context as Context.Context<EventStore.EventStore>, { machines: [Bomb], retry })
        yield* runtime.create(Bomb, "b", { _tag: "Ticking" })
        yield* TestClock.adjust("2 minutes")
        const timers = Context.get(store, TimeoutStore.TimeoutStore)
        const letters = yield* eventually(
          Effect.filterOrFail(timers.deadLetters("bomb"), (d) => d.length === 1, () => "no dead letter")
        )
        expect(letters[0]!.lastError).toContain("bad \uFFFD byte and a lone \uFFFD half")
        expect((yield* runtime.history(Bomb, "b")).length).toBe(1)
      }))

    it.scoped("a timer whose stored event no longer decodes is dead-lettered with the error", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* withDurableTimeouts(store)
          const { runtime } = yield* runtimeOn(context as Context.Context<EventStore.EventStore>, { machines: [Order], retry })
          yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
        }))
        // A deploy changed the timeout event's schema: the stored row no longer decodes.
        const OrderV2 = Machine.make({
          name: "order",
          version: 1,
          state: Order.stateSchema as Schema.Schema<Machine.StateOf<typeof Order>>,
          event: Schema.Union(Schema.TaggedStruct("PaymentTimeout", { reason: Schema.String })),
          transitions: {
            Pending: { PaymentTimeout: { to: "Cancelled", build: (s, e) => ({ orderId: s.orderId, reason: e.reason }) } }
          },
          timeouts: { Pending: { payment: { after: "5 minutes", event: { _tag: "PaymentTimeout", reason: "unpaid" } } } }
        })
        const context = yield* withDurableTimeouts(store)
        const { runtime } = yield* runtimeOn(context as Context.Context<EventStore.EventStore>, { machines: [OrderV2], retry })
        yield* TestClock.adjust("6 minutes")
        const timers = Context.get(store, TimeoutStore.TimeoutStore)
        const letters = yield* eventually(
          Effect.filterOrFail(timers.deadLetters("order"), (d) => d.length === 1, () => "no dead letter")
        )
        expect(letters[0]).toMatchObject({ instanceId: "o1", name: "payment", generation: 1 })
        expect(letters[0]!.lastError).toContain("does not decode")
        expect(yield* timers.pending("order", "o1")).toEqual([])
        expect((yield* runtime.history(OrderV2, "o1")).length).toBe(1)
      }))
  })
}

describe("configuration errors are typed, when the layer builds", () => {
  const strategyError = (options: TimeoutStrategy.DurableOptions) =>
    Effect.flip(Effect.scoped(Layer.build(TimeoutStrategy.layerDurable(options).pipe(Layer.provide(EventStore.layerMemory)))))

  it.effect("durable sweeper options", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [TimeoutStrategy.DurableOptions, string]> = [
        [{ pollInterval: "0 millis" }, "pollInterval"],
        [{ pollInterval: "soon" as never }, "pollInterval"],
        [{ claimLease: NaN }, "claimLease"],
        [{ claimLease: "1 second", deliveryTimeout: "2 seconds" }, "deliveryTimeout"],
        [{ batchSize: 0 }, "batchSize"],
        [{ concurrency: 1.5 }, "concurrency"],
        [{ jitter: -1 }, "jitter"],
        [{ maxAttempts: 0 }, "maxAttempts"],
        [{ retryBase: "later" as never }, "retryBase"],
        [{ retryBase: "10 minutes", retryMax: "1 minute" }, "retryMax"],
        [{ pollInterval: "1 second", maxIdleInterval: "10 millis" }, "maxIdleInterval"]
      ]
      for (const [options, option] of cases) {
        const error = yield* strategyError(options)
        expect(error).toBeInstanceOf(Errors.InvalidConfiguration)
        expect(error).toMatchObject({ option })
      }
    }))

  it.effect("in-process retry options and runtime options", () =>
    Effect.gen(function*() {
      expect(yield* Effect.flip(Effect.scoped(Layer.build(TimeoutStrategy.layerInProcess({ maxAttempts: -1 })))))
        .toMatchObject({ _tag: "InvalidConfiguration", option: "maxAttempts" })
      for (
        const [options, option] of [
          [{ snapshotEvery: -1 }, "snapshotEvery"],
          [{ snapshotEvery: 1.5 }, "snapshotEvery"],
          [{ cacheSize: 0 }, "cacheSize"],
          [{ nodeId: "" }, "nodeId"]
        ] as const
      ) {
        const error = yield* Effect.flip(
          Effect.scoped(FSMRuntime.make({ machines: [Counter], ...options }).pipe(Effect.provide(EventStore.layerMemory)))
        )
        expect(error).toMatchObject({ _tag: "InvalidConfiguration", option })
      }
    }))
})

const sqlClients: ReadonlyArray<{
  readonly name: string
  readonly client: () => Layer.Layer<SqlClient.SqlClient, unknown>
  readonly skip: string | undefined
}> = [
  {
    name: "sqlite",
    client: () =>
      Layer.unwrapScoped(
        Effect.map(tempDirectory, (directory) => SqliteClient.layer({ filename: path.join(directory, "store.db") }))
      ),
    skip: undefined
  },
  {
    // The store's own client, whose commits outside a transaction run in one synchronous step.
    name: "sqlite (SqliteEventStore.layerClient)",
    client: () =>
      Layer.unwrapScoped(
        Effect.map(tempDirectory, (directory) => SqliteEventStore.layerClient({ filename: path.join(directory, "store.db") }))
      ),
    skip: undefined
  },
  { name: "postgres", client: () => Pg.layerFreshClient, skip: postgres.skip }
]

for (const target of sqlClients.filter((t) => t.skip === undefined)) {
  describe(`a caller's transaction on ${target.name}`, () => {
    it.scoped("a send or create that the caller's transaction rolls back is never cached", () =>
      Effect.gen(function*() {
        const context = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(target.client())))
        const sql = Context.get(context, SqlClient.SqlClient)
        const { runtime } = yield* runtimeOn(context, { machines: [Counter], retry: Schedule.recurs(5) })
        yield* runtime.create(Counter, "c")
        const rolledBack = yield* Effect.flip(
          sql.withTransaction(Effect.zipRight(runtime.send(Counter, "c", { _tag: "Add", by: 1 }), Effect.fail("roll back")))
        )
        expect(rolledBack).toBe("roll back")
        expect((yield* runtime.history(Counter, "c")).length).toBe(1)
        // The next send decides on the committed state, not on the rolled-back one.
        expect(yield* runtime.send(Counter, "c", { _tag: "Add", by: 2 })).toEqual({
          _tag: "Stay",
          state: { _tag: "Even", count: 2, trail: [2] },
          seqNr: 2
        })
        // A create rolled back leaves no instance behind, in the store or in the cache.
        yield* Effect.flip(sql.withTransaction(Effect.zipRight(runtime.create(Counter, "d"), Effect.fail("roll back"))))
        expect(yield* Effect.flip(runtime.inspect(Counter, "d"))).toBeInstanceOf(Errors.InstanceNotFound)
        expect((yield* runtime.create(Counter, "d")).seqNr).toBe(1)
        // A transaction that commits is seen by the runtime and by a fresh one alike.
        yield* sql.withTransaction(runtime.send(Counter, "c", { _tag: "Add", by: 3 }))
        const fresh = (yield* runtimeOn(context, { machines: [Counter], retry })).runtime
        expect(yield* fresh.inspect(Counter, "c")).toEqual(yield* runtime.inspect(Counter, "c"))
        expect((yield* runtime.inspect(Counter, "c")).state).toEqual({ _tag: "Odd", count: 5, trail: [2, 3] })
      }))

    it.scoped("a rolled-back send leaves the committed state's in-process timeout armed", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const context = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(target.client())))
        const sql = Context.get(context, SqlClient.SqlClient)
        const { runtime } = yield* runtimeOn(context, { machines: [Order], retry })
        yield* runtime.create(Order, "o", { _tag: "Pending", orderId: "o" })
        yield* Effect.flip(
          sql.withTransaction(Effect.zipRight(runtime.send(Order, "o", { _tag: "Pay", amount: 5 }), Effect.fail("roll back")))
        )
        yield* TestClock.adjust("6 minutes")
        // Read the log only (an inspect would load the instance and arm its timers anew).
        const history = yield* eventually(
          Effect.filterOrFail(runtime.history(Order, "o"), (h) => h.length === 2, () => "no timeout fired")
        )
        expect(history[1]).toMatchObject({ _tag: "Event", event: { _tag: "PaymentTimeout" } })
      }))
  })
}

describe.skipIf(postgres.skip !== undefined)("a dropped connection on postgres", () => {
  it.scoped("fails a command at most, never half-writes it, and the runtime recovers by itself", () =>
    Effect.gen(function*() {
      const applicationName = `fsm-drop-${crypto.randomUUID().slice(0, 8)}`
      const schema = yield* Pg.freshSchema
      const client = PgClient.layer({ ...Pg.clientConfig(schema), applicationName })
      const context = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(client)))
      const admin = Context.get(yield* Layer.build(Pg.layerClient()), SqlClient.SqlClient)
      const { runtime } = yield* runtimeOn(context, { machines: [Counter], retry: Schedule.recurs(5), snapshotEvery: 2 })
      yield* runtime.create(Counter, "c")
      const acknowledged: Array<number> = []
      let failures = 0
      for (let by = 1; by <= 12; by++) {
        if (by % 4 === 0) {
          // Every connection of this runtime's pool is cut, as by a failover or a network blip.
          yield* admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ${applicationName}`
        }
        const result = yield* Effect.either(runtime.send(Counter, "c", { _tag: "Add", by }))
        if (result._tag === "Right") acknowledged.push(by)
        else {
          expect(result.left).toBeInstanceOf(Errors.PersistenceError)
          failures++
        }
      }
      expect(failures).toBeLessThanOrEqual(3) // one per cut at most
      const history = yield* runtime.history(Counter, "c")
      expect(history.map((h) => h.seqNr)).toEqual(history.map((_, i) => i + 1))
      const added = history.flatMap((h) => h._tag === "Event" && h.event._tag === "Add" ? [h.event.by] : [])
      // Every acknowledged send exactly once; nothing twice.
      for (const by of acknowledged) expect(added.filter((b) => b === by)).toEqual([by])
      expect(new Set(added).size).toBe(added.length)
      const fresh = (yield* runtimeOn(context, { machines: [Counter], retry })).runtime
      expect(yield* fresh.inspect(Counter, "c")).toEqual(yield* runtime.inspect(Counter, "c"))
    }))
})
