/** The OpenTelemetry example: its spans and metrics reach the OTel SDK, in-process, on TestClock. */
import { describe, expect, it } from "@effect/vitest"
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base"
import { Effect, TestClock } from "effect"
import { makeTelemetry, metricLines, program, RuntimeLive, spanTree } from "../../examples/otel.js"

describe("examples/otel", () => {
  it.scoped("exports the engine's spans, nested, with machine, instanceId and seqNr, and its metrics", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(0)
      const telemetry = makeTelemetry()
      // Read inside the SDK's scope: its shutdown empties the in-memory span exporter.
      const { metrics, result, spans } = yield* Effect.gen(function*() {
        const result = yield* program((duration) => TestClock.adjust(duration)).pipe(Effect.provide(RuntimeLive))
        return { result, spans: telemetry.spans.getFinishedSpans(), metrics: yield* metricLines(telemetry.metricReader) }
      }).pipe(Effect.provide(telemetry.layer))
      expect(result.paid).toMatchObject({ _tag: "Goto", seqNr: 2 })
      expect(result.cancelled._tag).toBe("Cancelled")

      const named = (name: string) => spans.filter((span) => span.name === name)
      const byId = new Map(spans.map((span) => [span.spanContext().spanId, span]))
      const parentOf = (span: ReadableSpan) => {
        const id = span.parentSpanContext?.spanId
        return id === undefined ? undefined : byId.get(id)
      }
      for (
        const name of [
          "FSMRuntime.create",
          "FSMRuntime.send",
          "FSMRuntime.recover",
          "FSMRuntime.deliverTimeout",
          "FSMRuntime.inspect",
          "FSMRuntime.history"
        ]
      ) {
        expect(named(name).length, name).toBeGreaterThan(0)
      }
      // The accepted send: its attributes, the committed seqNr included.
      const send = named("FSMRuntime.send").find((span) => span.attributes.seqNr !== undefined)!
      expect(send.attributes).toMatchObject({ machine: "order", instanceId: "order-1", event: "Pay", seqNr: 2, outcome: "Goto" })
      // The timer: its delivery commits the timeout event, with the seqNr it committed.
      const delivery = named("FSMRuntime.deliverTimeout")[0]!
      expect(delivery.attributes).toMatchObject({ machine: "order", instanceId: "order-2", timer: "payment", seqNr: 2, result: "Fired" })
      // The reload after evictAll is a recovery inside the inspect.
      const recover = named("FSMRuntime.recover")[0]!
      expect(parentOf(recover)?.name).toBe("FSMRuntime.inspect")
      expect(recover.attributes).toMatchObject({ machine: "order", instanceId: "order-1", seqNr: 2, replayed: 2 })
      expect(spanTree(spans)).toContain("FSMRuntime.send (machine=order, instanceId=order-1, event=Pay, seqNr=2, outcome=Goto)")

      // The metrics, as the OTel reader collects them.
      expect(metrics).toContain("fsm_transitions{machine=order, outcome=Goto} 4")
      expect(metrics).toContain("fsm_transitions{machine=order, outcome=rejected} 1")
      expect(metrics).toContain("fsm_timeouts_fired 1")
    }))
})
