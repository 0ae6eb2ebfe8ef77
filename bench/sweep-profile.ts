/**
 * Not a benchmark of record: one process drains a backlog of due timers on
 * PostgreSQL (or SQLite, `BACKEND=sqlite`) with the durable sweeper, for
 * profiling. From the environment: `TIMERS`, `CONCURRENCY`, `SPANS=1` (time
 * per span name), `PROFILE=<file>` (a CPU profile of the sweep alone),
 * `UNTRACED=1` (the runtime's `disableTracing`), `OPS=1` (Effect operations
 * per timer, counted by a scheduler whose `shouldYield`, asked once per
 * operation, counts). It prints the process's CPU time per timer beside the
 * wall time, and the commit groups the sweep formed.
 */
import { Context, Duration, Effect, identity, Layer, Metric, Option, Scheduler, Schema, Tracer } from "effect"
import * as SqlClient from "@effect/sql/SqlClient"
import { FSMRuntime, Machine, Metrics, SqlEventStore, TimeoutStrategy } from "effect-fsm"
import * as fs from "node:fs"
import * as inspector from "node:inspector"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import { freshPgSchema, pgClientLayer, runScript, tempSqliteFile } from "./db.js"

const Tick = Machine.make({
  name: "bench-tick",
  version: 1,
  state: Schema.Union(Schema.TaggedStruct("Waiting", {}), Schema.TaggedStruct("Expired", {})),
  event: Schema.Union(Schema.TaggedStruct("Expire", {})),
  initial: { _tag: "Waiting" },
  transitions: { Waiting: { Expire: { to: "Expired", build: () => ({}) } } },
  timeouts: { Waiting: { expire: { after: Duration.millis(1), event: { _tag: "Expire" } } } }
})

/** Span durations by name (SPANS=1): where a delivery's time goes. */
const spans = new Map<string, { n: number; total: number }>()
const tracer = Tracer.make({
  span: (name, parent, context, links, startTime, kind) => {
    const span: Tracer.Span = {
      _tag: "Span", name, spanId: Math.random().toString(36), traceId: "t", parent, context, status: { _tag: "Started", startTime },
      attributes: new Map(), links, sampled: true, kind,
      end: (endTime) => {
        const entry = spans.get(name) ?? { n: 0, total: 0 }
        entry.n++
        entry.total += Number(endTime - startTime) / 1e6
        spans.set(name, entry)
      },
      attribute: () => {}, event: () => {}, addLinks: () => {}
    }
    return span
  },
  context: (f) => f()
})
void Option

const timers = Number(process.env["TIMERS"] ?? 5000)
// The sweeper's default delivery concurrency unless CONCURRENCY says otherwise.
const concurrency = process.env["CONCURRENCY"] === undefined ? undefined : Number(process.env["CONCURRENCY"])

await runScript(Effect.scoped(Effect.gen(function*() {
  // BACKEND=sqlite: a temporary SQLite file instead of a PostgreSQL schema.
  const client: Layer.Layer<SqlClient.SqlClient, unknown> = process.env["BACKEND"] === "sqlite"
    ? SqliteEventStore.layerClient({ filename: yield* tempSqliteFile })
    : pgClientLayer({ schema: yield* freshPgSchema, maxConnections: 10 })
  const store = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(client)))
  const sql = Context.get(store, SqlClient.SqlClient)
  const writer = Context.get(yield* Layer.build(FSMRuntime.layer({ machines: [Tick], nodeId: "w", cacheSize: 1 }).pipe(
    Layer.provide(TimeoutStrategy.layerDurable({ sweep: false })),
    Layer.provide(Layer.succeedContext(store))
  )), FSMRuntime.FSMRuntime)
  yield* Effect.forEach(Array.from({ length: timers }, (_, i) => i), (i) => writer.create(Tick, `t${i}`), { concurrency: 32, discard: true })
  yield* Effect.sleep("50 millis")
  // PROFILE=<file>: a CPU profile of the sweep alone.
  const profileTo = process.env["PROFILE"]
  const session = new inspector.Session()
  if (profileTo !== undefined) {
    session.connect()
    yield* Effect.promise(() => new Promise<void>((resolve) => session.post("Profiler.enable", () => session.post("Profiler.start", () => resolve()))))
  }
  const groupsBefore = yield* Metric.value(Metrics.commitGroupSize)
  let ops = 0
  const counting: Scheduler.Scheduler = {
    scheduleTask: (task, priority) => Scheduler.defaultScheduler.scheduleTask(task, priority),
    shouldYield: (fiber) => {
      ops++
      return Scheduler.defaultScheduler.shouldYield(fiber)
    }
  }
  const start = Date.now()
  const cpuBefore = process.cpuUsage()
  yield* Layer.build(FSMRuntime.layer({ machines: [Tick], nodeId: "s", disableTracing: process.env["UNTRACED"] === "1" }).pipe(
    Layer.provide(TimeoutStrategy.layerDurable(concurrency === undefined ? {} : { concurrency })),
    Layer.provide(Layer.succeedContext(store))
  )).pipe(process.env["OPS"] === "1" ? Effect.withScheduler(counting) : identity)
  while (true) {
    const rows = yield* sql<{ n: unknown }>`SELECT COUNT(*) AS n FROM fsm_timers`
    if (Number(rows[0]!.n) === 0) break
    yield* Effect.sleep("20 millis")
  }
  const took = Date.now() - start
  const cpu = process.cpuUsage(cpuBefore)
  if (profileTo !== undefined) {
    yield* Effect.promise(() =>
      new Promise<void>((resolve) =>
        session.post("Profiler.stop", (_error, result) => {
          fs.writeFileSync(profileTo, JSON.stringify(result.profile))
          resolve()
        })
      )
    )
  }
  console.log(`${timers} timers, concurrency ${concurrency ?? "default"}: ${took} ms = ${Math.round(timers / took * 1000)}/s`)
  console.log(`CPU time ${Math.round((cpu.user + cpu.system) / 1000)} ms (every thread), ${Math.round((cpu.user + cpu.system) / timers)} us per timer`)
  const groupsAfter = yield* Metric.value(Metrics.commitGroupSize)
  const groups = groupsAfter.count - groupsBefore.count
  console.log(`${groups} commit groups, ${((groupsAfter.sum - groupsBefore.sum) / Math.max(1, groups)).toFixed(1)} commits each`)
  if (process.env["OPS"] === "1") console.log(`${(ops / timers).toFixed(1)} Effect operations per timer`)
  for (const [name, { n, total }] of [...spans].sort((a, b) => b[1].total - a[1].total).slice(0, 25)) {
    console.log(`${name.padEnd(40)} n=${String(n).padStart(6)} avg=${(total / n).toFixed(3)} ms`)
  }
})).pipe(process.env["SPANS"] === "1" ? Effect.withTracer(tracer) : (x) => x))
