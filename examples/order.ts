/**
 * The order workflow: effect-fsm's main example and the `npm start` demo.
 *
 *   Pending --Pay--> Paid --Ship--> Shipped --Deliver--> Delivered --Refund--> Refunded
 *      |              |
 *      |              +--Cancel / ShippingTimeout (24 h)--> Refunded
 *      +--Cancel / PaymentTimeout (5 min)--> Cancelled
 *
 * Run it with `npm start`: it drives a few orders on an embedded SQLite file,
 * "restarts" (tears the whole runtime down and builds a new one on the same
 * file), recovers the instances from snapshot + tail replay, and shows an
 * unpaid order's PaymentTimeout firing at its original deadline, after the
 * restart. Set `DATABASE_URL` (or PGHOST/PGUSER/PGDATABASE) and pass `--pg`
 * to run the same demo on PostgreSQL.
 */
import { Console, Context, type Duration, Effect, Layer, Logger, LogLevel, Option, Schedule, Schema } from "effect"
import { EventStore, FSMRuntime, Machine, TimeoutStore, TimeoutStrategy } from "effect-fsm"
import * as PgEventStore from "effect-fsm/PgEventStore"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import * as fs from "node:fs"
import { resetPgTables } from "./pgDemo.js"
import * as path from "node:path"
import { pathToFileURL } from "node:url"

// ---------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------

export const OrderState = Schema.Union(
  Schema.TaggedStruct("Pending", { orderId: Schema.String, total: Schema.Number }),
  Schema.TaggedStruct("Paid", { orderId: Schema.String, amount: Schema.Number }),
  Schema.TaggedStruct("Shipped", { orderId: Schema.String, amount: Schema.Number, tracking: Schema.String }),
  Schema.TaggedStruct("Delivered", { orderId: Schema.String, amount: Schema.Number }),
  Schema.TaggedStruct("Cancelled", { orderId: Schema.String, reason: Schema.String }),
  Schema.TaggedStruct("Refunded", { orderId: Schema.String, amount: Schema.Number, reason: Schema.String })
)
export type OrderState = typeof OrderState.Type

export const OrderEvent = Schema.Union(
  Schema.TaggedStruct("Pay", { amount: Schema.Number }),
  Schema.TaggedStruct("Ship", { tracking: Schema.String }),
  Schema.TaggedStruct("Deliver", {}),
  Schema.TaggedStruct("Cancel", { reason: Schema.String }),
  Schema.TaggedStruct("Refund", { reason: Schema.String }),
  Schema.TaggedStruct("PaymentTimeout", {}),
  Schema.TaggedStruct("ShippingTimeout", {})
)
export type OrderEvent = typeof OrderEvent.Type

/** Where the order's entry actions send their messages; the runtime's layer must provide it. */
export class Notifier extends Context.Tag("examples/Notifier")<Notifier, {
  readonly notify: (orderId: string, message: string) => Effect.Effect<void>
}>() {}

const notify = (orderId: string, message: string) => Effect.flatMap(Notifier, (n) => n.notify(orderId, message))

/** The order machine, with its timeouts as parameters so the demo can use seconds. */
export const makeOrder = (timeouts: {
  readonly payment: Duration.DurationInput
  readonly shipping: Duration.DurationInput
}) =>
  Machine.make({
    name: "order",
    version: 1,
    state: OrderState,
    event: OrderEvent,
    transitions: {
      Pending: {
        Pay: {
          to: "Paid",
          guard: (s, e) => e.amount >= s.total,
          build: (s, e) => ({ orderId: s.orderId, amount: e.amount })
        },
        Cancel: { to: "Cancelled", stop: true, build: (s, e) => ({ orderId: s.orderId, reason: e.reason }) },
        PaymentTimeout: { to: "Cancelled", stop: true, build: (s) => ({ orderId: s.orderId, reason: "not paid in time" }) }
      },
      Paid: {
        Ship: { to: "Shipped", build: (s, e) => ({ orderId: s.orderId, amount: s.amount, tracking: e.tracking }) },
        ShippingTimeout: {
          to: "Refunded",
          stop: true,
          build: (s) => ({ orderId: s.orderId, amount: s.amount, reason: "not shipped in time" })
        }
      },
      Shipped: { Deliver: { to: "Delivered", build: (s) => ({ orderId: s.orderId, amount: s.amount }) } },
      Delivered: {
        Refund: { to: "Refunded", stop: true, build: (s, e) => ({ orderId: s.orderId, amount: s.amount, reason: e.reason }) }
      }
    },
    groups: (group) => [
      // Cancelling a paid order refunds it.
      group(["Paid"], ["Cancel"], {
        to: "Refunded",
        stop: true,
        build: (s, e) => ({ orderId: s.orderId, amount: s.amount, reason: e.reason })
      })
    ],
    timeouts: {
      Pending: { payment: { after: timeouts.payment, event: { _tag: "PaymentTimeout" } } },
      Paid: { shipping: { after: timeouts.shipping, event: { _tag: "ShippingTimeout" } } }
    },
    entry: {
      Paid: (s) => notify(s.orderId, `payment of ${s.amount} captured`),
      Shipped: (s) => notify(s.orderId, `shipped, tracking ${s.tracking}`),
      Cancelled: (s) => notify(s.orderId, `cancelled: ${s.reason}`),
      Refunded: (s) => notify(s.orderId, `refunded ${s.amount}: ${s.reason}`)
    }
  })

/** The order machine with production timeouts: 5 minutes to pay, 24 hours to ship. */
export const Order = makeOrder({ payment: "5 minutes", shipping: "24 hours" })

// ---------------------------------------------------------------------------
// The demo
// ---------------------------------------------------------------------------

/** Options of the demo. */
export interface DemoOptions {
  /** SQLite file (default `orders.db` in the working directory); ignored with `pg`. */
  readonly filename?: string
  /** Run on PostgreSQL, configured from DATABASE_URL / PG* variables. */
  readonly pg?: boolean
  /** The unpaid order's payment timeout. Default 3 seconds. */
  readonly paymentTimeout?: Duration.DurationInput
  /** Where lines go. Default: the console. */
  readonly print?: (line: string) => Effect.Effect<void>
}

const clock = (millis: number) => new Date(millis).toISOString().slice(11, 23)

/** The demo as an Effect: two "process lifetimes" on one database. */
export const demo = (options: DemoOptions = {}) =>
  Effect.gen(function*() {
    const print = options.print ?? Console.log
    const DemoOrder = makeOrder({ payment: options.paymentTimeout ?? "3 seconds", shipping: "1 minute" })
    const filename = options.filename ?? "orders.db"
    // A fresh database each run, so the demo always tells the same story.
    const prefix = "order_demo_"
    if (options.pg) yield* resetPgTables(prefix)
    else for (const suffix of ["", "-wal", "-shm"]) fs.rmSync(`${filename}${suffix}`, { force: true })
    const store = options.pg
      ? PgEventStore.layerConfig({ tablePrefix: prefix })
      : SqliteEventStore.layer({ filename, tablePrefix: "fsm_" })
    const where = options.pg ? `PostgreSQL (tables ${prefix}*)` : `SQLite file ${path.resolve(filename)}`

    /** One "process": the store, durable timeouts and the runtime, built from scratch. */
    const processLayer = FSMRuntime.layer({ machines: [DemoOrder], snapshotEvery: 3 }).pipe(
      Layer.provideMerge(TimeoutStrategy.layerDurable({ pollInterval: "200 millis" })),
      Layer.provideMerge(store),
      Layer.provide(Layer.succeed(Notifier, {
        notify: (orderId, message) => print(`           ✉  ${orderId}: ${message}`)
      }))
    )

    const step = (orderId: string, event: OrderEvent) =>
      Effect.gen(function*() {
        const orders = yield* FSMRuntime.client(DemoOrder)
        const outcome = yield* orders.send(orderId, event)
        yield* print(`  ${orderId}  ${event._tag.padEnd(8)} -> ${outcome._tag} ${outcome.state._tag} (seqNr ${outcome.seqNr})`)
      })

    yield* print(`effect-fsm order demo on ${where}\n`)
    yield* print("── process 1 ─────────────────────────────────────────────")
    const unpaidDeadline = yield* Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(processLayer)
      return yield* Effect.gen(function*() {
        const orders = yield* FSMRuntime.client(DemoOrder)
        for (const [orderId, total] of [["order-1", 40], ["order-2", 25], ["order-3", 99]] as const) {
          yield* orders.create(orderId, { _tag: "Pending", orderId, total })
          yield* print(`  ${orderId}  created, total ${total}`)
        }
        yield* step("order-1", { _tag: "Pay", amount: 40 })
        yield* step("order-1", { _tag: "Ship", tracking: "TRK-1001" })
        yield* step("order-1", { _tag: "Deliver" })
        const short = yield* Effect.either(orders.send("order-2", { _tag: "Pay", amount: 10 }))
        if (short._tag === "Left") yield* print(`  order-2  Pay 10   -> rejected: ${short.left._tag} (total is 25), nothing written`)
        yield* step("order-2", { _tag: "Pay", amount: 25 })
        const unpaid = yield* orders.inspect("order-3")
        const deadline = unpaid.timeouts[0]!.dueAt
        yield* print(`  order-3  left unpaid: PaymentTimeout due at ${clock(deadline)}`)
        yield* print(`\n  ... process 1 stops (runtime, sweeper and database connection torn down)\n`)
        return deadline
      }).pipe(Effect.provide(context))
    }))

    yield* print("── process 2 ─────────────────────────────────────────────")
    yield* Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(processLayer)
      yield* Effect.gen(function*() {
        const orders = yield* FSMRuntime.client(DemoOrder)
        const events = yield* EventStore.EventStore
        const timers = yield* TimeoutStore.TimeoutStore
        for (const orderId of ["order-1", "order-2", "order-3"]) {
          const snapshot = yield* events.loadSnapshot("order", orderId)
          const view = yield* orders.inspect(orderId)
          const from = Option.match(snapshot, {
            onNone: () => `replayed all ${view.seqNr} events`,
            onSome: (s) => `snapshot at seqNr ${s.seqNr} + ${view.seqNr - s.seqNr} event(s) replayed`
          })
          yield* print(`  ${orderId}  recovered ${view.state._tag}${view.stopped ? " (stopped)" : ""}: ${from}`)
        }
        const pending = yield* timers.pending("order", "order-3")
        yield* print(`  order-3  durable timer still armed: ${pending.map((t) => `${t.name} due ${clock(t.dueAt)}`).join(", ")}`)
        yield* step("order-2", { _tag: "Ship", tracking: "TRK-1002" })
        yield* print(`  waiting for order-3's PaymentTimeout ...`)
        const cancelled = yield* orders.inspect("order-3").pipe(
          Effect.filterOrFail((v) => v.state._tag === "Cancelled", () => "still pending"),
          Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 100 })
        )
        const history = yield* orders.history("order-3")
        const fired = history[history.length - 1]!
        yield* print(
          `  order-3  ${fired._tag === "Event" ? fired.event._tag : fired._tag} fired by the ${fired.metadata.source} sweeper at ${
            clock(fired.metadata.timestamp)
          } (deadline ${clock(unpaidDeadline)}) -> ${cancelled.state._tag}`
        )
        yield* print(`\n  order-3 history:`)
        for (const entry of history) {
          const what = entry._tag === "Event" ? entry.event._tag : entry._tag
          yield* print(
            `    #${entry.seqNr} ${clock(entry.metadata.timestamp)} ${what.padEnd(15)} ${entry.metadata.source.padEnd(7)} -> ${entry.stateTag}`
          )
        }
      }).pipe(Effect.provide(context))
    }))
    yield* print(
      options.pg
        ? `\nDone. Inspect the log yourself: psql -c "select * from ${prefix}events"`
        : `\nDone. Inspect the log yourself: sqlite3 ${filename} "select * from fsm_events"`
    )
  })

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const pg = process.argv.includes("--pg")
  demo({ pg }).pipe(
    Logger.withMinimumLogLevel(LogLevel.Warning),
    Effect.runPromise
  ).catch((error) => {
    console.error(error)
    process.exitCode = 1
  })
}
