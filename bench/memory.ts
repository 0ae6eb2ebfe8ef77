/**
 * Memory and speed with many instances in one SQLite file.
 *
 * `--instances` (1,000,000) and 10,000 instances are written straight into a
 * fresh file (their `@created` rows, untimed). Then, in a process of its own
 * for each size, one runtime with `cacheSize: 10000` and durable timers sends
 * for `--seconds` (60) from 16 fibers, each to a random instance: `Ping`
 * moves an idle instance to `Waiting`, whose timeout brings it back after
 * 200 ms (so timers fire all along, spread over every instance). The process
 * samples its RSS every 100 ms.
 *
 * Prints:
 * - `memory.rss_1m` (MB): the peak RSS with `--instances`; baseline: the
 *   peak with 10,000 (ratio = baseline / value; the target is < 300 MB).
 * - `scale.send.sqlite` (sends/s): with `--instances`; baseline: with
 *   10,000 (target ratio ≥ 0.8).
 *
 *   npm run bench -- memory [--instances 1000000] [--seconds 60]
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, Layer, Random, Schema } from "effect"
import { FSMRuntime, Machine, SqlEventStore, TimeoutStrategy } from "effect-fsm"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { runScript } from "./db.js"
import { isMain, parseFlags, printBench, progress } from "./run.js"

export const Pinger = Machine.make({
  name: "pinger",
  version: 1,
  state: Schema.Union(Schema.TaggedStruct("Idle", {}), Schema.TaggedStruct("Waiting", {})),
  event: Schema.Union(Schema.TaggedStruct("Ping", {}), Schema.TaggedStruct("Rest", {})),
  transitions: {
    Idle: { Ping: "Waiting" },
    Waiting: { Ping: Machine.stay, Rest: "Idle" }
  },
  timeouts: { Waiting: { rest: { after: "200 millis", event: { _tag: "Rest" } } } }
})

/** Writes `count` idle instances into `filename` (a fresh file, migrated by the store layer). */
const fill = (filename: string, count: number) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(SqliteEventStore.layerClient({ filename }))))
    const sql = Context.get(context, SqlClient.SqlClient)
    yield* sql.unsafe(
      `WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < ${count})
       INSERT INTO fsm_events (machine, instance_id, seq_nr, tag, payload, state_tag, schema_version, ts, source)
       SELECT 'pinger', 'i' || x, 1, '@created', '{"_tag":"Idle"}', 'Idle', 1, 0, 'user' FROM seq`
    )
  }))

interface Result {
  readonly peakRssMb: number
  readonly sends: number
  readonly seconds: number
}

/** The measuring child: sends for `seconds` to random instances of `count`, sampling RSS. */
const child = (filename: string, count: number, seconds: number) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(
      FSMRuntime.layer({ machines: [Pinger], cacheSize: 10_000 }).pipe(
        Layer.provide(TimeoutStrategy.layerDurable({ pollInterval: "100 millis" })),
        Layer.provideMerge(SqliteEventStore.layer({ filename }))
      )
    )
    const runtime = Context.get(context, FSMRuntime.FSMRuntime)
    let peak = process.memoryUsage().rss
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss)
    }, 100)
    const deadline = Date.now() + seconds * 1000
    let sends = 0
    yield* Effect.forEach(Array.from({ length: 16 }), () =>
      Effect.gen(function*() {
        while (Date.now() < deadline) {
          const id = `i${(yield* Random.nextIntBetween(0, count)) + 1}`
          const sent = yield* Effect.either(runtime.send(Pinger, id, { _tag: "Ping" }))
          if (sent._tag === "Right") sends++
        }
      }), { concurrency: "unbounded", discard: true })
    clearInterval(sampler)
    return { peakRssMb: peak / 1024 / 1024, sends, seconds } satisfies Result
  }))

const measure = (filename: string, count: number, seconds: number): Result => {
  const out = execFileSync(
    process.execPath,
    ["--import", "tsx", fileURLToPath(import.meta.url), "--child", filename, String(count), String(seconds)],
    { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 20 }
  )
  return JSON.parse(out.trim().split("\n").pop()!) as Result
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const flags = parseFlags("memory", args, {
    instances: { default: 1_000_000, description: "instances in the large store" },
    seconds: { default: 60, description: "how long each size is driven" }
  })
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-memory-"))
  try {
    const results: Array<Result> = []
    for (const count of [10_000, flags.instances]) {
      const filename = path.join(directory, `${count}.db`)
      const started = performance.now()
      await runScript(fill(filename, count))
      progress(`memory: ${count} instances written in ${Math.round(performance.now() - started)} ms; driving for ${flags.seconds} s`)
      const result = measure(filename, count, flags.seconds)
      progress(
        `  ${count} instances: peak RSS ${result.peakRssMb.toFixed(0)} MB, ${Math.round(result.sends / result.seconds)} sends/s`
      )
      results.push(result)
    }
    const [small, large] = results as [Result, Result]
    const label = flags.instances === 1_000_000 ? "1m" : String(flags.instances)
    printBench(`memory.rss_${label}`, { value: large.peakRssMb, unit: "MB", baseline: small.peakRssMb, lowerIsBetter: true })
    printBench("scale.send.sqlite", {
      value: large.sends / large.seconds,
      unit: "sends/s",
      baseline: small.sends / small.seconds
    })
  } finally {
    fs.rmSync(directory, { recursive: true, force: true })
  }
}

if (isMain(import.meta.url)) {
  const at = process.argv.indexOf("--child")
  if (at >= 0) {
    const [filename, count, seconds] = process.argv.slice(at + 1)
    const result = await runScript(child(filename!, Number(count), Number(seconds)))
    process.stdout.write(`${JSON.stringify(result)}\n`)
    process.exit(0)
  } else {
    await main(process.argv.slice(2))
  }
}
