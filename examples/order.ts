/**
 * The order workflow: effect-fsm's main example and the `npm start` demo.
 *
 *   Pending --Pay--> Charging --PaymentCaptured--> Paid --Ship--> Shipped --Deliver--> Delivered --Refund--> Refunded
 *      |                 |                           |
 *      |                 +--PaymentDeclined--> Cancelled
 *      |                                             +--Cancel / ShippingTimeout (24 h)--> Refunded
 *      +--Cancel / PaymentTimeout (5 min)--> Cancelled
 *
 * Paying produces the `ChargeCard` command and entering Paid the
 * `SendConfirmation` e-mail: both go through the transactional outbox (written
 * in the commit of the event, run at least once, with an idempotency key),
 * while the notes of entry actions are best effort.
 *
 * Run it with `npm start`: it drives a few orders on an embedded SQLite file,
 * "restarts" (tears the whole runtime down and builds a new one on the same
 * file), recovers the instances from snapshot + tail replay, finishes a charge
 * whose first attempt failed before the restart (the retry runs in the new
 * process, with the same idempotency key), and shows an unpaid order's
 * PaymentTimeout firing at its original deadline, after the restart. Set `DATABASE_URL` (or PGHOST/PGUSER/PGDATABASE) and pass `--pg`
 * to run the same demo on PostgreSQL.
 */
import { Console, Context, type Duration, Effect, Layer, Logger, LogLevel, Option, Ref, Schedule, Schema } from "effect"
import { EventStore, FSMRuntime, Machine, Outbox, OutboxStore, TimeoutStore, TimeoutStrategy } from "effect-fsm"
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
  Schema.TaggedStruct("Charging", { orderId: Schema.String, amount: Schema.Number }),
  Schema.TaggedStruct("Paid", { orderId: Schema.String, amount: Schema.Number, chargeId: Schema.String }),
  Schema.TaggedStruct("Shipped", { orderId: Schema.String, amount: Schema.Number, tracking: Schema.String }),
  Schema.TaggedStruct("Delivered", { orderId: Schema.String, amount: Schema.Number }),
  Schema.TaggedStruct("Cancelled", { orderId: Schema.String, reason: Schema.String }),
  Schema.TaggedStruct("Refunded", { orderId: Schema.String, amount: Schema.Number, reason: Schema.String })
)
export type OrderState = typeof OrderState.Type

export const OrderEvent = Schema.Union(
  Schema.TaggedStruct("Pay", { amount: Schema.Number }),
  Schema.TaggedStruct("PaymentCaptured", { chargeId: Schema.String }),
  Schema.TaggedStruct("PaymentDeclined", { reason: Schema.String }),
  Schema.TaggedStruct("Ship", { tracking: Schema.String }),
  Schema.TaggedStruct("Deliver", {}),
  Schema.TaggedStruct("Cancel", { reason: Schema.String }),
  Schema.TaggedStruct("Refund", { reason: Schema.String }),
  Schema.TaggedStruct("PaymentTimeout", {}),
  Schema.TaggedStruct("ShippingTimeout", {})
)
export type OrderEvent = typeof OrderEvent.Type

/**
 * What must happen, durably: written to the outbox in the commit of the
 * transition that produces them, run by `OrderHandlers` at least once.
 */
export const OrderCommand = Schema.Union(
  Schema.TaggedStruct("ChargeCard", { orderId: Schema.String, amount: Schema.Number }),
  Schema.TaggedStruct("SendConfirmation", { orderId: Schema.String, amount: Schema.Number, chargeId: Schema.String })
)

/** Where messages go: the confirmation e-mail (a command) and best-effort notes (entry actions). */
export class Notifier extends Context.Tag("examples/Notifier")<Notifier, {
  readonly notify: (orderId: string, message: string) => Effect.Effect<void>
}>() {}

/** The payment provider. Like real ones, it charges once per idempotency key. */
export class PaymentGateway extends Context.Tag("examples/PaymentGateway")<PaymentGateway, {
  readonly charge: (
    orderId: string,
    amount: number,
    idempotencyKey: string
  ) => Effect.Effect<{ readonly chargeId: string } | { readonly declined: string }, GatewayUnavailable>
}>() {}

/** The provider did not answer; the outbox tries again. */
export class GatewayUnavailable extends Schema.TaggedError<GatewayUnavailable>()("GatewayUnavailable", {
  reason: Schema.String
}) {}

const notify = (orderId: string, message: string) => Effect.flatMap(Notifier, (n) => n.notify(orderId, message))

/** The order machine, with its timeouts as parameters so the demo can use seconds. */
export const makeOrder = (timeouts: {
  readonly payment: Duration.DurationInput
  readonly shipping: Duration.DurationInput
}) =>
  Machine.make({
    name: "order",
    version: 2,
    state: OrderState,
    event: OrderEvent,
    command: OrderCommand,
    transitions: {
      Pending: {
        Pay: {
          to: "Charging",
          guard: (s, e) => e.amount >= s.total,
          build: (s, e) => ({ orderId: s.orderId, amount: e.amount }),
          // Charging the card must not be lost: a command, not an action.
          commands: (s, e) => [{ _tag: "ChargeCard", orderId: s.orderId, amount: e.amount }]
        },
        Cancel: { to: "Cancelled", stop: true, build: (s, e) => ({ orderId: s.orderId, reason: e.reason }) },
        PaymentTimeout: { to: "Cancelled", stop: true, build: (s) => ({ orderId: s.orderId, reason: "not paid in time" }) }
      },
      Charging: {
        // The replies of the ChargeCard handler.
        PaymentCaptured: { to: "Paid", build: (s, e) => ({ orderId: s.orderId, amount: s.amount, chargeId: e.chargeId }) },
        PaymentDeclined: {
          to: "Cancelled",
          stop: true,
          build: (s, e) => ({ orderId: s.orderId, reason: `payment declined: ${e.reason}` })
        }
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
    // Entering Paid sends the confirmation e-mail, durably.
    commands: {
      Paid: (s) => [{ _tag: "SendConfirmation", orderId: s.orderId, amount: s.amount, chargeId: s.chargeId }]
    },
    // Best effort: a note that a crash right after the commit may lose.
    entry: {
      Shipped: (s) => notify(s.orderId, `note: shipped, tracking ${s.tracking}`),
      Cancelled: (s) => notify(s.orderId, `note: cancelled: ${s.reason}`),
      Refunded: (s) => notify(s.orderId, `note: refunded ${s.amount}: ${s.reason}`)
    }
  })

/** The order machine with production timeouts: 5 minutes to pay, 24 hours to ship. */
export const Order = makeOrder({ payment: "5 minutes", shipping: "24 hours" })

/**
 * The handlers of the order's commands. The idempotency key is the same on
 * every attempt, so the gateway never charges twice for one order, however
 * often the command runs; the handler's reply (`PaymentCaptured` or
 * `PaymentDeclined`) is committed together with the command's completion.
 */
export const orderHandlers = (order: typeof Order) =>
  Outbox.handlers(order, {
    ChargeCard: (command, { idempotencyKey }) =>
      Effect.flatMap(PaymentGateway, (gateway) => gateway.charge(command.orderId, command.amount, idempotencyKey)).pipe(
        Effect.map((result) =>
          "chargeId" in result
            ? { _tag: "PaymentCaptured" as const, chargeId: result.chargeId }
            : { _tag: "PaymentDeclined" as const, reason: result.declined }
        )
      ),
    SendConfirmation: (command) =>
      notify(command.orderId, `e-mail: your payment of ${command.amount} is confirmed (charge ${command.chargeId})`)
  })

export const OrderHandlers = orderHandlers(Order)

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

/**
 * A payment gateway for the demo: it remembers charges by idempotency key
 * (a repeated call returns the first charge) and times out on the first
 * call for each order in `flaky`.
 */
const demoGateway = (flaky: ReadonlyArray<string>, print: (line: string) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const charges = yield* Ref.make(new Map<string, string>())
    const failedOnce = yield* Ref.make(new Set<string>())
    return PaymentGateway.of({
      charge: (orderId, amount, key) =>
        Effect.gen(function*() {
          if (flaky.includes(orderId) && !(yield* Ref.get(failedOnce)).has(orderId)) {
            yield* Ref.update(failedOnce, (s) => new Set([...s, orderId]))
            yield* print(`           💳 ${orderId}: charge ${amount} (key ${key}) -> gateway timeout`)
            return yield* new GatewayUnavailable({ reason: "gateway timeout" })
          }
          const known = (yield* Ref.get(charges)).get(key)
          const chargeId = known ?? `ch_${orderId}`
          yield* Ref.update(charges, (m) => new Map([...m, [key, chargeId]]))
          yield* print(`           💳 ${orderId}: charge ${amount} (key ${key}) -> ${chargeId}`)
          return { chargeId }
        })
    })
  })

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
    // An external service: it outlives both processes.
    const gateway = yield* demoGateway(["order-2"], print)

    /** One "process": the store, durable timeouts, the outbox dispatcher and the runtime, built from scratch. */
    const processLayer = FSMRuntime.layer({ machines: [DemoOrder], snapshotEvery: 3 }).pipe(
      Layer.provideMerge(TimeoutStrategy.layerDurable({ pollInterval: "200 millis" })),
      Layer.provide(Outbox.layer({
        pollInterval: "200 millis",
        retry: Schedule.exponential("1 second").pipe(Schedule.intersect(Schedule.recurs(5)))
      })),
      Layer.provide(orderHandlers(DemoOrder)),
      Layer.provideMerge(store),
      Layer.provide(Layer.succeed(PaymentGateway, gateway)),
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

    /** Waits (polling the instance) until the outbox has moved it to `state`. */
    const reaches = (orderId: string, state: OrderState["_tag"]) =>
      Effect.flatMap(FSMRuntime.client(DemoOrder), (orders) =>
        orders.inspect(orderId).pipe(
          Effect.filterOrFail((v) => v.state._tag === state, () => `${orderId} is not ${state} yet`),
          Effect.retry({ schedule: Schedule.spaced("50 millis"), times: 200 }),
          Effect.tap((v) => print(`  ${orderId}  ${state.padEnd(8)} (seqNr ${v.seqNr}, the handler's reply)`))
        ))

    yield* print(`effect-fsm order demo on ${where}\n`)
    yield* print("── process 1 ─────────────────────────────────────────────")
    const unpaidDeadline = yield* Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(processLayer)
      return yield* Effect.gen(function*() {
        const orders = yield* FSMRuntime.client(DemoOrder)
        const outbox = yield* OutboxStore.OutboxStore
        for (const [orderId, total] of [["order-1", 40], ["order-2", 25], ["order-3", 99]] as const) {
          yield* orders.create(orderId, { _tag: "Pending", orderId, total })
          yield* print(`  ${orderId}  created, total ${total}`)
        }
        yield* step("order-1", { _tag: "Pay", amount: 40 })
        yield* reaches("order-1", "Paid")
        yield* step("order-1", { _tag: "Ship", tracking: "TRK-1001" })
        yield* step("order-1", { _tag: "Deliver" })
        const short = yield* Effect.either(orders.send("order-2", { _tag: "Pay", amount: 10 }))
        if (short._tag === "Left") yield* print(`  order-2  Pay 10   -> rejected: ${short.left._tag} (total is 25), nothing written`)
        yield* step("order-2", { _tag: "Pay", amount: 25 })
        const retrying = yield* outbox.pending("order", "order-2").pipe(
          Effect.filterOrFail((p) => p[0]?.attempts === 1, () => "no failed attempt yet"),
          Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 500 })
        )
        yield* print(
          `  order-2  ChargeCard attempt 1 failed (${retrying[0]!.lastError}); retry due at ${clock(retrying[0]!.dueAt)}`
        )
        const unpaid = yield* orders.inspect("order-3")
        const deadline = unpaid.timeouts[0]!.dueAt
        yield* print(`  order-3  left unpaid: PaymentTimeout due at ${clock(deadline)}`)
        yield* print(`\n  ... process 1 stops (runtime, sweeper, dispatcher and database connection torn down)\n`)
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
        yield* print(`  order-2  its ChargeCard is still in the outbox: this process retries it`)
        yield* reaches("order-2", "Paid")
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
        for (const orderId of ["order-2", "order-3"]) {
          yield* print(`\n  ${orderId} history:`)
          for (const entry of yield* orders.history(orderId)) {
            const what = entry._tag === "Event" ? entry.event._tag : entry._tag
            yield* print(
              `    #${entry.seqNr} ${clock(entry.metadata.timestamp)} ${what.padEnd(15)} ${entry.metadata.source.padEnd(7)} -> ${entry.stateTag}`
            )
          }
        }
      }).pipe(Effect.provide(context))
    }))
    yield* print(
      options.pg
        ? `\nDone. Inspect the log yourself: psql -c "select * from ${prefix}events"`
        : `\nDone. Inspect the log yourself: sqlite3 ${filename} "select * from fsm_events"\n` +
          `or with the inspector: npm run cli -- counts order -m examples/order.ts --db ${filename}`
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
