/**
 * The web inspector's test data (test/Ui.test.ts, test/UiBrowser.test.ts):
 * the order demo's SQLite file (examples/order.ts), then on the same file
 * order-4 waiting for payment (a live timer), order-5 whose payment timer
 * is dead-lettered, order-6 whose ChargeCard command the outbox
 * dead-letters, and a hostile one: an id and a payload made of markup,
 * quotes and non-ASCII, its payment timer dead-lettered with a hostile
 * error text. Under the inspector's web server (`Ui.start` over
 * `Cli.inspectorLayer`) on a scope the caller closes.
 */
import { ConfigProvider, Effect, Layer, Logger, LogLevel, Redacted, Schedule, type Scope } from "effect"
import { FSMRuntime, Outbox, OutboxStore, type SqlEventStore, TimeoutStore, TimeoutStrategy } from "effect-fsm"
import * as Cli from "effect-fsm/Cli"
import * as PgEventStore from "effect-fsm/PgEventStore"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import * as Ui from "effect-fsm/Ui"
import { Option } from "effect"
import { demo, GatewayUnavailable, Notifier, Order, OrderHandlers, PaymentGateway } from "../../examples/order.js"
import { eventually } from "./eventually.js"
import * as Pg from "./pg.js"

/** Markup, quotes, an ampersand entity and non-ASCII: none of it may ever run or be read as HTML. */
export const hostileId = `x"'<img src=x onerror="window.__pwned=1">&amp;ü🎉`
export const hostileOrderId = `<script>window.__pwned=1</script>"'&lt;ü`
export const hostileError = `<script>window.__pwned=1</script> gateway said "no" & left`

export const quiet = Logger.withMinimumLogLevel(LogLevel.None)

/** The orders above, after the demo's, on `store`. */
const moreOrders = (store: Layer.Layer<SqlEventStore.Stores, unknown>) =>
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
        for (const [id, orderId, total] of [["order-4", "order-4", 10], ["order-5", "order-5", 20], ["order-6", "order-6", 30], [hostileId, hostileOrderId, 40]] as const) {
          // One request made order-4 and order-5: searchable by its correlation id.
          yield* orders.create(id, { _tag: "Pending", orderId, total }, {
            correlationId: id === "order-4" || id === "order-5" ? "checkout-77" : hostileId
          })
        }
        const timers = yield* TimeoutStore.TimeoutStore
        const now = Date.now()
        yield* timers.deadLetter({ machine: "order", instanceId: "order-5", name: "payment", generation: 1 }, { error: "sweeper gave up: boom", now })
        yield* timers.deadLetter({ machine: "order", instanceId: hostileId, name: "payment", generation: 1 }, { error: hostileError, now })
        yield* orders.send("order-6", { _tag: "Pay", amount: 30 })
        const outbox = yield* OutboxStore.OutboxStore
        yield* eventually(Effect.filterOrFail(outbox.deadLetters("order"), (d) => d.length === 1, () => "not dead-lettered yet"))
      }).pipe(Effect.provide(context))
    }))

/** The demo's orders plus the ones above, on the SQLite file `filename`. */
export const makeData = (filename: string) =>
  Effect.zipRight(
    demo({ filename, paymentTimeout: "300 millis", print: () => Effect.void }),
    moreOrders(SqliteEventStore.layer({ filename }))
  ).pipe(quiet)

/** The demo's tables prefix in PostgreSQL. */
export const pgTablePrefix = "order_demo_"

/** The same on PostgreSQL, in `schema` (the demo's --pg mode, which reads DATABASE_URL). */
export const makePgData = (schema: string) =>
  Effect.zipRight(
    demo({ pg: true, paymentTimeout: "300 millis", print: () => Effect.void }).pipe(
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["DATABASE_URL", Redacted.value(Pg.clientConfig(schema).url!)]])))
    ),
    moreOrders(PgEventStore.layer({ ...Pg.clientConfig(schema), tablePrefix: pgTablePrefix }))
  ).pipe(quiet)

/** The inspector's web server over a database, as `effect-fsm ui` starts it. */
export const serve = (
  database: { readonly db: string; readonly schema?: string | undefined; readonly tablePrefix?: string | undefined },
  options: { readonly allowActions?: boolean | undefined } = {}
): Effect.Effect<Ui.Server, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const layer = yield* Cli.inspectorLayer({
      db: database.db,
      schema: Option.fromNullable(database.schema),
      tablePrefix: Option.fromNullable(database.tablePrefix)
    }, [Order])
    const context = yield* Layer.build(layer)
    return yield* Ui.start({ machines: [Order], port: 0, allowActions: options.allowActions }).pipe(Effect.provide(context))
  }).pipe(quiet)
