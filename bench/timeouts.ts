/**
 * Durable timeouts under load: how fast a backlog of due timers is fired,
 * and how late timers fire under the default sweeper configuration, on
 * PostgreSQL (a schema created and dropped by the script) and on SQLite (a
 * temporary file).
 *
 * fired: `--timers` instances of a machine whose `Waiting` state times out
 * after `--delay-ms` are created (untimed) by a runtime that writes timer
 * rows but runs no sweeper; once every timer is due, 1 (then `--nodes`)
 * runtimes with `TimeoutStrategy.layerDurable()` (defaults) start, each in a
 * process of its own on the same database (`PgEventStore.layer` /
 * `SqliteEventStore.layer` with default options), the way separate nodes run. The
 * clock runs from the moment the runtimes start to the commit timestamp of
 * the last timeout event; completion is read from the event log (one
 * `Expire` event with `source = "timeout"` per instance, exactly), not from
 * metrics, and no timer row may be left.
 * Baseline, same run: raw single-row insert-and-commit (the bare cost of
 * the one commit each firing needs) at the sweepers' delivery concurrency
 * (256 per node, the default) through pools sized like the nodes' (the pg
 * default of 10 connections per node; SQLite's one connection).
 *
 * lateness: one runtime with `layerDurable()` (defaults) creates
 * `--lateness-rate` instances per second for `--lateness-seconds`, each
 * timing out `--delay-ms` after creation, and fires them itself. Lateness
 * of a timer = commit timestamp of its timeout event - its deadline
 * (creation timestamp + delay), both read from the stored events' metadata.
 * Baseline: the target, the default poll interval (500 ms) + 100 ms; ratio
 * = baseline / value.
 *
 *   npm run bench -- timeouts [--timers 10000] [--nodes 3] [--delay-ms 1000] [--lateness-rate 200]
 *     [--lateness-seconds 5] [--ms 1000] [--max-wait-seconds 300] [--reps 3] [--warmup 1]
 *
 * Prints (each the median of the repetitions; a warm-up round with a fifth
 * of the timers comes first)
 *   BENCH timeouts.pg.fired value=<timers/s> unit=timers/s baseline=<raw commits/s, 16 at once> ratio=...
 *   BENCH timeouts.pg.fired.n3 ...
 *   BENCH timeouts.sqlite.fired ...
 *   BENCH timeouts.sqlite.fired.n3 ...
 *   BENCH timeouts.pg.lateness_p50 value=<ms> unit=ms baseline=600 ratio=<600/value>
 *   BENCH timeouts.pg.lateness_p99 ...
 *   BENCH timeouts.pg.pgboss ... (pg-boss draining the same number of due jobs)
 *   BENCH timeouts.pg.fired.vs_pgboss ... (timeouts.pg.fired against it)
 *   BENCH timeouts.sqlite.lateness_p50 / lateness_p99 ...
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Duration, Effect, Exit, Layer, Queue, Schema, Scope } from "effect"
import { type EventStore, FSMRuntime, Machine, SqlEventStore, type TimeoutStore, TimeoutStrategy } from "effect-fsm"
import * as PgEventStore from "effect-fsm/PgEventStore"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import * as readline from "node:readline"
import {
  createRawTable,
  freshPgSchema,
  pgClientLayer,
  pgConfig,
  pgUnreachable,
  printNoBaseline,
  rawInserts,
  runScript,
  spawnWorkerProcess,
  tempSqliteFile,
  type WorkerProcess,
  workerProtocolPrefix
} from "./db.js"
import { drainWithPgBoss, openPgBoss } from "./pgboss.js"
import { commonFlags, isMain, median, parseFlags, printBench, printLatencies, progress } from "./run.js"

// ---------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------

const TickState = Schema.Union(Schema.TaggedStruct("Waiting", {}), Schema.TaggedStruct("Expired", {}))
const TickEvent = Schema.Union(Schema.TaggedStruct("Expire", {}), Schema.TaggedStruct("Cancel", {}))

/** One timeout, `delayMs` after entering `Waiting`. */
const tickMachine = (delayMs: number) =>
  Machine.make({
    name: "bench-tick",
    version: 1,
    state: TickState,
    event: TickEvent,
    initial: { _tag: "Waiting" },
    transitions: {
      Waiting: {
        Expire: { to: "Expired", build: () => ({}) },
        Cancel: { to: "Expired", build: () => ({}) }
      }
    },
    timeouts: { Waiting: { expire: { after: Duration.millis(delayMs), event: { _tag: "Expire" } } } }
  })

/** Writes timer rows with its commits (durable) but fires nothing: the instance creator. */
const timersWithoutSweeper = Layer.succeed(
  TimeoutStrategy.TimeoutStrategy,
  TimeoutStrategy.TimeoutStrategy.of({ start: () => Effect.succeed({ durable: true, armed: () => Effect.void }) })
)

/** Instance ids of round `round` are `r<round>-<i>`: the range ['r<round>-', 'r<round>.') of the primary key. */
const idRange = (round: number) => ({ from: `r${round}-`, to: `r${round}.` })

// ---------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------

type Backend = "pg" | "sqlite"

/** Where a worker process finds the database. */
type Target = { readonly backend: "pg"; readonly schema: string } | { readonly backend: "sqlite"; readonly filename: string }

type Store = Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore | SqlClient.SqlClient>

const rawTable = "bench_raw_events"

/** A fresh database of `backend`, migrated, with the raw table, for the scope. */
const openDatabase = (backend: Backend, maxConnections: number) =>
  Effect.gen(function*() {
    let target: Target
    let store: Store
    if (backend === "pg") {
      const schema = yield* freshPgSchema
      target = { backend, schema }
      store = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(pgClientLayer({ schema, maxConnections }))))
    } else {
      const filename = yield* tempSqliteFile
      target = { backend, filename }
      store = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(SqliteEventStore.layerClient({ filename }))))
    }
    const sql = Context.get(store, SqlClient.SqlClient)
    yield* createRawTable(sql, backend, rawTable, (yield* SqlEventStore.tableNames()).events)
    return { target, store, sql }
  })

/** Timeout events of round `round` so far, and the latest commit timestamp among them. */
const firedSoFar = (sql: SqlClient.SqlClient, round: number) => {
  const { from, to } = idRange(round)
  return Effect.map(
    sql<{ readonly n: unknown; readonly last: unknown }>`SELECT COUNT(*) AS n, MAX(ts) AS last FROM fsm_events WHERE machine = ${"bench-tick"} AND instance_id >= ${from} AND instance_id < ${to} AND source = ${"timeout"} AND tag = ${"Expire"}`,
    (rows) => ({ count: Number(rows[0]?.n ?? 0), last: Number(rows[0]?.last ?? 0) })
  )
}

/** Polls the event log every 50 ms until `expected` timeouts of the round are there; fails after `maxWaitMs`. */
const awaitFired = (sql: SqlClient.SqlClient, round: number, expected: number, maxWaitMs: number) =>
  Effect.gen(function*() {
    const giveUp = Date.now() + maxWaitMs
    let lastLog = Date.now()
    while (true) {
      const fired = yield* firedSoFar(sql, round)
      if (fired.count >= expected) return fired
      if (Date.now() > giveUp) {
        return yield* Effect.fail(new Error(`only ${fired.count} of ${expected} timers fired within ${maxWaitMs} ms`))
      }
      if (Date.now() - lastLog > 2000) {
        lastLog = Date.now()
        progress(`    ${fired.count}/${expected} fired`)
      }
      yield* Effect.sleep("50 millis")
    }
  })

/** Timer rows of the round still stored (none once every timer fired). */
const timersLeft = (sql: SqlClient.SqlClient, round: number) => {
  const { from, to } = idRange(round)
  return Effect.map(
    sql<{ readonly n: unknown }>`SELECT COUNT(*) AS n FROM fsm_timers WHERE machine = ${"bench-tick"} AND instance_id >= ${from} AND instance_id < ${to}`,
    (rows) => Number(rows[0]?.n ?? 0)
  )
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

// ---------------------------------------------------------------------------
// Worker processes: one runtime each, started and stopped on command
// ---------------------------------------------------------------------------

const workerEnv = "EFFECT_FSM_BENCH_TIMEOUTS_WORKER"

interface WorkerConfig {
  readonly target: Target
  readonly nodeId: string
  readonly delayMs: number
}

const protocolPrefix = workerProtocolPrefix

/**
 * The worker's side: open the store (the default `PgEventStore.layer` /
 * `SqliteEventStore.layer`), say `ready`, then on `go` build a runtime with
 * `layerDurable()` (defaults) and say `started <epoch ms>`; on `stop` close it and say `stopped`; on
 * `exit` (or when the parent goes away) finish.
 */
const worker = async (config: WorkerConfig): Promise<void> => {
  const say = (line: string) => process.stdout.write(`${protocolPrefix}${line}\n`)
  const Tick = tickMachine(config.delayMs)
  const program = Effect.gen(function*() {
    const commands = yield* Queue.unbounded<string>()
    const input = readline.createInterface({ input: process.stdin })
    input.on("line", (line) => Queue.unsafeOffer(commands, line.trim()))
    input.on("close", () => Queue.unsafeOffer(commands, "exit"))
    const storeLayer = config.target.backend === "pg"
      ? PgEventStore.layer(pgConfig({ schema: config.target.schema }))
      : SqliteEventStore.layer({ filename: config.target.filename })
    const store = yield* Layer.build(storeLayer)
    say("ready")
    let running: Scope.CloseableScope | undefined
    while (true) {
      const command = yield* Queue.take(commands)
      if (command === "go" && running === undefined) {
        running = yield* Scope.make()
        const started = Date.now()
        yield* Layer.buildWithScope(
          FSMRuntime.layer({ machines: [Tick], nodeId: config.nodeId }).pipe(
            Layer.provide(TimeoutStrategy.layerDurable()),
            Layer.provide(Layer.succeedContext(store))
          ),
          running
        )
        say(`started ${started}`)
      } else if (command === "stop") {
        if (running !== undefined) yield* Scope.close(running, Exit.void)
        running = undefined
        say("stopped")
      } else if (command === "exit") {
        if (running !== undefined) yield* Scope.close(running, Exit.void)
        input.close()
        return
      }
    }
  })
  await runScript(Effect.scoped(program))
}

type Worker = WorkerProcess

/** A worker process for the scope; on release it is asked to exit. */
const spawnWorker = (config: WorkerConfig): Effect.Effect<Worker, never, Scope.Scope> =>
  spawnWorkerProcess({ script: import.meta.url, envVar: workerEnv, config, exitLine: "exit", replyTimeoutSeconds: 60 })

// ---------------------------------------------------------------------------
// fired: a backlog of due timers
// ---------------------------------------------------------------------------

interface Flags {
  readonly timers: number
  readonly nodes: number
  readonly delayMs: number
  readonly latenessRate: number
  readonly latenessSeconds: number
  readonly ms: number
  readonly maxWaitSeconds: number
  readonly reps: number
  readonly warmup: number
}

/** Default delivery concurrency and pg pool size of one node, for the baseline. */
const sweeperConcurrency = 256
const pgDefaultPool = 10

const measureFired = (backend: Backend, nodes: number, flags: Flags) =>
  Effect.scoped(Effect.gen(function*() {
    const name = `timeouts.${backend}.fired${nodes === 1 ? "" : `.n${nodes}`}`
    const db = yield* openDatabase(backend, 32)
    const Tick = tickMachine(flags.delayMs)
    const writer = Context.get(
      yield* Layer.build(
        FSMRuntime.layer({ machines: [Tick], nodeId: "creator", cacheSize: 1 }).pipe(
          Layer.provide(timersWithoutSweeper),
          Layer.provide(Layer.succeedContext(db.store))
        )
      ),
      FSMRuntime.FSMRuntime
    )
    const workers = yield* Effect.forEach(
      range(nodes),
      (i) => spawnWorker({ target: db.target, nodeId: `node-${i + 1}`, delayMs: flags.delayMs }),
      { concurrency: "unbounded" }
    )
    yield* Effect.forEach(workers, (w) => w.expect("ready"), { concurrency: "unbounded", discard: true })
    // The baseline's client: the nodes' pools together (pg), the one connection (SQLite).
    const rawSql = backend === "pg"
      ? Context.get(
        yield* Layer.build(pgClientLayer({ schema: (db.target as { schema: string }).schema, maxConnections: pgDefaultPool * nodes })),
        SqlClient.SqlClient
      )
      : db.sql
    const rawConcurrency = sweeperConcurrency * nodes

    const rates: Array<number> = []
    const baselines: Array<number> = []
    const reps = Math.max(3, flags.reps)
    for (let round = 0; round < flags.warmup + reps; round++) {
      const measured = round >= flags.warmup
      const label = measured ? `rep ${round - flags.warmup + 1}/${reps}` : `warmup ${round + 1}/${flags.warmup}`
      const count = measured ? flags.timers : Math.max(100, Math.ceil(flags.timers / 5))
      const { from } = idRange(round)
      const c0 = performance.now()
      yield* Effect.forEach(range(count), (i) => writer.create(Tick, `${from}${i}`), {
        concurrency: backend === "pg" ? 32 : 1,
        discard: true
      })
      const createMs = performance.now() - c0
      // Every timer due before the runtimes start: the sweepers see one backlog.
      const lastDue = Number(
        (yield* db.sql<{ readonly last: unknown }>`SELECT MAX(ts) AS last FROM fsm_events WHERE machine = ${"bench-tick"} AND instance_id >= ${from} AND instance_id < ${
          idRange(round).to
        } AND seq_nr = ${1}`)[0]?.last
      ) + flags.delayMs
      yield* Effect.sleep(Math.max(0, lastDue + 5 - Date.now()))

      const started = yield* Effect.forEach(workers, (w) => w.ask("go", "started"), { concurrency: "unbounded" })
      const t0 = Math.min(...started.map(Number))
      const fired = yield* awaitFired(db.sql, round, count, flags.maxWaitSeconds * 1000)
      yield* Effect.forEach(workers, (w) => w.ask("stop", "stopped"), { concurrency: "unbounded", discard: true })
      const final = yield* firedSoFar(db.sql, round)
      const left = yield* timersLeft(db.sql, round)
      if (final.count !== count || left !== 0) {
        return yield* Effect.fail(new Error(`${name}: ${final.count} timeout events for ${count} timers, ${left} timer rows left`))
      }
      const rate = count / (Math.max(1, fired.last - t0) / 1000)

      const raw = yield* rawInserts(rawSql, backend, rawTable, rawConcurrency, flags.ms)
      const rawRate = raw.ops / (raw.ms / 1000)
      progress(
        `  ${name} ${label}: ${count} created in ${Math.round(createMs)} ms; all fired ${fired.last - t0} ms after start = ${
          Math.round(rate)
        } timers/s; raw ${rawConcurrency} at once: ${Math.round(rawRate)} commits/s`
      )
      if (measured) {
        rates.push(rate)
        baselines.push(rawRate)
      }
    }
    printBench(name, { value: median(rates), unit: "timers/s", baseline: median(baselines) })
    return median(rates)
  }))

// ---------------------------------------------------------------------------
// the peer: pg-boss draining the same backlog
// ---------------------------------------------------------------------------

/** pg-boss draining `--timers` due jobs, median over the rounds; the timers' figure against it. */
const measurePgBoss = (fired: number, flags: Flags) =>
  Effect.scoped(Effect.gen(function*() {
    const sql = Context.get(yield* Layer.build(pgClientLayer({ maxConnections: 2 })), SqlClient.SqlClient)
    const opened = yield* openPgBoss(sql)
    const rates: Array<number> = []
    const reps = Math.max(3, flags.reps)
    for (let round = 0; round < flags.warmup + reps; round++) {
      const measured = round >= flags.warmup
      const count = measured ? flags.timers : Math.max(100, Math.ceil(flags.timers / 5))
      const rate = yield* drainWithPgBoss(opened, sql, count)
      progress(`  timeouts.pg.pgboss ${measured ? `rep ${round - flags.warmup + 1}/${reps}` : "warmup"}: ${count} due jobs drained at ${Math.round(rate)} jobs/s`)
      if (measured) rates.push(rate)
    }
    printNoBaseline("timeouts.pg.pgboss", median(rates), "jobs/s")
    printBench("timeouts.pg.fired.vs_pgboss", { value: fired, unit: "timers/s", baseline: median(rates) })
  }))

// ---------------------------------------------------------------------------
// lateness: timers due 1 s after a steady stream of creations
// ---------------------------------------------------------------------------

/** The nearest-rank percentile of sorted numbers. */
const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!

/** The default poll interval of `layerDurable()` plus the 100 ms the target allows. */
const latenessTargetMs = 500 + 100

const measureLateness = (backend: Backend, flags: Flags) =>
  Effect.scoped(Effect.gen(function*() {
    const db = yield* openDatabase(backend, 10)
    const Tick = tickMachine(flags.delayMs)
    const p50s: Array<number> = []
    const p99s: Array<number> = []
    const reps = Math.max(3, flags.reps)
    for (let round = 0; round < flags.warmup + reps; round++) {
      const measured = round >= flags.warmup
      const label = measured ? `rep ${round - flags.warmup + 1}/${reps}` : `warmup ${round + 1}/${flags.warmup}`
      const seconds = measured ? flags.latenessSeconds : Math.min(2, flags.latenessSeconds)
      const count = Math.max(1, Math.round(flags.latenessRate * seconds))
      const { from, to } = idRange(round)
      yield* Effect.scoped(Effect.gen(function*() {
        const runtime = Context.get(
          yield* Layer.build(
            FSMRuntime.layer({ machines: [Tick], nodeId: "node-1" }).pipe(
              Layer.provide(TimeoutStrategy.layerDurable()),
              Layer.provide(Layer.succeedContext(db.store))
            )
          ),
          FSMRuntime.FSMRuntime
        )
        // A steady stream: creation i starts i/rate seconds in, whether or not the previous ones are done.
        const start = Date.now()
        yield* Effect.forEach(
          range(count),
          (i) =>
            Effect.suspend(() => Effect.sleep(Math.max(0, start + (i * 1000) / flags.latenessRate - Date.now()))).pipe(
              Effect.zipRight(runtime.create(Tick, `${from}${i}`))
            ),
          { concurrency: "unbounded", discard: true }
        )
        yield* awaitFired(db.sql, round, count, flags.maxWaitSeconds * 1000)
      }))
      const rows = yield* db.sql<{ readonly created: unknown; readonly fired: unknown }>`SELECT c.ts AS created, f.ts AS fired FROM fsm_events c JOIN fsm_events f ON f.machine = c.machine AND f.instance_id = c.instance_id AND f.seq_nr = 2 WHERE c.machine = ${"bench-tick"} AND c.instance_id >= ${from} AND c.instance_id < ${to} AND c.seq_nr = 1 AND f.source = ${"timeout"}`
      if (rows.length !== count) return yield* Effect.fail(new Error(`lateness: ${rows.length} of ${count} timers fired`))
      const lateness = rows.map((r) => Number(r.fired) - (Number(r.created) + flags.delayMs)).sort((a, b) => a - b)
      const p50 = percentile(lateness, 50)
      const p99 = percentile(lateness, 99)
      progress(
        `  timeouts.${backend}.lateness ${label}: ${count} timers over ${seconds} s: p50 ${p50} ms, p99 ${p99} ms, min ${
          lateness[0]
        } ms, max ${lateness[lateness.length - 1]} ms`
      )
      if (measured) {
        p50s.push(p50)
        p99s.push(p99)
      }
    }
    printLatencies(`timeouts.${backend}.lateness`, { p50: p50s, p99: p99s }, latenessTargetMs)
  }))

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const raw = parseFlags("timeouts", args, {
    reps: { ...commonFlags.reps, default: 3 },
    warmup: { ...commonFlags.warmup, default: 1 },
    timers: { default: 10_000, description: "due timers per fired round (the warm-up round has a fifth)" },
    nodes: { default: 3, description: "runtimes (processes) of the .n<nodes> fired figures" },
    "delay-ms": { default: 1_000, description: "timeout after entering the state, in ms" },
    "lateness-rate": { default: 200, description: "instances created per second in the lateness part" },
    "lateness-seconds": { default: 5, description: "how long the lateness part creates instances, per round" },
    ms: { default: 1_000, description: "length of one raw-insert baseline sample, in ms" },
    "max-wait-seconds": { default: 300, description: "a round fails if its timers have not all fired by then" }
  })
  const flags: Flags = {
    timers: raw.timers,
    nodes: raw.nodes,
    delayMs: raw["delay-ms"],
    latenessRate: raw["lateness-rate"],
    latenessSeconds: raw["lateness-seconds"],
    ms: raw.ms,
    maxWaitSeconds: raw["max-wait-seconds"],
    reps: raw.reps,
    warmup: raw.warmup
  }
  await runScript(Effect.gen(function*() {
    const unreachable = yield* pgUnreachable
    if (unreachable === undefined) {
      const fired = yield* measureFired("pg", 1, flags)
      yield* measurePgBoss(fired, flags)
      if (flags.nodes > 1) yield* measureFired("pg", flags.nodes, flags)
      yield* measureLateness("pg", flags)
    } else {
      progress(`timeouts.pg skipped: ${unreachable}`)
    }
    yield* measureFired("sqlite", 1, flags)
    if (flags.nodes > 1) yield* measureFired("sqlite", flags.nodes, flags)
    yield* measureLateness("sqlite", flags)
  }))
}

if (isMain(import.meta.url)) {
  const workerConfig = process.env[workerEnv]
  if (workerConfig !== undefined) await worker(JSON.parse(workerConfig) as WorkerConfig)
  else await main(process.argv.slice(2))
}
