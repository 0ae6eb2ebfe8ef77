/** The order example: its machine's behaviour, and the `npm start` demo end to end on SQLite. */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Ref, TestClock } from "effect"
import { EventStore, FSMRuntime, type Machine, Outbox, TimeoutStrategy } from "effect-fsm"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { demo, GatewayUnavailable, Notifier, Order, OrderHandlers, PaymentGateway } from "../../examples/order.js"
import { eventually } from "../utils/eventually.js"

type Orders = FSMRuntime.Client<Machine.StateOf<typeof Order>, Machine.EventOf<typeof Order>>

const withOrders = <A, E>(
  body: (orders: Orders, notes: Ref.Ref<ReadonlyArray<string>>) => Effect.Effect<A, E, FSMRuntime.FSMRuntime>
) =>
  Effect.gen(function*() {
    const notes = yield* Ref.make<ReadonlyArray<string>>([])
    // The gateway declines amounts over 1,000 and is unavailable for the first attempt of order "flaky".
    const attempts = yield* Ref.make(0)
    const layer = FSMRuntime.layer({ machines: [Order] }).pipe(
      // Deadlines are known, so the sweeper need not poll often while TestClock skips a day.
      Layer.provide(TimeoutStrategy.layerDurable({ maxIdleInterval: "1 hour" })),
      Layer.provide(OrderHandlers),
      // Likewise the outbox dispatcher (this node wakes it for its own commands).
      Layer.provide(Outbox.layer({ maxIdleInterval: "1 hour" })),
      Layer.provide(EventStore.layerMemory),
      Layer.provide(Layer.succeed(PaymentGateway, {
        charge: (orderId, amount, key) =>
          Effect.gen(function*() {
            if (orderId === "flaky" && (yield* Ref.getAndUpdate(attempts, (n) => n + 1)) === 0) {
              return yield* new GatewayUnavailable({ reason: "timeout" })
            }
            return amount > 1000 ? { declined: "over limit" } : { chargeId: `ch-${key}` }
          })
      })),
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
  it.scoped("pays (charging through the outbox), ships, delivers and refunds, notifying on the way", () =>
    withOrders((orders, notes) =>
      Effect.gen(function*() {
        yield* orders.create("o", { _tag: "Pending", orderId: "o", total: 30 })
        expect((yield* Effect.flip(orders.send("o", { _tag: "Pay", amount: 29 })))._tag).toBe("GuardRejected")
        expect((yield* orders.send("o", { _tag: "Pay", amount: 30 })).state._tag).toBe("Charging")
        const paid = yield* eventually(Effect.filterOrFail(orders.state("o"), (s) => s._tag === "Paid", () => "charging"))
        expect(paid).toEqual({ _tag: "Paid", orderId: "o", amount: 30, chargeId: "ch-order:o:2:0" })
        yield* orders.send("o", { _tag: "Ship", tracking: "T" })
        yield* orders.send("o", { _tag: "Deliver" })
        const refunded = yield* orders.send("o", { _tag: "Refund", reason: "broken" })
        expect(refunded).toEqual({
          _tag: "Stop",
          state: { _tag: "Refunded", orderId: "o", amount: 30, reason: "broken" },
          seqNr: 6
        })
        expect(yield* Ref.get(notes)).toEqual([
          "o: e-mail: your payment of 30 is confirmed (charge ch-order:o:2:0)",
          "o: note: shipped, tracking T",
          "o: note: refunded 30: broken"
        ])
      })
    ))

  it.scoped("a declined charge cancels the order; a charge that fails once is retried with the same key", () =>
    withOrders((orders) =>
      Effect.gen(function*() {
        yield* orders.create("big", { _tag: "Pending", orderId: "big", total: 5_000 })
        yield* orders.send("big", { _tag: "Pay", amount: 5_000 })
        const declined = yield* eventually(Effect.filterOrFail(orders.state("big"), (s) => s._tag === "Cancelled", () => "charging"))
        expect(declined).toEqual({ _tag: "Cancelled", orderId: "big", reason: "payment declined: over limit" })
        yield* orders.create("flaky", { _tag: "Pending", orderId: "flaky", total: 5 })
        yield* orders.send("flaky", { _tag: "Pay", amount: 5 })
        yield* TestClock.adjust("1 second") // the default retry's first delay
        const paid = yield* eventually(Effect.filterOrFail(orders.state("flaky"), (s) => s._tag === "Paid", () => "charging"))
        expect(paid).toMatchObject({ chargeId: "ch-order:flaky:2:0" })
        const history = yield* orders.history("flaky")
        expect(history.map((h) => `${h._tag === "Event" ? h.event._tag : h._tag}:${h.metadata.source}`)).toEqual([
          "Created:user",
          "Pay:user",
          "PaymentCaptured:outbox"
        ])
      })
    ))

  it.scoped("cancels an unpaid order after 5 minutes and refunds a paid one not shipped within 24 hours", () =>
    withOrders((orders) =>
      Effect.gen(function*() {
        yield* orders.create("unpaid", { _tag: "Pending", orderId: "unpaid", total: 10 })
        yield* orders.create("stuck", { _tag: "Pending", orderId: "stuck", total: 10 })
        yield* orders.send("stuck", { _tag: "Pay", amount: 10 })
        yield* eventually(Effect.filterOrFail(orders.state("stuck"), (s) => s._tag === "Paid", () => "charging"))
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
        yield* eventually(Effect.filterOrFail(orders.state("o"), (s) => s._tag === "Paid", () => "charging"))
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
      expect(text).toContain("order-1  recovered Delivered: snapshot at seqNr 3 + 2 event(s) replayed")
      expect(text).toContain("💳 order-2: charge 25 (key order:order-2:2:0) -> gateway timeout")
      expect(text).toMatch(/order-2 {2}ChargeCard attempt 1 failed \(GatewayUnavailable.*gateway timeout.*\); retry due at/)
      expect(text).toContain("order-2  recovered Charging: replayed all 2 events")
      // After the restart, the retry: same key, one charge, one reply.
      expect(text.split("── process 2")[1]).toContain("💳 order-2: charge 25 (key order:order-2:2:0) -> ch_order-2")
      expect(text).toContain("#3 00:00:01")
      expect(text).toMatch(/#3 [\d:.]+ PaymentCaptured outbox  -> Paid/)
      expect(text).toContain("✉  order-2: e-mail: your payment of 25 is confirmed (charge ch_order-2)")
      expect(text).toContain("order-3  durable timer still armed: payment due 00:00:03.000")
      expect(text).toMatch(/order-3 {2}PaymentTimeout fired by the timeout sweeper at 00:00:03\.\d{3} \(deadline 00:00:03\.000\) -> Cancelled/)
      expect(text).toContain("#2 00:00:03")
      expect(fs.existsSync(path.join(dir, "orders.db"))).toBe(true)
    }))
})
