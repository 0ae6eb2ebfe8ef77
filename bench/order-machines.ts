/**
 * The order machine the in-memory benchmarks run, defined twice with the
 * same semantics: once with effect-fsm's `Machine.make`, once with XState v5.
 *
 *   Pending --Pay [amount > 0]--> Paid --Ship--> Shipped --Deliver--> Delivered (stops)
 *   Pending, Paid --Cancel--> Cancelled;  Cancelled --Cancel--> Cancelled (no change)
 *
 * Both sides evaluate the same guard and make the same data changes: Pay
 * records the amount, Ship the tracking number, Cancel the reason, Deliver
 * keeps everything; each transition builds a new immutable data object
 * (`build` on one side, `assign` on the other).
 *
 * What differs, unavoidably, with the two libraries' data models:
 * - effect-fsm carries data in the state (`{ _tag: "Paid", orderId, amount }`),
 *   XState in one context record shared by every state, so fields that do
 *   not apply yet hold `null` there.
 * - Events are `{ _tag }` on one side and `{ type }` on the other.
 * - "Delivered stops the instance" is `stop: true` here and a `final` state
 *   in XState; both then refuse further events.
 * - An XState snapshot also carries status, children, history and the
 *   machine reference, which `transition` rebuilds at each step;
 *   `Machine.step` returns only the decision and the new state.
 * - Neither side has actions or timers: effect-fsm's timeouts and XState's
 *   `after` need a runtime with timers and are not what these benches measure.
 */
import { Schema } from "effect"
import { Machine } from "effect-fsm"
import { assign, createMachine } from "xstate"

// ---------------------------------------------------------------------------
// effect-fsm
// ---------------------------------------------------------------------------

export const OrderState = Schema.Union(
  Schema.TaggedStruct("Pending", { orderId: Schema.String }),
  Schema.TaggedStruct("Paid", { orderId: Schema.String, amount: Schema.Number }),
  Schema.TaggedStruct("Shipped", { orderId: Schema.String, amount: Schema.Number, tracking: Schema.String }),
  Schema.TaggedStruct("Delivered", { orderId: Schema.String, amount: Schema.Number, tracking: Schema.String }),
  Schema.TaggedStruct("Cancelled", { orderId: Schema.String, reason: Schema.String })
)
export type OrderState = typeof OrderState.Type

export const OrderEvent = Schema.Union(
  Schema.TaggedStruct("Pay", { amount: Schema.Number }),
  Schema.TaggedStruct("Ship", { tracking: Schema.String }),
  Schema.TaggedStruct("Deliver", {}),
  Schema.TaggedStruct("Cancel", { reason: Schema.String })
)
export type OrderEvent = typeof OrderEvent.Type

export const Order = Machine.make({
  name: "bench-order",
  version: 1,
  state: OrderState,
  event: OrderEvent,
  transitions: {
    Pending: {
      Pay: { to: "Paid", guard: (_, e) => e.amount > 0, build: (s, e) => ({ orderId: s.orderId, amount: e.amount }) }
    },
    Paid: {
      Ship: { to: "Shipped", build: (s, e) => ({ orderId: s.orderId, amount: s.amount, tracking: e.tracking }) }
    },
    Shipped: {
      Deliver: {
        to: "Delivered",
        stop: true,
        build: (s) => ({ orderId: s.orderId, amount: s.amount, tracking: s.tracking })
      }
    },
    Cancelled: { Cancel: Machine.stay }
  },
  groups: (group) => [
    group(["Pending", "Paid"], ["Cancel"], { to: "Cancelled", build: (s, e) => ({ orderId: s.orderId, reason: e.reason }) })
  ]
})

// ---------------------------------------------------------------------------
// XState v5
// ---------------------------------------------------------------------------

export interface XOrderContext {
  readonly orderId: string
  readonly amount: number | null
  readonly tracking: string | null
  readonly reason: string | null
}

export type XOrderEvent =
  | { readonly type: "Pay"; readonly amount: number }
  | { readonly type: "Ship"; readonly tracking: string }
  | { readonly type: "Deliver" }
  | { readonly type: "Cancel"; readonly reason: string }

export const xOrder = createMachine({
  id: "bench-order",
  types: {} as { context: XOrderContext; events: XOrderEvent; input: { orderId: string } },
  // `?.`: XState also evaluates this without input, for the throw-away actor
  // behind every pure `transition` call; a throw there would slow it down.
  context: ({ input }) => ({ orderId: input?.orderId ?? "", amount: null, tracking: null, reason: null }),
  initial: "Pending",
  states: {
    Pending: {
      on: {
        Pay: {
          target: "Paid",
          guard: ({ event }) => event.amount > 0,
          actions: assign({ amount: ({ event }) => event.amount })
        },
        Cancel: { target: "Cancelled", actions: assign({ reason: ({ event }) => event.reason }) }
      }
    },
    Paid: {
      on: {
        Ship: { target: "Shipped", actions: assign({ tracking: ({ event }) => event.tracking }) },
        Cancel: { target: "Cancelled", actions: assign({ reason: ({ event }) => event.reason }) }
      }
    },
    Shipped: {
      on: { Deliver: { target: "Delivered" } }
    },
    Delivered: { type: "final" },
    Cancelled: {
      // A targetless transition: the event is taken and nothing changes.
      on: { Cancel: {} }
    }
  }
})

// ---------------------------------------------------------------------------
// The workload both benches drive
// ---------------------------------------------------------------------------

/** One order's id, initial state and events (Pay, Ship, Deliver) on both sides. */
export interface OrderScript {
  readonly orderId: string
  readonly initial: OrderState
  readonly events: ReadonlyArray<OrderEvent>
  readonly xInput: { readonly orderId: string }
  readonly xEvents: ReadonlyArray<XOrderEvent>
}

/** The happy path for `count` orders: every order ends `Delivered`. */
export const orderScripts = (count: number): ReadonlyArray<OrderScript> =>
  Array.from({ length: count }, (_, i) => {
    const orderId = `order-${i}`
    const amount = 1 + (i % 500)
    const tracking = `TRK-${i}`
    return {
      orderId,
      initial: { _tag: "Pending", orderId },
      events: [{ _tag: "Pay", amount }, { _tag: "Ship", tracking }, { _tag: "Deliver" }],
      xInput: { orderId },
      xEvents: [{ type: "Pay", amount }, { type: "Ship", tracking }, { type: "Deliver" }]
    }
  })

/** Events per order in `orderScripts`. */
export const eventsPerOrder = 3
