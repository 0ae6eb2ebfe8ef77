/**
 * The LeaseStore conformance suite, with the fencing of commits it enables,
 * as `@effect/vitest` tests over a layer.
 *
 * Time: memory and SQLite judge expiry by the Effect `Clock`, which
 * `TestClock` drives; PostgreSQL judges it by the database's clock. So a
 * lease is made to run out by shortening it to 1 ms with `extend` and then
 * moving both clocks past it (`runOut`): `TestClock.adjust` for the first
 * two, a millisecond or so of real time, polled, for PostgreSQL. Leases that
 * must stay held are taken for an hour.
 *
 * @internal
 */
import { describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as EventStore from "../../EventStore.js"
import * as LeaseStore from "../../LeaseStore.js"
import * as TimeoutStore from "../../TimeoutStore.js"
import { eventually, yieldToEventLoop } from "../settle.js"
import { isSkipped, type SuiteOptions } from "./options.js"

/** The services the suite needs of `layer`. */
type Stores = LeaseStore.LeaseStore | EventStore.EventStore | TimeoutStore.TimeoutStore

const machine = "order"
const key: LeaseStore.LeaseKey = { machine, instanceId: "o1" }
const held = "1 hour"

const event = (tag: string): EventStore.NewEvent => ({
  tag,
  payload: { _tag: tag },
  stateTag: "Pending",
  schemaVersion: 1,
  metadata: { timestamp: 1_000, source: "user", correlationId: null, node: "node-a", commitId: null, timer: null }
})

const fenceOf = (lease: LeaseStore.Lease) => ({ owner: lease.owner, token: lease.token })

const isSome = <A>(option: Option.Option<A>) => Option.isSome(option)

/** Runs `fiber` to its end (and returns its result), moving the TestClock 100 ms at a time (and letting database I/O complete). */
const driveToEnd = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) =>
  Effect.gen(function*() {
    for (let step = 0; step < 20_000; step++) {
      const exit = yield* Fiber.poll(fiber)
      if (Option.isSome(exit)) return yield* exit.value
      yield* TestClock.adjust("100 millis")
      yield* yieldToEventLoop
    }
    return yield* Effect.dieMessage("the fiber did not finish")
  })

/** Moves the TestClock `steps` times by 100 ms, letting the fiber run: it must still be waiting afterwards. */
const driveFor = <A, E>(fiber: Fiber.RuntimeFiber<A, E>, steps: number) =>
  Effect.gen(function*() {
    for (let step = 0; step < steps; step++) {
      yield* TestClock.adjust("100 millis")
      yield* yieldToEventLoop
    }
    expect(yield* Fiber.poll(fiber)).toEqual(Option.none())
  })

/**
 * Registers the LeaseStore conformance tests (a vitest `describe` named
 * "LeaseStore conformance on <name>"): one winner of racing acquisitions, takeover of an expired lease with a new fencing token, extend and release by the holder only, blocking acquisition and its timeout, and the fencing of commits (`FencingRejected`, nothing written).
 *
 * `layer` provides `LeaseStore.LeaseStore`, `EventStore.EventStore` and `TimeoutStore.TimeoutStore`. Every build of it must give a
 * fresh, empty store (its own database, file or schema): each test builds it
 * once, in the test's scope, so tests never see each other's rows. The tests
 * use `TestClock` (through `it.scoped`).
 *
 * @example
 * ```ts
 * import { Conformance } from "effect-fsm/testing"
 * import { EventStore } from "effect-fsm"
 *
 * Conformance.leaseStoreSuite("memory", EventStore.layerMemory)
 * ```
 *
 * @since 0.1.0
 */
export const leaseStoreSuite = (name: string, layer: Layer.Layer<Stores, unknown>, options: SuiteOptions = {}) =>
  describe.skipIf(isSkipped(options))(`LeaseStore conformance on ${name}`, () => {
    const setup = Effect.map(Layer.build(layer), (context) => ({
      leases: Context.get(context, LeaseStore.LeaseStore),
      store: Context.get(context, EventStore.EventStore),
      timers: Context.get(context, TimeoutStore.TimeoutStore)
    }))

    /** Shortens `lease` to 1 ms and waits until the store's clock has passed it. */
    const runOut = (leases: LeaseStore.LeaseStore["Type"], lease: LeaseStore.Lease) =>
      Effect.gen(function*() {
        yield* leases.extend(lease, "1 millis")
        yield* TestClock.adjust("1 millis")
        yield* eventually(Effect.flatMap(leases.get(lease), (current) =>
          Option.isNone(current) ? Effect.void : Effect.fail(`the lease of ${lease.owner} is still held`)))
      })

    it.scoped("of 100 concurrent tryAcquire for one key exactly one wins, and the same for a takeover", () =>
      Effect.gen(function*() {
        const { leases } = yield* setup
        const race = (round: string) =>
          Effect.all(
            Array.from({ length: 100 }, (_, i) => leases.tryAcquire(key, `${round}-${i}`, held)),
            { concurrency: "unbounded" }
          ).pipe(Effect.map((results) => results.filter(isSome).map((won) => won.value)))

        const first = yield* race("node")
        expect(first.length).toBe(1)
        expect(first[0]).toMatchObject({ ...key, token: 1 })
        expect(yield* leases.get(key)).toEqual(Option.some(first[0]!))

        yield* runOut(leases, first[0]!)
        const second = yield* race("taker")
        expect(second.length).toBe(1)
        expect(second[0]).toMatchObject({ ...key, token: 2 })
        expect(second[0]!.owner).toMatch(/^taker-/)
        expect(yield* leases.get(key)).toEqual(Option.some(second[0]!))
      }))

    it.scoped("an expired lease is taken over with a new token, and its old holder can no longer extend or release it", () =>
      Effect.gen(function*() {
        const { leases } = yield* setup
        const a = yield* leases.acquire(key, "node-a", { ttl: held, wait: "1 second" })
        expect(a).toMatchObject({ ...key, owner: "node-a", token: 1 })
        expect(yield* leases.tryAcquire(key, "node-b", held)).toEqual(Option.none())

        yield* runOut(leases, a)
        expect(yield* leases.get(key)).toEqual(Option.none())
        // Expired: not extended any more, even before anyone takes it.
        expect(yield* Effect.flip(leases.extend(a, held))).toMatchObject({
          _tag: "LockLost",
          machine,
          instanceId: "o1",
          owner: "node-a",
          token: 1
        })

        const b = Option.getOrThrow(yield* leases.tryAcquire(key, "node-b", held))
        expect(b).toMatchObject({ ...key, owner: "node-b", token: 2 })
        expect(yield* Effect.flip(leases.extend(a, held))).toMatchObject({ _tag: "LockLost", owner: "node-a", token: 1 })
        expect(yield* Effect.flip(leases.release(a))).toMatchObject({ _tag: "LockLost", owner: "node-a", token: 1 })
        expect(yield* leases.get(key)).toEqual(Option.some(b))

        // The new holder's lease works as any other.
        const extended = yield* leases.extend(b, held)
        expect(extended).toMatchObject({ owner: "node-b", token: 2 })
        expect(extended.expiresAt).toBeGreaterThanOrEqual(b.expiresAt)
        yield* leases.release(extended)
        expect(yield* leases.get(key)).toEqual(Option.none())
      }))

    it.scoped("extend and release by a non-owner (another owner, or the same owner with an old token) fail with LockLost", () =>
      Effect.gen(function*() {
        const { leases } = yield* setup
        const first = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
        const impostor = { ...first, owner: "node-b" }
        expect(yield* Effect.flip(leases.extend(impostor, held))).toMatchObject({ _tag: "LockLost", owner: "node-b", token: 1 })
        expect(yield* Effect.flip(leases.release(impostor))).toMatchObject({ _tag: "LockLost", owner: "node-b", token: 1 })
        expect(yield* leases.get(key)).toEqual(Option.some(first))

        yield* leases.release(first)
        const second = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
        expect(second.token).toBe(2)
        expect(yield* Effect.flip(leases.extend(first, held))).toMatchObject({ _tag: "LockLost", owner: "node-a", token: 1 })
        expect(yield* Effect.flip(leases.release(first))).toMatchObject({ _tag: "LockLost", owner: "node-a", token: 1 })
        // A token that was never handed out does not work either.
        expect(yield* Effect.flip(leases.release({ ...second, token: 3 }))).toMatchObject({ _tag: "LockLost", token: 3 })
        expect(yield* leases.get(key)).toEqual(Option.some(second))
        // Released twice: the second time it is no longer held.
        yield* leases.release(second)
        expect(yield* Effect.flip(leases.release(second))).toMatchObject({ _tag: "LockLost", owner: "node-a", token: 2 })
      }))

    it.scoped("a released or expired lease is gone from get, and other keys are not affected", () =>
      Effect.gen(function*() {
        const { leases } = yield* setup
        const other: LeaseStore.LeaseKey = { machine, instanceId: "o2" }
        expect(yield* leases.get(key)).toEqual(Option.none())
        const a = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
        const b = Option.getOrThrow(yield* leases.tryAcquire(other, "node-a", held))
        expect(b.token).toBe(1)
        expect(yield* leases.get({ machine: "invoice", instanceId: "o1" })).toEqual(Option.none())

        yield* leases.release(a)
        expect(yield* leases.get(key)).toEqual(Option.none())
        expect(yield* leases.get(other)).toEqual(Option.some(b))

        const again = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
        expect(yield* leases.get(key)).toEqual(Option.some(again))
        yield* runOut(leases, again)
        expect(yield* leases.get(key)).toEqual(Option.none())
        expect(yield* leases.get(other)).toEqual(Option.some(b))
      }))

    it.scoped("the fencing token strictly increases across acquire, release, expiry and takeover", () =>
      Effect.gen(function*() {
        const { leases } = yield* setup
        const tokens: Array<number> = []
        const take = (owner: string) =>
          Effect.map(leases.acquire(key, owner, { ttl: held, wait: "1 second" }), (lease) => {
            tokens.push(lease.token)
            return lease
          })
        yield* leases.release(yield* take("node-a"))
        yield* leases.release(yield* take("node-a"))
        yield* runOut(leases, yield* take("node-b"))
        const takenOver = yield* take("node-a") // a takeover of node-b's expired lease
        yield* runOut(leases, takenOver)
        const sameOwner = yield* take("node-a") // its own expired lease, acquired again
        yield* leases.release(sameOwner)
        yield* take("node-c")
        expect(tokens).toEqual([1, 2, 3, 4, 5, 6])
        // Per key: another key starts from 1.
        expect(Option.getOrThrow(yield* leases.tryAcquire({ machine, instanceId: "o2" }, "node-a", held)).token).toBe(1)
      }))

    it.scoped("leases are not re-entrant: the same owner cannot acquire a held lease again, and of two fibers with one owner id one wins", () =>
      Effect.gen(function*() {
        const { leases } = yield* setup
        const a = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
        expect(yield* leases.tryAcquire(key, "node-a", held)).toEqual(Option.none())
        expect(yield* leases.get(key)).toEqual(Option.some(a))

        const both = yield* Effect.all([
          leases.tryAcquire({ machine, instanceId: "o2" }, "node-a", held),
          leases.tryAcquire({ machine, instanceId: "o2" }, "node-a", held)
        ], { concurrency: "unbounded" })
        expect(both.filter(isSome).length).toBe(1)
      }))

    it.scoped("a blocking acquire gets the lease once the holder releases it", () =>
      Effect.gen(function*() {
        const { leases } = yield* setup
        const holder = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
        const waiter = yield* Effect.fork(leases.acquire(key, "node-b", { ttl: held, wait: held, retryInterval: "100 millis" }))
        yield* driveFor(waiter, 5)
        yield* leases.release(holder)
        const lease = yield* driveToEnd(waiter)
        expect(lease).toMatchObject({ ...key, owner: "node-b", token: 2 })
        expect(yield* leases.get(key)).toEqual(Option.some(lease))
      }))

    it.scoped("a blocking acquire fails with LockTimeout when the holder keeps the lease", () =>
      Effect.gen(function*() {
        const { leases } = yield* setup
        const holder = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
        const waiter = yield* Effect.fork(leases.acquire(key, "node-b", { ttl: held, wait: "1 second", retryInterval: "100 millis" }))
        const error = yield* Effect.flip(driveToEnd(waiter))
        expect(error).toMatchObject({ _tag: "LockTimeout", machine, instanceId: "o1" })
        expect((error as { readonly waitedMillis: number }).waitedMillis).toBeGreaterThanOrEqual(1_000)
        expect(yield* leases.get(key)).toEqual(Option.some(holder))
      }))

    it.scoped("an interrupted waiter leaves the holder's lease untouched", () =>
      Effect.gen(function*() {
        const { leases } = yield* setup
        const holder = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
        const waiter = yield* Effect.fork(leases.acquire(key, "node-b", { ttl: held, wait: held, retryInterval: "100 millis" }))
        yield* driveFor(waiter, 3)
        expect(Exit.isInterrupted(yield* Fiber.interrupt(waiter))).toBe(true)

        expect(yield* leases.get(key)).toEqual(Option.some(holder))
        const extended = yield* leases.extend(holder, held)
        expect(extended.token).toBe(1)
        yield* leases.release(extended)
        // Nobody acquired the key in between: the next token is 2.
        expect(Option.getOrThrow(yield* leases.tryAcquire(key, "node-c", held)).token).toBe(2)
      }))

    describe("fencing of commits", () => {
      const commit = (
        expectedSeqNr: number,
        events: ReadonlyArray<EventStore.NewEvent>,
        extra: Partial<Pick<EventStore.Commit, "snapshot" | "timers" | "fence" | "instanceId">> = {}
      ): EventStore.Commit => ({ machine, instanceId: "o1", expectedSeqNr, events, ...extra })

      const snapshot = (seqNr: number): EventStore.SnapshotRecord => ({
        machine,
        instanceId: "o1",
        seqNr,
        state: { at: seqNr },
        stopped: false,
        schemaVersion: 1,
        timestamp: 1_000
      })

      const timer = (name: string, generation: number) => ({
        name,
        stateTag: "Pending",
        generation,
        dueAt: 60_000,
        payload: { _tag: "Timeout", name }
      })

      const stored = (store: EventStore.EventStore["Type"], timers: TimeoutStore.TimeoutStore["Type"]) =>
        Effect.all({
          events: Effect.map(Stream.runCollect(store.events(machine, "o1", 1)), Chunk.toArray),
          timers: timers.pending(machine, "o1"),
          snapshot: store.loadSnapshot(machine, "o1")
        })

      it.scoped("a commit fenced with the current token is written; after another owner acquired the lease the old fence is refused with FencingRejected and nothing is written", () =>
        Effect.gen(function*() {
          const { leases, store, timers } = yield* setup
          const a = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
          yield* store.append(commit(0, [event("@created")], {
            fence: fenceOf(a),
            snapshot: snapshot(1),
            timers: { cancelAll: false, schedule: [timer("payment", 1)] }
          }))
          yield* store.append(commit(1, [event("Touch")], { fence: fenceOf(a) }))

          yield* runOut(leases, a)
          const b = Option.getOrThrow(yield* leases.tryAcquire(key, "node-b", held))
          const before = yield* stored(store, timers)
          expect(before.events.length).toBe(2)
          expect(before.timers.map((t) => t.name)).toEqual(["payment"])

          const rejected = { _tag: "FencingRejected", machine, instanceId: "o1", owner: "node-a", token: 1 }
          // Events, a snapshot, timer changes: none of it lands.
          expect(
            yield* Effect.flip(store.append(commit(2, [event("Pay"), event("Ship")], {
              fence: fenceOf(a),
              snapshot: snapshot(4),
              timers: { cancelAll: true, schedule: [timer("shipping", 3)] }
            })))
          ).toMatchObject(rejected)
          // Delivering a timer: the timer row stays armed.
          expect(
            yield* Effect.flip(store.append(commit(2, [event("Timeout")], {
              fence: fenceOf(a),
              timers: { cancelAll: true, schedule: [], fired: { name: "payment", generation: 1 } }
            })))
          ).toMatchObject(rejected)
          // Fenced off and behind the log: the fence is what is reported.
          expect(yield* Effect.flip(store.append(commit(0, [event("@created")], { fence: fenceOf(a) })))).toMatchObject(rejected)
          expect(yield* stored(store, timers)).toEqual(before)

          // The new holder's fence works, and a commit with no fence is unaffected.
          yield* store.append(commit(2, [event("Pay")], { fence: fenceOf(b), snapshot: snapshot(3) }))
          yield* store.append(commit(3, [event("Ship")]))
          const after = yield* stored(store, timers)
          expect(after.events.map((e) => e.tag)).toEqual(["@created", "Touch", "Pay", "Ship"])
          expect(Option.map(after.snapshot, (s) => s.seqNr)).toEqual(Option.some(3))
        }))

      it.scoped("fencing is token equality: an expired lease nobody took still lets its holder commit; a released one does not", () =>
        Effect.gen(function*() {
          const { leases, store, timers } = yield* setup
          const a = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
          yield* runOut(leases, a)
          yield* store.append(commit(0, [event("@created")], { fence: fenceOf(a) }))
          expect(yield* store.highestSequenceNr(machine, "o1")).toBe(1)

          const again = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
          yield* leases.release(again)
          const before = yield* stored(store, timers)
          expect(yield* Effect.flip(store.append(commit(1, [event("Pay")], { fence: fenceOf(again) })))).toMatchObject({
            _tag: "FencingRejected",
            owner: "node-a",
            token: 2
          })
          expect(yield* stored(store, timers)).toEqual(before)
        }))

      it.scoped("a fence naming another owner, a token never handed out or a key never leased is refused", () =>
        Effect.gen(function*() {
          const { leases, store } = yield* setup
          const a = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
          for (const fence of [{ owner: "node-b", token: a.token }, { owner: "node-a", token: a.token + 1 }]) {
            expect(yield* Effect.flip(store.append(commit(0, [event("@created")], { fence })))).toMatchObject({
              _tag: "FencingRejected",
              ...fence
            })
          }
          expect(
            yield* Effect.flip(store.append(commit(0, [event("@created")], { instanceId: "never-leased", fence: fenceOf(a) })))
          ).toMatchObject({ _tag: "FencingRejected", instanceId: "never-leased" })
          // A lease of another machine with the same id does not fence this one.
          const invoice = Option.getOrThrow(yield* leases.tryAcquire({ machine: "invoice", instanceId: "o2" }, "node-a", held))
          expect(
            yield* Effect.flip(store.append(commit(0, [event("@created")], { instanceId: "o2", fence: fenceOf(invoice) })))
          ).toMatchObject({ _tag: "FencingRejected", machine, instanceId: "o2" })
          expect(yield* store.highestSequenceNr(machine, "o1")).toBe(0)
          expect(yield* store.highestSequenceNr(machine, "never-leased")).toBe(0)
          expect(yield* store.highestSequenceNr(machine, "o2")).toBe(0)
        }))

      it.scoped("a malformed fence fails the commit with PersistenceError before anything is written", () =>
        Effect.gen(function*() {
          const { leases, store } = yield* setup
          const a = Option.getOrThrow(yield* leases.tryAcquire(key, "node-a", held))
          const malformed = [
            { owner: "", token: 1 },
            { owner: "node-a\u0000", token: 1 },
            { owner: "node-a", token: 0 },
            { owner: "node-a", token: 1.5 }
          ]
          for (const fence of malformed) {
            expect(yield* Effect.flip(store.append(commit(0, [event("@created")], { fence })))).toMatchObject({
              _tag: "PersistenceError",
              operation: "append"
            })
          }
          expect(yield* store.highestSequenceNr(machine, "o1")).toBe(0)
          yield* store.append(commit(0, [event("@created")], { fence: fenceOf(a) }))
        }))
    })
  })
