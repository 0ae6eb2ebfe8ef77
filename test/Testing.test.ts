/**
 * The testkit itself (`effect-fsm/testing`): MachineSpec's given/when/then,
 * including that wrong expectations fail with a message that says what
 * differs; TestDeadlines under both timeout strategies; and that the main
 * entry never loads the testkit.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Schema, TestClock } from "effect"
import { EventStore, FSMRuntime, Machine, TimeoutStrategy } from "effect-fsm"
import { MachineSpec, TestDeadlines } from "effect-fsm/testing"
import * as fs from "node:fs"
import * as path from "node:path"
import { Order } from "./fixtures/machines.js"
import { Shop } from "./fixtures/outbox.js"
import { sqlite } from "./utils/backends.js"
import { runtimeOn, withDurableTimeouts } from "./utils/runtime.js"

const order = MachineSpec.make(Order, { instanceId: "o1" })
const pending = { _tag: "Pending", orderId: "o1" } as const

/** What `f` throws, as a SpecFailure (fails the test if it throws nothing or something else). */
const failureOf = (f: () => unknown): MachineSpec.SpecFailure => {
  try {
    f()
  } catch (error) {
    expect(error).toBeInstanceOf(MachineSpec.SpecFailure)
    return error as MachineSpec.SpecFailure
  }
  throw new Error("expected a SpecFailure, but nothing was thrown")
}

describe("MachineSpec: given/when/then", () => {
  it("checks the outcome, state, event and timer changes of an accepted step, and chains from the next instance", () => {
    const paid = order
      .given(pending, [MachineSpec.elapse("1 minute")])
      .when({ _tag: "Pay", amount: 42 })
      .then({
        outcome: "Goto",
        state: { _tag: "Paid", orderId: "o1", amount: 42 },
        seqNr: 2,
        event: { _tag: "Pay", amount: 42 },
        commands: [],
        timers: { cancelled: ["payment"], scheduled: [], fired: undefined },
        at: 60_000
      })
    expect(paid.instance).toEqual({
      state: { _tag: "Paid", orderId: "o1", amount: 42 },
      seqNr: 2,
      stopped: false,
      deadlines: [],
      now: 60_000
    })
    paid
      .when({ _tag: "Note", text: "fragile" })
      .then({ outcome: "Stay", state: { _tag: "Paid", orderId: "o1", amount: 42 }, seqNr: 3 })
      .when({ _tag: "Ship", tracking: "t-1" })
      .then({ outcome: "Goto", state: { _tag: "Shipped", orderId: "o1", tracking: "t-1" } })
      .when({ _tag: "Deliver" })
      .then({ outcome: "Stop", state: { _tag: "Delivered", orderId: "o1" }, seqNr: 5 })
      .when({ _tag: "Note", text: "late" })
      .thenFails({ _tag: "InstanceStopped", state: "Delivered", event: "Note" })
  })

  it("fire and fireNext deliver an armed deadline at its due time; elapse moves the clock", () => {
    const given = order.given(pending)
    expect(given.instance.deadlines).toEqual([{ name: "payment", dueAt: 300_000, event: { _tag: "PaymentTimeout" } }])
    for (const step of [MachineSpec.fire("payment"), MachineSpec.fireNext]) {
      given.when(step).then({
        outcome: "Goto",
        state: { _tag: "Cancelled", orderId: "o1", reason: "unpaid" },
        event: { _tag: "PaymentTimeout" },
        timers: { cancelled: [], scheduled: [], fired: "payment" },
        at: 300_000
      })
    }
    // Already late: the delivery happens now, not back at the deadline.
    const late = order.given(pending, [MachineSpec.elapse("7 minutes")]).when(MachineSpec.fireNext)
    expect(late.decided).toMatchObject({ _tag: "Accepted", at: 420_000 })
    // Once the instance left Pending, the deadline is stale.
    order
      .given(pending, [{ _tag: "Pay", amount: 1 }])
      .when(MachineSpec.fire("payment"))
      .thenFails({ _tag: "StaleTimer", machine: "order", instanceId: "o1", name: "payment", generation: 2 })
  })

  it("reports rejections and machine failures as the runtime's errors", () => {
    const given = order.given(pending)
    given.when({ _tag: "Ship", tracking: "t" }).thenFails({
      _tag: "InvalidTransition",
      machine: "order",
      instanceId: "o1",
      state: "Pending",
      event: "Ship"
    })
    given.when({ _tag: "Pay", amount: 0 }).thenFails("GuardRejected")
    const failed = given.when({ _tag: "Pay", amount: 0 }).decided
    expect(failed._tag === "Failed" && failed.error.message).toBe(
      "order/o1: guard rejected event \"Pay\" in state \"Pending\""
    )

    const Fragile = Machine.make({
      name: "fragile",
      version: 1,
      state: Schema.Union(Schema.TaggedStruct("A", {}), Schema.TaggedStruct("B", {})),
      event: Schema.Union(Schema.TaggedStruct("Go", {})),
      transitions: {
        A: {
          Go: {
            to: "B",
            build: () => {
              throw new Error("boom")
            }
          }
        }
      }
    })
    MachineSpec.make(Fragile).given({ _tag: "A" }).when({ _tag: "Go" }).thenFails({
      _tag: "TransitionFailed",
      state: "A",
      event: "Go",
      stage: "build"
    })
  })

  it("stop disarms the deadlines; a stopped instance rejects every step", () => {
    const stopped = order.given(pending).when(MachineSpec.stop).then({
      outcome: "Stop",
      state: pending,
      seqNr: 2,
      event: undefined,
      timers: { cancelled: ["payment"], scheduled: [] }
    })
    expect(stopped.instance).toMatchObject({ stopped: true, deadlines: [] })
    stopped.when(MachineSpec.stop).thenFails({ _tag: "InstanceStopped", event: "@stopped" })
    stopped.when({ _tag: "Cancel", reason: "x" }).thenFails("InstanceStopped")
    stopped.when(MachineSpec.fire("payment")).thenFails("StaleTimer")
  })

  it("checks produced commands, of a transition and of the entered state's entry", () => {
    const shop = MachineSpec.make(Shop)
    shop
      .given({ _tag: "Placed", orderId: "s1", amount: 7 })
      .when({ _tag: "Checkout" })
      .then({ state: { _tag: "Charging", orderId: "s1", amount: 7 }, commands: [{ _tag: "ChargeCard", orderId: "s1", amount: 7 }] })
      .when({ _tag: "Charged", chargeId: "ch-1" })
      .then({ commands: [{ _tag: "SendReceipt", orderId: "s1", chargeId: "ch-1" }] })
    shop.whenCreated({ _tag: "Paid", orderId: "s2", amount: 1, chargeId: "ch-2" }).then({
      outcome: "Goto",
      seqNr: 1,
      commands: [{ _tag: "SendReceipt", orderId: "s2", chargeId: "ch-2" }],
      timers: { scheduled: [] }
    })
    order.whenCreated(pending).then({
      timers: { cancelled: [], scheduled: [{ name: "payment", dueAt: 300_000, event: { _tag: "PaymentTimeout" } }] }
    })
  })

  it("starts from the machine's static initial state, and at the given start time", () => {
    const Light = Machine.make({
      name: "light",
      version: 1,
      state: Schema.Union(Schema.TaggedStruct("Off", {}), Schema.TaggedStruct("On", {})),
      event: Schema.Union(Schema.TaggedStruct("Toggle", {})),
      initial: { _tag: "Off" },
      transitions: { Off: { Toggle: "On" }, On: { Toggle: "Off" } },
      timeouts: { On: { autoOff: { after: "10 minutes", event: { _tag: "Toggle" } } } }
    })
    const light = MachineSpec.make(Light, { start: 1_000 })
    light.givenInitial([{ _tag: "Toggle" }]).when(MachineSpec.fireNext).then({
      state: { _tag: "Off" },
      timers: { fired: "autoOff" },
      at: 601_000
    })
    expect(failureOf(() => order.givenInitial()).message).toBe(
      "MachineSpec(order): givenInitial: the machine has no static initial state; give one"
    )
  })

  it("is typed against the machine: misspelt tags and wrong fields do not compile", () => {
    // @ts-expect-error a misspelt event tag
    expect(() => order.given(pending).when({ _tag: "Pyy", amount: 1 })).not.toThrow()
    // @ts-expect-error a field of the wrong type
    order.given(pending).when({ _tag: "Pay", amount: "42" })
    // @ts-expect-error a misspelt state tag
    expect(() => order.given({ _tag: "Pendin", orderId: "o1" })).not.toThrow()
    // @ts-expect-error a misspelt event in the given steps
    expect(() => order.given(pending, [{ _tag: "Payy", amount: 1 }])).toThrow()
    // @ts-expect-error an expected state that is not one of the machine's
    expect(() => order.given(pending).when({ _tag: "Pay", amount: 1 }).then({ state: { _tag: "Payed" } })).toThrow()
    // @ts-expect-error an error tag that no step gives
    expect(() => order.given(pending).when({ _tag: "Ship", tracking: "t" }).thenFails("NotAnError")).toThrow()
    // @ts-expect-error elapse decides nothing: not a when step
    expect(() => order.given(pending).when(MachineSpec.elapse("1 minute"))).toThrow()
  })
})

describe("MachineSpec: a wrong expectation fails with a useful message", () => {
  it("a different state: the message names the steps and diffs expected against actual", () => {
    const failure = failureOf(() =>
      order.given(pending).when({ _tag: "Pay", amount: 42 }).then({ state: { _tag: "Paid", orderId: "o1", amount: 41 } })
    )
    expect(failure.message).toBe(
      [
        "MachineSpec(order): given { _tag: \"Pending\", orderId: \"o1\" }, when { _tag: \"Pay\", amount: 42 }: the accepted step differs from the expectation",
        "",
        "- expected",
        "+ actual",
        "",
        "  {",
        "    state: {",
        "      _tag: \"Paid\",",
        "-     amount: 41,",
        "+     amount: 42,",
        "      orderId: \"o1\",",
        "    },",
        "  }"
      ].join("\n")
    )
    expect(failure.expected).toContain("amount: 41")
    expect(failure.actual).toContain("amount: 42")
    expect(failure.name).toBe("MachineSpecFailure")
  })

  it("wrong timer changes, outcome and commands are each shown", () => {
    const failure = failureOf(() =>
      order.given(pending).when({ _tag: "Pay", amount: 42 }).then({
        outcome: "Stay",
        commands: [],
        timers: { cancelled: [], scheduled: [] }
      })
    )
    expect(failure.message).toContain("-   outcome: \"Stay\",\n+   outcome: \"Goto\",")
    expect(failure.message).toContain("-     cancelled: [],\n+     cancelled: [\n+       \"payment\",\n+     ],")
    expect(failure.message).toContain("    commands: [],")
  })

  it("expecting acceptance of a rejected step, or a rejection of an accepted one, or another error", () => {
    expect(failureOf(() => order.given(pending).when({ _tag: "Ship", tracking: "t" }).then({ outcome: "Goto" })).message)
      .toContain(
        "expected the step to be accepted, but it failed with InvalidTransition: order/o1: no transition for event \"Ship\" in state \"Pending\""
      )
    expect(failureOf(() => order.given(pending).when({ _tag: "Pay", amount: 3 }).thenFails("GuardRejected")).message)
      .toContain("expected the step to fail with GuardRejected, but it was accepted: Goto { _tag: \"Paid\", amount: 3, orderId: \"o1\" }")
    const other = failureOf(() => order.given(pending).when({ _tag: "Pay", amount: 0 }).thenFails("InvalidTransition"))
    expect(other.message).toContain("the step failed with another error (order/o1: guard rejected event \"Pay\" in state \"Pending\")")
    expect(other.message).toContain("- expected\n+ actual\n\n  {\n-   _tag: \"InvalidTransition\",\n+   _tag: \"GuardRejected\",\n  }")
  })

  it("a given step that is not accepted fails at once, naming it; fireNext with nothing armed too", () => {
    expect(failureOf(() => order.given(pending, [{ _tag: "Pay", amount: 5 }, { _tag: "Pay", amount: 5 }])).message).toBe(
      "MachineSpec(order): given step 2 of 2 ({ _tag: \"Pay\", amount: 5 }) at 0 ms was not accepted: InvalidTransition: order/o1: no transition for event \"Pay\" in state \"Paid\""
    )
    expect(failureOf(() => order.given(pending, [{ _tag: "Pay", amount: 5 }]).when(MachineSpec.fireNext)).message).toContain(
      "MachineSpec(order): given { _tag: \"Pending\", orderId: \"o1\" }, { _tag: \"Pay\", amount: 5 }, when fireNext: fireNext: no deadline is armed in state { _tag: \"Paid\", amount: 5, orderId: \"o1\" }"
    )
  })
})

// ---------------------------------------------------------------------------
// TestDeadlines
// ---------------------------------------------------------------------------

describe("TestDeadlines", () => {
  it.scoped("in-process: advances to the instance's deadline and returns the delivery", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(0)
      const store = Context.merge(yield* Layer.build(EventStore.layerMemory), yield* Layer.build(TimeoutStrategy.inProcess))
      const { runtime } = yield* runtimeOn(store, { machines: [Order] })
      const orders = yield* Effect.provideService(FSMRuntime.client(Order), FSMRuntime.FSMRuntime, runtime)
      const run = <A, E>(effect: Effect.Effect<A, E, FSMRuntime.FSMRuntime>) =>
        Effect.provideService(effect, FSMRuntime.FSMRuntime, runtime)
      yield* orders.create("o1", pending)
      yield* TestClock.adjust("1 minute")
      expect(yield* run(TestDeadlines.nextDeadline(Order, "o1"))).toEqual(
        Option.some({ machine: "order", instanceId: "o1", name: "payment", dueAt: 300_000 })
      )
      const fired = yield* run(TestDeadlines.advanceToNextDeadline(Order, "o1"))
      expect(fired).toEqual({
        machine: "order",
        instanceId: "o1",
        name: "payment",
        dueAt: 300_000,
        seqNr: 2,
        event: { _tag: "PaymentTimeout" }
      })
      expect(yield* orders.state("o1")).toEqual({ _tag: "Cancelled", orderId: "o1", reason: "unpaid" })
      // Exactly at the deadline, not past it.
      expect(yield* TestClock.currentTimeMillis).toBe(300_000)
      expect(yield* Effect.flip(run(TestDeadlines.advanceToNextDeadline(Order, "o1")))).toMatchObject({
        _tag: "NoDeadlineArmed",
        machines: ["order"],
        instanceId: "o1"
      })
    }))

  it.scoped("durable on SQLite: the earliest deadline of every instance of the machines, one after the other", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(0)
      const store = yield* withDurableTimeouts(yield* Layer.build(sqlite.layer()))
      const { runtime } = yield* runtimeOn(store, { machines: [Order] })
      const run = <A, E>(effect: Effect.Effect<A, E, FSMRuntime.FSMRuntime>) =>
        Effect.provideService(effect, FSMRuntime.FSMRuntime, runtime)
      yield* runtime.create(Order, "early", { _tag: "Pending", orderId: "early" })
      yield* TestClock.adjust("2 minutes")
      yield* runtime.create(Order, "late", { _tag: "Pending", orderId: "late" })
      yield* runtime.create(Order, "paid", { _tag: "Pending", orderId: "paid" })
      yield* runtime.send(Order, "paid", { _tag: "Pay", amount: 3 })

      const first = yield* run(TestDeadlines.advanceToNextDeadline([Order]))
      expect(first).toMatchObject({ instanceId: "early", name: "payment", dueAt: 300_000, seqNr: 2 })
      const second = yield* run(TestDeadlines.advanceToNextDeadline([Order]))
      expect(second).toMatchObject({ instanceId: "late", name: "payment", dueAt: 420_000, seqNr: 2 })
      expect((yield* runtime.inspect(Order, "late")).state._tag).toBe("Cancelled")
      expect(yield* Effect.flip(run(TestDeadlines.advanceToNextDeadline([Order])))).toMatchObject({
        _tag: "NoDeadlineArmed",
        machines: ["order"]
      })
    }))

  it.scoped("a deadline nobody delivers is DeadlineNotDelivered, after the wait", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(0)
      // An API-only node: it writes timer rows but runs no sweeper.
      const store = yield* withDurableTimeouts(yield* Layer.build(EventStore.layerMemory), { sweep: false })
      const { runtime } = yield* runtimeOn(store, { machines: [Order] })
      yield* runtime.create(Order, "o1", pending)
      const error = yield* Effect.flip(
        Effect.provideService(
          TestDeadlines.advanceToNextDeadline(Order, "o1", { wait: "200 millis", overshoot: "1 minute" }),
          FSMRuntime.FSMRuntime,
          runtime
        )
      )
      expect(error).toMatchObject({ _tag: "DeadlineNotDelivered", machine: "order", instanceId: "o1", name: "payment", dueAt: 300_000 })
      expect(error.message).toContain("is a timeout strategy running that fires it")
      // It overshot by the minute it was allowed, and no more.
      expect(yield* TestClock.currentTimeMillis).toBe(360_000)
      expect((yield* runtime.inspect(Order, "o1")).state._tag).toBe("Pending")
    }))
})

// ---------------------------------------------------------------------------
// Packaging
// ---------------------------------------------------------------------------

describe("the main entry does not load the testkit", () => {
  it("no module reachable from src/index.ts imports src/testing or vitest", () => {
    const src = path.resolve(import.meta.dirname, "../src")
    const seen = new Set<string>()
    const imports: Array<string> = []
    const visit = (file: string) => {
      if (seen.has(file)) return
      seen.add(file)
      const text = fs.readFileSync(file, "utf8")
      for (const match of text.matchAll(/^\s*(?:import|export)\b[^"']*?from\s+["']([^"']+)["']/gm)) {
        const specifier = match[1]!
        imports.push(`${path.relative(src, file)} -> ${specifier}`)
        if (specifier.startsWith(".")) visit(path.resolve(path.dirname(file), specifier.replace(/\.js$/, ".ts")))
      }
    }
    visit(path.join(src, "index.ts"))
    expect(seen.size).toBeGreaterThan(10)
    expect([...seen].filter((file) => path.relative(src, file).startsWith("testing"))).toEqual([])
    expect(imports.filter((line) => /vitest/.test(line))).toEqual([])
  })
})
