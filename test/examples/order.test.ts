/** The order example: its machine's behaviour, and the `npm start` demo end to end on SQLite. */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Ref, TestClock } from "effect"
import { EventStore, FSMRuntime, type Machine, TimeoutStrategy } from "effect-fsm"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { demo, Notifier, Order } from "../../examples/order.js"
import { eventually } from "../utils/eventually.js"

type Orders = FSMRuntime.Client<Machine.StateOf<typeof Order>, Machine.EventOf<typeof Order>>

const withOrders = <A, E>(
  body: (orders: Orders, notes: Ref.Ref<ReadonlyArray<string>>) => Effect.Effect<A, E, FSMRuntime.FSMRuntime>
) =>
  Effect.gen(function*() {
    const notes = yield* Ref.make<ReadonlyArray<string>>([])
    const layer = FSMRuntime.layer({ machines: [Order] }).pipe(
      // Deadlines are known, so the sweeper need not poll often while TestClock skips a day.
      Layer.provide(TimeoutStrategy.layerDurable({ maxIdleInterval: "1 hour" })),
      Layer.provide(EventStore.layerMemory),
      Layer.provide(Layer.succeed(Notifier, {
        notify: (orderId, message) => Ref.update(notes, (all) => [...all, `${orderId}: ${message}`])
      }))
    )
    const context = yield* Layer.build(layer)
    return yield* Effect.flatMap(FSMRuntime.client(Order), (orders) => body(orders, notes)).pipe(
      Effect.provide(context as Context.Context<FSMRuntime.FSMRuntime>)
    )
  })

describe("examples/order", () => {
  it.scoped("pays, ships, delivers and refunds, notifying on the way", () =>
    withOrders((orders, notes) =>
      Effect.gen(function*() {
        yield* orders.create("o", { _tag: "Pending", orderId: "o", total: 30 })
        expect((yield* Effect.flip(orders.send("o", { _tag: "Pay", amount: 29 })))._tag).toBe("GuardRejected")
        yield* orders.send("o", { _tag: "Pay", amount: 30 })
        yield* orders.send("o", { _tag: "Ship", tracking: "T" })
        yield* orders.send("o", { _tag: "Deliver" })
        const refunded = yield* orders.send("o", { _tag: "Refund", reason: "broken" })
        expect(refunded).toEqual({
          _tag: "Stop",
          state: { _tag: "Refunded", orderId: "o", amount: 30, reason: "broken" },
          seqNr: 5
        })
        expect(yield* Ref.get(notes)).toEqual(["o: payment of 30 captured", "o: shipped, tracking T", "o: refunded 30: broken"])
      })
    ))

  it.scoped("cancels an unpaid order after 5 minutes and refunds a paid one not shipped within 24 hours", () =>
    withOrders((orders) =>
      Effect.gen(function*() {
        yield* orders.create("unpaid", { _tag: "Pending", orderId: "unpaid", total: 10 })
        yield* orders.create("stuck", { _tag: "Pending", orderId: "stuck", total: 10 })
        yield* orders.send("stuck", { _tag: "Pay", amount: 10 })
        yield* TestClock.adjust("5 minutes")
        yield* eventually(Effect.filterOrFail(orders.state("unpaid"), (s) => s._tag === "Cancelled", () => "pending"))
        yield* TestClock.adjust("24 hours")
        const stuck = yield* eventually(Effect.filterOrFail(orders.state("stuck"), (s) => s._tag === "Refunded", () => "paid"))
        expect(stuck).toEqual({ _tag: "Refunded", orderId: "stuck", amount: 10, reason: "not shipped in time" })
      })
    ))

  it.scoped("cancelling a paid order refunds it (a group entry)", () =>
    withOrders((orders) =>
      Effect.gen(function*() {
        yield* orders.create("o", { _tag: "Pending", orderId: "o", total: 5 })
        yield* orders.send("o", { _tag: "Pay", amount: 5 })
        const outcome = yield* orders.send("o", { _tag: "Cancel", reason: "changed mind" })
        expect(outcome.state).toEqual({ _tag: "Refunded", orderId: "o", amount: 5, reason: "changed mind" })
        expect((yield* Effect.flip(orders.send("o", { _tag: "Cancel", reason: "again" })))._tag).toBe("InstanceStopped")
      })
    ))

  it.scoped("the npm start demo tells its whole story on SQLite", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fsm-demo-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const lines: Array<string> = []
      const fiber = yield* Effect.fork(
        demo({ filename: path.join(dir, "orders.db"), print: (line) => Effect.sync(() => void lines.push(line)) })
      )
      for (let i = 0; i < 200 && (yield* Fiber.poll(fiber))._tag === "None"; i++) {
        yield* TestClock.adjust("100 millis")
        yield* eventually(Effect.void)
      }
      yield* Fiber.join(fiber)
      const text = lines.join("\n")
      expect(text).toContain("order-2  Pay 10   -> rejected: GuardRejected")
      expect(text).toContain("order-1  recovered Delivered: snapshot at seqNr 3 + 1 event(s) replayed")
      expect(text).toContain("order-3  durable timer still armed: payment due 00:00:03.000")
      expect(text).toMatch(/order-3 {2}PaymentTimeout fired by the timeout sweeper at 00:00:03\.\d{3} \(deadline 00:00:03\.000\) -> Cancelled/)
      expect(text).toContain("#2 00:00:03")
      expect(fs.existsSync(path.join(dir, "orders.db"))).toBe(true)
    }))
})
