/**
 * The OutboxStore conformance suite: commands written with their commit,
 * completion, claims, retries, dead letters, re-drive and discard, as
 * `@effect/vitest` tests over a layer.
 *
 * @internal
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as EventStore from "../../EventStore.js"
import * as OutboxStore from "../../OutboxStore.js"
import { machine, metadata, event, commit } from "./records.js"
import { isSkipped, type SuiteOptions } from "./options.js"

/** The services the suite needs of `layer`. */
type Stores = EventStore.EventStore | OutboxStore.OutboxStore

/**
 * Registers the OutboxStore conformance tests (a vitest `describe` named
 * "OutboxStore conformance on <name>"): commands stored with the commit that produced them, completion by a later commit (`StaleCommand` the second time), claims, claim extension, retries, dead letters, re-drive and discard by the claim's holder.
 *
 * `layer` provides `EventStore.EventStore` and `OutboxStore.OutboxStore`. Every build of it must give a
 * fresh, empty store (its own database, file or schema): each test builds it
 * once, in the test's scope, so tests never see each other's rows. The tests
 * use `TestClock` (through `it.scoped`).
 *
 * @example
 * ```ts
 * import { Conformance } from "effect-fsm/testing"
 * import { EventStore } from "effect-fsm"
 *
 * Conformance.outboxStoreSuite("memory", EventStore.layerMemory)
 * ```
 *
 * @since 0.1.0
 */
export const outboxStoreSuite = (name: string, layer: Layer.Layer<Stores, unknown>, options: SuiteOptions = {}) =>
  describe.skipIf(isSkipped(options))(`OutboxStore conformance on ${name}`, () => {
    const setup = Effect.map(Layer.build(layer), (context) => ({
      store: Context.get(context, EventStore.EventStore),
      outbox: Context.get(context, OutboxStore.OutboxStore)
    }))

    const command = (index: number, extra: Partial<OutboxStore.NewCommand> = {}): OutboxStore.NewCommand => ({
      index,
      kind: "handler",
      tag: "Charge",
      payload: { _tag: "Charge", amount: index },
      target: null,
      correlationId: null,
      fenceToken: null,
      ...extra
    })

    /** Creates `instanceId` (seqNr 1, at `at`) producing `commands`. */
    const produce = (
      store: EventStore.EventStore["Type"],
      instanceId: string,
      commands: ReadonlyArray<OutboxStore.NewCommand>,
      at = 1_000,
      ofMachine = machine
    ) =>
      store.append(
        commit(instanceId, 0, [event("@created", { _tag: "Pending" }, "Pending", metadata({ timestamp: at }))], {
          machine: ofMachine,
          outbox: { produce: commands }
        })
      )

    const key = (instanceId: string, index: number, seqNr = 1) => ({ machine, instanceId, seqNr, index })

    it.scoped("commands are stored with the commit that produced them, exactly as given", () =>
      Effect.gen(function*() {
        const { outbox, store } = yield* setup
        yield* produce(store, "a", [
          command(0, { correlationId: "corr", fenceToken: 7 }),
          command(1, {
            kind: "send",
            tag: "Approve",
            payload: { _tag: "Approve", note: "héllo 🔗" },
            target: { machine: "payment", instanceId: "p'1" }
          })
        ])
        expect(yield* outbox.pending(machine, "a")).toEqual([
          {
            machine,
            instanceId: "a",
            seqNr: 1,
            index: 0,
            kind: "handler",
            tag: "Charge",
            payload: { _tag: "Charge", amount: 0 },
            target: null,
            correlationId: "corr",
            fenceToken: 7,
            createdAt: 1_000,
            dueAt: 1_000,
            attempts: 0,
            lastError: null
          },
          expect.objectContaining({
            index: 1,
            kind: "send",
            tag: "Approve",
            payload: { _tag: "Approve", note: "héllo 🔗" },
            target: { machine: "payment", instanceId: "p'1" }
          })
        ])
        // The next commit's commands are keyed by its own seqNr.
        yield* store.append(commit("a", 1, [event("Touch")], { outbox: { produce: [command(0)] } }))
        expect((yield* outbox.pending(machine, "a")).map((c) => [c.seqNr, c.index])).toEqual([[1, 0], [1, 1], [2, 0]])
      }))

    it.scoped("a commit that fails writes no command; a command that cannot be stored fails the commit", () =>
      Effect.gen(function*() {
        const { outbox, store } = yield* setup
        yield* produce(store, "a", [command(0)])
        const conflict = yield* Effect.flip(produce(store, "a", [command(5)]))
        expect(conflict._tag).toBe("SequenceConflict")
        for (
          const bad of [
            command(0, { payload: { amount: Number.NaN } }),
            command(0, { tag: "a\u0000b" }),
            command(-1),
            command(0, { kind: "send" }),
            command(0, { target: { machine: "m", instanceId: "" } }),
            command(0, { fenceToken: 0 })
          ]
        ) {
          const refused = yield* Effect.flip(produce(store, "b", [bad]))
          expect(refused._tag).toBe("PersistenceError")
        }
        const twice = yield* Effect.flip(produce(store, "b", [command(0), command(0)]))
        expect(twice.message).toContain("used twice")
        expect(yield* store.highestSequenceNr(machine, "b")).toBe(0)
        expect((yield* outbox.pending(machine, "a")).map((c) => c.index)).toEqual([0])
        expect(yield* outbox.pending(machine, "b")).toEqual([])
      }))

    it.scoped("a commit completing a command deletes it; completing it again is StaleCommand and writes nothing", () =>
      Effect.gen(function*() {
        const { outbox, store } = yield* setup
        yield* produce(store, "a", [command(0), command(1)])
        yield* produce(store, "target", [])
        yield* store.append(commit("target", 1, [event("Reply")], { outbox: { produce: [], complete: key("a", 0) } }))
        expect((yield* outbox.pending(machine, "a")).map((c) => c.index)).toEqual([1])
        const stale = yield* Effect.flip(
          store.append(commit("target", 2, [event("Reply")], { outbox: { produce: [command(0)], complete: key("a", 0) } }))
        )
        expect(stale).toMatchObject({ _tag: "StaleCommand", machine, instanceId: "a", seqNr: 1, index: 0 })
        expect(yield* store.highestSequenceNr(machine, "target")).toBe(2)
        expect(yield* outbox.pending(machine, "target")).toEqual([])
        // A conflict is reported before a stale command.
        const conflict = yield* Effect.flip(
          store.append(commit("target", 1, [event("Reply")], { outbox: { produce: [], complete: key("a", 0) } }))
        )
        expect(conflict._tag).toBe("SequenceConflict")
        expect(yield* outbox.complete(key("a", 1))).toBe(true)
        expect(yield* outbox.complete(key("a", 1))).toBe(false)
      }))

    it.scoped("claims due commands oldest first, skips live claims, extends only its own; retry, dead letter, re-drive, discard", () =>
      Effect.gen(function*() {
        const { outbox, store } = yield* setup
        yield* produce(store, "late", [command(0)], 300)
        yield* produce(store, "early", [command(0), command(1)], 100)
        yield* produce(store, "other", [command(0)], 50, "invoice")
        expect(yield* outbox.nextDueAt([machine])).toEqual(Option.some(100))
        expect(yield* outbox.nextDueAt([])).toEqual(Option.none())
        const first = yield* outbox.claimDue({ machines: [machine], now: 1_000, limit: 2, nodeId: "n1", claimUntil: 2_000 })
        expect(first.map((c) => [c.instanceId, c.index])).toEqual([["early", 0], ["early", 1]])
        const second = yield* outbox.claimDue({ machines: [machine], now: 1_000, limit: 10, nodeId: "n2", claimUntil: 2_000 })
        expect(second.map((c) => c.instanceId)).toEqual(["late"])
        expect(yield* outbox.claimDue({ machines: [machine], now: 1_500, limit: 10, nodeId: "n3", claimUntil: 3_000 })).toEqual([])
        expect(yield* outbox.nextDueAt([machine])).toEqual(Option.some(2_000))
        expect(yield* outbox.extendClaim(key("early", 0), { nodeId: "n2", claimUntil: 9_000 })).toBe(false)
        expect(yield* outbox.extendClaim(key("early", 0), { nodeId: "n1", claimUntil: 9_000 })).toBe(true)
        const taken = yield* outbox.claimDue({ machines: [machine], now: 2_000, limit: 10, nodeId: "n3", claimUntil: 3_000 })
        expect(taken.map((c) => [c.instanceId, c.index])).toEqual([["early", 1], ["late", 0]])

        // Only the node holding the claim may complete, retry or dead-letter.
        expect(yield* outbox.complete(key("early", 1), { claimedBy: "n1" })).toBe(false)
        expect(yield* outbox.complete(key("early", 1), { claimedBy: "n3" })).toBe(true)
        yield* outbox.retryLater(key("late", 0), { dueAt: 5_000, error: "not mine", nodeId: "n1" })
        expect((yield* outbox.pending(machine, "late"))[0]).toMatchObject({ attempts: 0, lastError: null })
        yield* outbox.retryLater(key("late", 0), { dueAt: 5_000, error: "boom 1", nodeId: "n3" })
        expect((yield* outbox.pending(machine, "late"))[0]).toMatchObject({ dueAt: 5_000, attempts: 1, lastError: "boom 1" })
        expect(yield* outbox.claimDue({ machines: [machine], now: 4_999, limit: 10, nodeId: "n", claimUntil: 6_000 }))
          .toEqual([])
        const again = yield* outbox.claimDue({ machines: [machine], now: 5_000, limit: 10, nodeId: "n4", claimUntil: 9_000 })
        expect(again.map((c) => c.instanceId)).toEqual(["late"])
        yield* outbox.deadLetter(key("late", 0), { error: "not mine", now: 6_000, nodeId: "n3" })
        expect((yield* outbox.pending(machine, "late")).length).toBe(1)
        yield* outbox.deadLetter(key("late", 0), { error: "boom 2", now: 6_000, nodeId: "n4" })
        yield* outbox.deadLetter(key("late", 0), { error: "again", now: 7_000, nodeId: "n4" }) // no longer pending: nothing
        expect(yield* outbox.pending(machine, "late")).toEqual([])
        const letters = yield* outbox.deadLetters(machine)
        expect(letters).toEqual([expect.objectContaining({ instanceId: "late", attempts: 2, lastError: "boom 2", failedAt: 6_000 })])
        expect(yield* outbox.deadLetters("invoice")).toEqual([])
        expect(yield* outbox.redrive(key("late", 0), 8_000)).toBe(true)
        expect(yield* outbox.redrive(key("late", 0), 8_000)).toBe(false)
        expect((yield* outbox.pending(machine, "late"))[0]).toMatchObject({ dueAt: 8_000, attempts: 0, lastError: "boom 2" })
        yield* outbox.claimDue({ machines: [machine], now: 8_000, limit: 10, nodeId: "n5", claimUntil: 9_500 })
        yield* outbox.deadLetter(key("late", 0), { error: "final", now: 9_000, nodeId: "n5" })
        expect(yield* outbox.discard(key("late", 0))).toBe(true)
        expect(yield* outbox.discard(key("late", 0))).toBe(false)
        expect(yield* outbox.deadLetters(machine)).toEqual([])
      }))
  })
