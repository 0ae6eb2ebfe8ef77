/**
 * OpenTelemetry for a runtime: `@effect/opentelemetry`'s `NodeSdk.layer`
 * turns the engine's spans (`FSMRuntime.send`, `FSMRuntime.recover`, `FSMRuntime.deliverTimeout`, ...) into OTel spans and
 * its `Metrics` (`fsm_transitions`, `fsm_timeouts_fired`, ...) into OTel
 * metrics. The program creates two orders, pays one, lets the other's
 * payment timeout fire, and prints the span tree and a few metrics.
 *
 * `npx tsx --conditions=@effect-fsm/source examples/otel.ts` keeps spans and
 * metrics in memory and prints them; add `--console` to also have the
 * OpenTelemetry console exporters print each span and the metrics as they
 * are exported.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { AggregationTemporality, ConsoleMetricExporter, InMemoryMetricExporter, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base"
import { ConsoleSpanExporter, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Console, Duration, Effect, Layer, Schema } from "effect"
import { EventStore, FSMRuntime, Machine } from "effect-fsm"

const State = Schema.Union(
  Schema.TaggedStruct("Pending", { orderId: Schema.String }),
  Schema.TaggedStruct("Paid", { orderId: Schema.String, amount: Schema.Number }),
  Schema.TaggedStruct("Cancelled", { orderId: Schema.String, reason: Schema.String })
)
const Event = Schema.Union(
  Schema.TaggedStruct("Pay", { amount: Schema.Number }),
  Schema.TaggedStruct("PaymentTimeout", {})
)

/** How long an order waits for its payment here: short, so that the example sees it fire. */
export const paymentWindow = Duration.seconds(1)

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
  timeouts: { Pending: { payment: { after: paymentWindow, event: { _tag: "PaymentTimeout" } } } }
})

/**
 * The telemetry: spans kept in memory (to print their tree) and, with
 * `console`, printed by the console exporter as they end; metrics read by a
 * reader that exports them to memory (or the console) when flushed, and that
 * `collect()` reads on demand.
 */
export const makeTelemetry = (options: { readonly console?: boolean } = {}) => {
  const spans = new InMemorySpanExporter()
  const exporters: Array<SpanExporter> = options.console === true ? [spans, new ConsoleSpanExporter()] : [spans]
  const metrics = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const metricReader = new PeriodicExportingMetricReader({
    exporter: options.console === true ? new ConsoleMetricExporter() : metrics,
    exportIntervalMillis: 60_000
  })
  const layer = NodeSdk.layer(() => ({
    resource: { serviceName: "effect-fsm-example" },
    spanProcessor: exporters.map((exporter) => new SimpleSpanProcessor(exporter)),
    metricReader
  }))
  return { layer, spans, metrics, metricReader }
}

/** The runtime on the in-memory store, with in-process timers. */
export const RuntimeLive = FSMRuntime.layer({ machines: [Order] }).pipe(Layer.provide(EventStore.layerMemory))

/**
 * Two orders: one paid, one left to its payment timeout. `wait` is how time
 * passes (`Effect.sleep` when run as a program; a test passes
 * `TestClock.adjust`).
 */
export const program = (wait: (duration: Duration.Duration) => Effect.Effect<void> = Effect.sleep) =>
  Effect.gen(function*() {
    const orders = yield* FSMRuntime.client(Order)
    yield* orders.create("order-1", { _tag: "Pending", orderId: "order-1" })
    const paid = yield* orders.send("order-1", { _tag: "Pay", amount: 42 })
    const refused = yield* Effect.flip(orders.send("order-1", { _tag: "Pay", amount: 1 }))
    yield* orders.create("order-2", { _tag: "Pending", orderId: "order-2" })
    yield* wait(Duration.sum(paymentWindow, Duration.millis(100)))
    // The timeout is delivered in a fiber of its own: look until it has landed.
    const cancelled = yield* orders.state("order-2").pipe(
      Effect.zipLeft(Effect.yieldNow()),
      Effect.repeat({ until: (state) => state._tag === "Cancelled", times: 1_000 })
    )
    // Reloading an instance from the log is a recovery.
    yield* Effect.flatMap(FSMRuntime.FSMRuntime, (runtime) => runtime.evictAll)
    const reloaded = yield* orders.inspect("order-1")
    const history = yield* orders.history("order-1")
    return { paid, refused: refused._tag, cancelled, reloaded: reloaded.state, history: history.length }
  })

/** The spans as an indented tree, children under their parent, with the attributes that say which instance. */
export const spanTree = (spans: ReadonlyArray<ReadableSpan>): string => {
  const ids = new Set(spans.map((span) => span.spanContext().spanId))
  const children = new Map<string | undefined, Array<ReadableSpan>>()
  for (const span of spans) {
    const parent = span.parentSpanContext?.spanId
    const key = parent !== undefined && ids.has(parent) ? parent : undefined
    children.set(key, [...(children.get(key) ?? []), span])
  }
  const lines: Array<string> = []
  const shown = ["machine", "instanceId", "event", "seqNr", "outcome", "timer", "result"]
  const walk = (parent: string | undefined, depth: number) => {
    const level = [...(children.get(parent) ?? [])].sort((a, b) =>
      a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1]
    )
    for (const span of level) {
      const attributes = shown.flatMap((key) => span.attributes[key] === undefined ? [] : [`${key}=${String(span.attributes[key])}`])
      lines.push(`${"  ".repeat(depth)}${span.name}${attributes.length > 0 ? ` (${attributes.join(", ")})` : ""}`)
      walk(span.spanContext().spanId, depth + 1)
    }
  }
  walk(undefined, 0)
  return lines.join("\n")
}

/** The data points of the effect-fsm metrics the reader collects now, one line each. */
export const metricLines = (reader: PeriodicExportingMetricReader) =>
  Effect.map(Effect.promise(() => reader.collect()), ({ resourceMetrics }) =>
    resourceMetrics.scopeMetrics.flatMap((scope) =>
      scope.metrics.filter((metric) => metric.descriptor.name.startsWith("fsm_")).flatMap((metric) =>
        metric.dataPoints.map((point) => {
          const tags = Object.entries(point.attributes).map(([key, value]) => `${key}=${String(value)}`).join(", ")
          const value = typeof point.value === "number" ? point.value : `count ${(point.value as { count: number }).count}`
          return `${metric.descriptor.name}${tags.length > 0 ? `{${tags}}` : ""} ${value}`
        })
      )
    ))

if (import.meta.url === `file://${process.argv[1]}`) {
  const telemetry = makeTelemetry({ console: process.argv.includes("--console") })
  Effect.gen(function*() {
    const result = yield* program().pipe(Effect.provide(RuntimeLive))
    yield* Console.log(result)
    yield* Console.log(`\nspans:\n${spanTree(telemetry.spans.getFinishedSpans())}`)
    yield* Console.log(`\nmetrics:\n${(yield* metricLines(telemetry.metricReader)).join("\n")}`)
  }).pipe(Effect.provide(telemetry.layer), Effect.runPromise)
}
