/**
 * Pure transitions per second: `Machine.step` against XState v5's pure
 * `transition(machine, snapshot, event)`, on the same orders and events
 * (see `order-machines.ts`). Initial states and snapshots are built before
 * the timed region on both sides; the timed region applies Pay, Ship,
 * Deliver to every order, as many rounds as fill `--min-ms`.
 *
 *   npm run bench -- step [--orders 10000] [--reps 5] [--warmup 2] [--min-ms 300]
 *
 * Prints `BENCH step.pure value=<Machine.step ops/s> unit=ops/s baseline=<XState ops/s> ratio=<value/baseline>`.
 *
 * Most of the time of XState's `transition` goes into the throw-away actor
 * it creates for every call (`createInertActorScope`). So that the figure is
 * not read as more than it is, a second line, `step.pure.reused_scope`,
 * compares against `machine.transition(snapshot, event, scope)` with one
 * actor scope built once and reused: XState's cheapest pure path, though
 * the scope is not a documented public construction.
 */
import { Machine } from "effect-fsm"
import { type AnyActorScope, createActor, initialTransition, type SnapshotFrom, transition } from "xstate"
import { eventsPerOrder, Order, type OrderState, orderScripts, xOrder } from "./order-machines.js"
import { commonFlags, isMain, measureThroughput, parseFlags, printBench, progress, type Sample } from "./run.js"

type XSnapshot = SnapshotFrom<typeof xOrder>

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const flags = parseFlags("step", args, {
    ...commonFlags,
    orders: { default: 10_000, description: "orders per round, each taking Pay, Ship, Deliver" },
    "min-ms": { default: 300, description: "minimum duration of one timed sample" }
  })
  const scripts = orderScripts(flags.orders)
  const fsmInitial = scripts.map((s) => s.initial)
  const fsmEvents = scripts.map((s) => s.events)
  const xInitial = scripts.map((s) => initialTransition(xOrder, s.xInput)[0])
  const xEvents = scripts.map((s) => s.xEvents)
  const n = scripts.length

  // One round over every order; returns how many ended Delivered, which is
  // both the correctness check and what keeps the JIT from dropping the work.
  const fsmRound = (): number => {
    let delivered = 0
    for (let i = 0; i < n; i++) {
      let state: OrderState = fsmInitial[i]!
      const events = fsmEvents[i]!
      for (let j = 0; j < events.length; j++) {
        const decision = Machine.step(Order, state, events[j]!)
        if (decision._tag !== "Rejected" && decision._tag !== "Failed") state = decision.state
      }
      if (state._tag === "Delivered") delivered++
    }
    return delivered
  }
  // What `createInertActorScope` builds for each `transition` call, once.
  const scopeOwner = createActor(xOrder, { input: { orderId: "scope" } })
  const reusedScope: AnyActorScope = {
    self: scopeOwner,
    id: "",
    sessionId: "",
    logger: () => {},
    defer: () => {},
    emit: () => {},
    system: scopeOwner.system,
    stopChild: () => {},
    actionExecutor: () => {}
  }
  const xReusedRound = (): number => {
    let delivered = 0
    for (let i = 0; i < n; i++) {
      let snapshot: XSnapshot = xInitial[i]!
      const events = xEvents[i]!
      for (let j = 0; j < events.length; j++) {
        snapshot = xOrder.transition(snapshot, events[j]!, reusedScope)
      }
      if (snapshot.value === "Delivered" && snapshot.status === "done") delivered++
    }
    return delivered
  }
  const xRound = (): number => {
    let delivered = 0
    for (let i = 0; i < n; i++) {
      let snapshot: XSnapshot = xInitial[i]!
      const events = xEvents[i]!
      for (let j = 0; j < events.length; j++) {
        snapshot = transition(xOrder, snapshot, events[j]!)[0]
      }
      if (snapshot.value === "Delivered" && snapshot.status === "done") delivered++
    }
    return delivered
  }

  // Same outcome on both sides before anything is timed.
  const fsmFinal = Array.from({ length: n }, (_, i) =>
    fsmEvents[i]!.reduce<OrderState>((s, e) => {
      const d = Machine.step(Order, s, e)
      return d._tag === "Rejected" || d._tag === "Failed" ? s : d.state
    }, fsmInitial[i]!))
  const xFinal = xInitial.map((snap, i) => xEvents[i]!.reduce((s, e) => transition(xOrder, s, e)[0], snap))
  for (let i = 0; i < n; i++) {
    const f = fsmFinal[i]!
    const x = xFinal[i]!
    if (
      f._tag !== "Delivered" || x.value !== "Delivered" || f.orderId !== x.context.orderId ||
      f.amount !== x.context.amount || f.tracking !== x.context.tracking
    ) {
      throw new Error(`order ${i}: the two machines disagree: ${JSON.stringify(f)} vs ${JSON.stringify(x.context)}`)
    }
  }

  // Enough rounds per sample that each lasts at least --min-ms (timer
  // resolution and loop overhead then do not matter); found once per side.
  const roundsFor = (round: () => number): number => {
    let rounds = 1
    for (;;) {
      const t0 = performance.now()
      for (let r = 0; r < rounds; r++) round()
      const ms = performance.now() - t0
      if (ms >= flags["min-ms"]) return rounds
      rounds = Math.max(rounds + 1, Math.ceil((rounds * flags["min-ms"] * 1.1) / Math.max(ms, 0.01)))
    }
  }
  const sampler = (round: () => number, rounds: number) => (): Sample => {
    let delivered = 0
    const t0 = performance.now()
    for (let r = 0; r < rounds; r++) delivered += round()
    const ms = performance.now() - t0
    if (delivered !== rounds * n) throw new Error(`expected ${rounds * n} deliveries, got ${delivered}`)
    return { ops: rounds * n * eventsPerOrder, ms }
  }
  const fsmRounds = roundsFor(fsmRound)
  const xRounds = roundsFor(xRound)
  const xReusedRounds = roundsFor(xReusedRound)
  progress(
    `step: ${n} orders x ${eventsPerOrder} events; rounds per sample: Machine.step ${fsmRounds}, ` +
      `XState transition ${xRounds}, XState machine.transition ${xReusedRounds}`
  )

  const result = await measureThroughput({
    label: "step.pure",
    reps: flags.reps,
    warmup: flags.warmup,
    samplers: {
      "Machine.step": sampler(fsmRound, fsmRounds),
      "xstate.transition": sampler(xRound, xRounds),
      "xstate.machine.transition": sampler(xReusedRound, xReusedRounds)
    }
  })
  printBench("step.pure", { value: result["Machine.step"], unit: "ops/s", baseline: result["xstate.transition"] })
  printBench("step.pure.reused_scope", {
    value: result["Machine.step"],
    unit: "ops/s",
    baseline: result["xstate.machine.transition"]
  })
}

if (isMain(import.meta.url)) await main(process.argv.slice(2))
