/**
 * The README's 20-line order workflow, as a program that type-checks and runs:
 * `npx tsx examples/quickstart.ts` (writes quickstart.db in the working directory).
 */
import { Console, Effect, Schema } from "effect"
import { FSMRuntime, Machine } from "effect-fsm"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"

const State = Schema.Union(
  Schema.TaggedStruct("Pending", { orderId: Schema.String }),
  Schema.TaggedStruct("Paid", { orderId: Schema.String, amount: Schema.Number }),
  Schema.TaggedStruct("Cancelled", { orderId: Schema.String, reason: Schema.String })
)
const Event = Schema.Union(
  Schema.TaggedStruct("Pay", { amount: Schema.Number }),
  Schema.TaggedStruct("PaymentTimeout", {})
)

export const Order = Machine.make({
  name: "order",
  version: 1,
  state: State,
  event: Event,
  transitions: {
    Pending: {
      Pay: { to: "Paid", guard: (_, e) => e.amount > 0, build: (s, e) => ({ orderId: s.orderId, amount: e.amount }) },
      PaymentTimeout: { to: "Cancelled", build: (s) => ({ orderId: s.orderId, reason: "unpaid" }) }
    }
  },
  timeouts: { Pending: { payment: { after: "5 minutes", event: { _tag: "PaymentTimeout" } } } }
})

export const program = Effect.gen(function*() {
  const orders = yield* FSMRuntime.client(Order)
  const id = `order-${Date.now()}`
  yield* orders.create(id, { _tag: "Pending", orderId: id })
  const outcome = yield* orders.send(id, { _tag: "Pay", amount: 42 })
  yield* Console.log(outcome) // { _tag: "Goto", state: { _tag: "Paid", ... }, seqNr: 2 }
  return outcome
})

if (import.meta.url === `file://${process.argv[1]}`) {
  program.pipe(
    Effect.provide(FSMRuntime.layer({ machines: [Order] })),
    Effect.provide(SqliteEventStore.layer({ filename: "quickstart.db" })),
    Effect.runPromise
  )
}
