/** The heartbeat example on two runtimes sharing one store, with durable timeouts on TestClock. */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, TestClock } from "effect"
import { EventStore, FSMRuntime } from "effect-fsm"
import { Heartbeat, nodeLayer } from "../../examples/heartbeat.js"
import { eventually } from "../utils/eventually.js"

const twoNodes = Effect.gen(function*() {
  yield* TestClock.setTime(0)
  const store = yield* Layer.memoize(EventStore.layerMemory)
  const a = yield* Layer.build(nodeLayer(store, "node-a"))
  const b = yield* Layer.build(nodeLayer(store, "node-b"))
  const on = (node: typeof a) => Effect.provide(node)
  const runtimeA = yield* on(a)(FSMRuntime.FSMRuntime)
  const runtimeB = yield* on(b)(FSMRuntime.FSMRuntime)
  return { a: runtimeA, b: runtimeB }
})

const stateAt = (runtime: FSMRuntime.FSMRuntime["Type"], tag: string) =>
  eventually(Effect.filterOrFail(runtime.inspect(Heartbeat, "api"), (v) => v.state._tag === tag, () => `not ${tag}`))

describe("examples/heartbeat", () => {
  it.scoped("escalates Healthy -> Degraded -> Critical -> Down at 10 s, +3 s, +15 s of silence", () =>
    Effect.gen(function*() {
      const { a, b } = yield* twoNodes
      yield* a.create(Heartbeat, "api", { _tag: "Healthy", service: "api", beats: 0 })
      yield* TestClock.adjust("9 seconds")
      yield* b.send(Heartbeat, "api", { _tag: "Heartbeat" }) // re-enters Healthy: missed now due at 19 s
      expect((yield* a.inspect(Heartbeat, "api")).timeouts).toEqual([{ name: "missed", dueAt: 19_000 }])
      yield* TestClock.adjust("9 seconds")
      yield* eventually(Effect.void)
      expect((yield* a.inspect(Heartbeat, "api")).state._tag).toBe("Healthy")
      yield* TestClock.adjust("1 second")
      yield* stateAt(a, "Degraded")
      yield* TestClock.adjust("3 seconds")
      yield* stateAt(b, "Critical")
      yield* TestClock.adjust("15 seconds")
      yield* stateAt(a, "Down")
      const history = yield* a.history(Heartbeat, "api")
      expect(history.map((h) => [h._tag === "Event" ? h.event._tag : h._tag, h.metadata.timestamp])).toEqual([
        ["Created", 0],
        ["Heartbeat", 9_000],
        ["Missed", 19_000],
        ["Escalate", 22_000],
        ["GiveUp", 37_000]
      ])
      // Each timeout was fired once, by one of the two nodes.
      expect(history.filter((h) => h.metadata.source === "timeout").length).toBe(3)
    }))

  it.scoped("a heartbeat while Degraded is counted but does not extend the escalation timer", () =>
    Effect.gen(function*() {
      const { a, b } = yield* twoNodes
      yield* a.create(Heartbeat, "api", { _tag: "Healthy", service: "api", beats: 0 })
      yield* TestClock.adjust("10 seconds")
      yield* stateAt(a, "Degraded")
      yield* TestClock.adjust("2 seconds")
      const outcome = yield* b.send(Heartbeat, "api", { _tag: "Heartbeat" })
      expect(outcome).toMatchObject({ _tag: "Stay", state: { _tag: "Degraded", beats: 1 } })
      expect((yield* b.inspect(Heartbeat, "api")).timeouts).toEqual([{ name: "escalate", dueAt: 13_000 }])
      yield* TestClock.adjust("1 second")
      yield* stateAt(a, "Critical")
    }))

  it.scoped("three heartbeats in a row bring a critical service back to Healthy", () =>
    Effect.gen(function*() {
      const { a, b } = yield* twoNodes
      yield* a.create(Heartbeat, "api", { _tag: "Critical", service: "api", beats: 0 })
      yield* b.send(Heartbeat, "api", { _tag: "Heartbeat" })
      yield* a.send(Heartbeat, "api", { _tag: "Heartbeat" })
      const third = yield* b.send(Heartbeat, "api", { _tag: "Heartbeat" })
      expect(third).toMatchObject({ _tag: "Goto", state: { _tag: "Healthy", beats: 0 } })
      // Leaving Critical at 0 s cancelled its give-up timer (due at 15 s).
      yield* TestClock.adjust("11 seconds")
      yield* stateAt(a, "Degraded") // missed at 10 s
      yield* TestClock.adjust("5 seconds")
      yield* stateAt(a, "Critical") // escalated at 13 s, and still Critical at 16 s
      expect((yield* a.history(Heartbeat, "api")).some((h) => h._tag === "Event" && h.event._tag === "GiveUp")).toBe(false)
    }))
})
