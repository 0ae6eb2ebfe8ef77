/**
 * The transactional outbox, end to end on every backend: commands are
 * written in the commit of their event and run after it; retries, dead
 * letters and re-drives; one reply per command however often its handler
 * ran; claims refreshed under a slow handler; crashes and restarts; two
 * dispatchers; the checkout <-> payment saga.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Layer, Metric, Option, Ref, Schedule, Schema, TestClock } from "effect"
import {
  EventStore,
  FSMRuntime,
  LeaseStore,
  LockingStrategy,
  Machine,
  Metrics,
  Outbox,
  OutboxStore,
  type TimeoutStore
} from "effect-fsm"
import { Checkout, type Gateway, handlersLayer, makeGateway, Payment, Shop } from "./fixtures/outbox.js"
import { backends } from "./utils/backends.js"
import { countingReads } from "./utils/countingReads.js"
import { eventually } from "./utils/eventually.js"
import { faulty, withStore } from "./utils/faults.js"
import { buildStore } from "./utils/runtime.js"

type Stores = EventStore.EventStore | TimeoutStore.TimeoutStore | OutboxStore.OutboxStore | LeaseStore.LeaseStore

const machines = [Shop, Checkout, Payment] as const

/** Retries every second, 5 attempts in all. */
const quickRetry = Schedule.spaced("1 second").pipe(Schedule.intersect(Schedule.recurs(4)))

const outboxOf = (store: Context.Context<Stores>) => Context.get(store, OutboxStore.OutboxStore)

const sourcesOf = (history: ReadonlyArray<FSMRuntime.HistoryEntry<unknown, { readonly _tag: string }>>) =>
  history.map((h) => `${h.seqNr}:${h._tag === "Event" ? h.event._tag : h._tag}:${h.metadata.source}`)

for (const backend of backends) {
  describe(`outbox on ${backend.name}`, () => {
    const setup = Effect.gen(function*() {
      yield* TestClock.setTime(0)
      const store = (yield* buildStore(backend)) as Context.Context<Stores>
      const gateway = yield* makeGateway
      return { store, gateway }
    })

    /** A runtime over `store` running every fixture machine, dispatching with `options` unless told not to. */
    const node = (
      store: Context.Context<Stores>,
      gateway: Context.Tag.Service<Gateway>,
      options: Outbox.DispatcherOptions & { readonly nodeId?: string } = {}
    ) =>
      Effect.gen(function*() {
        const { nodeId, ...dispatcher } = options
        const extra = yield* Layer.build(
          Layer.mergeAll(
            handlersLayer(gateway),
            Outbox.layer({ pollInterval: "1 second", maxIdleInterval: "10 minutes", retry: quickRetry, ...dispatcher })
          )
        )
        return yield* FSMRuntime.make({ machines, ...(nodeId === undefined ? {} : { nodeId }) }).pipe(
          Effect.provide(Context.merge(store, extra as Context.Context<Gateway>)),
          Effect.orDie
        )
      })

    const until = <A>(check: Effect.Effect<A, unknown>, holds: (a: A) => boolean, what: string) =>
      eventually(Effect.filterOrFail(check, holds, () => what))

    /** `until`, moving the clock on by a second between looks (retries are due a second apart). */
    const untilAdvancing = <A>(check: Effect.Effect<A, unknown>, holds: (a: A) => boolean, what: string) =>
      Effect.gen(function*() {
        for (let step = 0; step < 30; step++) {
          const seen = yield* eventually(check, 20, 0)
          if (holds(seen)) return seen
          yield* TestClock.adjust("1 second")
        }
        return yield* until(check, holds, what)
      })

    it.scoped("a claimed batch of commands loads the instances their replies go to with one recoveryBatch, no recovery per reply", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        const writer = yield* node(store, gateway, { dispatch: false })
        const ids = Array.from({ length: 8 }, (_, i) => `b${i}`)
        for (const id of ids) {
          yield* writer.create(Shop, id, { _tag: "Placed", orderId: id, amount: 1 })
          yield* writer.send(Shop, id, { _tag: "Checkout" })
        }
        const { reads, store: counted } = countingReads(store)
        yield* node(counted, gateway)
        for (const id of ids) {
          yield* until(Effect.zipRight(writer.evictAll, writer.inspect(Shop, id)), (v) => v.state._tag === "Paid", `${id} paid`)
        }
        expect(reads.batches).toBeGreaterThanOrEqual(1)
        expect(reads.batched).toBeGreaterThanOrEqual(ids.length)
        expect({ snapshots: reads.snapshots, pages: reads.pages }).toEqual({ snapshots: 0, pages: 0 })
      }))

    /** `store` with its outbox's `extendClaim` counted (how often a claim was renewed). */
    const countingRenewals = (store: Context.Context<Stores>) => {
      const inner = outboxOf(store)
      const renewals = { count: 0 }
      const counted = Context.add(store, OutboxStore.OutboxStore, {
        ...inner,
        extendClaim: (command, options) => Effect.zipRight(Effect.sync(() => renewals.count++), inner.extendClaim(command, options))
      })
      return { renewals, store: counted }
    }

    it.scoped("a command started right after its claim runs without renewing the claim first", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        const { renewals, store: counted } = countingRenewals(store)
        const runtime = yield* node(counted, gateway)
        yield* runtime.create(Shop, "o1", { _tag: "Placed", orderId: "o1", amount: 42 })
        yield* runtime.send(Shop, "o1", { _tag: "Checkout" })
        yield* until(runtime.inspect(Shop, "o1"), (v) => v.state._tag === "Paid", "not paid")
        yield* until(outboxOf(store).pending("shop", "o1"), (p) => p.length === 0, "commands pending")
        // ChargeCard, then the receipt Paid produces: both ran, no claim renewed.
        expect((yield* Ref.get(gateway.calls)).map((c) => c.command)).toEqual(["ChargeCard", "SendReceipt"])
        expect(renewals.count).toBe(0)
      }))

    it.scoped("a command that starts over a sixth of the claim lease after its claim (a slow batch read) renews the claim first", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        const writer = yield* node(store, gateway, { dispatch: false })
        for (const id of ["s1", "s2"]) {
          yield* writer.create(Shop, id, { _tag: "Placed", orderId: id, amount: 1 })
          yield* writer.send(Shop, id, { _tag: "Checkout" })
        }
        // The dispatcher's batch read of the two instances takes 6 seconds (the lease: 30 s).
        const reading = yield* Deferred.make<void>()
        const events = Context.get(store, EventStore.EventStore)
        const slow = Context.add(store, EventStore.EventStore, {
          ...events,
          recoveryBatch: (machine, ids, limit) =>
            Effect.zipRight(
              Effect.zipRight(Deferred.succeed(reading, undefined), Effect.sleep("6 seconds")),
              events.recoveryBatch(machine, ids, limit)
            )
        })
        const { renewals, store: counted } = countingRenewals(slow)
        const dispatcher = yield* node(counted, gateway)
        yield* Deferred.await(reading)
        expect(renewals.count).toBe(0)
        yield* TestClock.adjust("6 seconds")
        for (const id of ["s1", "s2"]) {
          yield* until(dispatcher.inspect(Shop, id), (v) => v.state._tag === "Paid", `${id} not paid`)
        }
        // Both ChargeCards renewed their claim before running; nothing else did.
        expect(renewals.count).toBe(2)
      }))

    it.scoped("a command is written in the commit of its event and runs after it; the reply completes it", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        // A node that writes commands but dispatches none: the rows are there, untouched.
        const writer = yield* node(store, gateway, { dispatch: false })
        yield* writer.create(Shop, "o1", { _tag: "Placed", orderId: "o1", amount: 42 })
        yield* writer.send(Shop, "o1", { _tag: "Checkout" }, { correlationId: "corr-1" })
        const pending = yield* outboxOf(store).pending("shop", "o1")
        expect(pending).toEqual([
          expect.objectContaining({
            machine: "shop",
            instanceId: "o1",
            seqNr: 2,
            index: 0,
            kind: "handler",
            tag: "ChargeCard",
            payload: { _tag: "ChargeCard", orderId: "o1", amount: 42 },
            correlationId: "corr-1",
            attempts: 0
          })
        ])
        expect(yield* Ref.get(gateway.calls)).toEqual([])

        yield* node(store, gateway)
        yield* until(outboxOf(store).pending("shop", "o1"), (p) => p.length === 0, "commands pending")
        const history = yield* writer.history(Shop, "o1")
        expect(sourcesOf(history)).toEqual(["1:Created:user", "2:Checkout:user", "3:Charged:outbox"])
        expect(history[2]!.metadata.correlationId).toBe("corr-1")
        expect((yield* writer.inspect(Shop, "o1")).state).toEqual({
          _tag: "Paid",
          orderId: "o1",
          amount: 42,
          chargeId: "ch-shop:o1:2:0"
        })
        // The receipt, produced by entering Paid, ran too (a handler with no reply).
        expect(yield* Ref.get(gateway.calls)).toEqual([
          { command: "ChargeCard", key: "shop:o1:2:0", attempt: 1 },
          { command: "SendReceipt", key: "shop:o1:3:0", attempt: 1 }
        ])
      }))

    it.scoped("a handler failing twice then succeeding runs 3 times with one idempotency key and replies once", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        yield* Ref.set(gateway.failures, 2)
        const runtime = yield* node(store, gateway)
        yield* runtime.create(Shop, "o1", { _tag: "Placed", orderId: "o1", amount: 42 })
        yield* runtime.send(Shop, "o1", { _tag: "Checkout" })
        const first = yield* until(outboxOf(store).pending("shop", "o1"), (p) => p[0]?.attempts === 1, "no failure yet")
        expect(first[0]).toMatchObject({ dueAt: 1000, attempts: 1 })
        expect(first[0]!.lastError).toContain("gateway unavailable (ChargeCard, attempt 1)")
        yield* TestClock.adjust("1 second")
        yield* until(outboxOf(store).pending("shop", "o1"), (p) => p[0]?.attempts === 2, "no second failure")
        yield* TestClock.adjust("1 second")
        yield* until(runtime.inspect(Shop, "o1"), (v) => v.state._tag === "Paid", "not paid")
        yield* until(outboxOf(store).pending("shop", "o1"), (p) => p.length === 0, "commands pending")
        const charges = (yield* Ref.get(gateway.calls)).filter((c) => c.command === "ChargeCard")
        expect(charges).toEqual([1, 2, 3].map((attempt) => ({ command: "ChargeCard", key: "shop:o1:2:0", attempt })))
        expect(sourcesOf(yield* runtime.history(Shop, "o1"))).toEqual(["1:Created:user", "2:Checkout:user", "3:Charged:outbox"])
      }))

    it.scoped("a command failing every attempt is dead-lettered with its last error; re-drive runs it, discard drops it", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        yield* Ref.set(gateway.failures, 1_000)
        const counts = Effect.all([
          Metric.value(Metrics.outboxFailed),
          Metric.value(Metrics.outboxRetries),
          Metric.value(Metrics.outboxDeadLettered),
          Metric.value(Metrics.outboxDispatched),
          Metric.value(Metrics.outboxLatency)
        ]).pipe(Effect.map(([failed, retries, dead, dispatched, latency]) => [
          failed.count,
          retries.count,
          dead.count,
          dispatched.count,
          latency.count
        ]))
        const before = yield* counts
        const runtime = yield* node(store, gateway, { retry: Schedule.spaced("1 second").pipe(Schedule.intersect(Schedule.recurs(2))) })
        for (const id of ["o1", "o2"]) {
          yield* runtime.create(Shop, id, { _tag: "Placed", orderId: id, amount: 42 })
          yield* runtime.send(Shop, id, { _tag: "Checkout" })
        }
        const letters = yield* untilAdvancing(
          Outbox.deadLetters(Shop).pipe(Effect.provide(store)),
          (d) => d.length === 2,
          "no dead letters"
        )
        // Listed by failure time: the two may fail a clock tick apart, in either order.
        expect(letters.map((l) => [l.instanceId, l.tag, l.attempts]).sort()).toEqual([["o1", "ChargeCard", 3], ["o2", "ChargeCard", 3]])
        expect(letters[0]!.lastError).toContain("attempt 3")
        const o1Letter = letters.find((l) => l.instanceId === "o1")!
        const o2Letter = letters.find((l) => l.instanceId === "o2")!
        expect(yield* outboxOf(store).pending("shop", "o1")).toEqual([])
        expect((yield* Ref.get(gateway.calls)).length).toBe(6)
        // 6 failed attempts, 4 of them retried, 2 dead letters, nothing done yet, 2 first attempts timed.
        expect((yield* counts).map((n, i) => n - before[i]!)).toEqual([6, 4, 2, 0, 2])

        yield* Ref.set(gateway.failures, 0)
        expect(yield* Outbox.redrive(o1Letter).pipe(Effect.provide(store))).toBe(true)
        expect(yield* Outbox.discard(o2Letter).pipe(Effect.provide(store))).toBe(true)
        expect(yield* Outbox.discard(o2Letter).pipe(Effect.provide(store))).toBe(false)
        expect(yield* Outbox.redrive(o2Letter).pipe(Effect.provide(store))).toBe(false)
        expect(yield* Outbox.deadLetters("shop").pipe(Effect.provide(store))).toEqual([])
        // Found at the next poll, at the latest after the idle interval.
        yield* TestClock.adjust("11 minutes")
        yield* until(runtime.inspect(Shop, "o1"), (v) => v.state._tag === "Paid", "not paid")
        expect((yield* runtime.inspect(Shop, "o2")).state._tag).toBe("Charging")
        const o1Charges = (yield* Ref.get(gateway.calls)).filter((c) => c.key === "shop:o1:2:0")
        expect(o1Charges.map((c) => c.attempt)).toEqual([1, 2, 3, 1])
      }))

    it.scoped("a crash after the commit and before the dispatch: the command runs after the restart", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        // The first node commits and dies before its dispatcher gets to the command.
        yield* Effect.scoped(Effect.gen(function*() {
          const doomed = yield* node(store, gateway, { dispatch: false })
          yield* doomed.create(Shop, "o1", { _tag: "Placed", orderId: "o1", amount: 42 })
          yield* doomed.send(Shop, "o1", { _tag: "Checkout" })
        }))
        // The second dies in the middle of the handler (interrupted), its claim still held.
        yield* Ref.set(gateway.delay, 60_000)
        yield* Effect.scoped(Effect.gen(function*() {
          yield* node(store, gateway, { claimLease: "30 seconds" })
          yield* until(gateway.running.get, (r) => r.now === 1, "handler not started")
        }))
        expect((yield* Ref.get(gateway.running)).now).toBe(0)
        yield* Ref.set(gateway.delay, 0)
        const survivor = yield* node(store, gateway)
        yield* TestClock.adjust("20 seconds") // the dead node's claim still holds
        yield* eventually(Effect.void)
        expect((yield* Ref.get(gateway.calls)).length).toBe(1)
        yield* TestClock.adjust("15 seconds")
        yield* until(survivor.inspect(Shop, "o1"), (v) => v.state._tag === "Paid", "not paid")
        yield* until(outboxOf(store).pending("shop", "o1"), (p) => p.length === 0, "receipt pending")
        expect(sourcesOf(yield* survivor.history(Shop, "o1"))).toEqual(["1:Created:user", "2:Checkout:user", "3:Charged:outbox"])
        expect((yield* Ref.get(gateway.calls)).map((c) => c.key)).toEqual(["shop:o1:2:0", "shop:o1:2:0", "shop:o1:3:0"])
      }))

    for (const fault of ["FailBefore", "FailAfter", "InterruptBefore", "InterruptAfter", "Phantom"] as const) {
      it.scoped(`a fault on the reply's commit (${fault}) still leaves exactly one reply and no pending command`, () =>
        Effect.gen(function*() {
          const { gateway, store } = yield* setup
          let injected = 0
          const wrapped = faulty(Context.get(store, EventStore.EventStore), (commit) =>
            injected === 0 && commit.outbox?.complete !== undefined ? (injected++, { _tag: fault }) : undefined)
          const faultyStore = withStore(store, wrapped.store) as Context.Context<Stores>
          const runtime = yield* node(faultyStore, gateway, { claimLease: "3 seconds", commandTimeout: "1 second" })
          yield* runtime.create(Shop, "o1", { _tag: "Placed", orderId: "o1", amount: 42 })
          yield* runtime.send(Shop, "o1", { _tag: "Checkout" })
          yield* until(Effect.sync(() => injected), (n) => n === 1, "no reply commit yet")
          // Whatever the fault left behind (a retry, a claim to expire), the command settles.
          for (let i = 0; i < 10; i++) {
            yield* TestClock.adjust("1 second")
            yield* eventually(Effect.void, 20, 0)
          }
          yield* until(outboxOf(store).pending("shop", "o1"), (p) => p.length === 0, "commands pending")
          yield* runtime.evictAll
          expect(sourcesOf(yield* runtime.history(Shop, "o1"))).toEqual(["1:Created:user", "2:Checkout:user", "3:Charged:outbox"])
          expect((yield* runtime.inspect(Shop, "o1")).state._tag).toBe("Paid")
          expect(yield* Outbox.deadLetters(Shop).pipe(Effect.provide(store))).toEqual([])
        }))
    }

    it.scoped("under distributed locking the fencing token travels with the command, and the reply takes the lease", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        const locking = yield* Layer.build(
          Layer.provide(LockingStrategy.distributed({ ttl: "30 seconds", wait: "5 seconds" }), Layer.succeedContext(store))
        )
        const lockedStore = Context.merge(store, locking) as Context.Context<Stores>
        const runtime = yield* node(lockedStore, gateway, { dispatch: false })
        yield* runtime.create(Shop, "o1", { _tag: "Placed", orderId: "o1", amount: 42 })
        yield* runtime.send(Shop, "o1", { _tag: "Checkout" })
        const [command] = yield* outboxOf(store).pending("shop", "o1")
        expect(command!.fenceToken).toEqual(expect.any(Number))
        expect(command!.fenceToken).toBeGreaterThanOrEqual(1)
        const wrapped = faulty(Context.get(store, EventStore.EventStore))
        yield* node(withStore(lockedStore, wrapped.store) as Context.Context<Stores>, gateway)
        yield* until(runtime.inspect(Shop, "o1"), (v) => v.state._tag === "Paid", "not paid")
        const reply = wrapped.seen.find((seen) => seen.commit.outbox?.complete !== undefined)!.commit
        expect(reply.fence).toEqual({ owner: expect.any(String), token: expect.any(Number) })
        expect(reply.fence!.token).toBeGreaterThan(command!.fenceToken!)
        expect((yield* Ref.get(gateway.tokens))[0]).toBe(command!.fenceToken)
      }))

    it.scoped("the claim refresher runs only while commands do: an idle dispatcher keeps no timer of it", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        // Refreshes would be looked for every 5 seconds (a sixth of the lease).
        const runtime = yield* node(store, gateway, { claimLease: "30 seconds", maxIdleInterval: "1 hour" })
        yield* runtime.create(Shop, "o1", { _tag: "Placed", orderId: "o1", amount: 42 })
        yield* runtime.send(Shop, "o1", { _tag: "Checkout" })
        yield* until(outboxOf(store).pending("shop", "o1"), (p) => p.length === 0, "commands pending")
        // An hour later the poller's idle interval has grown to many seconds, and nothing else is waiting.
        yield* TestClock.adjust("1 hour")
        yield* eventually(Effect.void)
        const now = yield* TestClock.currentTimeMillis
        const soon = Array.from(yield* TestClock.sleeps()).filter((dueAt) => dueAt <= now + 5_000)
        expect(soon).toEqual([])
      }))

    it.scoped("a handler slower than the claim lease is not run twice at once: its claim is refreshed", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        yield* Ref.set(gateway.delay, 20_000)
        const options = { claimLease: "3 seconds", commandTimeout: "1 second", pollInterval: "500 millis", maxIdleInterval: "1 second" } as const
        const a = yield* node(store, gateway, { ...options, dispatch: false })
        yield* a.create(Shop, "o1", { _tag: "Placed", orderId: "o1", amount: 42 })
        yield* a.send(Shop, "o1", { _tag: "Checkout" })
        yield* node(store, gateway, options)
        yield* node(store, gateway, options)
        yield* until(gateway.running.get, (r) => r.now === 1, "handler not started")
        for (let i = 0; i < 50; i++) {
          yield* TestClock.adjust("500 millis")
          yield* eventually(Effect.void, 20, 0)
        }
        yield* until(a.inspect(Shop, "o1"), (v) => v.state._tag === "Paid", "not paid")
        const charges = (yield* Ref.get(gateway.calls)).filter((c) => c.command === "ChargeCard")
        expect(charges.length).toBe(1)
        expect((yield* Ref.get(gateway.running)).max).toBe(1)
      }))

    it.scoped("concurrency bounds the handlers running at once, those a poll stopped waiting for included", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        yield* Ref.set(gateway.delay, 10_000)
        const writer = yield* node(store, gateway, { dispatch: false })
        for (let i = 0; i < 6; i++) {
          yield* writer.create(Shop, `o${i}`, { _tag: "Placed", orderId: `o${i}`, amount: 1 })
          yield* writer.send(Shop, `o${i}`, { _tag: "Checkout" })
        }
        yield* node(store, gateway, {
          concurrency: 2,
          claimLease: "30 seconds",
          commandTimeout: "1 second",
          pollInterval: "500 millis",
          maxIdleInterval: "1 second"
        })
        for (let i = 0; i < 80; i++) {
          yield* TestClock.adjust("500 millis")
          yield* eventually(Effect.void, 20, 0)
          expect((yield* Ref.get(gateway.running)).now).toBeLessThanOrEqual(2)
        }
        yield* until(
          Effect.forEach([0, 1, 2, 3, 4, 5], (i) => writer.inspect(Shop, `o${i}`)),
          (views) => views.every((v) => v.state._tag === "Paid"),
          "not all paid"
        )
        expect((yield* Ref.get(gateway.running)).max).toBe(2)
        expect((yield* Ref.get(gateway.calls)).filter((c) => c.command === "ChargeCard").length).toBe(6)
      }))

    it.scoped("two dispatchers, 1,000 commands: each handled at least once, each reply appended exactly once", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        const nodes = [
          yield* node(store, gateway, { batchSize: 25, nodeId: "a" }),
          yield* node(store, gateway, { batchSize: 25, nodeId: "b" })
        ]
        const ids = Array.from({ length: 500 }, (_, i) => `o${i}`)
        yield* Effect.forEach(ids, (id, i) =>
          Effect.zipRight(
            nodes[i % 2]!.create(Shop, id, { _tag: "Placed", orderId: id, amount: 10 }),
            nodes[(i + 1) % 2]!.send(Shop, id, { _tag: "Checkout" })
          ), { concurrency: 8, discard: true })
        // 500 charges and 500 receipts.
        const store_ = outboxOf(store)
        yield* eventually(
          Effect.filterOrFail(
            Effect.flatMap(store_.nextDueAt(["shop"]), (next) => Effect.succeed(next)),
            Option.isNone,
            () => "commands left"
          ),
          2_000,
          60_000
        )
        const histories = yield* Effect.forEach(ids, (id) => nodes[0]!.history(Shop, id), { concurrency: 8 })
        for (const history of histories) {
          expect(sourcesOf(history)).toEqual(["1:Created:user", "2:Checkout:user", "3:Charged:outbox"])
        }
        const calls = yield* Ref.get(gateway.calls)
        const keys = new Set(calls.map((c) => c.key))
        expect(keys.size).toBe(1000)
      }), 120_000)

    it.scoped("the checkout <-> payment saga runs end to end, across a restart, exactly once, correlated", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        yield* Effect.scoped(Effect.gen(function*() {
          const first = yield* node(store, gateway, { dispatch: false })
          yield* first.create(Checkout, "c1", { _tag: "Open", orderId: "c1", amount: 30 })
          yield* first.create(Checkout, "c2", { _tag: "Open", orderId: "c2", amount: 5_000 })
          yield* first.send(Checkout, "c1", { _tag: "Submit" }, { correlationId: "saga-1" })
          yield* first.send(Checkout, "c2", { _tag: "Submit" }, { correlationId: "saga-2" })
        }))
        // Restart: a new node resumes the commands in flight, with no user code.
        const second = yield* node(store, gateway)
        yield* until(second.inspect(Checkout, "c1"), (v) => v.state._tag === "Confirmed", "c1 not confirmed")
        yield* until(second.inspect(Checkout, "c2"), (v) => v.state._tag === "Rejected", "c2 not rejected")
        for (const [id, corr, end] of [["c1", "saga-1", "PaymentConfirmed"], ["c2", "saga-2", "PaymentRefused"]] as const) {
          const checkout = yield* second.history(Checkout, id)
          expect(sourcesOf(checkout)).toEqual(["1:Created:user", "2:Submit:user", `3:${end}:outbox`])
          expect(checkout[2]!.metadata.correlationId).toBe(corr)
          const payment = yield* second.history(Payment, `pay-${id}`)
          expect(sourcesOf(payment)).toEqual(["1:Created:outbox", `2:${id === "c1" ? "Approve" : "Refuse"}:outbox`])
          expect(payment.map((h) => h.metadata.correlationId)).toEqual([corr, corr])
        }
        yield* until(
          Effect.all([outboxOf(store).pending("checkout", "c1"), outboxOf(store).pending("payment", "pay-c1")]),
          ([a, b]) => a.length === 0 && b.length === 0,
          "commands pending"
        )
        expect((yield* Ref.get(gateway.calls)).map((c) => c.key).sort()).toEqual(["payment:pay-c1:1:0", "payment:pay-c2:1:0"])
      }))

    it.scoped("a send to an instance that does not exist yet is retried until it does; a rejected event or an existing spawn completes", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        const runtime = yield* node(store, gateway)
        // Entering Settled sends PaymentConfirmed to checkout c1, which does not exist yet.
        yield* runtime.create(Payment, "pay-c1", { _tag: "Settled", orderId: "c1" })
        yield* until(outboxOf(store).pending("payment", "pay-c1"), (p) => p[0]?.attempts === 1, "not retried")
        yield* runtime.create(Checkout, "c1", { _tag: "AwaitingPayment", orderId: "c1", amount: 30 })
        yield* untilAdvancing(runtime.inspect(Checkout, "c1"), (v) => v.state._tag === "Confirmed", "not confirmed")
        expect(sourcesOf(yield* runtime.history(Checkout, "c1"))).toEqual(["1:Created:user", "2:PaymentConfirmed:outbox"])
        // c2 is Open: the PaymentConfirmed that pay-c2's entry sends is rejected, and completes.
        yield* runtime.create(Checkout, "c2", { _tag: "Open", orderId: "c2", amount: 30 })
        yield* runtime.create(Payment, "pay-c2", { _tag: "Settled", orderId: "c2" })
        yield* until(outboxOf(store).pending("payment", "pay-c2"), (p) => p.length === 0, "sendTo pending")
        // Submitting c2 spawns pay-c2, which exists already: completed too.
        yield* runtime.send(Checkout, "c2", { _tag: "Submit" })
        yield* until(outboxOf(store).pending("checkout", "c2"), (p) => p.length === 0, "spawn pending")
        expect(sourcesOf(yield* runtime.history(Payment, "pay-c2"))).toEqual(["1:Created:user"])
        expect(sourcesOf(yield* runtime.history(Checkout, "c2"))).toEqual(["1:Created:user", "2:Submit:user"])
        expect(yield* Outbox.deadLetters(Payment).pipe(Effect.provide(store))).toEqual([])
        expect(yield* Outbox.deadLetters(Checkout).pipe(Effect.provide(store))).toEqual([])
      }))

    it.scoped("a command that cannot be encoded, or a builder that throws, writes nothing", () =>
      Effect.gen(function*() {
        const { gateway, store } = yield* setup
        const Bad = Machine.make({
          name: "bad",
          version: 1,
          state: Schema.Union(Schema.TaggedStruct("A", {}), Schema.TaggedStruct("B", {})),
          event: Schema.Union(Schema.TaggedStruct("Go", { n: Schema.Number }), Schema.TaggedStruct("Boom", {})),
          command: Schema.Union(Schema.TaggedStruct("Do", { n: Schema.Number })),
          transitions: {
            A: {
              Go: { to: "B", commands: (_, e) => [{ _tag: "Do", n: e.n }] },
              Boom: {
                to: "B",
                commands: () => {
                  throw new Error("no commands today")
                }
              }
            }
          }
        })
        const handlers = Outbox.handlers(Bad, { Do: () => Effect.void })
        const runtime = yield* FSMRuntime.make({ machines: [Bad] }).pipe(
          Effect.provide(Context.merge(store, yield* Layer.build(handlers))),
          Effect.orDie
        )
        yield* runtime.create(Bad, "x", { _tag: "A" })
        const nan = yield* Effect.exit(runtime.send(Bad, "x", { _tag: "Go", n: Number.NaN }))
        expect(Exit.isFailure(nan) && JSON.stringify(nan.cause)).toContain("InvalidInput")
        const boom = yield* Effect.flip(runtime.send(Bad, "x", { _tag: "Boom" }))
        expect(boom).toMatchObject({ _tag: "TransitionFailed", stage: "commands" })
        expect(boom.message).toContain("no commands today")
        expect((yield* runtime.history(Bad, "x")).length).toBe(1)
        expect(yield* outboxOf(store).pending("bad", "x")).toEqual([])
        void gateway
      }))

    it.scoped("a handler's reply runs the exit action of the state it left and the entry action of the state it entered", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const ran = yield* Ref.make<ReadonlyArray<string>>([])
        const record = (what: string) => Ref.update(ran, (all) => [...all, what])
        const Job = Machine.make({
          name: "job",
          version: 1,
          state: Schema.Union(Schema.TaggedStruct("Idle", {}), Schema.TaggedStruct("Running", {}), Schema.TaggedStruct("Done", {})),
          event: Schema.Union(Schema.TaggedStruct("Start", {}), Schema.TaggedStruct("Finished", {})),
          command: Schema.Union(Schema.TaggedStruct("Work", {})),
          transitions: {
            Idle: { Start: { to: "Running", build: () => ({}), commands: () => [{ _tag: "Work" }] } },
            Running: { Finished: "Done" }
          },
          exit: { Running: () => record("exit Running") },
          entry: { Done: () => record("entry Done") }
        })
        // The reply, committed by the dispatcher, moves the instance on.
        const handlers = Outbox.handlers(Job, { Work: () => Effect.succeed({ _tag: "Finished" as const }) })
        const runtime = yield* FSMRuntime.make({ machines: [Job] }).pipe(
          Effect.provide(Context.merge(
            store,
            yield* Layer.build(Layer.merge(handlers, Outbox.layer({ pollInterval: "1 second", retry: quickRetry })))
          )),
          Effect.orDie
        )
        yield* runtime.create(Job, "j", { _tag: "Idle" })
        yield* runtime.send(Job, "j", { _tag: "Start" })
        yield* until(runtime.inspect(Job, "j"), (v) => v.state._tag === "Done", "not done")
        yield* until(Ref.get(ran), (all) => all.length === 2, "actions not run")
        expect(yield* Ref.get(ran)).toEqual(["exit Running", "entry Done"])
        expect(sourcesOf(yield* runtime.history(Job, "j"))).toEqual(["1:Created:user", "2:Start:user", "3:Finished:outbox"])
      }))

    it.scoped("a command produced by a fenced-off write never exists", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const leases = Context.get(store, LeaseStore.LeaseStore)
        const key = { machine: "shop", instanceId: "o1" }
        const zombie = yield* leases.acquire(key, "zombie", { ttl: "200 millis", wait: "0 millis" })
        // PostgreSQL judges expiry by its own clock.
        if (backend.name === "postgres") {
          yield* eventually(Effect.filterOrFail(leases.get(key), Option.isNone, () => "lease still held"))
        } else {
          yield* TestClock.adjust("1 second")
        }
        yield* leases.acquire(key, "thief", { ttl: "1 minute", wait: "0 millis" })
        const events = Context.get(store, EventStore.EventStore)
        const refused = yield* Effect.flip(events.append({
          machine: "shop",
          instanceId: "o1",
          expectedSeqNr: 0,
          events: [{
            tag: "@created",
            payload: { _tag: "Charging", orderId: "o1", amount: 42 },
            stateTag: "Charging",
            schemaVersion: 1,
            metadata: { timestamp: 0, source: "user", correlationId: null, node: "zombie", commitId: null, timer: null }
          }],
          outbox: {
            produce: [{
              index: 0,
              kind: "handler",
              tag: "ChargeCard",
              payload: { _tag: "ChargeCard", orderId: "o1", amount: 42 },
              target: null,
              correlationId: null,
              fenceToken: zombie.token
            }]
          },
          fence: { owner: zombie.owner, token: zombie.token }
        }))
        expect(refused._tag).toBe("FencingRejected")
        expect(yield* outboxOf(store).pending("shop", "o1")).toEqual([])
        expect(yield* events.highestSequenceNr("shop", "o1")).toBe(0)
      }))

    it.scoped("a machine with commands and no handlers fails the runtime layer, naming them", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const error = yield* Effect.flip(FSMRuntime.make({ machines: [Shop] }).pipe(Effect.provide(store)))
        expect(error._tag).toBe("MachineDefinitionError")
        expect(error.message).toContain("ChargeCard, SendReceipt")
        // A node that dispatches nothing needs none.
        yield* FSMRuntime.make({ machines: [Shop] }).pipe(
          Effect.provide(Context.merge(store, yield* Layer.build(Outbox.layer({ dispatch: false }))))
        )
        // Handlers of another machine do not count.
        const other = yield* Effect.flip(
          FSMRuntime.make({ machines: [Shop] }).pipe(
            Effect.provide(Context.merge(store, yield* Layer.build(handlersLayer(yield* makeGateway).pipe(Layer.map((c) => Context.omit(Outbox.handlersTag("shop"))(c as Context.Context<Outbox.Handlers>)))))),
          )
        )
        expect(other._tag).toBe("MachineDefinitionError")
      }))
  })
}

describe("outbox options and types", () => {
  it.effect("unusable dispatcher options are InvalidConfiguration", () =>
    Effect.gen(function*() {
      for (
        const options of [
          { pollInterval: "soon" as never },
          { batchSize: 0 },
          { claimLease: "2 millis" },
          { claimLease: "1 second", commandTimeout: "1 second" },
          { jitter: Number.NaN },
          { retry: "often" as never },
          { dispatch: "yes" as never }
        ] satisfies ReadonlyArray<Outbox.DispatcherOptions>
      ) {
        const error = yield* Effect.flip(Outbox.resolveOptions(options))
        expect(error._tag).toBe("InvalidConfiguration")
      }
    }))

  it("commands are typed: a misspelt command, a missing handler or a wrong reply does not compile", () => {
    Machine.make({
      name: "typed",
      version: 1,
      state: Schema.Union(Schema.TaggedStruct("A", {}), Schema.TaggedStruct("B", {})),
      event: Schema.Union(Schema.TaggedStruct("Go", {})),
      command: Schema.Union(Schema.TaggedStruct("Do", { n: Schema.Number })),
      transitions: {
        // @ts-expect-error "Dont" is not a command of the machine
        A: { Go: { to: "B", commands: () => [{ _tag: "Dont", n: 1 }] } }
      }
    })
    // @ts-expect-error the handler of SendReceipt is missing
    Outbox.handlers(Shop, { ChargeCard: () => Effect.void })
    Outbox.handlers(Shop, {
      // @ts-expect-error "Shipped" is not an event of the shop machine
      ChargeCard: () => Effect.succeed({ _tag: "Shipped" as const }),
      SendReceipt: () => Effect.void
    })
    // @ts-expect-error "Settle" is not an event of the checkout machine
    Machine.sendTo(Checkout, "c1", { _tag: "Settle" })
    expect(OutboxStore.idempotencyKey({ machine: "a:b", instanceId: "x/y z%", seqNr: 3, index: 1 })).toBe("a%3Ab:x/y z%25:3:1")
    expect(OutboxStore.idempotencyKey({ machine: "m\uD800", instanceId: "i", seqNr: 1, index: 0 })).toBe("m\uD800:i:1:0")
  })
})
