/**
 * The process-level chaos run (`npm run chaos`): several worker processes
 * send to a shared set of instances on one database while this parent
 * SIGKILLs random workers at random moments and starts replacements, and,
 * on PostgreSQL, restarts the database once mid-load. Then it stops
 * everything, lets one clean worker fire the remaining timers, and checks
 * the log itself (see `check.ts`): every acknowledged send exactly once, no
 * gaps, every timer fired exactly once unless its state was left first, and
 * every instance replays in a fresh runtime.
 *
 *   npm run chaos
 *   npm run chaos -- --duration 30 --workers 3 --instances 20 --backends sqlite
 *   npm run chaos -- --help
 *
 * Results go to stdout as `CHAOS <backend>.<name> value=<n>` lines; progress
 * and problems to stderr. Exits 1 on any loss, duplicate, gap, timer
 * problem, replay failure, worker crash or defect. PostgreSQL is only ever
 * 127.0.0.1 (PGPORT / PGUSER / PGDATABASE, default 5432 / postgres / test);
 * the run works in a schema `chaos_<random>` it creates and drops, and a
 * SQLite file in a temporary directory it removes, also on failure or Ctrl-C.
 * PostgreSQL is started again before the script exits if it is not running.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Cause, Context, Effect, Exit, Layer, Logger, LogLevel, Redacted } from "effect"
import { FSMRuntime } from "effect-fsm"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { type Ack, check, readEvents, type Report } from "./check.js"
import { type CutProxy, startCutProxy } from "./proxy.js"
import {
  type Backend,
  clientLayer,
  instanceId,
  makeChaosMachine,
  makeRandom,
  noTimers,
  parseWorkerLine,
  pgUrl,
  runtimeLayer,
  type Target,
  type WorkerConfig,
  workerEnv
} from "./shared.js"

// ---------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------

const flagSpec = {
  duration: { default: 60, description: "seconds of load per backend" },
  workers: { default: 4, description: "worker processes running at once" },
  instances: { default: 50, description: "shared instances the workers send to" },
  concurrency: { default: 4, description: "send loops per worker" },
  "timer-ms": { default: 300, description: "timeout armed on entering Armed, in ms" },
  "kill-interval": { default: 4, description: "mean seconds between two SIGKILLs (uniform 0.5x..1.5x)" },
  "late-grace": { default: 20, description: "seconds a due timer may wait before a user event supersedes it without counting as a miss" },
  "cut-rate": { default: 0.5, description: "PostgreSQL: connections cut per second by a proxy that swallows a server reply (0: no proxy)" },
  "drain-timeout": { default: 90, description: "longest wait, in seconds, for the remaining timers to fire" },
  seed: { default: 0, description: "random seed (0: pick one, printed)" }
} as const
type FlagName = keyof typeof flagSpec

const usage = () =>
  [
    "usage: npm run chaos -- [--backends pg,sqlite] [--pg-restart-mode fast|immediate] [--keep-logs]",
    ...Object.entries(flagSpec).map(([name, spec]) => `  --${name} <n>  ${spec.description} (default ${spec.default})`)
  ].join("\n")

const parseFlags = () => {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      ...Object.fromEntries(Object.keys(flagSpec).map((name) => [name, { type: "string" as const }])),
      backends: { type: "string" },
      "pg-restart-mode": { type: "string" },
      "keep-logs": { type: "boolean" },
      help: { type: "boolean" }
    },
    strict: true
  })
  if (values.help === true) {
    process.stdout.write(`${usage()}\n`)
    process.exit(0)
  }
  const numbers = {} as Record<FlagName, number>
  for (const [name, spec] of Object.entries(flagSpec) as Array<[FlagName, (typeof flagSpec)[FlagName]]>) {
    const raw = (values as Record<string, unknown>)[name]
    const value = raw === undefined ? spec.default : Number(raw)
    if (!Number.isFinite(value) || value < 0 || (name !== "seed" && name !== "cut-rate" && value <= 0)) {
      throw new Error(`--${name} must be a positive number, got ${String(raw)}\n${usage()}`)
    }
    numbers[name] = value
  }
  const backends = String(values.backends ?? "pg,sqlite").split(",").filter((b) => b !== "")
  for (const b of backends) if (b !== "pg" && b !== "sqlite") throw new Error(`unknown backend ${b}\n${usage()}`)
  const restartMode = values["pg-restart-mode"] as string | undefined
  if (restartMode !== undefined && !["fast", "immediate", "smart"].includes(restartMode)) {
    throw new Error(`--pg-restart-mode must be fast, immediate or smart`)
  }
  return {
    ...numbers,
    seed: numbers.seed === 0 ? 1 + Math.floor(Math.random() * 2 ** 31) : Math.floor(numbers.seed),
    backends: backends as Array<Backend>,
    restartMode,
    keepLogs: values["keep-logs"] === true
  }
}
type Flags = ReturnType<typeof parseFlags>

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

const t0 = Date.now()
const progress = (message: string) =>
  process.stderr.write(`[chaos ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${message}\n`)

const fmt = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(2))
const chaosLine = (name: string, value: number) => process.stdout.write(`CHAOS ${name} value=${fmt(value)}\n`)

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)))

/** Waits for `promise`, but at most `ms` (without keeping the process alive afterwards). */
const within = (promise: Promise<unknown>, ms: number) => {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]).finally(() =>
    clearTimeout(timer)
  )
}

const logger = Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))
const run = <A, E>(effect: Effect.Effect<A, E>): Promise<A> =>
  Effect.runPromise(effect.pipe(Effect.provide(logger), Logger.withMinimumLogLevel(LogLevel.Warning)))

// ---------------------------------------------------------------------------
// Cleanup, also on failure and Ctrl-C
// ---------------------------------------------------------------------------

const children = new Set<ChildProcess>()
const cleanups: Array<() => Promise<void>> = []

const killChildren = () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
}

let cleaningUp: Promise<void> | undefined
/** Set on SIGINT / SIGTERM: workers that die now (Ctrl-C reaches them too) are not crashes. */
let interrupted = false
const cleanup = (): Promise<void> => {
  cleaningUp ??= (async () => {
    killChildren()
    await sleep(200)
    while (cleanups.length > 0) {
      const step = cleanups.pop()!
      try {
        await step()
      } catch (error) {
        progress(`cleanup step failed: ${String(error)}`)
      }
    }
  })()
  return cleaningUp
}

// `on`, not `once`: Ctrl-C reaches us twice (from the terminal, and relayed by tsx), and a second
// signal must not kill the process halfway through its cleanup.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (interrupted) return
    interrupted = true
    progress(`${signal}: cleaning up`)
    void cleanup()
      .then(ensurePgRunning)
      .finally(() => process.exit(130))
  })
}

// ---------------------------------------------------------------------------
// PostgreSQL: where it is, restarting it, making sure it runs at the end
// ---------------------------------------------------------------------------

const pgTarget = {
  port: Number(process.env.PGPORT ?? 5432),
  user: process.env.PGUSER ?? "postgres",
  database: process.env.PGDATABASE ?? "test"
}

/**
 * Runs a command in a process group of its own, so that a Ctrl-C of the run
 * does not interrupt, say, a restart of PostgreSQL halfway.
 */
const exec = (file: string, args: ReadonlyArray<string>, timeoutMs = 120_000) =>
  new Promise<{ readonly code: number; readonly stdout: string; readonly stderr: string }>((resolve) => {
    const child = spawn(file, args, { detached: true, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk) => (stdout += String(chunk)))
    child.stderr.on("data", (chunk) => (stderr += String(chunk)))
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
    child.on("error", (error) => {
      clearTimeout(timer)
      resolve({ code: 127, stdout, stderr: `${stderr}${error.message}` })
    })
    child.on("close", (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? 1, stdout, stderr })
    })
  })

/** The local cluster serving our port: [version, name, status]. */
const localCluster = async (): Promise<{ readonly version: string; readonly name: string; readonly online: boolean }> => {
  const listed = await exec("pg_lsclusters", ["--no-header"])
  for (const line of listed.stdout.split("\n")) {
    const [version, name, port, status] = line.trim().split(/\s+/)
    if (version !== undefined && name !== undefined && Number(port) === pgTarget.port) {
      return { version, name, online: status === "online" }
    }
  }
  // The machine's documented cluster.
  const versions = fs.existsSync("/etc/postgresql") ? fs.readdirSync("/etc/postgresql") : []
  return { version: versions[0] ?? "15", name: "main", online: false }
}

const pgCtl = async (action: "start" | "restart", mode?: string) => {
  const cluster = await localCluster()
  const args = ["--skip-systemctl-redirect", ...(mode === undefined ? [] : ["--mode", mode]), cluster.version, cluster.name, action]
  return exec("pg_ctlcluster", args)
}

const pgAnswers = async () => (await exec("pg_isready", ["-h", "127.0.0.1", "-p", String(pgTarget.port), "-t", "2"])).code === 0

const ensurePgRunning = async () => {
  if (await pgAnswers()) return
  const cluster = await localCluster()
  if (!cluster.online) {
    progress(`PostgreSQL ${cluster.version}/${cluster.name} is not running: starting it`)
    const started = await pgCtl("start")
    if (started.code !== 0) progress(`pg_ctlcluster start: ${started.stderr.trim()}`)
  }
  for (let i = 0; i < 60 && !(await pgAnswers()); i++) await sleep(500)
  progress((await pgAnswers()) ? "PostgreSQL answers" : "PostgreSQL does not answer at 127.0.0.1 after 30 s")
}

const adminClient = (maxConnections = 1) =>
  PgClient.layer({ url: Redacted.make(pgUrl(pgTarget)), connectTimeout: "5 seconds", maxConnections })

const adminQuery = (statement: (sql: SqlClient.SqlClient) => Effect.Effect<unknown, unknown>) =>
  run(Effect.scoped(Effect.flatMap(Layer.build(adminClient()), (ctx) => statement(Context.get(ctx, SqlClient.SqlClient)))))

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

interface Worker {
  readonly id: number
  readonly config: WorkerConfig
  readonly child: ChildProcess
  readonly logPath: string
  killedByUs: boolean
  readyAt: number | undefined
  readonly ready: Promise<void>
  readonly exited: Promise<void>
}

interface Tally {
  readonly acks: Array<Ack>
  readonly errors: Map<string, number>
  readonly defects: Array<string>
  readonly crashes: Array<string>
  kills: number
}

const workerScript = path.join(path.dirname(fileURLToPath(import.meta.url)), "worker.ts")

const tailOf = (file: string, lines = 15) => {
  try {
    return fs.readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n")
  } catch {
    return "(no log)"
  }
}

const startWorker = (
  config: WorkerConfig,
  logDir: string,
  tally: Tally,
  onExit: (worker: Worker, code: number | null, signal: NodeJS.Signals | null) => void
): Worker => {
  const logPath = path.join(logDir, `${config.target.backend}-w${config.id}-${config.mode}.log`)
  const logFd = fs.openSync(logPath, "a")
  const child = spawn(process.execPath, [...process.execArgv, workerScript], {
    env: { ...process.env, [workerEnv]: JSON.stringify(config) },
    stdio: ["pipe", "pipe", logFd]
  })
  fs.closeSync(logFd)
  children.add(child)
  let markReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => (markReady = resolve))
  let markExited: () => void = () => {}
  const exited = new Promise<void>((resolve) => (markExited = resolve))
  const worker: Worker = { id: config.id, config, child, logPath, killedByUs: false, readyAt: undefined, ready, exited }
  readline.createInterface({ input: child.stdout! }).on("line", (line) => {
    const parsed = parseWorkerLine(line)
    if (parsed === undefined) return
    switch (parsed._tag) {
      case "READY":
        worker.readyAt = parsed.at
        markReady()
        return
      case "ACK":
        tally.acks.push({ instanceId: instanceId(parsed.instance), token: parsed.token, seqNr: parsed.seqNr, at: parsed.at })
        return
      case "ERR":
        tally.errors.set(parsed.error, (tally.errors.get(parsed.error) ?? 0) + 1)
        return
      case "DEFECT":
        tally.defects.push(`w${config.id}: ${parsed.text}`)
        return
    }
  })
  child.stdin!.on("error", () => {})
  child.on("exit", (code, signal) => {
    children.delete(child)
    markReady()
    onExit(worker, code, signal)
    markExited()
  })
  return worker
}

const stopWorker = async (worker: Worker, signal: "SIGTERM" | "SIGKILL") => {
  worker.killedByUs = true
  if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill(signal)
  const timer = setTimeout(() => worker.child.kill("SIGKILL"), 10_000)
  await worker.exited
  clearTimeout(timer)
}

// ---------------------------------------------------------------------------
// One backend
// ---------------------------------------------------------------------------

interface Outcome {
  readonly report: Report
  readonly failed: ReadonlyArray<string>
}

const runBackend = async (backend: Backend, flags: Flags, logDir: string): Promise<Outcome> => {
  const random = makeRandom(flags.seed + (backend === "pg" ? 0 : 7919))
  const machine = makeChaosMachine(flags["timer-ms"])
  const ids = Array.from({ length: flags.instances }, (_, i) => instanceId(i))
  const runId = `${Date.now().toString(36)}${Math.floor(random.next() * 1e9).toString(36)}`

  // --- a fresh database ---
  let target: Target
  /** Where the workers connect: on PostgreSQL, through the connection-cutting proxy. */
  let workerTarget: Target
  let proxy: CutProxy | undefined
  if (backend === "pg") {
    await ensurePgRunning()
    const schema = `chaos_${runId}`
    await adminQuery((sql) => sql`CREATE SCHEMA ${sql(schema)}`)
    cleanups.push(async () => {
      await ensurePgRunning()
      await adminQuery((sql) => sql`DROP SCHEMA IF EXISTS ${sql(schema)} CASCADE`)
      progress(`pg: dropped schema ${schema}`)
    })
    target = { backend: "pg", ...pgTarget, schema }
    workerTarget = target
    progress(`pg: schema ${schema} on 127.0.0.1:${pgTarget.port}/${pgTarget.database}`)
    if (flags["cut-rate"] > 0) {
      const cutter = await startCutProxy({ upstreamPort: pgTarget.port, cutsPerSecond: flags["cut-rate"], random: random.next })
      proxy = cutter
      cleanups.push(() => cutter.close())
      workerTarget = { ...target, port: cutter.port }
      progress(`pg: workers connect through a proxy at 127.0.0.1:${cutter.port} that cuts ~${flags["cut-rate"]} connections/s`)
    }
  } else {
    const directory = fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-chaos-db-"))
    cleanups.push(async () => {
      fs.rmSync(directory, { recursive: true, force: true })
      progress(`sqlite: removed ${directory}`)
    })
    target = { backend: "sqlite", filename: path.join(directory, "chaos.db") }
    workerTarget = target
    progress(`sqlite: ${target.filename}`)
  }

  // --- the instances, created before any worker runs ---
  await run(Effect.scoped(Effect.gen(function*() {
    const runtime = Context.get(yield* Layer.build(runtimeLayer(target, machine, "chaos-creator", noTimers)), FSMRuntime.FSMRuntime)
    yield* Effect.forEach(ids, (id) => runtime.create(machine, id, { _tag: "Idle", n: 0 }), { concurrency: 8, discard: true })
  })))
  progress(`${backend}: created ${ids.length} instances`)

  // --- workers ---
  const tally: Tally = { acks: [], errors: new Map(), defects: [], crashes: [], kills: 0 }
  const live = new Set<Worker>()
  let nextId = 1
  let loadOver = false
  const configFor = (mode: WorkerConfig["mode"]): WorkerConfig => ({
    // The drain worker connects directly: it must finish, not be cut.
    target: mode === "load" ? workerTarget : target,
    id: nextId++,
    mode,
    instances: flags.instances,
    concurrency: flags.concurrency,
    timerMillis: flags["timer-ms"],
    seed: flags.seed * 31 + nextId
  })
  const onExit = (worker: Worker, code: number | null, signal: NodeJS.Signals | null) => {
    live.delete(worker)
    if (worker.killedByUs || interrupted) return
    const what = `w${worker.id} (${worker.config.mode}) exited by itself (code ${code}, signal ${signal}); log ${worker.logPath}:\n${tailOf(worker.logPath)}`
    tally.crashes.push(what)
    progress(`${backend}: CRASH ${what}`)
    if (!loadOver && worker.config.mode === "load") spawnLoad()
  }
  const spawnLoad = () => {
    const worker = startWorker(configFor("load"), logDir, tally, onExit)
    live.add(worker)
    return worker
  }
  const first = Array.from({ length: flags.workers }, () => spawnLoad())
  await within(Promise.all(first.map((w) => w.ready)), 120_000)
  progress(`${backend}: ${first.filter((w) => w.readyAt !== undefined).length}/${flags.workers} workers ready; load for ${flags.duration} s`)

  // --- load, kills and (PostgreSQL) one restart ---
  const loadStart = Date.now()
  const loadEnd = loadStart + flags.duration * 1000
  let restart: { issuedAt: number; doneAt?: number; code?: number; promise: Promise<void> } | undefined
  const restartTimer = backend === "pg"
    ? setTimeout(() => {
      const issuedAt = Date.now()
      progress(`pg: restarting PostgreSQL (pg_ctlcluster ... restart${flags.restartMode === undefined ? "" : ` --mode ${flags.restartMode}`})`)
      const state: { issuedAt: number; doneAt?: number; code?: number; promise: Promise<void> } = { issuedAt, promise: Promise.resolve() }
      state.promise = pgCtl("restart", flags.restartMode).then((result) => {
        state.doneAt = Date.now()
        state.code = result.code
        progress(`pg: restart finished in ${((state.doneAt - issuedAt) / 1000).toFixed(1)} s (exit ${result.code}${result.code === 0 ? "" : `: ${result.stderr.trim()}`})`)
      })
      restart = state
    }, flags.duration * 1000 * 0.4)
    : undefined

  let lastAcks = 0
  let lastTick = Date.now()
  const ticker = setInterval(() => {
    const now = Date.now()
    const rate = ((tally.acks.length - lastAcks) * 1000) / (now - lastTick)
    lastAcks = tally.acks.length
    lastTick = now
    const errors = [...tally.errors].map(([tag, n]) => `${tag}:${n}`).join(",") || "none"
    progress(`${backend}: acked=${tally.acks.length} (${rate.toFixed(0)}/s) errors=${errors} workers=${live.size} kills=${tally.kills} crashes=${tally.crashes.length}`)
  }, 5000)

  while (Date.now() < loadEnd) {
    await sleep(Math.min(loadEnd - Date.now(), random.between(0.5, 1.5) * flags["kill-interval"] * 1000))
    if (Date.now() >= loadEnd) break
    const candidates = [...live].filter((w) => w.config.mode === "load")
    if (candidates.length === 0) continue
    const victim = candidates[random.int(candidates.length)]!
    victim.killedByUs = true
    victim.child.kill("SIGKILL")
    tally.kills++
    spawnLoad()
  }

  // --- stop everything ---
  loadOver = true
  if (restartTimer !== undefined) clearTimeout(restartTimer)
  clearInterval(ticker)
  await Promise.all([...live].map((w) => stopWorker(w, "SIGKILL")))
  if (restart !== undefined) await restart.promise
  progress(`${backend}: load over: ${tally.acks.length} acknowledged sends, ${tally.kills} kills; draining timers`)

  let recoveredAfterRestart: number | undefined
  if (restart !== undefined && restart.doneAt !== undefined) {
    const doneAt = restart.doneAt
    const firstAck = tally.acks.reduce<number | undefined>((min, a) => (a.at > doneAt && (min === undefined || a.at < min) ? a.at : min), undefined)
    recoveredAfterRestart = firstAck === undefined ? -1 : (firstAck - restart.issuedAt) / 1000
  }
  if (backend === "pg") await ensurePgRunning()

  // --- drain: one clean worker fires what is left ---
  const drainStart = Date.now()
  const drainer = startWorker(configFor("drain"), logDir, tally, onExit)
  await within(drainer.ready, 120_000)
  const countRows = (table: string) =>
    run(Effect.scoped(Effect.gen(function*() {
      const sql = Context.get(yield* Layer.build(clientLayer(target, 1)), SqlClient.SqlClient)
      const rows = yield* sql<{ n: unknown }>`SELECT count(*) AS n FROM ${sql(table)}`
      return Number(rows[0]?.n ?? 0)
    })))
  let remaining = await countRows("fsm_timers")
  while (remaining > 0 && Date.now() - drainStart < flags["drain-timeout"] * 1000) {
    await sleep(500)
    remaining = await countRows("fsm_timers")
  }
  const drainSeconds = (Date.now() - drainStart) / 1000
  progress(`${backend}: drain ${remaining === 0 ? "done" : `gave up with ${remaining} timer rows left`} after ${drainSeconds.toFixed(1)} s`)
  await stopWorker(drainer, "SIGTERM")
  const deadLetters = await countRows("fsm_dead_letters")
  const checkedAt = Date.now()

  // --- check the log, and replay every instance in a fresh runtime ---
  const { inspectFailures, report } = await run(Effect.scoped(Effect.gen(function*() {
    const sql = Context.get(yield* Layer.build(clientLayer(target, 2)), SqlClient.SqlClient)
    const rows = yield* readEvents(machine.name).pipe(Effect.provideService(SqlClient.SqlClient, sql))
    const report = check({ machine, rows, acks: tally.acks, instanceIds: ids, now: checkedAt, lateGraceMillis: flags["late-grace"] * 1000 })
    const runtime = Context.get(yield* Layer.build(runtimeLayer(target, machine, "chaos-checker", noTimers)), FSMRuntime.FSMRuntime)
    const last = new Map(rows.map((r) => [r.instanceId, r]))
    const inspectFailures: Array<string> = []
    yield* Effect.forEach(ids, (id) =>
      Effect.exit(runtime.inspect(machine, id)).pipe(Effect.map((exit) => {
        const tail = last.get(id)
        if (Exit.isFailure(exit)) inspectFailures.push(`${id}: inspect failed: ${Cause.pretty(exit.cause)}`)
        else if (tail === undefined || exit.value.seqNr !== tail.seqNr || exit.value.state._tag !== tail.stateTag) {
          inspectFailures.push(`${id}: inspect gives #${exit.value.seqNr} ${exit.value.state._tag}, the log ends at #${tail?.seqNr} ${tail?.stateTag}`)
        }
      })), { concurrency: 4, discard: true })
    return { report, inspectFailures }
  })))

  // --- results ---
  const c = report.counts
  const sendErrors = [...tally.errors.values()].reduce((a, b) => a + b, 0)
  const lines: Array<[string, number]> = [
    ["acknowledged", c.acknowledged],
    ["acknowledged_lost", c.acknowledged_lost],
    ["duplicated_events", c.duplicated_events],
    ["ack_mismatch", c.ack_mismatch],
    ["gaps", c.gaps],
    ["replay_mismatch", c.replay_mismatch],
    ["timers_not_fired_once", c.timers_not_fired_once],
    ["replay_failures", inspectFailures.length],
    ["kills", tally.kills],
    ...(proxy === undefined ? [] : [["connection_cuts", proxy.cuts()] as [string, number]]),
    ...(restart?.doneAt === undefined ? [] : [["restart_seconds", (restart.doneAt - restart.issuedAt) / 1000] as [string, number]]),
    ["worker_crashes", tally.crashes.length],
    ["worker_defects", tally.defects.length],
    ...(recoveredAfterRestart === undefined ? [] : [["recovered_after_restart", recoveredAfterRestart] as [string, number]]),
    ["events", c.events],
    ["unacknowledged_committed", c.unacknowledged_committed],
    ["send_errors", sendErrors],
    ["armings", c.armings],
    ["timers_fired", c.timers_fired],
    ["timers_cancelled", c.timers_cancelled],
    ["timers_superseded_after_deadline", c.timers_superseded_after_deadline],
    ["timer_lateness_p99_ms", c.timer_lateness_p99_ms],
    ["timers_left", remaining],
    ["dead_letters", deadLetters],
    ["drain_seconds", drainSeconds]
  ]
  for (const [name, value] of lines) chaosLine(`${backend}.${name}`, value)
  progress(`${backend}: send errors by tag: ${[...tally.errors].map(([t, n]) => `${t}=${n}`).join(" ") || "none"}`)

  const failed: Array<string> = []
  for (const name of ["acknowledged_lost", "duplicated_events", "ack_mismatch", "gaps", "replay_mismatch", "timers_not_fired_once"] as const) {
    if (c[name] > 0) failed.push(`${backend}.${name}=${c[name]}`)
  }
  if (inspectFailures.length > 0) failed.push(`${backend}.replay_failures=${inspectFailures.length}`)
  if (tally.crashes.length > 0) failed.push(`${backend}.worker_crashes=${tally.crashes.length}`)
  if (tally.defects.length > 0) failed.push(`${backend}.worker_defects=${tally.defects.length}`)
  if (remaining > 0) failed.push(`${backend}.timers_left=${remaining}`)
  if (c.acknowledged === 0) failed.push(`${backend}: no send was acknowledged`)
  if (recoveredAfterRestart === -1) failed.push(`${backend}: no send succeeded after the restart`)
  if (restart !== undefined && restart.code !== 0) failed.push(`${backend}: the restart command failed`)

  const details = [
    ...report.problems.map((p) => `${p.check} ${p.instanceId}: ${p.detail}`),
    ...inspectFailures.map((f) => `replay_failures ${f}`),
    ...tally.crashes.map((f) => `worker_crashes ${f}`),
    ...tally.defects.map((f) => `worker_defects ${f}`)
  ]
  if (details.length > 0) {
    const file = path.join(logDir, `${backend}-problems.txt`)
    fs.writeFileSync(file, `${details.join("\n")}\n`)
    progress(`${backend}: ${details.length} problems (all in ${file}); the first ones:`)
    for (const line of details.slice(0, 25)) process.stderr.write(`  ${line}\n`)
  }
  return { report, failed }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

const main = async () => {
  const flags = parseFlags()
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-chaos-logs-"))
  progress(
    `seed ${flags.seed}; ${flags.backends.join(" + ")}; ${flags.duration} s, ${flags.workers} workers x ${flags.concurrency} loops, ${flags.instances} instances, timer ${flags["timer-ms"]} ms, a SIGKILL every ~${flags["kill-interval"]} s; worker logs in ${logDir}`
  )
  const failed: Array<string> = []
  try {
    for (const backend of flags.backends) {
      try {
        failed.push(...(await runBackend(backend, flags, logDir)).failed)
      } catch (error) {
        failed.push(`${backend}: the run itself failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}`)
        progress(failed[failed.length - 1]!)
      } finally {
        killChildren()
        // This backend's database goes now, not at the very end.
        await cleanup()
        cleaningUp = undefined
      }
    }
  } finally {
    killChildren()
    await cleanup()
    await ensurePgRunning()
  }
  const reproduce = `npm run chaos -- --seed ${flags.seed} --duration ${flags.duration} --workers ${flags.workers} --instances ${flags.instances} --backends ${flags.backends.join(",")}`
  if (failed.length > 0) {
    progress(`FAILED: ${failed.join("; ")}`)
    progress(`worker logs and problem lists kept in ${logDir}; the same schedule again (timing differs): ${reproduce}`)
    process.exitCode = 1
  } else {
    if (!flags.keepLogs) fs.rmSync(logDir, { recursive: true, force: true })
    progress(`passed${flags.keepLogs ? `; logs in ${logDir}` : ""}`)
  }
}

main().catch(async (error) => {
  progress(`chaos run failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}`)
  await cleanup()
  await ensurePgRunning()
  process.exit(1)
})
