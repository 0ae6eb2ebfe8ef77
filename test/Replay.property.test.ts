/**
 * Replay equivalence: for random event sequences, the state a runtime
 * recovers after a restart (snapshot + tail replay, any snapshot interval)
 * equals the state from folding `Machine.step` directly over the accepted
 * events.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, FastCheck as fc, Ref, Schedule, Schema } from "effect"
import { EventStore, Machine } from "effect-fsm"
import {
  ActionLog,
  Counter, type CounterEvent, type CounterState, Order, type OrderEvent, type OrderState
} from "./fixtures/machines.js"
import { backends, memory } from "./utils/backends.js"
import { buildStore, runtimeOn } from "./utils/runtime.js"

const counterEvent: fc.Arbitrary<CounterEvent> = fc.oneof(
  fc.integer({ min: -5, max: 5 }).map((by) => ({ _tag: "Add" as const, by })),
  fc.constant({ _tag: "Reset" as const })
)

const orderEvent: fc.Arbitrary<OrderEvent> = fc.oneof(
  fc.integer({ min: -1, max: 3 }).map((amount) => ({ _tag: "Pay" as const, amount })),
  fc.string({ maxLength: 3 }).map((tracking) => ({ _tag: "Ship" as const, tracking })),
  fc.constant({ _tag: "Deliver" as const }),
  fc.string({ maxLength: 3 }).map((reason) => ({ _tag: "Cancel" as const, reason })),
  fc.constant({ _tag: "PaymentTimeout" as const }),
  fc.string({ maxLength: 3 }).map((text) => ({ _tag: "Note" as const, text }))
)

/** Folds `Machine.step` directly: the reference semantics. */
const fold = <S extends Machine.Tagged, E extends Machine.Tagged>(
  machine: Machine.Machine<S, E, unknown>,
  initial: S,
  events: ReadonlyArray<E>
) => {
  let state = initial
  let stopped = false
  let seqNr = 1
  for (const event of events) {
    const decision: Machine.Decision<S> = Machine.step(machine, state, event, { stopped })
    if (decision._tag === "Rejected" || decision._tag === "Failed") continue
    state = decision.state
    stopped = decision._tag === "Stop"
    seqNr++
  }
  return { state, seqNr, stopped }
}

const recovered = <S extends Machine.Tagged, E extends Machine.Tagged, R>(
  machine: Machine.Machine<S, E, R>,
  initial: S,
  events: ReadonlyArray<E>,
  snapshotEvery: number,
  restartEvery: number
) =>
  Effect.gen(function*() {
    const store = yield* buildStore(memory)
    const options = { machines: [machine], retry: Schedule.stop, snapshotEvery }
    let { runtime } = yield* runtimeOn(store, options)
    yield* runtime.create(machine, "i", initial)
    for (const [index, event] of events.entries()) {
      // Restarts between sends: later sends run on a recovered instance.
      if (restartEvery > 0 && index % restartEvery === 0) runtime = (yield* runtimeOn(store, options)).runtime
      yield* Effect.ignore(runtime.send(machine, "i", event))
    }
    const { runtime: fresh } = yield* runtimeOn(store, options)
    const { seqNr, state, stopped } = yield* fresh.inspect(machine, "i")
    return { state, seqNr, stopped }
  }).pipe(Effect.scoped)

const run = <A>(effect: Effect.Effect<A, unknown>) => Effect.runPromise(effect as Effect.Effect<A>)

describe("replay equivalence", () => {
  it("counter: recovered state equals the direct fold", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(counterEvent, { maxLength: 40 }),
        fc.integer({ min: 0, max: 7 }),
        fc.integer({ min: 0, max: 9 }),
        async (events, snapshotEvery, restartEvery) => {
          const initial: CounterState = { _tag: "Even", count: 0, trail: [] }
          const actual = await run(recovered(Counter, initial, events, snapshotEvery, restartEvery))
          expect(actual).toEqual(fold(Counter, initial, events))
        }
      ),
      { numRuns: 150 }
    )
  })

  it("order: recovered state equals the direct fold, including stops and rejections", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(orderEvent, { maxLength: 25 }),
        fc.integer({ min: 0, max: 5 }),
        fc.integer({ min: 0, max: 6 }),
        async (events, snapshotEvery, restartEvery) => {
          const initial: OrderState = { _tag: "Pending", orderId: "o" }
          const actual = await run(
            recovered(Order, initial, events, snapshotEvery, restartEvery).pipe(
              Effect.provideServiceEffect(ActionLog, Ref.make<ReadonlyArray<string>>([]))
            )
          )
          expect(actual).toEqual(fold(Order, initial, events))
        }
      ),
      { numRuns: 150 }
    )
  })
})

/** A tally whose every `Add` stays in `Counting`: a log of any length folds to the sum of its events. */
const Tally = Machine.make({
  name: "tally",
  version: 1,
  state: Schema.Union(Schema.TaggedStruct("Counting", { total: Schema.Number, last: Schema.Number })),
  event: Schema.Union(Schema.TaggedStruct("Add", { by: Schema.Number })),
  transitions: { Counting: { Add: { to: "Counting", build: (s, e) => ({ total: s.total + e.by, last: e.by }) } } }
})

/** Writes `@created` and `events - 1` Adds of 1, 2, 3, ... to `instanceId`, a thousand per commit. */
const writeLog = (store: EventStore.EventStore["Type"], instanceId: string, events: number) =>
  Effect.gen(function*() {
    const metadata = (commitId: string): EventStore.Metadata => ({
      timestamp: 1_700_000_000_000,
      source: "user",
      correlationId: null,
      node: "n",
      commitId,
      timer: null
    })
    const created: EventStore.NewEvent = {
      tag: EventStore.CreatedTag,
      payload: { _tag: "Counting", total: 0, last: 0 },
      stateTag: "Counting",
      schemaVersion: 1,
      metadata: metadata("c0")
    }
    for (let from = 0; from < events; from += 1_000) {
      const batch = Array.from({ length: Math.min(1_000, events - from) }, (_, i): EventStore.NewEvent =>
        from + i === 0 ? created : {
          tag: "Add",
          payload: { _tag: "Add", by: from + i },
          stateTag: "Counting",
          schemaVersion: 1,
          metadata: metadata(`c${from + i}`)
        })
      yield* store.append({ machine: Tally.name, instanceId, expectedSeqNr: from, events: batch })
    }
  })

describe.each(backends)("replay of a log of several pages on $name", (backend) => {
  it.scoped("recovers every event once and in order, whatever the log's length against the page", () =>
    Effect.gen(function*() {
      const store = yield* buildStore(backend)
      const lengths = [1, 3_999, 4_000, 4_001, 8_000, 12_345]
      for (const events of lengths) yield* writeLog(Context.get(store, EventStore.EventStore), `t${events}`, events)
      const { runtime } = yield* runtimeOn(store, { machines: [Tally], snapshotEvery: 0 })
      for (const events of lengths) {
        const view = yield* runtime.inspect(Tally, `t${events}`)
        // Adds of 1 .. events - 1.
        expect([view.seqNr, view.state]).toEqual([events, {
          _tag: "Counting",
          total: (events - 1) * events / 2,
          last: events - 1
        }])
      }
    }), { timeout: 60_000 })
})
