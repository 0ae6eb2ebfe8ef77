/**
 * The transactional outbox under load: how fast dispatchers work off a
 * backlog of commands, and how long a command waits between the commit that
 * produced it and the start of its handler, on PostgreSQL (a schema created
 * and dropped by the script) and on SQLite (a temporary file).
 *
 * The machine: `Checkout` takes an instance from `Placed` to `Charging` and
 * produces one `ChargeCard` command; its handler replies `Charged`, which
 * takes the instance to `Paid`. So each command costs one handler run plus
 * one reply commit, which also deletes the outbox row (the command's
 * completion).
 *
 * backlog (`outbox.<pg|sqlite>.n1`, `.n2`): a writer runtime with
 * `Outbox.layer({ dispatch: false })` creates `--commands` instances and
 * sends each its `Checkout` (untimed), leaving one pending command per
 * instance. Then 1 (then 2) runtimes start, each in a process of its own
 * on the same database, with the default store layer (`PgEventStore.layer` /
 * `SqliteEventStore.layer`) and the default dispatcher (no `Outbox.layer`:
 * batches of 100, 16 at once, 500 ms poll interval). The clock runs from the
 * moment they start to the commit timestamp of the last reply event. The
 * parent waits for the round's outbox rows to be gone, then reads completion
 * from the event log (exactly one `Charged` event with `source = "outbox"`
 * per instance; no outbox row or dead letter left) and fails otherwise;
 * never from metrics.
 * Baseline, same run: raw single-row insert-and-commit (the bare cost of the
 * one commit each command needs) at the dispatchers' default concurrency
 * (16 per node) through pools sized like the nodes' (the pg default of 10
 * connections per node; SQLite's one connection), one `--ms` sample after
 * each round.
 *
 * latency (`outbox.<pg|sqlite>.latency_p50`, `_p99`): one runtime with the
 * default dispatcher (it is the committer, so each commit wakes its
 * dispatcher) sends `Checkout` to `--latency-rate` instances per second
 * (created untimed beforehand) for `--latency-seconds`. The handler records
 * Clock time at its start minus `context.createdAt` (the producing
 * commit's time), per command, first attempt. Baseline: the target, the
 * default poll interval (500 ms) + 50 ms; ratio = baseline / value.
 *
 *   npm run bench -- outbox [--commands 1000] [--latency-rate 100] [--latency-seconds 2] [--ms 1000]
 *     [--max-wait-seconds 300] [--reps 3] [--warmup 1]
 *
 * Prints (each the median of the repetitions; warm-up rounds have a fifth of
 * the commands, or at most 2 s of the latency stream)
 *   BENCH outbox.pg.n1 value=<commands/s> unit=commands/s baseline=<raw commits/s, 16 at once> ratio=...
 *   BENCH outbox.pg.n2 ... baseline=<raw commits/s, 32 at once> ...
 *   BENCH outbox.pg.latency_p50 value=<ms> unit=ms baseline=550 ratio=<550/value>
 *   BENCH outbox.pg.latency_p99 ...
 *   BENCH outbox.sqlite.n1 / n2 / latency_p50 / latency_p99 ...
 * and skips the PostgreSQL figures (with a message) when it is not reachable.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { Clock, Context, Effect, Exit, Layer, Schema, Scope } from "effect"
import { FSMRuntime, Machine, Outbox, SqlEventStore } from "effect-fsm"
import {
  type Backend,
  type BenchDatabase,
  type DbTarget,
  defaultStoreLayer,
  nodesRawBaseline,
  openBenchDatabase,
  pgUnreachable,
  runScript,
  spawnWorkerProcess,
  workerChannel,
  type WorkerProcess
} from "./db.js"
import { commonFlags, isMain, median, parseFlags, percentile, printBench, printLatencies, progress } from "./run.js"

// ---------------------------------------------------------------------------
// The machine and its handler
// ---------------------------------------------------------------------------

const ChargeState = Schema.Union(
  Schema.TaggedStruct("Placed", { amount: Schema.Number }),
  Schema.TaggedStruct("Charging", { amount: Schema.Number }),
  Schema.TaggedStruct("Paid", { amount: Schema.Number, chargeId: Schema.String })
)
const ChargeEvent = Schema.Union(
  Schema.TaggedStruct("Checkout", {}),
  Schema.TaggedStruct("Charged", { chargeId: Schema.String })
)
const ChargeCommand = Schema.Union(Schema.TaggedStruct("ChargeCard", { amount: Schema.Number }))

const machineName = "bench-charge"

/** `Checkout` produces one `ChargeCard`; its reply, `Charged`, ends the instance in `Paid`. */
const Charge = Machine.make({
  name: machineName,
  version: 1,
  state: ChargeState,
  event: ChargeEvent,
  command: ChargeCommand,
  initial: { _tag: "Placed", amount: 42 },
  transitions: {
    Placed: {
      Checkout: {
        to: "Charging",
        build: (s) => ({ amount: s.amount }),
        commands: (s) => [{ _tag: "ChargeCard", amount: s.amount }]
      }
    },
    Charging: {
      Charged: { to: "Paid", build: (s, e) => ({ amount: s.amount, chargeId: e.chargeId }) }
    }
  }
})

const checkout = { _tag: "Checkout" } as const

/**
 * The handler: replies `Charged` at once. `onStart`, when given, is called
 * with the Clock time at the handler's start and the command's context.
 */
const chargeHandlers = (onStart?: (startedAt: number, context: Outbox.CommandContext) => void) =>
  Outbox.handlers(Charge, {
    ChargeCard: (_, context) =>
      Effect.map(Clock.currentTimeMillis, (startedAt) => {
        onStart?.(startedAt, context)
        return { _tag: "Charged" as const, chargeId: `ch-${context.idempotencyKey}` }
      })
  })

/** Instance ids of round `round` are `r<round>-<i>`: the range ['r<round>-', 'r<round>.') of the primary key. */
const idRange = (round: number) => ({ from: `r${round}-`, to: `r${round}.` })

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

// ---------------------------------------------------------------------------
// Reading the outcome from the database
// ---------------------------------------------------------------------------

const rawTable = "bench_raw_events"

/** Reply events of round `round`: how many, on how many instances, and the latest commit timestamp. */
const repliesOf = (sql: SqlClient.SqlClient, round: number) =>
  Effect.gen(function*() {
    const { events } = yield* SqlEventStore.tableNames()
    const { from, to } = idRange(round)
    const rows = yield* sql<{ readonly n: unknown; readonly instances: unknown; readonly last: unknown }>`SELECT COUNT(*) AS n, COUNT(DISTINCT instance_id) AS instances, MAX(ts) AS last FROM ${
      sql(events)
    } WHERE machine = ${machineName} AND instance_id >= ${from} AND instance_id < ${to} AND tag = ${"Charged"} AND source = ${"outbox"}`
    return {
      count: Number(rows[0]?.n ?? 0),
      instances: Number(rows[0]?.instances ?? 0),
      last: Number(rows[0]?.last ?? 0)
    }
  })

/** Outbox rows and dead letters of the round still stored. */
const outboxLeft = (sql: SqlClient.SqlClient, round: number) =>
  Effect.gen(function*() {
    const { outbox, outboxDeadLetters } = yield* SqlEventStore.tableNames()
    const { from, to } = idRange(round)
    const count = (table: string) =>
      Effect.map(
        sql<{ readonly n: unknown }>`SELECT COUNT(*) AS n FROM ${
          sql(table)
        } WHERE machine = ${machineName} AND instance_id >= ${from} AND instance_id < ${to}`,
        (rows) => Number(rows[0]?.n ?? 0)
      )
    return { pending: yield* count(outbox), dead: yield* count(outboxDeadLetters) }
  })

/**
 * Polls the round's outbox every 100 ms until none of its `expected`
 * commands is pending (each reply commit deletes its row); fails after
 * `maxWaitMs`. Cheaper than counting replies in the log, which only
 * `verifyRound` does, once.
 */
const awaitDrained = (sql: SqlClient.SqlClient, round: number, expected: number, maxWaitMs: number) =>
  Effect.gen(function*() {
    const giveUp = Date.now() + maxWaitMs
    let lastLog = Date.now()
    while (true) {
      const { pending } = yield* outboxLeft(sql, round)
      if (pending === 0) return
      if (Date.now() > giveUp) {
        return yield* Effect.fail(new Error(`${pending} of ${expected} commands still pending after ${maxWaitMs} ms`))
      }
      if (Date.now() - lastLog > 2000) {
        lastLog = Date.now()
        progress(`    ${expected - pending}/${expected} done`)
      }
      yield* Effect.sleep("100 millis")
    }
  })

/**
 * Fails unless the log holds exactly one reply per instance of the round
 * (`count` instances) and no outbox row or dead letter of the round is left.
 */
const verifyRound = (name: string, sql: SqlClient.SqlClient, round: number, count: number) =>
  Effect.gen(function*() {
    const replies = yield* repliesOf(sql, round)
    const left = yield* outboxLeft(sql, round)
    if (replies.count !== count || replies.instances !== count || left.pending !== 0 || left.dead !== 0) {
      return yield* Effect.fail(
        new Error(
          `${name}: ${replies.count} reply events on ${replies.instances} instances for ${count} commands; ${left.pending} outbox rows and ${left.dead} dead letters left`
        )
      )
    }
    return replies
  })

// ---------------------------------------------------------------------------
// Worker processes: one dispatching runtime each, started and stopped on command
// ---------------------------------------------------------------------------

const workerEnv = "EFFECT_FSM_BENCH_OUTBOX_WORKER"

interface WorkerConfig {
  readonly target: DbTarget
  readonly nodeId: string
}

/**
 * The worker's side: open the store (`defaultStoreLayer`), say `ready`, then
 * on `go` build a runtime with the handlers and the default dispatcher and
 * say `started <epoch ms>`; on `stop` close it and say `stopped <CPU ms this
 * process used since go>`; on `exit` (or when the parent goes away) finish.
 */
const worker = async (config: WorkerConfig): Promise<void> => {
  const program = Effect.gen(function*() {
    const channel = yield* workerChannel("exit")
    const store = yield* Layer.build(defaultStoreLayer(config.target))
    channel.say("ready")
    let running: Scope.CloseableScope | undefined
    let cpu = process.cpuUsage()
    while (true) {
      const command = yield* channel.next
      if (command === "go" && running === undefined) {
        running = yield* Scope.make()
        cpu = process.cpuUsage()
        const started = Date.now()
        yield* Layer.buildWithScope(
          FSMRuntime.layer({ machines: [Charge], nodeId: config.nodeId }).pipe(
            Layer.provide(chargeHandlers()),
            Layer.provide(Layer.succeedContext(store))
          ),
          running
        )
        channel.say(`started ${started}`)
      } else if (command === "stop") {
        if (running !== undefined) yield* Scope.close(running, Exit.void)
        running = undefined
        const used = process.cpuUsage(cpu)
        channel.say(`stopped ${Math.round((used.user + used.system) / 1000)}`)
      } else if (command === "exit") {
        if (running !== undefined) yield* Scope.close(running, Exit.void)
        return
      }
    }
  })
  await runScript(Effect.scoped(program))
}

const spawnWorker = (config: WorkerConfig): Effect.Effect<WorkerProcess, never, Scope.Scope> =>
  spawnWorkerProcess({ script: import.meta.url, envVar: workerEnv, config, exitLine: "exit", replyTimeoutSeconds: 60 })

// ---------------------------------------------------------------------------
// backlog: commands per second with 1 and 2 dispatchers
// ---------------------------------------------------------------------------

interface Flags {
  readonly commands: number
  readonly latencyRate: number
  readonly latencySeconds: number
  readonly ms: number
  readonly maxWaitSeconds: number
  readonly reps: number
  readonly warmup: number
}

/** The dispatcher's default `concurrency`: commands run at once per node. */
const dispatcherConcurrency = 16

/** A runtime over `db` that writes commands and dispatches none, for the scope. */
const writerRuntime = (db: BenchDatabase) =>
  Effect.map(
    Layer.build(
      FSMRuntime.layer({ machines: [Charge], nodeId: "writer" }).pipe(
        Layer.provide(Outbox.layer({ dispatch: false })),
        Layer.provide(Layer.succeedContext(db.store))
      )
    ),
    (context) => Context.get(context, FSMRuntime.FSMRuntime)
  )

const measureBacklog = (backend: Backend, nodes: number, flags: Flags) =>
  Effect.scoped(Effect.gen(function*() {
    const name = `outbox.${backend}.n${nodes}`
    const db = yield* openBenchDatabase(backend, { maxConnections: 32, rawTable })
    const writer = yield* writerRuntime(db)
    const workers = yield* Effect.forEach(
      range(nodes),
      (i) => spawnWorker({ target: db.target, nodeId: `node-${i + 1}` }),
      { concurrency: "unbounded" }
    )
    yield* Effect.forEach(workers, (w) => w.expect("ready"), { concurrency: "unbounded", discard: true })
    const raw = yield* nodesRawBaseline(db, { table: rawTable, nodes, perNode: dispatcherConcurrency })

    const rates: Array<number> = []
    const baselines: Array<number> = []
    const reps = Math.max(3, flags.reps)
    for (let round = 0; round < flags.warmup + reps; round++) {
      const measured = round >= flags.warmup
      const label = measured ? `rep ${round - flags.warmup + 1}/${reps}` : `warmup ${round + 1}/${flags.warmup}`
      const count = measured ? flags.commands : Math.max(100, Math.ceil(flags.commands / 5))
      const { from } = idRange(round)
      const c0 = performance.now()
      yield* Effect.forEach(
        range(count),
        (i) => Effect.zipRight(writer.create(Charge, `${from}${i}`), writer.send(Charge, `${from}${i}`, checkout)),
        { concurrency: backend === "pg" ? 32 : 1, discard: true }
      )
      const createMs = performance.now() - c0
      const backlog = yield* outboxLeft(db.sql, round)
      if (backlog.pending !== count) {
        return yield* Effect.fail(new Error(`${name}: ${backlog.pending} outbox rows for ${count} commands before dispatch`))
      }

      const started = yield* Effect.forEach(workers, (w) => w.ask("go", "started"), { concurrency: "unbounded" })
      const t0 = Math.min(...started.map(Number))
      yield* awaitDrained(db.sql, round, count, flags.maxWaitSeconds * 1000)
      const cpuMs = yield* Effect.forEach(workers, (w) => w.ask("stop", "stopped"), { concurrency: "unbounded" })
      const done = yield* verifyRound(name, db.sql, round, count)
      const elapsed = Math.max(1, done.last - t0)
      const rate = count / (elapsed / 1000)
      // How busy each dispatcher process was (1.00 = one core all along): shows when Node, not the database, is the limit.
      const busy = cpuMs.map((ms) => (Number(ms) / elapsed).toFixed(2)).join(", ")

      const sample = yield* raw.sample(flags.ms)
      const rawRate = sample.ops / (sample.ms / 1000)
      progress(
        `  ${name} ${label}: ${count} commands written in ${Math.round(createMs)} ms; all replied ${elapsed} ms after start = ${
          Math.round(rate)
        } commands/s (dispatcher CPU ${busy} cores); raw ${raw.concurrency} at once: ${Math.round(rawRate)} commits/s`
      )
      if (measured) {
        rates.push(rate)
        baselines.push(rawRate)
      }
    }
    printBench(name, { value: median(rates), unit: "commands/s", baseline: median(baselines) })
  }))

// ---------------------------------------------------------------------------
// latency: commit to handler start, while this node is the committer
// ---------------------------------------------------------------------------

/** The default poll interval of the dispatcher plus the 50 ms the target allows. */
const latencyTargetMs = 500 + 50

const measureLatency = (backend: Backend, flags: Flags) =>
  Effect.scoped(Effect.gen(function*() {
    const name = `outbox.${backend}.latency`
    const db = yield* openBenchDatabase(backend, { maxConnections: 10 })
    const p50s: Array<number> = []
    const p99s: Array<number> = []
    const reps = Math.max(3, flags.reps)
    for (let round = 0; round < flags.warmup + reps; round++) {
      const measured = round >= flags.warmup
      const label = measured ? `rep ${round - flags.warmup + 1}/${reps}` : `warmup ${round + 1}/${flags.warmup}`
      const seconds = measured ? flags.latencySeconds : Math.min(2, flags.latencySeconds)
      const count = Math.max(1, Math.round(flags.latencyRate * seconds))
      const { from } = idRange(round)
      // First attempts only, by idempotency key; a second run of one command is counted apart.
      const latencies = new Map<string, number>()
      let reruns = 0
      const record = (startedAt: number, context: Outbox.CommandContext) => {
        if (context.attempt === 1 && !latencies.has(context.idempotencyKey)) {
          latencies.set(context.idempotencyKey, startedAt - context.createdAt)
        } else {
          reruns++
        }
      }
      yield* Effect.scoped(Effect.gen(function*() {
        const runtime = Context.get(
          yield* Layer.build(
            FSMRuntime.layer({ machines: [Charge], nodeId: "node-1" }).pipe(
              Layer.provide(chargeHandlers(record)),
              Layer.provide(Layer.succeedContext(db.store))
            )
          ),
          FSMRuntime.FSMRuntime
        )
        yield* Effect.forEach(range(count), (i) => runtime.create(Charge, `${from}${i}`), {
          concurrency: backend === "pg" ? 8 : 1,
          discard: true
        })
        // A steady stream: send i starts i/rate seconds in, whether or not the previous ones are done.
        const start = Date.now()
        yield* Effect.forEach(
          range(count),
          (i) =>
            Effect.suspend(() => Effect.sleep(Math.max(0, start + (i * 1000) / flags.latencyRate - Date.now()))).pipe(
              Effect.zipRight(runtime.send(Charge, `${from}${i}`, checkout))
            ),
          { concurrency: "unbounded", discard: true }
        )
        yield* awaitDrained(db.sql, round, count, flags.maxWaitSeconds * 1000)
      }))
      yield* verifyRound(name, db.sql, round, count)
      if (latencies.size !== count) {
        return yield* Effect.fail(new Error(`${name}: ${latencies.size} of ${count} handlers recorded a first attempt`))
      }
      const sorted = [...latencies.values()].sort((a, b) => a - b)
      const p50 = percentile(sorted, 50)
      const p99 = percentile(sorted, 99)
      progress(
        `  ${name} ${label}: ${count} commands over ${seconds} s: p50 ${p50} ms, p99 ${p99} ms, min ${sorted[0]} ms, max ${
          sorted[sorted.length - 1]
        } ms${reruns > 0 ? `, ${reruns} handler runs beyond the first` : ""}`
      )
      if (measured) {
        p50s.push(p50)
        p99s.push(p99)
      }
    }
    printLatencies(`outbox.${backend}.latency`, { p50: p50s, p99: p99s }, latencyTargetMs)
  }))

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const raw = parseFlags("outbox", args, {
    reps: { ...commonFlags.reps, default: 3 },
    warmup: { ...commonFlags.warmup, default: 1 },
    commands: { default: 1_000, description: "pending commands per backlog round (the warm-up round has a fifth)" },
    "latency-rate": { default: 100, description: "commands produced per second in the latency part" },
    "latency-seconds": { default: 2, description: "how long the latency part produces commands, per round" },
    ms: { default: 1_000, description: "length of one raw-insert baseline sample, in ms" },
    "max-wait-seconds": { default: 300, description: "a round fails if its commands have not all replied by then" }
  })
  const flags: Flags = {
    commands: raw.commands,
    latencyRate: raw["latency-rate"],
    latencySeconds: raw["latency-seconds"],
    ms: raw.ms,
    maxWaitSeconds: raw["max-wait-seconds"],
    reps: raw.reps,
    warmup: raw.warmup
  }
  await runScript(Effect.gen(function*() {
    const unreachable = yield* pgUnreachable
    if (unreachable === undefined) {
      yield* measureBacklog("pg", 1, flags)
      yield* measureBacklog("pg", 2, flags)
      yield* measureLatency("pg", flags)
    } else {
      progress(`outbox.pg skipped: ${unreachable}`)
    }
    yield* measureBacklog("sqlite", 1, flags)
    yield* measureBacklog("sqlite", 2, flags)
    yield* measureLatency("sqlite", flags)
  }))
}

if (isMain(import.meta.url)) {
  const workerConfig = process.env[workerEnv]
  if (workerConfig !== undefined) await worker(JSON.parse(workerConfig) as WorkerConfig)
  else await main(process.argv.slice(2))
}
