/** The document approval example: groups, the multi-reviewer guard and the escalation timeouts. */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, TestClock } from "effect"
import { EventStore, FSMRuntime, TimeoutStrategy } from "effect-fsm"
import { Document } from "../../examples/document.js"
import { eventually } from "../utils/eventually.js"

const docs = Effect.gen(function*() {
  yield* TestClock.setTime(0)
  const layer = FSMRuntime.layer({ machines: [Document] }).pipe(
    Layer.provide(TimeoutStrategy.layerDurable({ maxIdleInterval: "1 hour" })),
    Layer.provide(EventStore.layerMemory)
  )
  const context = yield* Layer.build(layer)
  return yield* Effect.provide(FSMRuntime.client(Document), context as Context.Context<FSMRuntime.FSMRuntime>)
})

const submitted = (required: number) =>
  Effect.gen(function*() {
    const client = yield* docs
    yield* client.create("d", { _tag: "Draft", docId: "d", author: "ada" })
    yield* client.send("d", { _tag: "Submit", required })
    return client
  })

describe("examples/document", () => {
  it.scoped("needs the required number of distinct reviewers, never the author", () =>
    Effect.gen(function*() {
      const client = yield* submitted(2)
      expect((yield* Effect.flip(client.send("d", { _tag: "Approve", reviewer: "ada" })))._tag).toBe("GuardRejected")
      expect((yield* client.send("d", { _tag: "Approve", reviewer: "grace" }))._tag).toBe("Stay")
      expect((yield* Effect.flip(client.send("d", { _tag: "Approve", reviewer: "grace" })))._tag).toBe("GuardRejected")
      const done = yield* client.send("d", { _tag: "Approve", reviewer: "linus" })
      expect(done).toMatchObject({ _tag: "Goto", state: { _tag: "Approved", approvals: ["grace", "linus"] } })
      expect((yield* client.history("d")).length).toBe(4)
    }))

  it.scoped("escalates after 48 hours without a decision, and rejects 24 hours later", () =>
    Effect.gen(function*() {
      const client = yield* submitted(2)
      yield* client.send("d", { _tag: "Approve", reviewer: "grace" }) // a stay: the review deadline keeps running
      yield* TestClock.adjust("48 hours")
      const escalated = yield* eventually(
        Effect.filterOrFail(client.state("d"), (s) => s._tag === "Escalated", () => "in review")
      )
      expect(escalated).toEqual({ _tag: "Escalated", docId: "d", author: "ada", required: 2, approvals: ["grace"] })
      yield* TestClock.adjust("24 hours")
      yield* eventually(Effect.filterOrFail(client.inspect("d"), (v) => v.stopped, () => "not final"))
      expect(yield* client.state("d")).toEqual({ _tag: "Rejected", docId: "d", reason: "no decision in time" })
    }))

  it.scoped("any state of the review group may be withdrawn or rejected", () =>
    Effect.gen(function*() {
      const client = yield* submitted(3)
      const withdrawn = yield* client.send("d", { _tag: "Withdraw" })
      expect(withdrawn).toEqual({ _tag: "Stop", state: { _tag: "Withdrawn", docId: "d" }, seqNr: 3 })
      expect((yield* Effect.flip(client.send("d", { _tag: "Approve", reviewer: "x" })))._tag).toBe("InstanceStopped")

      yield* client.create("e", { _tag: "Draft", docId: "e", author: "ada" })
      yield* client.send("e", { _tag: "Submit", required: 1 })
      yield* TestClock.adjust("48 hours")
      yield* eventually(Effect.filterOrFail(client.state("e"), (s) => s._tag === "Escalated", () => "in review"))
      const rejected = yield* client.send("e", { _tag: "Reject", reviewer: "grace", reason: "off topic" })
      expect(rejected.state).toEqual({ _tag: "Rejected", docId: "e", reason: "grace: off topic" })
    }))

  it.scoped("rejects a submission that asks for no reviewers", () =>
    Effect.gen(function*() {
      const client = yield* docs
      yield* client.create("d", { _tag: "Draft", docId: "d", author: "ada" })
      expect((yield* Effect.flip(client.send("d", { _tag: "Submit", required: 0 })))._tag).toBe("GuardRejected")
    }))
})
