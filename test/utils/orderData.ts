/**
 * Orders added after the order demo (examples/order.ts) for the tests of
 * the CLI and the web inspector: a live timer, dead letters of a timer and
 * of a command, and (for the web inspector) a hostile order.
 */
import { Effect, Layer, Logger, LogLevel, Schedule } from "effect"
import { FSMRuntime, Outbox, OutboxStore, type SqlEventStore, TimeoutStore, TimeoutStrategy } from "effect-fsm"
import { GatewayUnavailable, Notifier, Order, OrderHandlers, PaymentGateway } from "../../examples/order.js"
import { eventually } from "./eventually.js"

/** Markup, quotes, an ampersand entity and non-ASCII: none of it may ever run or be read as HTML. */
export const hostileId = `x"'<img src=x onerror="window.__pwned=1">&amp;ü🎉`
export const hostileOrderId = `<script>window.__pwned=1</script>"'&lt;ü`
export const hostileError = `<script>window.__pwned=1</script> gateway said "no" & left`

export const quiet = Logger.withMinimumLogLevel(LogLevel.None)

/**
 * After the demo, on `store`: order-4 waits for payment (its payment timer
 * armed), order-5's payment timer is dead-lettered (as the sweeper does
 * after repeated failures), order-6's ChargeCard fails and the dispatcher
 * dead-letters it (no retries). With `hostile`, also the hostile order
 * (its payment timer dead-lettered with the hostile error text), and
 * correlation ids: order-4 and order-5 share "checkout-77", the others
 * carry `hostileId`.
 */
export const moreOrders = (store: Layer.Layer<SqlEventStore.Stores, unknown>, options: { readonly hostile: boolean }) =>
    Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(
        FSMRuntime.layer({ machines: [Order] }).pipe(
          Layer.provideMerge(TimeoutStrategy.layerDurable({ sweep: false })),
          Layer.provide(Outbox.layer({ retry: Schedule.stop, pollInterval: "20 millis", maxIdleInterval: "50 millis" })),
          Layer.provide(OrderHandlers),
          Layer.provideMerge(store),
          Layer.provide(Layer.succeed(PaymentGateway, {
            charge: () => Effect.fail(new GatewayUnavailable({ reason: "card network down" }))
          })),
          Layer.provide(Layer.succeed(Notifier, { notify: () => Effect.void }))
        )
      )
      yield* Effect.gen(function*() {
        const orders = yield* FSMRuntime.client(Order)
        const plain = [["order-4", "order-4", 10], ["order-5", "order-5", 20], ["order-6", "order-6", 30]] as const
        for (const [id, orderId, total] of options.hostile ? [...plain, [hostileId, hostileOrderId, 40] as const] : plain) {
          // One request made order-4 and order-5: searchable by its correlation id.
          yield* orders.create(
            id,
            { _tag: "Pending", orderId, total },
            options.hostile ? { correlationId: id === "order-4" || id === "order-5" ? "checkout-77" : hostileId } : undefined
          )
        }
        const timers = yield* TimeoutStore.TimeoutStore
        const now = Date.now()
        yield* timers.deadLetter({ machine: "order", instanceId: "order-5", name: "payment", generation: 1 }, { error: "sweeper gave up: boom", now })
        if (options.hostile) {
          yield* timers.deadLetter({ machine: "order", instanceId: hostileId, name: "payment", generation: 1 }, { error: hostileError, now })
        }
        yield* orders.send("order-6", { _tag: "Pay", amount: 30 })
        const outbox = yield* OutboxStore.OutboxStore
        yield* eventually(Effect.filterOrFail(outbox.deadLetters("order"), (d) => d.length === 1, () => "not dead-lettered yet"))
      }).pipe(Effect.provide(context))
    }))

