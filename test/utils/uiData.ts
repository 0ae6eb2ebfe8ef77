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
import { ConfigProvider, Effect, Layer, Redacted, type Scope } from "effect"
import * as Cli from "effect-fsm/Cli"
import * as PgEventStore from "effect-fsm/PgEventStore"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import * as Ui from "effect-fsm/Ui"
import { Option } from "effect"
import { demo, Order } from "../../examples/order.js"
import { moreOrders, quiet } from "./orderData.js"
import * as Pg from "./pg.js"

export { hostileError, hostileId, hostileOrderId, quiet } from "./orderData.js"

/** The demo's orders plus the ones above, on the SQLite file `filename`. */
export const makeData = (filename: string) =>
  Effect.zipRight(
    demo({ filename, paymentTimeout: "300 millis", print: () => Effect.void }),
    moreOrders(SqliteEventStore.layer({ filename }), { hostile: true })
  ).pipe(quiet)

/** The demo's tables prefix in PostgreSQL. */
export const pgTablePrefix = "order_demo_"

/** The same on PostgreSQL, in `schema` (the demo's --pg mode, which reads DATABASE_URL). */
export const makePgData = (schema: string) =>
  Effect.zipRight(
    demo({ pg: true, paymentTimeout: "300 millis", print: () => Effect.void }).pipe(
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["DATABASE_URL", Redacted.value(Pg.clientConfig(schema).url!)]])))
    ),
    moreOrders(PgEventStore.layer({ ...Pg.clientConfig(schema), tablePrefix: pgTablePrefix }), { hostile: true })
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
