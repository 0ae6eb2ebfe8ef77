/**
 * In-memory durable sends per second: `FSMRuntime.send` over
 * `EventStore.layerMemory` against XState v5 `actor.send`, for the same
 * orders and events (see `order-machines.ts`).
 *
 * Each sample starts from nothing: a fresh store and runtime (or fresh
 * actors), then `--orders` instances are created, then every order is driven
 * through Pay, Ship, Deliver, one order after the other. Only the sends are
 * timed, on both sides: creation (`FSMRuntime.create`, which is a durable
 * write too, and `createActor(...).start()`) happens before the clock starts.
 * Both sides run sequentially in one thread; effect-fsm runs the whole sample
 * as one Effect program (`Effect.forEach`), so `runPromise` is paid once per
 * sample, not per send. The runtime's cache is sized to hold every order, so
 * this measures the hot path (no reload from the store).
 *
 *   npm run bench -- send-memory [--orders 5000] [--reps 5] [--warmup 2]
 *
 * Prints
 *   BENCH send.memory value=<FSMRuntime sends/s> unit=ops/s baseline=<XState sends/s> ratio=<value/baseline>
 *   BENCH send.memory.snapshot_every_1 value=<snapshotEvery=1 sends/s> unit=ops/s baseline=<XState sends/s> ratio=...
 *   BENCH send.memory.untraced value=<disableTracing sends/s> unit=ops/s baseline=<XState sends/s> ratio=...
 *   BENCH send.memory.traced value=<sends/s with a tracer installed> unit=ops/s baseline=<XState sends/s> ratio=...
 * Spans are made only when a tracer is installed: `send.memory` runs with
 * Effect's default tracer (which exports nothing), as a program without
 * OpenTelemetry does; `send.memory.traced` installs one that keeps every
 * span, as an exporter would.
 * The second line writes a snapshot in every commit (encoding the state with
 * its Schema each time): the cost of snapshots at their most frequent. With
 * the default `snapshotEvery` (100) this workload of four records per order
 * never takes one, so the first line already is "snapshots disabled".
 */
import { Context, Effect, Layer, Tracer } from "effect"
import { EventStore, FSMRuntime } from "effect-fsm"
import { createActor } from "xstate"
import { eventsPerOrder, Order, type OrderState, orderScripts, xOrder } from "./order-machines.js"
import { commonFlags, isMain, measureThroughput, parseFlags, printBench, progress, type Sample } from "./run.js"

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const flags = parseFlags("send-memory", args, {
    ...commonFlags,
    orders: { default: 5_000, description: "instances per sample, each taking Pay, Ship, Deliver" }
  })
  const scripts = orderScripts(flags.orders)
  const ops = scripts.length * eventsPerOrder

  /** A tracer that keeps every span (a count of them), as an exporter would: spans are made only when one is installed. */
  let spansEnded = 0
  const keepingTracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => ({
      _tag: "Span",
      name,
      spanId: "s",
      traceId: "t",
      parent,
      context,
      status: { _tag: "Started", startTime },
      attributes: new Map(),
      links,
      sampled: true,
      kind,
      end: () => void spansEnded++,
      attribute: () => {},
      event: () => {},
      addLinks: () => {}
    }),
    context: (f) => f()
  })

  const effectFsm = (snapshotEvery: number | undefined, disableTracing = false, traced = false) => (): Promise<Sample> =>
    Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(
        FSMRuntime.layer({
          machines: [Order],
          cacheSize: Math.max(10_000, scripts.length),
          disableTracing,
          ...(snapshotEvery === undefined ? {} : { snapshotEvery })
        }).pipe(Layer.provide(EventStore.layerMemory))
      )
      const runtime = Context.get(context, FSMRuntime.FSMRuntime)
      yield* Effect.forEach(scripts, (s) => runtime.create(Order, s.orderId, s.initial), { discard: true })

      let delivered = 0
      const t0 = performance.now()
      yield* Effect.forEach(scripts, (s) =>
        Effect.reduce(
          s.events,
          undefined as FSMRuntime.Outcome<OrderState> | undefined,
          (_, event) => runtime.send(Order, s.orderId, event)
        ).pipe(Effect.map((last) => {
          if (last?._tag === "Stop" && last.state._tag === "Delivered") delivered++
        })), { discard: true })
      const ms = performance.now() - t0
      if (delivered !== scripts.length) throw new Error(`expected ${scripts.length} deliveries, got ${delivered}`)
      return { ops, ms }
    })).pipe(traced ? Effect.withTracer(keepingTracer) : (self) => self))

  const xstate = (): Sample => {
    const actors = scripts.map((s) => createActor(xOrder, { input: s.xInput }).start())
    let delivered = 0
    const t0 = performance.now()
    for (let i = 0; i < scripts.length; i++) {
      const actor = actors[i]!
      const events = scripts[i]!.xEvents
      for (let j = 0; j < events.length; j++) actor.send(events[j]!)
      const snapshot = actor.getSnapshot()
      if (snapshot.value === "Delivered" && snapshot.status === "done") delivered++
    }
    const ms = performance.now() - t0
    if (delivered !== scripts.length) throw new Error(`expected ${scripts.length} deliveries, got ${delivered}`)
    return { ops, ms }
  }

  progress(`send-memory: ${scripts.length} orders x ${eventsPerOrder} events per sample`)
  const result = await measureThroughput({
    label: "send.memory",
    reps: flags.reps,
    warmup: flags.warmup,
    samplers: {
      "FSMRuntime.send": effectFsm(undefined),
      "FSMRuntime.send(snapshotEvery=1)": effectFsm(1),
      "FSMRuntime.send(disableTracing)": effectFsm(undefined, true),
      "FSMRuntime.send(tracer installed)": effectFsm(undefined, false, true),
      "xstate.actor.send": xstate
    }
  })
  printBench("send.memory", { value: result["FSMRuntime.send"], unit: "ops/s", baseline: result["xstate.actor.send"] })
  printBench("send.memory.snapshot_every_1", {
    value: result["FSMRuntime.send(snapshotEvery=1)"],
    unit: "ops/s",
    baseline: result["xstate.actor.send"]
  })
  printBench("send.memory.untraced", {
    value: result["FSMRuntime.send(disableTracing)"],
    unit: "ops/s",
    baseline: result["xstate.actor.send"]
  })
  if (spansEnded === 0) throw new Error("the installed tracer kept no span")
  printBench("send.memory.traced", {
    value: result["FSMRuntime.send(tracer installed)"],
    unit: "ops/s",
    baseline: result["xstate.actor.send"]
  })
}

if (isMain(import.meta.url)) await main(process.argv.slice(2))
