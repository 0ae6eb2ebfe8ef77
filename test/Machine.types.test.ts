/**
 * Type-level promises of `Machine.make`. Each `@ts-expect-error` below fails
 * `tsc --noEmit` (part of `npm test`) if the line it marks ever compiles.
 */
import { describe, expectTypeOf, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { FSMRuntime, Machine } from "effect-fsm"
import { type ActionLog, Order, type OrderState } from "./fixtures/machines.js"

const State = Schema.Union(
  Schema.TaggedStruct("Idle", {}),
  Schema.TaggedStruct("Running", { job: Schema.String, attempt: Schema.Number }),
  Schema.TaggedStruct("Failed", { job: Schema.String, error: Schema.String })
)
const Event = Schema.Union(
  Schema.TaggedStruct("Start", { job: Schema.String }),
  Schema.TaggedStruct("Fail", { error: Schema.String }),
  Schema.TaggedStruct("Reset", {})
)

const base = { name: "job", version: 1, state: State, event: Event } as const

describe("Machine.make types", () => {
  it("accepts a well-typed table", () => {
    const M = Machine.make({
      ...base,
      transitions: {
        Idle: { Start: { to: "Running", build: (_, e) => ({ job: e.job, attempt: 1 }) } },
        Running: { Fail: { to: "Failed", build: (s, e) => ({ job: s.job, error: e.error }) }, Reset: "Idle" },
        Failed: { Reset: "Idle", Start: Machine.stay }
      }
    })
    expectTypeOf(M).toEqualTypeOf<Machine.Machine<typeof State.Type, typeof Event.Type, never>>()
  })

  it("rejects an unknown state tag", () => {
    Machine.make({
      ...base,
      transitions: {
        // @ts-expect-error "Idel" is not a state
        Idel: { Start: { to: "Running", build: (_, e) => ({ job: e.job, attempt: 1 }) } }
      }
    })
  })

  it("rejects an unknown event tag", () => {
    Machine.make({
      ...base,
      transitions: {
        // @ts-expect-error "Stop" is not an event
        Running: { Stop: "Idle" }
      }
    })
  })

  it("rejects an unknown target", () => {
    Machine.make({
      ...base,
      transitions: {
        // @ts-expect-error "Done" is not a state
        Running: { Reset: "Done" }
      }
    })
    Machine.make({
      ...base,
      transitions: {
        // @ts-expect-error "Done" is not a state
        Running: { Reset: { to: "Done" } }
      }
    })
  })

  it("requires build for a target with data, and a build returning exactly the target's data", () => {
    Machine.make({
      ...base,
      transitions: {
        // @ts-expect-error Running has data, so a bare tag cannot reach it
        Idle: { Start: "Running" }
      }
    })
    Machine.make({
      ...base,
      transitions: {
        // @ts-expect-error build is missing
        Idle: { Start: { to: "Running" } }
      }
    })
    Machine.make({
      ...base,
      transitions: {
        Idle: {
          // @ts-expect-error attempt must be a number
          Start: {
            to: "Running",
            build: (_, e) => ({ job: e.job, attempt: "one" })
          }
        }
      }
    })
    Machine.make({
      ...base,
      transitions: {
        Idle: {
          // @ts-expect-error attempt is missing
          Start: {
            to: "Running",
            build: (_, e) => ({ job: e.job })
          }
        }
      }
    })
  })

  it("types handlers against exactly their source state and event", () => {
    Machine.make({
      ...base,
      transitions: {
        Idle: {
          Start: {
            to: "Running",
            // @ts-expect-error Idle has no `job`
            build: (s) => ({ job: s.job, attempt: 1 })
          }
        },
        Running: {
          Fail: {
            to: "Failed",
            // @ts-expect-error the Fail event has no `job`
            build: (_, e) => ({ job: e.job, error: "x" })
          }
        }
      }
    })
  })

  it("types group handlers against the union of their states and events", () => {
    Machine.make({
      ...base,
      transitions: {},
      groups: (group) => [
        group(["Running", "Failed"], ["Reset"], {
          to: "Failed",
          build: (s) => {
            expectTypeOf(s).toEqualTypeOf<Machine.Of<typeof State.Type, "Running" | "Failed">>()
            return { job: s.job, error: "reset" }
          }
        }),
        // @ts-expect-error "Paused" is not a state
        group(["Paused"], ["Reset"], "Idle")
      ]
    })
  })

  it("types timeouts: their event must be an event of the machine", () => {
    Machine.make({
      ...base,
      transitions: { Running: { Fail: { to: "Failed", build: (s, e) => ({ job: s.job, error: e.error }) } } },
      timeouts: {
        Running: {
          // @ts-expect-error "Timeout" is not an event
          deadline: { after: "1 minute", event: { _tag: "Timeout" } }
        }
      }
    })
  })

  it("carries the requirements of entry and exit actions in the machine type", () => {
    expectTypeOf<Machine.Context<typeof Order>>().toEqualTypeOf<ActionLog>()
    // The runtime layer therefore requires them too.
    const layer = FSMRuntime.layer({ machines: [Order] })
    type Needs = typeof layer extends import("effect/Layer").Layer<infer _A, infer _E, infer R> ? R : never
    expectTypeOf<Needs>().toEqualTypeOf<ActionLog | import("effect-fsm").EventStore.EventStore>()
  })

  it("types the client by the machine", () => {
    const program = Effect.gen(function*() {
      const orders = yield* FSMRuntime.client(Order)
      const outcome = yield* orders.send("o1", { _tag: "Pay", amount: 1 })
      expectTypeOf(outcome.state).toEqualTypeOf<OrderState>()
      // @ts-expect-error "Refund" is not an order event
      yield* orders.send("o1", { _tag: "Refund" })
      // @ts-expect-error Pay needs an amount
      yield* orders.send("o1", { _tag: "Pay" })
    })
    expectTypeOf(program).toMatchTypeOf<Effect.Effect<void, unknown, FSMRuntime.FSMRuntime>>()
  })
})
