/**
 * Writers of one instance in different processes, under each
 * `LockingStrategy`, on PostgreSQL (a schema created and dropped by the
 * script).
 *
 * Two worker processes (this script started again with tsx's loader) each
 * open their own `@effect/sql-pg` pool and `SqlEventStore` over the same
 * schema, and for every sample build a fresh `FSMRuntime` with the strategy
 * under test:
 *
 * - optimistic: `FSMRuntime.layer` with no locking layer (the default,
 *   `LockingStrategy.optimistic`);
 * - distributed: `LockingStrategy.distributed({ ...presets.default,
 *   retryInterval: "2 millis" })`, a lease per command;
 * - sticky: the same with `scope: "sticky"`, the lease kept while the
 *   instance stays loaded.
 *
 * hot8: one instance, created (untimed) by the parent and loaded by both
 * runtimes before the clock starts; 4 writers in each process (8 in all)
 * send `Add` to it one after the other for `--ms`. Baseline, measured in the
 * same rounds: the same with one process and one writer, optimistic. With
 * sticky leases the first runtime to send keeps the lease for the whole
 * sample (the instance stays loaded), so every send of the other process
 * waits `wait` (5 s, the default preset) and fails with `LockTimeout`; its
 * writers are serialized by the runtime's per-instance lock, so that
 * sample takes about 4 x 5 s. Failed sends are counted and printed.
 *
 * routed64: 64 instances, each process sending to its own 32 (routed, the
 * way a sticky deployment runs), one writer per instance, 64 sends in
 * flight. One untimed send per instance before the clock (the lease taken,
 * for sticky; the cache caught up, for both).
 *
 * Each process times itself the way `pgbench -T` does (the clock is checked
 * before each send; the sample ends when its last send returns); a sample's
 * rate is the sum of the processes' successful sends per second. p99 is over
 * every send's latency, failed ones included. Each figure is the median of
 * the repetitions; the configurations alternate, in rotating order, after
 * `--warmup` unmeasured rounds.
 *
 *   npm run bench -- contention [--ms 1000] [--reps 3] [--warmup 1]
 *
 * Prints
 *   BENCH contention.pg.hot8.optimistic value=<sends/s> unit=ops/s baseline=<1 writer sends/s> ratio=<value/baseline>
 *   BENCH contention.pg.hot8.optimistic.p99 value=<ms> unit=ms baseline=<1 writer p99> ratio=<baseline/value>
 *   BENCH contention.pg.hot8.optimistic.failed value=<failed sends per sample> unit=sends baseline=0 ratio=0
 *   ... the same for .distributed and .sticky
 *   BENCH contention.pg.routed64.optimistic value=<sends/s> unit=ops/s baseline=<1 writer sends/s> ratio=...
 *   BENCH contention.pg.routed64.sticky value=<sends/s> unit=ops/s baseline=<routed64.optimistic> ratio=<sticky/optimistic>
 *   BENCH contention.pg.routed64.<optimistic|sticky>.failed ...
 * and skips everything (with a message) when PostgreSQL is not reachable.
 */
import { Context, Effect, Exit, Layer, Queue, Schema, Scope } from "effect"
import { FSMRuntime, LockingStrategy, Machine, SqlEventStore } from "effect-fsm"
import * as PgEventStore from "effect-fsm/PgEventStore"
import * as readline from "node:readline"
import * as vm from "node:vm"
import {
  freshPgSchema,
  pgClientLayer,
  pgConfig,
  pgUnreachable,
  printNoBaseline,
  runScript,
  spawnWorkerProcess,
  timedWorkers,
  workerProtocolPrefix
} from "./db.js"
import { commonFlags, isMain, median, parseFlags, printBench, progress } from "./run.js"

// ---------------------------------------------------------------------------
// The machine: a counter whose `Add` is accepted in every state
// ---------------------------------------------------------------------------

const CounterState = Schema.Union(
  Schema.TaggedStruct("Even", { count: Schema.Number }),
  Schema.TaggedStruct("Odd", { count: Schema.Number })
)
type CounterState = typeof CounterState.Type
const CounterEvent = Schema.Union(Schema.TaggedStruct("Add", { by: Schema.Number }))

const add = (s: CounterState, e: { readonly by: number }) => ({ count: s.count + e.by })
const isEven = (s: CounterState, e: { readonly by: number }) => (s.count + e.by) % 2 === 0

const Counter = Machine.make({
  name: "bench-counter",
  version: 1,
  state: CounterState,
  event: CounterEvent,
  initial: { _tag: "Even", count: 0 },
  transitions: {
    Even: { Add: [{ to: "Even", guard: isEven, build: add }, { to: "Odd", build: add }] },
    Odd: { Add: [{ to: "Even", guard: isEven, build: add }, { to: "Odd", build: add }] }
  }
})

const addOne = { _tag: "Add", by: 1 } as const

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

type Strategy = "optimistic" | "distributed" | "sticky"

const distributedOptions = { ...LockingStrategy.presets.default, retryInterval: "2 millis" } as const

/** The runtime of one sample: no locking layer (the optimistic default), or a distributed one. */
const runtimeLayer = (strategy: Strategy, nodeId: string) => {
  const runtime = FSMRuntime.layer({ machines: [Counter], nodeId })
  return strategy === "optimistic"
    ? runtime
    : runtime.pipe(
      Layer.provide(
        LockingStrategy.distributed(strategy === "sticky" ? { ...distributedOptions, scope: "sticky" } : distributedOptions)
      )
    )
}

// ---------------------------------------------------------------------------
// Worker processes: one store each; a runtime per sample, on command
// ---------------------------------------------------------------------------

const workerEnv = "EFFECT_FSM_BENCH_CONTENTION_WORKER"

const protocolPrefix = workerProtocolPrefix

interface WorkerConfig {
  readonly schema: string
  readonly nodeId: string
  readonly maxConnections: number
}

type Command =
  | {
    readonly op: "prepare"
    readonly strategy: Strategy
    /** Writer `w` sends to `instances[w % instances.length]`. */
    readonly instances: ReadonlyArray<string>
    readonly writers: number
    /** One untimed send per instance before the clock. */
    readonly prime: boolean
  }
  | { readonly op: "go"; readonly ms: number }
  | { readonly op: "close" }
  | { readonly op: "exit" }

/** What one process reports of one sample. */
interface WorkerResult {
  readonly ok: number
  readonly failures: Readonly<Record<string, number>>
  readonly elapsedMs: number
  /** Of every send, failed ones included, in ms. */
  readonly latencies: ReadonlyArray<number>
}

// `--expose-gc` is switched on by run.ts when it is imported.
const gc = vm.runInNewContext("gc") as () => void

const worker = async (config: WorkerConfig): Promise<void> => {
  const say = (line: string) => process.stdout.write(`${protocolPrefix}${line}\n`)
  const program = Effect.gen(function*() {
    const commands = yield* Queue.unbounded<Command>()
    const input = readline.createInterface({ input: process.stdin })
    input.on("line", (line) => Queue.unsafeOffer(commands, JSON.parse(line) as Command))
    input.on("close", () => Queue.unsafeOffer(commands, { op: "exit" }))
    // The parent migrated the schema.
    const store = yield* Layer.build(
      PgEventStore.layer({ ...pgConfig({ schema: config.schema, maxConnections: config.maxConnections }), migrate: false })
    )
    say("ready")
    let sampleNo = 0
    let running: { readonly scope: Scope.CloseableScope; readonly run: (ms: number) => Effect.Effect<WorkerResult> } | undefined
    const close = Effect.suspend(() => {
      const current = running
      running = undefined
      return current === undefined ? Effect.void : Scope.close(current.scope, Exit.void)
    })
    while (true) {
      const command = yield* Queue.take(commands)
      if (command.op === "prepare") {
        yield* close
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(
          runtimeLayer(command.strategy, `${config.nodeId}-${++sampleNo}`).pipe(Layer.provide(Layer.succeedContext(store))),
          scope
        )
        const runtime = Context.get(context, FSMRuntime.FSMRuntime)
        const { instances, writers } = command
        yield* Effect.forEach(instances, (id) => runtime.inspect(Counter, id), { concurrency: 16, discard: true })
        if (command.prime) yield* Effect.forEach(instances, (id) => runtime.send(Counter, id, addOne), { concurrency: 16, discard: true })
        const run = (ms: number) =>
          Effect.suspend(() => {
            let ok = 0
            const failures: Record<string, number> = {}
            const latencies: Array<number> = []
            return timedWorkers(writers, ms, (w) => {
              const t0 = performance.now()
              return Effect.map(Effect.either(runtime.send(Counter, instances[w % instances.length]!, addOne)), (result) => {
                latencies.push(Math.round((performance.now() - t0) * 1000) / 1000)
                if (result._tag === "Right") ok++
                else failures[result.left._tag] = (failures[result.left._tag] ?? 0) + 1
                return true
              })
            }).pipe(Effect.map((sample): WorkerResult => ({ ok, failures, elapsedMs: sample.ms, latencies })))
          })
        running = { scope, run }
        gc()
        say("prepared")
      } else if (command.op === "go") {
        if (running === undefined) return yield* Effect.dieMessage("go before prepare")
        say(`done ${JSON.stringify(yield* running.run(command.ms))}`)
      } else if (command.op === "close") {
        yield* close
        say("closed")
      } else {
        yield* close
        input.close()
        return
      }
    }
  })
  await runScript(Effect.scoped(program))
}

interface Worker {
  readonly nodeId: string
  /** Sends `command` and waits for the reply line starting with `reply`; returns the rest of it. */
  readonly ask: (command: Command, reply: string) => Effect.Effect<string, Error>
  readonly expect: (reply: string) => Effect.Effect<string, Error>
}

/** A worker process for the scope; on release it is asked to exit. */
const spawnWorker = (config: WorkerConfig): Effect.Effect<Worker, never, Scope.Scope> =>
  Effect.map(
    spawnWorkerProcess({
      script: import.meta.url,
      envVar: workerEnv,
      config,
      exitLine: JSON.stringify({ op: "exit" } satisfies Command),
      // A sticky sample's losing process waits 4 x 5 s for leases, so replies may take a while.
      replyTimeoutSeconds: 120
    }),
    (worker): Worker => ({
      nodeId: config.nodeId,
      ask: (command, reply) => worker.ask(JSON.stringify(command), reply),
      expect: worker.expect
    })
  )

// ---------------------------------------------------------------------------
// Samples and rounds
// ---------------------------------------------------------------------------

interface Figures {
  /** Successful sends per second, summed over the processes. */
  readonly rate: number
  readonly p99: number
  readonly failed: number
}

const p99Of = (xs: ReadonlyArray<number>): number => {
  if (xs.length === 0) return 0
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.ceil(sorted.length * 0.99) - 1]!
}

const fmt = (n: number): string => (Math.abs(n) >= 100 ? String(Math.round(n)) : String(Number(n.toPrecision(3))))

interface Setup {
  readonly creator: FSMRuntime.FSMRuntime["Type"]
  readonly workers: ReadonlyArray<Worker>
  readonly ms: number
}

let sampleCounter = 0

/**
 * One sample: fresh instances, created by the parent; each process given
 * `instances(i)` and `writers`, its runtime built and the instances loaded;
 * then all processes started at once and their results combined.
 */
const sample = (setup: Setup, config: {
  readonly strategy: Strategy
  readonly processes: number
  readonly writers: number
  /** The instances process `p` sends to, given the sample's prefix. */
  readonly instances: (prefix: string, process: number) => ReadonlyArray<string>
  readonly prime: boolean
}) =>
  Effect.gen(function*() {
    const prefix = `s${++sampleCounter}-`
    const workers = setup.workers.slice(0, config.processes)
    const assigned = workers.map((_, p) => config.instances(prefix, p))
    const all = [...new Set(assigned.flat())]
    yield* Effect.forEach(all, (id) => setup.creator.create(Counter, id), { concurrency: 16, discard: true })
    yield* Effect.forEach(
      workers,
      (w, p) => w.ask({ op: "prepare", strategy: config.strategy, instances: assigned[p]!, writers: config.writers, prime: config.prime }, "prepared"),
      { concurrency: "unbounded", discard: true }
    )
    const results = yield* Effect.forEach(
      workers,
      (w) => Effect.map(w.ask({ op: "go", ms: setup.ms }, "done"), (json) => JSON.parse(json) as WorkerResult),
      { concurrency: "unbounded" }
    )
    // Closed only once every process is done, so a sticky lease stays with its holder for the whole sample.
    yield* Effect.forEach(workers, (w) => w.ask({ op: "close" }, "closed"), { concurrency: "unbounded", discard: true })
    const failures: Record<string, number> = {}
    for (const r of results) for (const [tag, n] of Object.entries(r.failures)) failures[tag] = (failures[tag] ?? 0) + n
    const figures: Figures = {
      rate: results.reduce((sum, r) => sum + r.ok / (r.elapsedMs / 1000), 0),
      p99: p99Of(results.flatMap((r) => r.latencies)),
      failed: Object.values(failures).reduce((a, b) => a + b, 0)
    }
    const perProcess = results.map((r, p) => `${workers[p]!.nodeId} ${r.ok} ok in ${Math.round(r.elapsedMs)} ms`).join(", ")
    const failedText = Object.entries(failures).map(([tag, n]) => `${n} ${tag}`).join(", ")
    return { figures, detail: `${perProcess}${failedText === "" ? "" : `; failed: ${failedText}`}` }
  })

/**
 * `warmup` unmeasured rounds, then `reps` measured ones, each running every
 * configuration once, rotating which goes first; the median of each figure.
 */
const rounds = <K extends string>(options: {
  readonly label: string
  readonly reps: number
  readonly warmup: number
  readonly samplers: Record<K, Effect.Effect<{ readonly figures: Figures; readonly detail: string }, unknown>>
}) =>
  Effect.gen(function*() {
    const reps = Math.max(3, options.reps)
    const names = Object.keys(options.samplers) as Array<K>
    const measured = new Map<K, Array<Figures>>(names.map((k) => [k, []]))
    for (let i = 0; i < options.warmup + reps; i++) {
      const isMeasured = i >= options.warmup
      const round = isMeasured ? `rep ${i - options.warmup + 1}/${reps}` : `warmup ${i + 1}/${options.warmup}`
      for (let j = 0; j < names.length; j++) {
        const name = names[(i + j) % names.length]!
        const { detail, figures } = yield* options.samplers[name]
        progress(
          `  ${options.label} ${round} ${name}: ${fmt(figures.rate)} ops/s, p99 ${fmt(figures.p99)} ms, ${figures.failed} failed (${detail})`
        )
        if (isMeasured) measured.get(name)!.push(figures)
      }
    }
    return Object.fromEntries(names.map((k) => {
      const xs = measured.get(k)!
      return [k, { rate: median(xs.map((f) => f.rate)), p99: median(xs.map((f) => f.p99)), failed: median(xs.map((f) => f.failed)) }]
    })) as Record<K, Figures>
  })

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

const hotWritersPerProcess = 4
const routedPerProcess = 32
/** Each worker's pool: enough for the 32 sends in flight of routed64. */
const workerPool = 24

const measure = (flags: { readonly ms: number; readonly reps: number; readonly warmup: number }) =>
  Effect.scoped(Effect.gen(function*() {
    const schema = yield* freshPgSchema
    // Migrates the schema, and creates every sample's instances (untimed).
    const store = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provide(pgClientLayer({ schema, maxConnections: 8 }))))
    const creator = Context.get(
      yield* Layer.build(
        FSMRuntime.layer({ machines: [Counter], nodeId: "creator", cacheSize: 1 }).pipe(Layer.provide(Layer.succeedContext(store)))
      ),
      FSMRuntime.FSMRuntime
    )
    const workers = yield* Effect.forEach(
      ["node-a", "node-b"],
      (nodeId) => spawnWorker({ schema, nodeId, maxConnections: workerPool }),
      { concurrency: "unbounded" }
    )
    yield* Effect.forEach(workers, (w) => w.expect("ready"), { concurrency: "unbounded", discard: true })
    const setup: Setup = { creator, workers, ms: flags.ms }
    const common = { reps: flags.reps, warmup: flags.warmup }

    // --- hot8: one instance, 4 writers in each of 2 processes -------------
    const hot = (strategy: Strategy, processes: number, writers: number) =>
      sample(setup, { strategy, processes, writers, instances: (prefix) => [`${prefix}hot`], prime: false })
    const hot8 = yield* rounds({
      label: "contention.pg.hot8",
      ...common,
      samplers: {
        "1 writer": hot("optimistic", 1, 1),
        optimistic: hot("optimistic", 2, hotWritersPerProcess),
        distributed: hot("distributed", 2, hotWritersPerProcess),
        sticky: hot("sticky", 2, hotWritersPerProcess)
      }
    })
    const single = hot8["1 writer"]
    for (const strategy of ["optimistic", "distributed", "sticky"] as const) {
      const name = `contention.pg.hot8.${strategy}`
      printBench(name, { value: hot8[strategy].rate, unit: "ops/s", baseline: single.rate })
      printBench(`${name}.p99`, { value: hot8[strategy].p99, unit: "ms", baseline: single.p99, lowerIsBetter: true })
      printNoBaseline(`${name}.failed`, hot8[strategy].failed, "sends")
    }

    // --- routed64: each process sends to its own 32 instances -------------
    const routed = (strategy: Strategy) =>
      sample(setup, {
        strategy,
        processes: 2,
        writers: routedPerProcess,
        instances: (prefix, p) => Array.from({ length: routedPerProcess }, (_, i) => `${prefix}p${p}-${i}`),
        prime: true
      })
    const routed64 = yield* rounds({
      label: "contention.pg.routed64",
      ...common,
      samplers: { optimistic: routed("optimistic"), sticky: routed("sticky") }
    })
    printBench("contention.pg.routed64.optimistic", { value: routed64.optimistic.rate, unit: "ops/s", baseline: single.rate })
    printNoBaseline("contention.pg.routed64.optimistic.failed", routed64.optimistic.failed, "sends")
    printBench("contention.pg.routed64.sticky", { value: routed64.sticky.rate, unit: "ops/s", baseline: routed64.optimistic.rate })
    printNoBaseline("contention.pg.routed64.sticky.failed", routed64.sticky.failed, "sends")
  }))

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const flags = parseFlags("contention", args, {
    reps: { ...commonFlags.reps, default: 3 },
    warmup: { ...commonFlags.warmup, default: 1 },
    ms: { default: 1_000, description: "length of one sample's send window, in ms" }
  })
  await runScript(Effect.gen(function*() {
    const unreachable = yield* pgUnreachable
    if (unreachable === undefined) yield* measure(flags)
    else progress(`contention.pg skipped: ${unreachable}`)
  }))
}

if (isMain(import.meta.url)) {
  const workerConfig = process.env[workerEnv]
  if (workerConfig !== undefined) await worker(JSON.parse(workerConfig) as WorkerConfig)
  else await main(process.argv.slice(2))
}
