/**
 * The TimeoutStore conformance suite: claims, completion, retries, dead
 * letters and re-drive of timer rows, as `@effect/vitest` tests over a layer.
 *
 * @internal
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as EventStore from "../../EventStore.js"
import * as TimeoutStore from "../../TimeoutStore.js"
import { machine, event, commit, timer } from "./records.js"
import { isSkipped, type SuiteOptions } from "./options.js"

/** The services the suite needs of `layer`. */
type Stores = EventStore.EventStore | TimeoutStore.TimeoutStore

/**
 * Registers the TimeoutStore conformance tests (a vitest `describe` named
 * "TimeoutStore conformance on <name>"): claims of due timer rows (oldest first, skipping live claims, never the same row to two nodes), completion, retries, dead letters and re-drive, each acting only on the stored generation.
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
 * Conformance.timeoutStoreSuite("memory", EventStore.layerMemory)
 * ```
 *
 * @since 0.1.0
 */
export const timeoutStoreSuite = (name: string, layer: Layer.Layer<Stores, unknown>, options: SuiteOptions = {}) =>
  describe.skipIf(isSkipped(options))(`TimeoutStore conformance on ${name}`, () => {
    const setup = Effect.map(Layer.build(layer), (context) => ({
      store: Context.get(context, EventStore.EventStore),
      timers: Context.get(context, TimeoutStore.TimeoutStore)
    }))

    const arm = (
      store: EventStore.EventStore["Type"],
      instanceId: string,
      schedule: ReadonlyArray<ReturnType<typeof timer>>,
      ofMachine = machine
    ) => store.append(commit(instanceId, 0, [event("@created")], { machine: ofMachine, timers: { cancelAll: false, schedule } }))

    const key = (instanceId: string, name: string, generation = 1) => ({ machine, instanceId, name, generation })

    it.scoped("claims due timers oldest first, up to the limit, and skips live claims until their lease ends", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        yield* arm(store, "a", [timer("t", 1, 300)])
        yield* arm(store, "b", [timer("t", 1, 100), timer("later", 1, 10_000)])
        yield* arm(store, "c", [timer("t", 1, 200)])
        yield* arm(store, "x", [timer("t", 1, 50)], "invoice")

        expect(yield* timers.nextDueAt([machine])).toEqual(Option.some(100))
        expect(yield* timers.nextDueAt([machine, "invoice"])).toEqual(Option.some(50))
        expect(yield* timers.nextDueAt(["nothing"])).toEqual(Option.none())
        expect(yield* timers.claimDue({ machines: [], now: 1_000, limit: 10, nodeId: "n", claimUntil: 2_000 })).toEqual([])

        const first = yield* timers.claimDue({ machines: [machine], now: 1_000, limit: 2, nodeId: "n1", claimUntil: 2_000 })
        expect(first.map((t) => [t.instanceId, t.name, t.dueAt])).toEqual([["b", "t", 100], ["c", "t", 200]])
        expect(first[0]).toEqual({
          machine,
          instanceId: "b",
          name: "t",
          generation: 1,
          stateTag: "Pending",
          dueAt: 100,
          payload: { _tag: "Timeout", name: "t" },
          attempts: 0,
          lastError: null
        })
        const second = yield* timers.claimDue({ machines: [machine], now: 1_500, limit: 10, nodeId: "n2", claimUntil: 2_500 })
        expect(second.map((t) => t.instanceId)).toEqual(["a"])
        expect(yield* timers.claimDue({ machines: [machine], now: 1_999, limit: 10, nodeId: "n3", claimUntil: 3_000 }))
          .toEqual([])
        // A claimed timer is next claimable when its claim ends.
        expect(yield* timers.nextDueAt([machine])).toEqual(Option.some(2_000))
        expect(yield* timers.nextDueAt([machine, "invoice"])).toEqual(Option.some(50))
        // n1's lease ends at 2_000, n2's does not.
        const retaken = yield* timers.claimDue({ machines: [machine], now: 2_000, limit: 10, nodeId: "n3", claimUntil: 9_000 })
        expect(retaken.map((t) => t.instanceId)).toEqual(["b", "c"])
        expect(yield* timers.nextDueAt([machine])).toEqual(Option.some(2_500))
      }))

    it.scoped("nodes claiming at once never get the same timer", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        yield* Effect.forEach(
          Array.from({ length: 50 }, (_, i) => i),
          (i) => arm(store, `i${i}`, [timer("t", 1, i)]),
          { concurrency: 10, discard: true }
        )
        const claims = yield* Effect.all(
          ["a", "b", "c", "d", "e"].map((nodeId) =>
            timers.claimDue({ machines: [machine], now: 100, limit: 20, nodeId, claimUntil: 1_000 })
          ),
          { concurrency: "unbounded" }
        )
        const claimed = claims.flat().map((t) => t.instanceId)
        expect(claimed).toHaveLength(50)
        expect(new Set(claimed).size).toBe(50)
      }))

    it.scoped("complete, retryLater, deadLetter and redrive act only on the stored generation", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        yield* arm(store, "r", [timer("t", 1, 100), timer("u", 1, 100)])
        const pendingNames = Effect.map(timers.pending(machine, "r"), (ts) => ts.map((t) => t.name).sort())

        yield* timers.complete(key("r", "t", 2))
        expect(yield* pendingNames).toEqual(["t", "u"])
        yield* timers.complete(key("r", "u"))
        expect(yield* pendingNames).toEqual(["t"])

        yield* timers.claimDue({ machines: [machine], now: 100, limit: 10, nodeId: "n", claimUntil: 10_000 })
        yield* timers.retryLater(key("r", "t", 2), { dueAt: 1, error: "wrong generation" })
        yield* timers.retryLater(key("r", "t"), { dueAt: 500, error: "boom" })
        const [retried] = yield* timers.pending(machine, "r")
        expect(retried).toMatchObject({ dueAt: 500, attempts: 1, lastError: "boom" })
        // The claim is released: it is claimable again once due, although the lease ran to 10_000.
        expect(yield* timers.claimDue({ machines: [machine], now: 499, limit: 10, nodeId: "m", claimUntil: 20_000 }))
          .toEqual([])
        expect((yield* timers.claimDue({ machines: [machine], now: 500, limit: 10, nodeId: "m", claimUntil: 20_000 })).length)
          .toBe(1)

        yield* timers.deadLetter(key("r", "t", 2), { error: "wrong generation", now: 1 })
        expect(yield* timers.deadLetters(machine)).toEqual([])
        yield* timers.deadLetter(key("r", "t"), { error: "gave up", now: 700 })
        expect(yield* timers.pending(machine, "r")).toEqual([])
        expect(yield* timers.deadLetters(machine)).toEqual([{
          machine,
          instanceId: "r",
          name: "t",
          generation: 1,
          stateTag: "Pending",
          dueAt: 500,
          payload: { _tag: "Timeout", name: "t" },
          attempts: 2,
          lastError: "gave up",
          failedAt: 700
        }])
        expect(yield* timers.deadLetters("invoice")).toEqual([])

        expect(yield* timers.redrive({ machine, instanceId: "r", name: "t" }, 800)).toBe(true)
        expect(yield* timers.deadLetters(machine)).toEqual([])
        expect(yield* timers.pending(machine, "r")).toEqual([{
          machine,
          instanceId: "r",
          name: "t",
          generation: 1,
          stateTag: "Pending",
          dueAt: 800,
          payload: { _tag: "Timeout", name: "t" },
          attempts: 0,
          lastError: "gave up"
        }])
        expect(yield* timers.redrive({ machine, instanceId: "r", name: "t" }, 900)).toBe(false)

        // A dead letter is not redriven over a live timer of the same name.
        yield* timers.deadLetter(key("r", "t"), { error: "again", now: 1_000 })
        yield* store.append(commit("r", 1, [event("Touch")], { timers: { cancelAll: false, schedule: [timer("t", 2, 5_000)] } }))
        expect(yield* timers.redrive({ machine, instanceId: "r", name: "t" }, 1_100)).toBe(false)
        expect((yield* timers.deadLetters(machine)).map((d) => d.lastError)).toEqual(["again"])
        expect((yield* timers.pending(machine, "r")).map((t) => [t.generation, t.dueAt])).toEqual([[2, 5_000]])
      }))

    it.scoped("operator actions: reschedule (fire now) and cancel act on the stored generation, discard drops a dead letter, upcoming lists what fires next", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        yield* arm(store, "a", [timer("t", 1, 5_000), timer("u", 1, 9_000)])
        yield* arm(store, "b", [timer("t", 1, 3_000)])
        yield* arm(store, "c", [timer("t", 1, 5_000)], "invoice")
        const upcoming = (before: number, limit = 10) =>
          Effect.map(timers.upcoming(machine, { before, limit }), (ts) => ts.map((t) => [t.instanceId, t.name, t.dueAt]))
        expect(yield* upcoming(10_000)).toEqual([["b", "t", 3_000], ["a", "t", 5_000], ["a", "u", 9_000]])
        expect(yield* upcoming(5_000)).toEqual([["b", "t", 3_000]])
        expect(yield* upcoming(10_000, 2)).toEqual([["b", "t", 3_000], ["a", "t", 5_000]])

        // Claimed by a node, then rescheduled: due at once and claimable by anyone.
        yield* timers.claimDue({ machines: [machine], now: 5_000, limit: 10, nodeId: "n", claimUntil: 60_000 })
        expect(yield* timers.reschedule(key("a", "t", 2), 0)).toBe(false)
        expect(yield* timers.reschedule(key("a", "u"), 100)).toBe(true)
        const claimed = yield* timers.claimDue({ machines: [machine], now: 100, limit: 10, nodeId: "m", claimUntil: 60_000 })
        expect(claimed.map((t) => [t.instanceId, t.name, t.dueAt])).toEqual([["a", "u", 100]])

        expect(yield* timers.cancel(key("b", "t", 2))).toBe(false)
        expect(yield* timers.cancel(key("b", "t"))).toBe(true)
        expect(yield* timers.cancel(key("b", "t"))).toBe(false)
        expect(yield* timers.pending(machine, "b")).toEqual([])

        yield* timers.deadLetter(key("a", "t"), { error: "gave up", now: 10 })
        expect(yield* timers.discard({ machine, instanceId: "a", name: "u" })).toBe(false)
        expect(yield* timers.discard({ machine, instanceId: "a", name: "t" })).toBe(true)
        expect(yield* timers.discard({ machine, instanceId: "a", name: "t" })).toBe(false)
        expect(yield* timers.deadLetters(machine)).toEqual([])
        expect((yield* timers.pending("invoice", "c")).length).toBe(1)
      }))
  })
