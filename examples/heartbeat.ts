/**
 * A service monitor driven by missed heartbeats.
 *
 *   Healthy --10 s without a heartbeat--> Degraded --3 s--> Critical --15 s--> Down
 *
 * A heartbeat in Healthy re-enters Healthy (`reenter: true`), which restarts
 * the 10-second timer: the machine says so explicitly. In Degraded and
 * Critical a heartbeat is counted but does not extend the running escalation
 * timer; three in a row bring the service back to Healthy. Timeouts are
 * durable: run it with `npx tsx examples/heartbeat.ts` (SQLite) or with
 * `--pg` to watch two runtimes (two "nodes") share one PostgreSQL database,
 * each timeout fired once by whichever node's sweeper claims it.
 */
import { Console, Effect, Layer, Logger, LogLevel, Schedule, Schema } from "effect"
import { type EventStore, FSMRuntime, Machine, type TimeoutStore, TimeoutStrategy } from "effect-fsm"
import * as PgEventStore from "effect-fsm/PgEventStore"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import * as fs from "node:fs"
import { resetPgTables } from "./pgDemo.js"
import { pathToFileURL } from "node:url"

const Monitored = { service: Schema.String, beats: Schema.Number }

export const HeartbeatState = Schema.Union(
  Schema.TaggedStruct("Healthy", Monitored),
  Schema.TaggedStruct("Degraded", Monitored),
  Schema.TaggedStruct("Critical", Monitored),
  Schema.TaggedStruct("Down", Monitored)
)
export type HeartbeatState = typeof HeartbeatState.Type

export const HeartbeatEvent = Schema.Union(
  Schema.TaggedStruct("Heartbeat", {}),
  Schema.TaggedStruct("Missed", {}),
  Schema.TaggedStruct("Escalate", {}),
  Schema.TaggedStruct("GiveUp", {})
)
export type HeartbeatEvent = typeof HeartbeatEvent.Type

/** Heartbeats in a row that bring a degraded or critical service back. */
export const recoveryBeats = 3

const beat = (s: { readonly service: string; readonly beats: number }) => ({ service: s.service, beats: s.beats + 1 })
const reset = (s: { readonly service: string }) => ({ service: s.service, beats: 0 })

export const Heartbeat = Machine.make({
  name: "heartbeat",
  version: 1,
  state: HeartbeatState,
  event: HeartbeatEvent,
  transitions: {
    // The only place a heartbeat restarts a timer: re-entering Healthy.
    Healthy: { Heartbeat: { to: "Healthy", reenter: true, build: beat }, Missed: { to: "Degraded", build: reset } },
    Degraded: {
      Heartbeat: [
        { to: "Healthy", guard: (s) => s.beats + 1 >= recoveryBeats, build: reset },
        { to: "Degraded", build: beat } // same state, no reenter: the escalation timer keeps its deadline
      ],
      Escalate: { to: "Critical", build: reset }
    },
    Critical: {
      Heartbeat: [
        { to: "Healthy", guard: (s) => s.beats + 1 >= recoveryBeats, build: reset },
        { to: "Critical", build: beat }
      ],
      GiveUp: { to: "Down", build: reset }
    },
    Down: { Heartbeat: { to: "Healthy", build: reset } }
  },
  timeouts: {
    Healthy: { missed: { after: "10 seconds", event: { _tag: "Missed" } } },
    Degraded: { escalate: { after: "3 seconds", event: { _tag: "Escalate" } } },
    Critical: { giveUp: { after: "15 seconds", event: { _tag: "GiveUp" } } }
  }
})

/** A runtime ("node") with durable timeouts over the given store layer. */
export const nodeLayer = <E>(
  store: Layer.Layer<EventStore.EventStore | TimeoutStore.TimeoutStore, E>,
  nodeId: string
) =>
  FSMRuntime.layer({ machines: [Heartbeat], nodeId }).pipe(
    Layer.provide(TimeoutStrategy.layerDurable({ pollInterval: "250 millis" })),
    Layer.provide(store)
  )

const main = (pg: boolean) =>
  Effect.gen(function*() {
    const prefix = "heartbeat_demo_"
    if (pg) yield* resetPgTables(prefix)
    else for (const suffix of ["", "-wal", "-shm"]) fs.rmSync(`heartbeat.db${suffix}`, { force: true })
    // One store layer, built once and shared by both nodes, as one database is.
    const store = yield* Layer.memoize(
      pg ? PgEventStore.layerConfig({ tablePrefix: prefix }) : SqliteEventStore.layer({ filename: "heartbeat.db" })
    )
    const a = yield* Layer.build(nodeLayer(store, "node-a"))
    const b = yield* Layer.build(nodeLayer(store, "node-b"))
    const onA = <X, Er>(effect: Effect.Effect<X, Er, FSMRuntime.FSMRuntime>) => Effect.provide(effect, a)
    const onB = <X, Er>(effect: Effect.Effect<X, Er, FSMRuntime.FSMRuntime>) => Effect.provide(effect, b)
    yield* Console.log(`two nodes on ${pg ? "PostgreSQL" : "SQLite heartbeat.db"}; "api" beats for 3 s, then goes silent`)
    yield* onA(FSMRuntime.create(Heartbeat, "api", { _tag: "Healthy", service: "api", beats: 0 }))
    yield* Effect.repeat(
      onB(FSMRuntime.send(Heartbeat, "api", { _tag: "Heartbeat" })),
      Schedule.spaced("1 second").pipe(Schedule.intersect(Schedule.recurs(2)))
    )
    let last = ""
    for (let i = 0; i < 120; i++) {
      const view = yield* onA(Effect.flatMap(FSMRuntime.FSMRuntime, (r) => r.inspect(Heartbeat, "api")))
      if (view.state._tag !== last) {
        last = view.state._tag
        yield* Console.log(`  ${new Date().toISOString().slice(11, 23)}  api is ${last}`)
      }
      if (last === "Down") break
      yield* Effect.sleep("250 millis")
    }
    const history = yield* onA(Effect.flatMap(FSMRuntime.FSMRuntime, (r) => r.history(Heartbeat, "api")))
    for (const entry of history) {
      const what = entry._tag === "Event" ? entry.event._tag : entry._tag
      yield* Console.log(
        `    #${entry.seqNr} ${what.padEnd(9)} ${entry.metadata.source.padEnd(7)} by ${entry.metadata.node} -> ${entry.stateTag}`
      )
    }
  }).pipe(Effect.scoped)

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.includes("--pg")).pipe(Logger.withMinimumLogLevel(LogLevel.Warning), Effect.runPromise).catch(
    (error) => {
      console.error(error)
      process.exitCode = 1
    }
  )
}
