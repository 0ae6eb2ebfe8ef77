/**
 * Durable sends per second: `FSMRuntime.send` on SQLite
 * (`SqlEventStore.layer` over `SqliteEventStore.layerClient`, i.e.
 * `SqliteEventStore.layer`, on a temporary file) and on PostgreSQL
 * (`SqlEventStore.layer` over an `@effect/sql-pg` pool, in a schema created
 * and dropped by the script), with
 * 1, 8 and 64 instances driven at once, each one sequentially (Pay, Ship,
 * Deliver of the order machine of `order-machines.ts`; one durable commit
 * per send).
 *
 * Baseline, measured in the same run, alternating with it, at the same
 * concurrency and on the same client (the same connection for SQLite, the
 * same pool for PostgreSQL): raw single-row `INSERT`s, each its own
 * transaction, into a table shaped like the events table (same columns,
 * jsonb payload, primary key and index; `LIKE ... INCLUDING ALL` on
 * PostgreSQL), with the payloads the order workload commits. When `pgbench`
 * is on PATH, the same insert run by `pgbench -n -f <one insert> -c <n> -j 2
 * -T <s>` is printed as an extra line (it needs the pool closed, so it runs
 * after the PostgreSQL samples, not interleaved).
 *
 * A sample lasts `--ms` (the check is before each send or insert, the way
 * `pgbench -T` works); each one builds a fresh runtime on the shared store,
 * creates its instances before the clock starts (creation is a durable
 * write too, but not a send), then times the sends only. The runtime's cache
 * holds every instance, so this is the hot path: one `append` per send.
 *
 *   npm run bench -- durable-send [--ms 400] [--pgbench-seconds 1] [--reps 3] [--warmup 1]
 *
 * Prints, for SQLite and PostgreSQL at 1, 8 and 64:
 *   BENCH send.sqlite.c1 value=<sends/s> unit=ops/s baseline=<raw inserts/s, same concurrency> ratio=<value/baseline>
 *   BENCH send.pg.c8 ...
 *   BENCH raw.pgbench.c8 value=<pgbench tps> unit=ops/s baseline=0 ratio=0
 *   BENCH send.pg.c64.vs_pgbench8 value=<sends/s at 64> unit=ops/s baseline=<pgbench tps, 8 clients> ratio=...
 * and skips PostgreSQL (with a message) when it is not reachable.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, Layer } from "effect"
import { type EventStore, FSMRuntime, SqlEventStore, type TimeoutStore } from "effect-fsm"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import {
  findPgbench,
  freshPgSchema,
  pgbench,
  pgClientLayer,
  pgUnreachable,
  printNoBaseline,
  rawInserts,
  createRawTable,
  runScript,
  tempSqliteFile,
  timedWorkers
} from "./db.js"
import { Order, type OrderState, orderScripts } from "./order-machines.js"
import { commonFlags, isMain, measureThroughput, median, parseFlags, printBench, progress, type Sample } from "./run.js"

const concurrencies = [1, 8, 64] as const

/** The store layers' output, plus the client under it (for the raw baseline). */
type Store = Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore | SqlClient.SqlClient>

let sampleCounter = 0

/**
 * One sample of `FSMRuntime.send` at `concurrency`: a fresh runtime over
 * `store`, `orders` instances created untimed, then `concurrency` fibers
 * each driving one order at a time through its three events until `ms`
 * have passed or the orders run out.
 */
const sendSample = (
  store: Store,
  options: { readonly concurrency: number; readonly ms: number; readonly orders: number; readonly createConcurrency: number }
): Effect.Effect<Sample & { readonly ranOut: boolean }, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(
      FSMRuntime.layer({ machines: [Order], cacheSize: Math.max(10_000, options.orders) }).pipe(
        Layer.provide(Layer.succeedContext(store))
      )
    )
    const runtime = Context.get(context, FSMRuntime.FSMRuntime)
    const k = ++sampleCounter
    const scripts = orderScripts(options.orders).map((s) => {
      const orderId = `s${k}-${s.orderId}`
      return { orderId, initial: { ...s.initial, orderId } as OrderState, events: s.events }
    })
    yield* Effect.forEach(scripts, (s) => runtime.create(Order, s.orderId, s.initial), {
      concurrency: options.createConcurrency,
      discard: true
    })
    let next = 0
    let ranOut = false
    const current: Array<{ script: (typeof scripts)[number]; position: number } | undefined> = []
    const sample = yield* timedWorkers(options.concurrency, options.ms, (w) =>
      Effect.suspend(() => {
        let slot = current[w]
        if (slot === undefined || slot.position === slot.script.events.length) {
          const script = scripts[next++]
          if (script === undefined) {
            ranOut = true
            return Effect.succeed(false)
          }
          slot = current[w] = { script, position: 0 }
        }
        const position = slot.position++
        const last = position === slot.script.events.length - 1
        return Effect.flatMap(runtime.send(Order, slot.script.orderId, slot.script.events[position]!), (outcome) =>
          last && !(outcome._tag === "Stop" && outcome.state._tag === "Delivered")
            ? Effect.dieMessage(`${slot.script.orderId}: expected Delivered, got ${outcome.state._tag}`)
            : Effect.succeed(true))
      }))
    return { ...sample, ranOut }
  }))

/**
 * Measures one backend at every concurrency: runtime sends against raw
 * inserts, interleaved by `measureThroughput`. Returns the medians.
 */
const measureBackend = (options: {
  readonly name: "sqlite" | "pg"
  readonly store: Store
  readonly sql: SqlClient.SqlClient
  readonly rawTable: string
  readonly ms: number
  readonly reps: number
  readonly warmup: number
  /** First guess of the send rate, to size the first sample's instances. */
  readonly guess: number
}) =>
  Effect.gen(function*() {
    const results: Array<{ readonly concurrency: number; readonly send: number; readonly raw: number }> = []
    for (const concurrency of concurrencies) {
      let rate = options.guess
      const samplers = {
        "FSMRuntime.send": () =>
          Effect.runPromise(
            Effect.map(
              sendSample(options.store, {
                concurrency,
                ms: options.ms,
                // Enough instances for 1.5x the last rate seen (3 sends each), plus one per fiber.
                orders: Math.ceil((rate * options.ms * 1.5) / 1000 / 3) + concurrency,
                createConcurrency: options.name === "pg" ? 32 : 1
              }),
              (sample) => {
                rate = sample.ops / (sample.ms / 1000)
                if (sample.ranOut) progress(`  (ran out of instances before ${options.ms} ms; next sample gets more)`)
                return sample
              }
            )
          ),
        "raw insert": () => Effect.runPromise(rawInserts(options.sql, options.name, options.rawTable, concurrency, options.ms))
      }
      const result = yield* Effect.promise(() =>
        measureThroughput({
          label: `send.${options.name}.c${concurrency}`,
          reps: options.reps,
          warmup: options.warmup,
          samplers
        })
      )
      printBench(`send.${options.name}.c${concurrency}`, {
        value: result["FSMRuntime.send"],
        unit: "ops/s",
        baseline: result["raw insert"]
      })
      results.push({ concurrency, send: result["FSMRuntime.send"], raw: result["raw insert"] })
    }
    return results
  })

const rawTable = "bench_raw_events"

const sqlitePart = (flags: { readonly ms: number; readonly reps: number; readonly warmup: number }) =>
  Effect.scoped(Effect.gen(function*() {
    const filename = yield* tempSqliteFile
    progress(`send.sqlite: ${filename}`)
    const context = yield* Layer.build(
      SqlEventStore.layer().pipe(Layer.provideMerge(SqliteEventStore.layerClient({ filename })))
    )
    const sql = Context.get(context, SqlClient.SqlClient)
    yield* createRawTable(sql, "sqlite", rawTable, (yield* SqlEventStore.tableNames()).events)
    yield* measureBackend({ name: "sqlite", store: context, sql, rawTable, guess: 10_000, ...flags })
  }))

const pgPart = (flags: {
  readonly ms: number
  readonly reps: number
  readonly warmup: number
  readonly pgbenchSeconds: number
}) =>
  Effect.scoped(Effect.gen(function*() {
    const schema = yield* freshPgSchema
    const sends = yield* Effect.scoped(Effect.gen(function*() {
      // One pool for both sides, large enough for the highest concurrency.
      const context = yield* Layer.build(
        SqlEventStore.layer().pipe(
          Layer.provideMerge(pgClientLayer({ schema, maxConnections: Math.max(...concurrencies) }))
        )
      )
      const sql = Context.get(context, SqlClient.SqlClient)
      const { events } = yield* SqlEventStore.tableNames()
      yield* createRawTable(sql, "pg", rawTable, events)
      return yield* measureBackend({ name: "pg", store: context, sql, rawTable, guess: 1_000, ...flags })
    }))
    // The pool is closed now, so pgbench's clients do not add to its connections.
    const executable = findPgbench()
    if (executable === undefined) {
      progress("pgbench is not on PATH: no raw.pgbench lines")
      return
    }
    // No warm-up rounds: pgbench is native code and the table is warm from the samples above.
    // Its -T includes connecting, which takes a while for 64 clients, so those runs get twice as long.
    const reps = Math.max(3, flags.reps)
    const tps = new Map<number, Array<number>>(concurrencies.map((c) => [c, []]))
    for (let i = 0; i < reps; i++) {
      for (const clients of concurrencies) {
        const seconds = clients >= 32 ? 2 * flags.pgbenchSeconds : flags.pgbenchSeconds
        const value = yield* Effect.either(pgbench({ executable, schema, table: rawTable, clients, seconds }))
        if (value._tag === "Left") {
          progress(`  raw.pgbench.c${clients} rep ${i + 1}/${reps}: failed, left out: ${value.left.message}`)
          continue
        }
        progress(`  raw.pgbench.c${clients} rep ${i + 1}/${reps}: ${Math.round(value.right)} tps`)
        tps.get(clients)!.push(value.right)
      }
    }
    for (const clients of concurrencies) {
      const runs = tps.get(clients)!
      if (runs.length > 0) printNoBaseline(`raw.pgbench.c${clients}`, median(runs), "ops/s")
    }
    // The target for many instances: sends at 64 against what PostgreSQL does with 8 native clients.
    const widest = sends.find((result) => result.concurrency === 64)
    const eight = tps.get(8) ?? []
    if (widest !== undefined && eight.length > 0) {
      printBench("send.pg.c64.vs_pgbench8", { value: widest.send, unit: "ops/s", baseline: median(eight) })
    }
  }))

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const flags = parseFlags("durable-send", args, {
    reps: { ...commonFlags.reps, default: 3 },
    warmup: { ...commonFlags.warmup, default: 1 },
    ms: { default: 400, description: "length of one sample (each side, each concurrency), in ms" },
    "pgbench-seconds": { default: 1, description: "pgbench -T per run (twice that with 64 clients, whose connecting counts in -T)" }
  })
  const common = { ms: flags.ms, reps: flags.reps, warmup: flags.warmup }
  await runScript(Effect.gen(function*() {
    yield* sqlitePart(common)
    const unreachable = yield* pgUnreachable
    if (unreachable === undefined) yield* pgPart({ ...common, pgbenchSeconds: flags["pgbench-seconds"] })
    else progress(`send.pg skipped: ${unreachable}`)
  }))
}

if (isMain(import.meta.url)) await main(process.argv.slice(2))
