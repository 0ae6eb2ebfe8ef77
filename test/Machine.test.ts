import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Schema } from "effect"
import { Machine } from "effect-fsm"
import { Counter, Order, type OrderEvent, type OrderState } from "./fixtures/machines.js"

const pending: OrderState = { _tag: "Pending", orderId: "o1" }
const paid: OrderState = { _tag: "Paid", orderId: "o1", amount: 10 }

describe("Machine.step", () => {
  it("goes to the target built from the source state and the event", () => {
    expect(Machine.step(Order, pending, { _tag: "Pay", amount: 42 })).toEqual({
      _tag: "Goto",
      state: { _tag: "Paid", orderId: "o1", amount: 42 }
    })
  })

  it("rejects an event the state has no entry for", () => {
    expect(Machine.step(Order, pending, { _tag: "Ship", tracking: "t" })).toEqual({
      _tag: "Rejected",
      reason: "NoTransition"
    })
  })

  it("rejects when the guard does not hold", () => {
    expect(Machine.step(Order, pending, { _tag: "Pay", amount: 0 })).toEqual({
      _tag: "Rejected",
      reason: "GuardRejected"
    })
  })

  it("rejects every event of a stopped instance", () => {
    expect(Machine.step(Order, pending, { _tag: "Pay", amount: 1 }, { stopped: true })).toEqual({
      _tag: "Rejected",
      reason: "Stopped"
    })
  })

  it("stays with the same state object on Machine.stay", () => {
    const cancelled: OrderState = { _tag: "Cancelled", orderId: "o1", reason: "r" }
    const decision = Machine.step(Order, cancelled, { _tag: "Cancel", reason: "again" })
    expect(decision._tag).toBe("Stay")
    expect(decision._tag === "Stay" && decision.state).toBe(cancelled)
  })

  it("stops in the target state when the entry says stop", () => {
    const shipped: OrderState = { _tag: "Shipped", orderId: "o1", tracking: "t" }
    expect(Machine.step(Order, shipped, { _tag: "Deliver" })).toEqual({
      _tag: "Stop",
      state: { _tag: "Delivered", orderId: "o1" },
      entered: true
    })
  })

  it("applies a group entry to every state and event of the group", () => {
    for (const state of [pending, paid]) {
      expect(Machine.step(Order, state, { _tag: "Cancel", reason: "changed mind" })).toEqual({
        _tag: "Goto",
        state: { _tag: "Cancelled", orderId: "o1", reason: "changed mind" }
      })
    }
    expect(Machine.step(Order, paid, { _tag: "Note", text: "x" })).toEqual({ _tag: "Stay", state: paid })
  })

  it("lets a specific entry override a group entry", () => {
    const Doc = Machine.make({
      name: "doc",
      version: 1,
      state: Schema.Union(Schema.TaggedStruct("A", {}), Schema.TaggedStruct("B", {}), Schema.TaggedStruct("C", {})),
      event: Schema.Union(Schema.TaggedStruct("E", {})),
      transitions: { A: { E: "C" } },
      groups: (group) => [group(["A", "B"], ["E"], "B")]
    })
    expect(Doc.problems).toEqual([])
    expect(Machine.step(Doc, { _tag: "A" }, { _tag: "E" })).toEqual({ _tag: "Goto", state: { _tag: "C" } })
    expect(Machine.step(Doc, { _tag: "B" }, { _tag: "E" })).toEqual({ _tag: "Stay", state: { _tag: "B" } })
  })

  it("takes the first alternative whose guard holds", () => {
    const even = { _tag: "Even", count: 0, trail: [] } as const
    expect(Machine.step(Counter, even, { _tag: "Add", by: 2 })).toEqual({
      _tag: "Stay",
      state: { _tag: "Even", count: 2, trail: [2] }
    })
    expect(Machine.step(Counter, even, { _tag: "Add", by: 3 })).toEqual({
      _tag: "Goto",
      state: { _tag: "Odd", count: 3, trail: [3] }
    })
  })

  it("re-enters the same state only when the entry says reenter", () => {
    const even = { _tag: "Even", count: 4, trail: [4] } as const
    expect(Machine.step(Counter, even, { _tag: "Reset" })._tag).toBe("Goto")
    const odd = { _tag: "Odd", count: 3, trail: [3] } as const
    expect(Machine.step(Counter, odd, { _tag: "Reset" })._tag).toBe("Goto")
  })

  it("does not let build smuggle its own tag into the target", () => {
    const M = Machine.make({
      name: "smuggle",
      version: 1,
      state: Schema.Union(Schema.TaggedStruct("A", { n: Schema.Number }), Schema.TaggedStruct("B", { n: Schema.Number })),
      event: Schema.Union(Schema.TaggedStruct("E", {})),
      transitions: { A: { E: { to: "B", build: (s) => s } } }
    })
    expect(Machine.step(M, { _tag: "A", n: 1 }, { _tag: "E" })).toEqual({ _tag: "Goto", state: { _tag: "B", n: 1 } })
  })

  it("is pure: the same input always gives an equal decision and the input is not mutated", () => {
    const state = { ...paid }
    const event: OrderEvent = { _tag: "Ship", tracking: "t" }
    const first = Machine.step(Order, state, event)
    expect(Machine.step(Order, state, event)).toEqual(first)
    expect(state).toEqual(paid)
  })
})

describe("Machine.validate", () => {
  const State = Schema.Union(Schema.TaggedStruct("A", {}), Schema.TaggedStruct("B", {}))
  const Event = Schema.Union(Schema.TaggedStruct("Go", {}), Schema.TaggedStruct("Timeout", {}))

  const problemsOf = (machine: Machine.Any) =>
    Effect.runSyncExit(Machine.validate(machine)).pipe(
      Exit.match({ onSuccess: () => "", onFailure: (cause) => String(cause) })
    )

  it("accepts the fixtures", () => {
    expect(Exit.isSuccess(Effect.runSyncExit(Machine.validate(Order)))).toBe(true)
    expect(Exit.isSuccess(Effect.runSyncExit(Machine.validate(Counter)))).toBe(true)
  })

  it("reports a timeout whose event its state does not handle", () => {
    const M = Machine.make({
      name: "m",
      version: 1,
      state: State,
      event: Event,
      transitions: { A: { Go: "B" } },
      timeouts: { A: { late: { after: "1 second", event: { _tag: "Timeout" } } } }
    })
    const error = Effect.runSync(Effect.flip(Machine.validate(M)))
    expect(error._tag).toBe("MachineDefinitionError")
    expect(error.machine).toBe("m")
    expect(error.reason).toContain(`timeouts.A.late: state "A" has no transition for its event "Timeout"`)
  })

  it("accepts a timeout event handled by a group entry", () => {
    const M = Machine.make({
      name: "m",
      version: 1,
      state: State,
      event: Event,
      transitions: {},
      groups: (group) => [group(["A"], ["Timeout", "Go"], "B")],
      timeouts: { A: { late: { after: "1 second", event: { _tag: "Timeout" } } } }
    })
    expect(problemsOf(M)).toBe("")
  })

  it("reports two groups defining the same state and event", () => {
    const M = Machine.make({
      name: "m",
      version: 1,
      state: State,
      event: Event,
      transitions: {},
      groups: (group) => [group(["A", "B"], ["Go"], "B"), group(["A"], ["Go", "Timeout"], "A")]
    })
    expect(problemsOf(M)).toContain("groups[0] and groups[1] both define (A, Go)")
  })

  it("reports targets and keys outside the schemas (what an untyped caller can write)", () => {
    const M = Machine.make({
      name: "m",
      version: 1,
      state: State,
      event: Event,
      transitions: { A: { Go: "Nowhere" }, Zed: {} } as unknown as Machine.Transitions<
        typeof State.Type,
        typeof Event.Type
      >
    })
    const problems = problemsOf(M)
    expect(problems).toContain(`transitions.A.Go: target "Nowhere" is not a state`)
    expect(problems).toContain(`transitions: "Zed" is not a state`)
  })

  it("reports an unguarded alternative that hides the ones after it", () => {
    const M = Machine.make({
      name: "m",
      version: 1,
      state: State,
      event: Event,
      transitions: { A: { Go: ["B", { to: "A", guard: () => true }] } }
    })
    expect(problemsOf(M)).toContain("alternative 1 has no guard")
  })

  it("reports event tags that collide with the lifecycle records", () => {
    const M = Machine.make({
      name: "m",
      version: 1,
      state: State,
      event: Schema.Union(Schema.TaggedStruct("@created", {})),
      transitions: {}
    })
    expect(problemsOf(M)).toContain(`event tag "@created" must not start with "@"`)
  })

  it("reports a state schema that is not a tagged union", () => {
    const M = Machine.make({
      name: "m",
      version: 1,
      state: Schema.Struct({ _tag: Schema.String }),
      event: Event,
      transitions: {}
    })
    expect(problemsOf(M)).toContain("the state schema must be a union of tagged structs")
  })

  it("lists states no transition reaches", () => {
    const M = Machine.make({
      name: "m",
      version: 1,
      state: Schema.Union(Schema.TaggedStruct("A", {}), Schema.TaggedStruct("B", {}), Schema.TaggedStruct("Island", {})),
      event: Event,
      initial: { _tag: "A" },
      transitions: { A: { Go: "B" } }
    })
    expect(Machine.unreachableStates(M)).toEqual(["Island"])
  })

  it("reads tags from Schema.TaggedClass members too", () => {
    class Open extends Schema.TaggedClass<Open>()("Open", { since: Schema.Number }) {}
    class Closed extends Schema.TaggedClass<Closed>()("Closed", {}) {}
    const M = Machine.make({
      name: "door",
      version: 1,
      state: Schema.Union(Open, Closed),
      event: Event,
      transitions: { Open: { Go: { to: "Closed" } } }
    })
    expect(M.stateTags).toEqual(["Open", "Closed"])
    expect(problemsOf(M)).toBe("")
  })
})
