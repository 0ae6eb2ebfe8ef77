/**
 * Locking strategies: a paused "zombie" node is fenced off, lost leases fail
 * fast or are fenced at commit, sticky leases make the cache authoritative,
 * leader election keeps one leader, and many runtimes hammering shared
 * instances lose nothing under either strategy.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Either, Exit, Fiber, Layer, Metric, Option, Schedule, Scope, TestClock } from "effect"
import {
  Errors,
  EventStore,
  FSMRuntime,
  LeaderElection,
  LeaseStore,
  LockingStrategy,
  type Machine,
  Metrics,
  TimeoutStore as TimeoutStoreTag,
  TimeoutStrategy
} from "effect-fsm"
import { Counter, Order } from "./fixtures/machines.js"
import { backends } from "./utils/backends.js"
import { eventually } from "./utils/eventually.js"
import { faulty, withStore } from "./utils/faults.js"
import { buildStore, runtimeOn, withDurableTimeouts } from "./utils/runtime.js"

type StoreContext = Context.Context<EventStore.EventStore | TimeoutStoreTag.TimeoutStore | LeaseStore.LeaseStore>

const retry = Schedule.recurs(1000)

/** A runtime over `store` with the distributed strategy. */
const lockedRuntime = (
  store: Context.Context<EventStore.EventStore | LeaseStore.LeaseStore>,
  options: LockingStrategy.DistributedOptions,
  runtimeOptions: Partial<FSMRuntime.Options<ReadonlyArray<Machine.Any>>> = {}
) =>
  Effect.gen(function*() {
    const strategy = yield* Layer.build(Layer.provide(LockingStrategy.distributed(options), Layer.succeedContext(store)))
    return (yield* runtimeOn(Context.merge(store, strategy) as Context.Context<EventStore.EventStore>, {
      machines: [Counter] as ReadonlyArray<Machine.Any>,
      retry,
      ...runtimeOptions
    })).runtime
  })

/** The store's leases as a node sees them whose heartbeat cannot reach the lease store any more. */
const heartbeatCut = (store: Context.Context<LeaseStore.LeaseStore>) =>
  LeaseStore.LeaseStore.of({
    ...Context.get(store, LeaseStore.LeaseStore),
    extend: () => Effect.fail(new Errors.PersistenceError({ operation: "extend", reason: "unreachable (test)" }))
  })

const addsOf = (history: ReadonlyArray<FSMRuntime.HistoryEntry<unknown, { readonly _tag: string; readonly by?: number }>>) =>
  history.flatMap((h) => h._tag === "Event" && h.event._tag === "Add" ? [h.event.by!] : [])

for (const backend of backends) {
  // PostgreSQL judges lease expiry by its own clock: leases there are short
  // and real time passes; elsewhere TestClock moves it.
  const realClock = backend.name === "postgres"
  const ttl = realClock ? "300 millis" : "3 seconds"
  /**
   * `store`'s event store with every commit of an `Add` whose `by` passes
   * `which` held at a gate: `paused` completes as such a commit begins, and
   * it goes on once `gate` is opened.
   */
  const pausingAdds = (store: StoreContext, which: (by: number) => boolean) =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const paused = yield* Deferred.make<void>()
      const slow = faulty(Context.get(store, EventStore.EventStore), (commit) =>
        commit.events[0]?.tag === "Add" && which((commit.events[0].payload as { by: number }).by)
          ? { _tag: "Around", before: Effect.zipRight(Deferred.succeed(paused, void 0), Deferred.await(gate)), after: Effect.void }
          : undefined)
      return { gate, paused, slow }
    })

  const pastExpiry = (store: StoreContext, instanceId: string) =>
    realClock
      ? eventually(Effect.filterOrFail(
        Context.get(store, LeaseStore.LeaseStore).get({ machine: "counter", instanceId }),
        Option.isNone,
        () => "lease still held"
      ))
      : TestClock.adjust("4 seconds")

  describe(`locking on ${backend.name}`, () => {
    it.scoped("a paused node whose lease was taken over cannot write: FencingRejected, and the log holds only the new owner's writes", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as StoreContext
        const { gate, paused, slow: zombieStore } = yield* pausingAdds(store, (by) => by === 100)
        // The whole node is paused: its heartbeat too.
        const leases = Context.get(store, LeaseStore.LeaseStore)
        const pausedLeases = LeaseStore.LeaseStore.of({
          ...leases,
          extend: (lease, extension) => Effect.zipRight(Deferred.await(gate), leases.extend(lease, extension))
        })
        const a = yield* lockedRuntime(
          Context.add(withStore(store, zombieStore.store), LeaseStore.LeaseStore, pausedLeases),
          { ttl, onLockLost: "Continue" }
        )
        const b = yield* lockedRuntime(store, { ttl, wait: "30 seconds" })
        yield* a.create(Counter, "c")
        const zombie = yield* Effect.fork(a.send(Counter, "c", { _tag: "Add", by: 100 }))
        yield* Deferred.await(paused) // A holds the lease and is about to commit
        yield* pastExpiry(store, "c")
        expect((yield* b.send(Counter, "c", { _tag: "Add", by: 1 })).seqNr).toBe(2)
        yield* Deferred.succeed(gate, void 0)
        const fencedBefore = (yield* Metric.value(Metrics.fencingRejected)).count
        const rejected = yield* Effect.flip(Fiber.join(zombie))
        expect(rejected).toBeInstanceOf(Errors.FencingRejected)
        expect((yield* Metric.value(Metrics.fencingRejected)).count - fencedBefore).toBe(1)
        expect(addsOf(yield* b.history(Counter, "c"))).toEqual([1])
        // A learned: its next command takes the lease again and decides on the log.
        expect(yield* a.send(Counter, "c", { _tag: "Add", by: 2 })).toMatchObject({ seqNr: 3, state: { count: 3 } })
      }))

    if (!realClock) {
      it.scoped("FailFast: a command whose lease cannot be extended is interrupted with LockLost before it commits", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const store = (yield* buildStore(backend)) as StoreContext
          const cut = heartbeatCut(store)
          const inner = Context.get(store, EventStore.EventStore)
          const paused = yield* Deferred.make<void>()
          // Loading the instance hangs (a slow read), before anything is decided.
          const slowRead = EventStore.EventStore.of({
            ...inner,
            loadSnapshot: (machine, instanceId) =>
              Effect.zipRight(Effect.zipRight(Deferred.succeed(paused, void 0), Effect.never), inner.loadSnapshot(machine, instanceId))
          })
          yield* (yield* runtimeOn(store, { machines: [Counter], retry })).runtime.create(Counter, "c")
          const a = yield* lockedRuntime(
            Context.add(withStore(store, slowRead), LeaseStore.LeaseStore, cut),
            { ttl: "3 seconds", heartbeat: "1 second" }
          )
          const command = yield* Effect.fork(a.send(Counter, "c", { _tag: "Add", by: 1 }))
          yield* Deferred.await(paused)
          yield* TestClock.adjust("4 seconds")
          expect(yield* Effect.flip(Fiber.join(command))).toBeInstanceOf(Errors.LockLost)
          expect((yield* a.history(Counter, "c")).length).toBe(1)
        }))

      it.scoped("FailFast never interrupts a commit in flight: losing the lease then is settled by fencing", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const store = (yield* buildStore(backend)) as StoreContext
          const cut = heartbeatCut(store)
          const { gate, paused, slow } = yield* pausingAdds(store, () => true)
          const a = yield* lockedRuntime(
            Context.add(withStore(store, slow.store), LeaseStore.LeaseStore, cut),
            { ttl: "3 seconds", heartbeat: "1 second" }
          )
          yield* a.create(Counter, "c")
          const command = yield* Effect.fork(a.send(Counter, "c", { _tag: "Add", by: 1 }))
          yield* Deferred.await(paused) // the commit has begun
          yield* TestClock.adjust("4 seconds") // the lease is lost meanwhile, nobody takes it
          yield* Deferred.succeed(gate, void 0)
          // Not LockLost for a commit that landed: the fence still held, so it is a success.
          expect((yield* Fiber.join(command)).seqNr).toBe(2)
          expect((yield* a.history(Counter, "c")).length).toBe(2)
        }))
    }

    if (!realClock) {
      it.scoped("the heartbeat keeps a lease through a command longer than its ttl, and it is released after", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const store = (yield* buildStore(backend)) as StoreContext
          const leases = Context.get(store, LeaseStore.LeaseStore)
          const { gate, paused, slow } = yield* pausingAdds(store, () => true)
          const a = yield* lockedRuntime(withStore(store, slow.store), { ttl: "3 seconds", heartbeat: "1 second" })
          const b = yield* lockedRuntime(store, { ttl: "3 seconds", wait: "1 second" })
          yield* a.create(Counter, "c")
          const command = yield* Effect.fork(a.send(Counter, "c", { _tag: "Add", by: 1 }))
          yield* Deferred.await(paused)
          for (let i = 0; i < 10; i++) yield* TestClock.adjust("1 second") // 10 s: three ttls
          const held = yield* leases.get({ machine: "counter", instanceId: "c" })
          expect(Option.map(held, (l) => l.owner)).toEqual(Option.some(a.nodeId))
          // Another node cannot take it meanwhile.
          const other = yield* Effect.fork(b.send(Counter, "c", { _tag: "Add", by: 2 }))
          yield* TestClock.adjust("2 seconds")
          expect(yield* Effect.flip(Fiber.join(other))).toBeInstanceOf(Errors.LockTimeout)
          yield* Deferred.succeed(gate, void 0)
          expect((yield* Fiber.join(command)).seqNr).toBe(2)
          expect(yield* leases.get({ machine: "counter", instanceId: "c" })).toEqual(Option.none())
        }))

      it.scoped("a leader that dies without stepping down is replaced after its lease expires", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const store = (yield* buildStore(backend)) as StoreContext
          const leases = Context.get(store, LeaseStore.LeaseStore)
          let dead = false
          // A candidate whose node stops answering: no renewal, no release.
          const gone = (operation: string) => Effect.fail(new Errors.PersistenceError({ operation, reason: "dead" }))
          const dying = LeaseStore.LeaseStore.of({
            ...leases,
            tryAcquire: (key, owner, ttl) => dead ? gone("tryAcquire") : leases.tryAcquire(key, owner, ttl),
            extend: (lease, ttl) =>
              dead ? Effect.fail(new Errors.PersistenceError({ operation: "extend", reason: "dead" })) : leases.extend(lease, ttl),
            release: (lease) => dead ? Effect.fail(new Errors.PersistenceError({ operation: "release", reason: "dead" })) : leases.release(lease)
          })
          const first = yield* LeaderElection.campaign({ name: "job", nodeId: "first", ttl: "3 seconds", interval: "1 second" })
            .pipe(Effect.provideService(LeaseStore.LeaseStore, dying))
          const token = Option.map(yield* eventually(Effect.filterOrFail(first.lease, Option.isSome, () => "not leader")), (l) => l.token)
          const second = yield* LeaderElection.campaign({ name: "job", nodeId: "second", ttl: "3 seconds", interval: "1 second" })
            .pipe(Effect.provide(store))
          dead = true
          yield* TestClock.adjust("1 second")
          expect(yield* second.isLeader).toBe(false) // the lease has not expired yet
          for (let i = 0; i < 4; i++) yield* TestClock.adjust("1 second")
          const taken = yield* eventually(Effect.filterOrFail(second.lease, Option.isSome, () => "not taken over"))
          expect(taken.value.token).toBeGreaterThan(Option.getOrThrow(token))
          expect(yield* first.isLeader).toBe(false) // it stepped down before its lease ran out
        }))
    }

    if (!realClock) {
      it.scoped("a sticky lease whose renewal hangs stops being trusted: the next command catches up with the log", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const store = (yield* buildStore(backend)) as StoreContext
          const leases = Context.get(store, LeaseStore.LeaseStore)
          const hanging = LeaseStore.LeaseStore.of({ ...leases, extend: () => Effect.never })
          const a = yield* lockedRuntime(
            Context.add(store, LeaseStore.LeaseStore, hanging),
            { ttl: "3 seconds", heartbeat: "1 second", scope: "sticky" },
            { machines: [Order] }
          )
          const b = yield* lockedRuntime(store, { ttl: "3 seconds", wait: "10 seconds" }, { machines: [Order] })
          yield* a.create(Order, "o", { _tag: "Pending", orderId: "o" })
          for (let i = 0; i < 5; i++) yield* TestClock.adjust("1 second") // A's lease runs out unrenewed
          yield* b.send(Order, "o", { _tag: "Pay", amount: 5 })
          // Ship is valid only in Paid, which A's cache has not seen.
          expect((yield* a.send(Order, "o", { _tag: "Ship", tracking: "T" })).state._tag).toBe("Shipped")
        }))

      it.scoped("a timer of an instance another node holds is tried again later, never dead-lettered for it", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const store = (yield* buildStore(backend)) as StoreContext
          // A writes timer rows but sweeps nothing; B sweeps, and gives up on a timer after one failure.
          const rowsOnly = TimeoutStrategy.TimeoutStrategy.of({
            start: () => Effect.succeed({ durable: true, armed: () => Effect.void })
          })
          const aScope = yield* Scope.make()
          const a = yield* lockedRuntime(
            Context.add(store, TimeoutStrategy.TimeoutStrategy, rowsOnly),
            { ttl: "10 minutes", scope: "sticky" },
            { machines: [Order] }
          ).pipe(Scope.extend(aScope))
          const swept = yield* withDurableTimeouts(store, { maxAttempts: 1, claimLease: "30 seconds" })
          yield* lockedRuntime(swept as StoreContext, { ttl: "10 minutes", wait: "1 second" }, { machines: [Order] })
          yield* a.create(Order, "o", { _tag: "Pending", orderId: "o" })
          const timers = Context.get(store, TimeoutStoreTag.TimeoutStore)
          for (let i = 0; i < 12; i++) {
            yield* TestClock.adjust("30 seconds") // past the deadline, and several claim leases
            yield* eventually(Effect.void)
          }
          expect(yield* timers.deadLetters("order")).toEqual([])
          expect((yield* timers.pending("order", "o")).map((t) => t.name)).toEqual(["payment"])
          yield* Scope.close(aScope, Exit.void) // A lets go of the instance
          for (let i = 0; i < 4; i++) {
            yield* TestClock.adjust("30 seconds")
            yield* eventually(Effect.void)
          }
          const history = yield* eventually(Effect.filterOrFail(
            Effect.flatMap(runtimeOn(store, { machines: [Order] }), ({ runtime }) => runtime.history(Order, "o")),
            (h) => h.length === 2,
            () => "not fired"
          ))
          expect(history[1]!.metadata.source).toBe("timeout")
        }))

      it.scoped("a sticky lease is handed back when the command leaves nothing loaded", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const store = (yield* buildStore(backend)) as StoreContext
          const leases = Context.get(store, LeaseStore.LeaseStore)
          const a = yield* lockedRuntime(store, { ttl: "1 minute", scope: "sticky" })
          expect(yield* Effect.flip(a.send(Counter, "ghost", { _tag: "Add", by: 1 }))).toBeInstanceOf(Errors.InstanceNotFound)
          expect(yield* leases.get({ machine: "counter", instanceId: "ghost" })).toEqual(Option.none())
        }))

      it.scoped("waiting for a lease another node holds can be interrupted", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const store = (yield* buildStore(backend)) as StoreContext
          const a = yield* lockedRuntime(store, { ttl: "1 minute", scope: "sticky" })
          const b = yield* lockedRuntime(store, { ttl: "1 minute", wait: "1 hour" })
          yield* a.create(Counter, "c")
          const waiting = yield* Effect.fork(b.send(Counter, "c", { _tag: "Add", by: 1 }))
          yield* eventually(Effect.void)
          yield* Fiber.interrupt(waiting) // returns: the wait was interruptible
          expect((yield* a.history(Counter, "c")).length).toBe(1)
        }))

      it.scoped("a leader whose renewal hangs steps down before its lease runs out; never two leaders", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const store = (yield* buildStore(backend)) as StoreContext
          const leases = Context.get(store, LeaseStore.LeaseStore)
          let hang = false
          const flaky = LeaseStore.LeaseStore.of({
            ...leases,
            extend: (lease, ttl) => hang ? Effect.never : leases.extend(lease, ttl)
          })
          const first = yield* LeaderElection.campaign({ name: "job", nodeId: "first", ttl: "3 seconds", interval: "1 second" })
            .pipe(Effect.provideService(LeaseStore.LeaseStore, flaky))
          yield* eventually(Effect.filterOrFail(first.isLeader, (l) => l, () => "not leader"))
          const second = yield* LeaderElection.campaign({ name: "job", nodeId: "second", ttl: "3 seconds", interval: "1 second" })
            .pipe(Effect.provide(store))
          hang = true
          for (let i = 0; i < 12; i++) {
            yield* TestClock.adjust("500 millis")
            yield* eventually(Effect.void)
            const both = (yield* first.isLeader) && (yield* second.isLeader)
            expect(both).toBe(false)
          }
          expect(yield* second.isLeader).toBe(true)
        }))
    }

    it.scoped("sticky leases: one acquisition serves many commands, released when the instance is evicted", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as StoreContext
        const leases = Context.get(store, LeaseStore.LeaseStore)
        const a = yield* lockedRuntime(store, { ttl: "1 minute", scope: "sticky" }, { cacheSize: 1 })
        yield* a.create(Counter, "c")
        const first = yield* leases.get({ machine: "counter", instanceId: "c" })
        for (let by = 1; by <= 5; by++) yield* a.send(Counter, "c", { _tag: "Add", by })
        const later = yield* leases.get({ machine: "counter", instanceId: "c" })
        expect(Option.map(later, (l) => l.token)).toEqual(Option.map(first, (l) => l.token))
        expect(Option.map(later, (l) => l.owner)).toEqual(Option.some(a.nodeId))
        // Loading another instance evicts c (cacheSize 1): its lease is given back.
        yield* a.create(Counter, "d")
        yield* eventually(Effect.filterOrFail(leases.get({ machine: "counter", instanceId: "c" }), Option.isNone, () => "held"))
        expect((yield* a.inspect(Counter, "c")).state).toMatchObject({ count: 15 })
      }))

    it.scoped("a command interrupted under a sticky lease after its commit landed leaves no stale cache behind", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as StoreContext
        const wrapped = faulty(Context.get(store, EventStore.EventStore))
        const a = yield* lockedRuntime(withStore(store, wrapped.store) as StoreContext, { ttl: "1 minute", scope: "sticky" }, {
          machines: [Order]
        })
        yield* a.create(Order, "o", { _tag: "Pending", orderId: "o" })
        wrapped.setPlan(() => ({ _tag: "InterruptAfter" }))
        expect(Exit.isInterrupted(yield* Effect.exit(a.send(Order, "o", { _tag: "Pay", amount: 5 })))).toBe(true)
        wrapped.setPlan(() => undefined)
        // The cache is trusted under the lease: had it kept Pending, Ship would be refused without a look at the log.
        expect(yield* a.send(Order, "o", { _tag: "Ship", tracking: "t" })).toMatchObject({ seqNr: 3, state: { _tag: "Shipped" } })
      }))

    it.scoped("a lease is given back when the runtime's scope ends", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as StoreContext
        const leases = Context.get(store, LeaseStore.LeaseStore)
        const scope = yield* Scope.make()
        const a = yield* lockedRuntime(store, { ttl: "1 minute", scope: "sticky" }).pipe(Scope.extend(scope))
        yield* a.create(Counter, "c")
        expect(Option.isSome(yield* leases.get({ machine: "counter", instanceId: "c" }))).toBe(true)
        yield* Scope.close(scope, Exit.void)
        expect(yield* leases.get({ machine: "counter", instanceId: "c" })).toEqual(Option.none())
      }))

    if (!realClock) {
      it.scoped("a leaderOnly sweeper fires each timer exactly once across a change of leader", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(0)
          const store = (yield* buildStore(backend)) as StoreContext
          const sweeperOptions = { leaderOnly: { ttl: "3 seconds" } } as const
          const firstScope = yield* Scope.make()
          const first = yield* Effect.flatMap(withDurableTimeouts(store, sweeperOptions), (context) =>
            runtimeOn(context as Context.Context<EventStore.EventStore>, { machines: [Order], retry })).pipe(
              Scope.extend(firstScope)
            )
          const second = yield* Effect.flatMap(withDurableTimeouts(store, sweeperOptions), (context) =>
            runtimeOn(context as Context.Context<EventStore.EventStore>, { machines: [Order], retry }))
          for (let i = 0; i < 10; i++) {
            yield* TestClock.adjust("30 seconds")
            yield* first.runtime.create(Order, `o${i}`, { _tag: "Pending", orderId: `o${i}` })
          }
          yield* TestClock.adjust("2 minutes") // the first few fall due
          yield* eventually(Effect.void)
          yield* Scope.close(firstScope, Exit.void) // the leader (whichever it was) may be gone now
          for (let step = 0; step < 20; step++) {
            yield* TestClock.adjust("30 seconds")
            yield* eventually(Effect.void)
          }
          for (let i = 0; i < 10; i++) {
            const history = yield* eventually(Effect.filterOrFail(
              second.runtime.history(Order, `o${i}`),
              (h) => h.length === 2,
              () => `o${i} not timed out`
            ))
            expect(history.filter((h) => h.metadata.source === "timeout").length).toBe(1)
          }
        }))
    }

    it.scoped("leader election: of 10 candidates exactly one leads; stepping down hands over at once", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(0)
        const store = (yield* buildStore(backend)) as StoreContext
        const scopes = yield* Effect.forEach(Array.from({ length: 10 }), () => Scope.make())
        const elections = yield* Effect.forEach(scopes, (scope, i) =>
          LeaderElection.campaign({ name: "report", nodeId: `n${i}`, ttl: realClock ? "2 seconds" : "3 seconds", interval: "1 second" })
            .pipe(Effect.provide(store), Scope.extend(scope)))
        const leaders = Effect.map(Effect.forEach(elections, (e) => e.isLeader), (flags) =>
          flags.flatMap((leading, i) => leading ? [i] : []))
        yield* eventually(Effect.filterOrFail(leaders, (l) => l.length === 1, () => "no single leader"))
        for (let round = 0; round < 5; round++) {
          yield* TestClock.adjust("1 second")
          yield* eventually(Effect.void)
          expect((yield* leaders).length).toBeLessThanOrEqual(1)
        }
        const [leader] = yield* leaders
        const token = Option.map(yield* elections[leader!]!.lease, (l) => l.token)
        yield* Scope.close(scopes[leader!]!, Exit.void)
        yield* TestClock.adjust("2 seconds") // one round of every other candidate, whatever its jitter
        const next = yield* eventually(Effect.filterOrFail(leaders, (l) => l.length === 1, () => "no new leader"))
        expect(next[0]).not.toBe(leader)
        const nextToken = Option.map(yield* elections[next[0]!]!.lease, (l) => l.token)
        expect(Option.getOrThrow(nextToken)).toBeGreaterThan(Option.getOrThrow(token))
        for (const scope of scopes) yield* Scope.close(scope, Exit.void)
      }))
  })
}

describe("conflict retry", () => {
  it.scoped("is configurable per machine, and every conflict is counted", () =>
    Effect.gen(function*() {
      const store = yield* buildStore(backends[0]!)
      const conflictsBefore = (yield* Metric.value(Metrics.conflicts)).count
      // Two runtimes over one store: b's cache is behind after a writes.
      const a = (yield* runtimeOn(store, { machines: [Counter] })).runtime
      const b = (yield* runtimeOn(store, { machines: [Counter], retryByMachine: { counter: Schedule.stop } })).runtime
      yield* a.create(Counter, "c")
      yield* b.inspect(Counter, "c")
      yield* a.send(Counter, "c", { _tag: "Add", by: 1 })
      expect(yield* Effect.flip(b.send(Counter, "c", { _tag: "Add", by: 2 }))).toBeInstanceOf(Errors.SequenceConflict)
      const c = (yield* runtimeOn(store, { machines: [Counter], retry: Schedule.recurs(1) })).runtime
      yield* c.inspect(Counter, "c")
      yield* a.send(Counter, "c", { _tag: "Add", by: 3 })
      expect((yield* c.send(Counter, "c", { _tag: "Add", by: 4 })).seqNr).toBe(4)
      expect((yield* Metric.value(Metrics.conflicts)).count - conflictsBefore).toBe(2)
    }))
})

describe("locking options", () => {
  it.effect("unusable distributed options are InvalidConfiguration when the layer builds", () =>
    Effect.gen(function*() {
      for (
        const [options, option] of [
          [{ ttl: "0 millis" }, "ttl"],
          [{ ttl: "1 second", heartbeat: "2 seconds" }, "heartbeat"],
          [{ wait: "soon" as never }, "wait"],
          [{ scope: "forever" as never }, "scope"],
          [{ onLockLost: "Panic" as never }, "onLockLost"]
        ] as const
      ) {
        const error = yield* Effect.flip(
          Effect.scoped(Layer.build(LockingStrategy.distributed(options).pipe(Layer.provide(EventStore.layerMemory))))
        )
        expect(error).toMatchObject({ _tag: "InvalidConfiguration", option })
      }
    }))
})

// Real time: the default retry's back-off sleeps must pass, and PostgreSQL judges leases by its clock.
const pg = backends.find((b) => b.name === "postgres")
if (pg !== undefined) {
  describe("stress on postgres", () => {
    for (
      const [name, strategy] of [
        ["optimistic (default retry)", undefined],
        ["distributed per command", { ttl: "10 seconds", wait: "30 seconds", retryInterval: "2 millis" }],
        ["distributed sticky", { ttl: "10 seconds", wait: "30 seconds", retryInterval: "2 millis", scope: "sticky" }]
      ] as const
    ) {
      // A sticky lease stays with the node that loaded the instance, so the
      // commands of an instance go to its owner (as a router would send them):
      // other nodes would wait for it and fail with LockTimeout.
      const routed = strategy !== undefined && "scope" in strategy
      it.live(`4 runtimes x 50 fibers on 20 shared instances, ${name}: every accepted send once, gapless, no conflict surfaced`, () =>
        Effect.scoped(Effect.gen(function*() {
          const store = (yield* buildStore(pg)) as StoreContext
          const runtimes = yield* Effect.forEach(Array.from({ length: 4 }), (): Effect.Effect<
            FSMRuntime.FSMRuntime["Type"],
            unknown,
            Scope.Scope
          > =>
            strategy === undefined
              ? Effect.map(runtimeOn(store, { machines: [Counter] }), (r) => r.runtime)
              : lockedRuntime(store, strategy, { retry: FSMRuntime.defaultRetry }))
          const ids = Array.from({ length: 20 }, (_, i) => `i${i}`)
          yield* Effect.forEach(ids, (id, i) => runtimes[routed ? i % 4 : 0]!.create(Counter, id), { discard: true })
          let next = 0
          const results = yield* Effect.forEach(
            Array.from({ length: 200 }),
            (_, fiber) =>
              Effect.forEach(Array.from({ length: 3 }), () => {
                const by = ++next
                const id = routed ? ids[(fiber % 4) + 4 * (by % 5)]! : ids[by % 20]!
                return Effect.either(runtimes[fiber % 4]!.send(Counter, id, { _tag: "Add", by }))
                  .pipe(Effect.map((result) => [by, result] as const))
              }),
            { concurrency: 200 }
          )
          const flat = results.flat()
          const failures = flat.filter(([, r]) => Either.isLeft(r))
          expect(failures.map(([, r]) => Either.isLeft(r) ? r.left._tag : "")).toEqual([])
          const fresh = (yield* runtimeOn(store, { machines: [Counter] })).runtime
          let logged = 0
          for (const id of ids) {
            const history = yield* fresh.history(Counter, id)
            expect(history.map((h) => h.seqNr)).toEqual(history.map((_, i) => i + 1))
            const adds = addsOf(history)
            expect(new Set(adds).size).toBe(adds.length)
            logged += adds.length
            const view = yield* fresh.inspect(Counter, id)
            expect(view.state).toMatchObject({ count: adds.reduce((a, b) => a + b, 0), trail: adds })
          }
          expect(logged).toBe(flat.length)
        })), 120_000)
    }
  })
}
