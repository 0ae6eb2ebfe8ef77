/**
 * The pure core, given/when/then and without any store: given the records
 * of a log, when a command is decided at a time, then this is committed (or
 * this is why nothing is) — through the testkit's MachineSpec where it can
 * say it, on the core itself for the core's own fields. And the property that makes replay trustworthy:
 * folding `evolve` over what `decide` accepted gives back the live instance.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc, Schema } from "effect"
import { Machine } from "effect-fsm"
import { MachineSpec } from "effect-fsm/testing"
import * as Core from "../src/internal/core.js"
import { Order } from "./fixtures/machines.js"

/** Three timeouts in one state, two of them sharing an event; a re-entry restarts them. */
const Monitor = Machine.make({
  name: "monitor",
  version: 1,
  state: Schema.Union(
    Schema.TaggedStruct("Watching", { pings: Schema.Number }),
    Schema.TaggedStruct("Alarmed", { pings: Schema.Number })
  ),
  event: Schema.Union(
    Schema.TaggedStruct("Ping", {}),
    Schema.TaggedStruct("Alarm", {}),
    Schema.TaggedStruct("Reset", {}),
    Schema.TaggedStruct("Poke", {})
  ),
  transitions: {
    Watching: {
      Ping: { to: "Watching", build: (s) => ({ pings: s.pings + 1 }) },
      Poke: Machine.stay,
      Alarm: { to: "Alarmed", build: (s) => ({ pings: s.pings }) },
      Reset: { to: "Watching", reenter: true, build: () => ({ pings: 0 }) }
    },
    Alarmed: {
      Reset: { to: "Watching", build: () => ({ pings: 0 }) },
      Ping: Machine.stay
    }
  },
  timeouts: {
    Watching: {
      soon: { after: "1 minute", event: { _tag: "Ping" } },
      later: { after: "2 minutes", event: { _tag: "Ping" } },
      alarm: { after: "5 minutes", event: { _tag: "Alarm" } }
    },
    Alarmed: { rearm: { after: "1 minute", event: { _tag: "Reset" } } }
  }
})

type Tagged = Machine.Tagged
/** A state or event literal, with its fields. */
type Value = Tagged & Record<string, unknown>

const send = (event: Value): Core.Command => ({ _tag: "Send", event })

/** Given these records (decoded), the instance replay builds. */
const given = (machine: Machine.Any, records: ReadonlyArray<Core.StoredRecord>): Core.InstanceState => {
  let instance: Core.InstanceState | undefined
  for (const record of records) instance = Either.getOrThrow(Core.evolve(machine, instance, record))
  return instance!
}

const created = (state: Value, timestamp = 0): Core.StoredRecord => ({ _tag: "Created", seqNr: 1, state, timestamp })

/** The stored record of an accepted decision, as the runtime would write it. */
const recordOf = (decided: Core.Accepted, timestamp: number): Core.StoredRecord =>
  decided.record.event === undefined
    ? { _tag: "Stopped", seqNr: decided.next.seqNr }
    : {
      _tag: "Event",
      seqNr: decided.next.seqNr,
      event: decided.record.event,
      stateTag: decided.next.state._tag,
      timestamp,
      timer: decided.record.timer ?? null,
      legacyTimeout: false
    }

describe("Core.decide", () => {
  // Given/when/then through the testkit (MachineSpec runs on this core); the
  // core-only fields (generation, entered, cancelAll) are checked on the core.
  const order = MachineSpec.make(Order, { instanceId: "o1" })
  const pending = { _tag: "Pending", orderId: "o1" } as const

  it("given a pending order, when Pay arrives, then Paid is entered and the payment timer is cancelled", () => {
    const scenario = order.given(pending, [MachineSpec.elapse("1 second")])
    expect(scenario.instance.deadlines.map((d) => [d.name, d.dueAt])).toEqual([["payment", 300_000]])
    const paid = scenario.when({ _tag: "Pay", amount: 42 }).then({
      outcome: "Goto",
      state: { _tag: "Paid", orderId: "o1", amount: 42 },
      seqNr: 2,
      event: { _tag: "Pay", amount: 42 },
      commands: [],
      timers: { cancelled: ["payment"], scheduled: [], fired: undefined },
      at: 1_000
    })
    expect(paid.instance.deadlines).toEqual([])
    const instance = given(Order, [created(pending)])
    expect(Core.decide(Order, instance, send({ _tag: "Pay", amount: 42 }), 1_000)).toMatchObject({
      _tag: "Accepted",
      entered: true,
      record: { tag: "Pay", timer: undefined },
      next: { generation: 2 },
      timers: { cancelAll: true, schedule: [], fired: undefined }
    })
  })

  it("given a pending order, when a rejected event arrives, then nothing is accepted", () => {
    const scenario = order.given(pending)
    scenario.when({ _tag: "Ship", tracking: "t" }).thenFails({
      _tag: "InvalidTransition",
      state: "Pending",
      event: "Ship"
    })
    scenario.when({ _tag: "Pay", amount: 0 }).thenFails({ _tag: "GuardRejected", state: "Pending", event: "Pay" })
    const instance = given(Order, [created(pending)])
    expect(Core.decide(Order, instance, send({ _tag: "Ship", tracking: "t" }), 0)).toEqual({
      _tag: "Rejected",
      reason: "NoTransition",
      event: "Ship"
    })
  })

  it("when the payment deadline fires, then the timer row is consumed in the same commit", () => {
    order.given(pending).when(MachineSpec.fire("payment")).then({
      outcome: "Goto",
      state: { _tag: "Cancelled", orderId: "o1", reason: "unpaid" },
      event: { _tag: "PaymentTimeout" },
      timers: { cancelled: [], scheduled: [], fired: "payment" },
      at: 300_000
    })
    const instance = given(Order, [created(pending)])
    const decided = Core.decide(Order, instance, { _tag: "Fire", name: "payment", generation: 1 }, 300_000)
    expect(decided).toMatchObject({
      _tag: "Accepted",
      record: { tag: "PaymentTimeout", timer: "payment" },
      timers: { cancelAll: true, fired: { name: "payment", generation: 1 } }
    })
  })

  it("a Fire of another generation, or of a deadline that already fired, is stale", () => {
    const instance = given(Monitor, [created({ _tag: "Watching", pings: 0 })])
    expect(Core.decide(Monitor, instance, { _tag: "Fire", name: "soon", generation: 2 }, 60_000)).toEqual({ _tag: "Stale" })
    const first = Core.decide(Monitor, instance, { _tag: "Fire", name: "soon", generation: 1 }, 60_000)
    if (first._tag !== "Accepted") throw new Error("expected Accepted")
    // A stay keeps the other deadlines of the arming, without the one that fired.
    expect(first.next.deadlines.map((d) => d.name)).toEqual(["later", "alarm"])
    expect(first.timers).toEqual({ cancelAll: false, schedule: [], fired: { name: "soon", generation: 1 } })
    expect(Core.decide(Monitor, first.next, { _tag: "Fire", name: "soon", generation: 1 }, 61_000)).toEqual({
      _tag: "Stale"
    })
  })

  it("a re-entry restarts the deadlines from its own time; a plain stay keeps them", () => {
    const instance = given(Monitor, [created({ _tag: "Watching", pings: 0 })])
    const poked = Core.decide(Monitor, instance, send({ _tag: "Poke" }), 30_000)
    expect(poked).toMatchObject({ _tag: "Accepted", outcome: "Stay", next: { generation: 1 } })
    const reset = Core.decide(Monitor, instance, send({ _tag: "Reset" }), 30_000)
    if (reset._tag !== "Accepted") throw new Error("expected Accepted")
    expect(reset.next.generation).toBe(2)
    expect(reset.next.deadlines.map((d) => d.dueAt)).toEqual([90_000, 150_000, 330_000])
    expect(reset.timers.cancelAll).toBe(true)
  })

  it("stopping disarms everything, and a stopped instance rejects every command", () => {
    const stopped = order.given(pending).when(MachineSpec.stop).then({
      outcome: "Stop",
      timers: { cancelled: ["payment"], scheduled: [] }
    })
    expect(stopped.instance).toMatchObject({ stopped: true, deadlines: [] })
    stopped.when(MachineSpec.stop).thenFails("InstanceStopped")
    stopped.when({ _tag: "Cancel", reason: "x" }).thenFails({ _tag: "InstanceStopped", event: "Cancel" })
    stopped.when(MachineSpec.fire("payment")).thenFails({ _tag: "StaleTimer", name: "payment", generation: 1 })
    const instance = given(Order, [created(pending)])
    const core = Core.decide(Order, instance, { _tag: "Stop" }, 0)
    if (core._tag !== "Accepted") throw new Error("expected Accepted")
    expect(core.next).toMatchObject({ stopped: true, deadlines: [] })
    expect(Core.decide(Order, core.next, { _tag: "Stop" }, 0)).toMatchObject({ _tag: "Rejected", reason: "Stopped" })
    expect(Core.decide(Order, core.next, send({ _tag: "Cancel", reason: "x" }), 0)).toMatchObject({
      _tag: "Rejected",
      reason: "Stopped"
    })
    expect(Core.decide(Order, core.next, { _tag: "Fire", name: "payment", generation: 1 }, 0)).toEqual({ _tag: "Stale" })
  })
})

describe("Core.evolve", () => {
  it("disarms the deadline the stored event names, not the earliest with the same event", () => {
    const instance = given(Monitor, [
      created({ _tag: "Watching", pings: 0 }),
      {
        _tag: "Event",
        seqNr: 2,
        event: { _tag: "Ping" },
        stateTag: "Watching",
        timestamp: 120_000,
        timer: "later",
        legacyTimeout: false
      }
    ])
    expect(instance.deadlines.map((d) => d.name)).toEqual(["soon", "alarm"])
  })

  it("reports a stored state tag that replay does not reproduce, and a log that does not start with @created", () => {
    const start = given(Order, [created({ _tag: "Pending", orderId: "o1" })])
    const wrong: Core.StoredRecord = {
      _tag: "Event",
      seqNr: 2,
      event: { _tag: "Pay", amount: 5 } as Value,
      stateTag: "Shipped",
      timestamp: 0,
      timer: null,
      legacyTimeout: false
    }
    expect(Core.evolve(Order, start, wrong)).toEqual(
      Either.left({ seqNr: 2, kind: "replay", expected: "Shipped", actual: "Paid" })
    )
    expect(Either.isLeft(Core.evolve(Order, undefined, { ...wrong, seqNr: 1 }))).toBe(true)
    expect(Core.evolve(Order, start, { ...wrong, seqNr: 5 })).toMatchObject(Either.left({ kind: "sequence" }))
  })
})

describe("replay equals the live path", () => {
  const command = fc.oneof(
    fc.constantFrom<Core.Command>(
      send({ _tag: "Ping" }),
      send({ _tag: "Poke" }),
      send({ _tag: "Reset" }),
      send({ _tag: "Alarm" })
    ),
    // A delivery of any timer name, of the current or an older generation: stale ones must write nothing.
    fc.record({
      _tag: fc.constant("Fire" as const),
      name: fc.constantFrom("soon", "later", "alarm", "rearm"),
      generationBack: fc.nat(2)
    }),
    fc.constant<Core.Command>({ _tag: "Stop" })
  )

  it("folding evolve over the accepted records gives back the live instance, after every step", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(command, fc.integer({ min: 0, max: 200_000 })), { maxLength: 40 }),
        (steps) => {
          let now = 0
          let live = Either.getOrThrow(Core.initialize(Monitor, { _tag: "Watching", pings: 0 } as Value, now))
          const records: Array<Core.StoredRecord> = [created({ _tag: "Watching", pings: 0 }, now)]
          const fired = new Set<string>()
          for (const [raw, advance] of steps) {
            now += advance
            const cmd: Core.Command = raw._tag === "Fire" && "generationBack" in raw
              ? { _tag: "Fire", name: raw.name, generation: Math.max(1, live.generation - raw.generationBack) }
              : raw as Core.Command
            const decided = Core.decide(Monitor, live, cmd, now)
            if (decided._tag !== "Accepted") continue
            if (decided.record.timer !== undefined) {
              // Each arming of a timer fires at most once.
              const key = `${decided.record.timer}@${live.generation}`
              expect(fired.has(key)).toBe(false)
              fired.add(key)
            }
            live = decided.next
            records.push(recordOf(decided, now))
            expect(given(Monitor, records)).toEqual(live)
          }
        }
      ),
      { numRuns: 300 }
    )
  })
})
