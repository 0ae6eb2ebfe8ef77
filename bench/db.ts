/**
 * What the durable benchmarks (`durable-send`, `timeouts`, `contention`,
 * `outbox`) share: where the databases are, a PostgreSQL schema and a
 * SQLite file that exist only for one run, the store a worker process opens
 * on them, the raw single-row insert-and-commit baseline on the same driver,
 * `pgbench`, and a way to run a script's Effect program so that Ctrl-C still
 * drops what it created.
 *
 * PostgreSQL is always 127.0.0.1 (port, user, password and database from
 * `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`; defaults 5432, postgres,
 * none, test). Every table a script writes lives in a schema
 * `bench_<random>` it creates and drops, or in a temporary directory it
 * removes.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, Exit, Layer, Logger, Queue, Redacted, type Scope } from "effect"
import { SqlEventStore } from "effect-fsm"
import * as PgEventStore from "effect-fsm/PgEventStore"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { progress, type Sample } from "./run.js"

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

const fmt = (n: number): string =>
  n === 0 ? "0" : Math.abs(n) >= 100 ? String(Math.round(n)) : String(Number(n.toPrecision(3)))

/**
 * A figure without a baseline, printed `baseline=0 ratio=0` as BENCH.md
 * spells it (`printBench` would print `ratio=0.00`).
 */
export const printNoBaseline = (name: string, value: number, unit: string): void => {
  process.stdout.write(`BENCH ${name} value=${fmt(value)} unit=${unit} baseline=0 ratio=0\n`)
}

// ---------------------------------------------------------------------------
// Running a script
// ---------------------------------------------------------------------------

/** Effect's logs on stderr, so that stdout carries only the BENCH lines. */
export const logToStderr = Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.stringLogger))

/**
 * Runs a script's program, with Effect's logs on stderr; SIGINT / SIGTERM
 * interrupt it, so that its finalizers (drop the schema, remove the
 * temporary files, stop child processes) run before the process exits.
 */
export const runScript = async <A, E>(effect: Effect.Effect<A, E>): Promise<A> => {
  const program = Effect.provide(effect, logToStderr)
  const controller = new AbortController()
  const onSignal = () => controller.abort()
  process.once("SIGINT", onSignal)
  process.once("SIGTERM", onSignal)
  try {
    const exit = await Effect.runPromiseExit(program, { signal: controller.signal })
    if (Exit.isSuccess(exit)) return exit.value
    if (controller.signal.aborted) {
      progress("interrupted; cleaned up")
      process.exit(130)
    }
    throw new Error(`benchmark failed`, { cause: exit.cause })
  } finally {
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
  }
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

export interface PgTarget {
  readonly host: "127.0.0.1"
  readonly port: number
  readonly user: string
  readonly password: string | undefined
  readonly database: string
}

export const pgTarget: PgTarget = {
  host: "127.0.0.1",
  port: Number(process.env.PGPORT ?? 5432),
  user: process.env.PGUSER ?? "postgres",
  password: process.env.PGPASSWORD === "" ? undefined : process.env.PGPASSWORD,
  database: process.env.PGDATABASE ?? "test"
}

/** `@effect/sql-pg` settings for the bench database; with `schema`, every connection uses it as its search_path. */
export const pgConfig = (options: { readonly schema?: string; readonly maxConnections?: number } = {}): PgClient.PgClientConfig => {
  const url = new URL("postgres://127.0.0.1")
  url.port = String(pgTarget.port)
  url.username = encodeURIComponent(pgTarget.user)
  if (pgTarget.password !== undefined) url.password = encodeURIComponent(pgTarget.password)
  url.pathname = `/${encodeURIComponent(pgTarget.database)}`
  if (options.schema !== undefined) url.searchParams.set("options", `-c search_path=${options.schema}`)
  return {
    url: Redacted.make(url.toString()),
    connectTimeout: "5 seconds",
    ...(options.maxConnections === undefined ? {} : { maxConnections: options.maxConnections })
  }
}

export const pgClientLayer = (options: { readonly schema?: string; readonly maxConnections?: number } = {}) =>
  PgEventStore.layerClient(pgConfig(options))

/** `undefined` when PostgreSQL answers at 127.0.0.1, else why not. */
export const pgUnreachable: Effect.Effect<string | undefined> = Effect.scoped(
  Effect.flatMap(Layer.build(pgClientLayer({ maxConnections: 1 })), (context) => Context.get(context, PgClient.PgClient)`SELECT 1`)
).pipe(
  Effect.match({
    onFailure: (error) =>
      `PostgreSQL is not reachable at ${pgTarget.host}:${pgTarget.port}/${pgTarget.database}: ${String((error as Error).message ?? error)}`,
    onSuccess: () => undefined
  })
)

/** A new schema `bench_<random>`, dropped with everything in it when the scope closes. */
export const freshPgSchema: Effect.Effect<string, unknown, Scope.Scope> = Effect.gen(function*() {
  const admin = Context.get(yield* Layer.build(pgClientLayer({ maxConnections: 1 })), PgClient.PgClient)
  const schema = `bench_${crypto.randomUUID().replace(/-/g, "").slice(0, 16)}`
  yield* Effect.acquireRelease(
    admin`CREATE SCHEMA ${admin(schema)}`,
    () =>
      admin`DROP SCHEMA ${admin(schema)} CASCADE`.pipe(
        Effect.tap(() => Effect.sync(() => progress(`dropped schema ${schema}`))),
        Effect.catchAllCause((cause) => Effect.logWarning(`could not drop schema ${schema}`, cause))
      )
  )
  progress(`created schema ${schema} in ${pgTarget.database} on ${pgTarget.host}:${pgTarget.port}`)
  return schema
})

// ---------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------

/** The path of a database file in a new temporary directory, removed (with the WAL files) when the scope closes. */
export const tempSqliteFile: Effect.Effect<string, never, Scope.Scope> = Effect.map(
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-bench-"))),
    (directory) => Effect.sync(() => fs.rmSync(directory, { recursive: true, force: true }))
  ),
  (directory) => path.join(directory, "bench.db")
)

// ---------------------------------------------------------------------------
// Timed workers and the raw baseline
// ---------------------------------------------------------------------------

/**
 * `concurrency` fibers, each calling `step` one call after the other until
 * `ms` have passed (checked before each call) or `step` returns `false`
 * (no work left, nothing done). Returns the operations done (calls that
 * returned `true`) and the time until the last fiber finished: the shape of
 * `pgbench -T`.
 */
export const timedWorkers = <E, R>(
  concurrency: number,
  ms: number,
  step: (worker: number, n: number) => Effect.Effect<boolean, E, R>
): Effect.Effect<Sample, E, R> =>
  Effect.suspend(() => {
    let ops = 0
    const t0 = performance.now()
    const deadline = t0 + ms
    const worker = (w: number) =>
      Effect.iterate(0, {
        while: (n) => n >= 0 && performance.now() < deadline,
        body: (n) => Effect.map(step(w, n), (did) => (did ? (ops++, n + 1) : -1))
      })
    return Effect.forEach(Array.from({ length: concurrency }, (_, w) => w), worker, {
      concurrency: "unbounded",
      discard: true
    }).pipe(Effect.map(() => ({ ops, ms: performance.now() - t0 })))
  })

/**
 * Creates `raw` with the same columns, types, primary key and indexes as the
 * store's events table (already migrated on this connection), by copying the
 * library's own definition rather than restating it: `LIKE` on PostgreSQL,
 * the DDL kept in `sqlite_master` on SQLite.
 */
export const createRawTable = (sql: SqlClient.SqlClient, backend: "pg" | "sqlite", raw: string, events: string) =>
  backend === "pg"
    ? sql.unsafe(`CREATE TABLE ${raw} (LIKE ${events} INCLUDING ALL)`).pipe(Effect.asVoid)
    : Effect.flatMap(
      sql<{ readonly sql: string }>`SELECT sql FROM sqlite_master WHERE tbl_name = ${events} AND sql IS NOT NULL ORDER BY type DESC`,
      (rows) =>
        Effect.forEach(rows, (row) => sql.unsafe(row.sql.replaceAll(events, raw)), { discard: true })
    )

/** What a raw row carries: the same payloads the order workload commits. */
const rawPayloads = [
  { tag: "Pay", payload: JSON.stringify({ _tag: "Pay", amount: 42 }), stateTag: "Paid" },
  { tag: "Ship", payload: JSON.stringify({ _tag: "Ship", tracking: "TRK-42" }), stateTag: "Shipped" },
  { tag: "Deliver", payload: JSON.stringify({ _tag: "Deliver" }), stateTag: "Delivered" }
] as const

let rawSample = 0

/**
 * The raw baseline: single-row `INSERT` statements, each its own
 * transaction (autocommit), into `table` (shaped like the events table), on
 * the given client, from `concurrency` fibers for `ms`. Each fiber writes
 * its own key range, so no insert waits for another's row lock.
 */
export const rawInserts = (
  sql: SqlClient.SqlClient,
  dialect: "pg" | "sqlite",
  table: string,
  concurrency: number,
  ms: number
): Effect.Effect<Sample, unknown> => {
  const sample = ++rawSample
  const node = "raw-baseline"
  const t = sql(table)
  const json = (text: string) => (dialect === "pg" ? sql`${text}::jsonb` : sql`${text}`)
  return timedWorkers(concurrency, ms, (w, n) => {
    const row = rawPayloads[n % 3]!
    return Effect.as(
      sql`INSERT INTO ${t} (machine, instance_id, seq_nr, tag, payload, state_tag, schema_version, ts, source, correlation_id, node) VALUES (${"raw"}, ${`s${sample}-w${w}`}, ${
        n + 1
      }, ${row.tag}, ${json(row.payload)}, ${row.stateTag}, ${1}, ${Date.now()}, ${"user"}, ${null}, ${node})`,
      true
    )
  })
}

// ---------------------------------------------------------------------------
// A database of one run, as the parent and its worker processes open it
// ---------------------------------------------------------------------------

export type Backend = "pg" | "sqlite"

/** Where a worker process finds the database (JSON, for its config). */
export type DbTarget = { readonly backend: "pg"; readonly schema: string } | { readonly backend: "sqlite"; readonly filename: string }

/** The pool size of `PgEventStore.layer` with default options (`@effect/sql-pg`'s default). */
export const pgDefaultPoolSize = 10

/** A fresh database of one run, migrated: where it is, its stores and its client. */
export interface BenchDatabase {
  readonly target: DbTarget
  readonly store: Context.Context<SqlEventStore.Stores | SqlClient.SqlClient>
  readonly sql: SqlClient.SqlClient
}

/**
 * A fresh database of `backend` for the scope (a `freshPgSchema`, or a
 * `tempSqliteFile`), migrated by `SqlEventStore.layer()` over a pg pool of
 * `maxConnections` or `SqliteEventStore.layerClient` (what
 * `SqliteEventStore.layer` builds); with `rawTable`, also the raw
 * baseline's table, shaped like the events table (`createRawTable`).
 */
export const openBenchDatabase = (
  backend: Backend,
  options: { readonly maxConnections: number; readonly rawTable?: string }
): Effect.Effect<BenchDatabase, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    let target: DbTarget
    let store: BenchDatabase["store"]
    if (backend === "pg") {
      const schema = yield* freshPgSchema
      target = { backend, schema }
      store = yield* Layer.build(
        SqlEventStore.layer().pipe(Layer.provideMerge(pgClientLayer({ schema, maxConnections: options.maxConnections })))
      )
    } else {
      const filename = yield* tempSqliteFile
      target = { backend, filename }
      store = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(SqliteEventStore.layerClient({ filename }))))
    }
    const sql = Context.get(store, SqlClient.SqlClient)
    if (options.rawTable !== undefined) {
      yield* createRawTable(sql, backend, options.rawTable, (yield* SqlEventStore.tableNames()).events)
    }
    return { target, store, sql }
  })

/** The store layer a node opens on `target` with default options: `PgEventStore.layer` / `SqliteEventStore.layer`. */
export const defaultStoreLayer = (target: DbTarget) =>
  target.backend === "pg"
    ? PgEventStore.layer(pgConfig({ schema: target.schema }))
    : SqliteEventStore.layer({ filename: target.filename })

/**
 * The raw baseline of work that `nodes` nodes do at once, each with
 * `perNode` commits in flight on its default store layer: `rawInserts` at
 * `nodes * perNode` concurrency, through a client as large as the nodes'
 * clients together (on PostgreSQL a pool of `pgDefaultPoolSize` connections
 * per node, opened for the scope; on SQLite the database's own connection,
 * since the nodes' connections take turns on the one write lock anyway).
 * Returns the sampler, `ms` per sample, and its concurrency.
 */
export const nodesRawBaseline = (
  db: BenchDatabase,
  options: { readonly table: string; readonly nodes: number; readonly perNode: number }
): Effect.Effect<
  { readonly concurrency: number; readonly sample: (ms: number) => Effect.Effect<Sample, unknown> },
  unknown,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const sql = db.target.backend === "pg"
      ? Context.get(
        yield* Layer.build(pgClientLayer({ schema: db.target.schema, maxConnections: pgDefaultPoolSize * options.nodes })),
        SqlClient.SqlClient
      )
      : db.sql
    const concurrency = options.perNode * options.nodes
    return { concurrency, sample: (ms: number) => rawInserts(sql, db.target.backend, options.table, concurrency, ms) }
  })

// ---------------------------------------------------------------------------
// pgbench
// ---------------------------------------------------------------------------

/** The pgbench executable on PATH, if any. */
export const findPgbench = (): string | undefined => {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir === "") continue
    const candidate = path.join(dir, "pgbench")
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

let pgbenchRun = 0

/**
 * One `pgbench -n -f <script> -c <clients> -j 2 -T <seconds>` run whose
 * script is one single-row INSERT (autocommit) into `schema.table`, with
 * a per-client sequence number (`\set n :n + 1`) so keys never collide.
 * Returns the tps pgbench reports without connection time.
 */
export const pgbench = (options: {
  readonly executable: string
  readonly schema: string
  readonly table: string
  readonly clients: number
  readonly seconds: number
}): Effect.Effect<number, Error> =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const directory = fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-pgbench-"))
      const script = path.join(directory, "insert.sql")
      fs.writeFileSync(
        script,
        [
          "\\set n :n + 1",
          `INSERT INTO ${options.schema}.${options.table} (machine, instance_id, seq_nr, tag, payload, state_tag, schema_version, ts, source, correlation_id, node) VALUES ('pgbench', 'r' || :run || '-c' || :client_id, :n, 'Pay', '{"_tag":"Pay","amount":42}'::jsonb, 'Paid', 1, (extract(epoch from clock_timestamp()) * 1000)::bigint, 'user', NULL, 'pgbench');`,
          ""
        ].join("\n")
      )
      return { directory, script }
    }),
    ({ script }) =>
      Effect.async<number, Error>((resume) => {
        const args = [
          "-h", pgTarget.host, "-p", String(pgTarget.port), "-U", pgTarget.user,
          "-n", "-f", script,
          "-c", String(options.clients), "-j", String(Math.min(2, options.clients)), "-T", String(options.seconds),
          "-D", "n=0", "-D", `run=${++pgbenchRun}`,
          pgTarget.database
        ]
        const env = { ...process.env, ...(pgTarget.password === undefined ? {} : { PGPASSWORD: pgTarget.password }) }
        const child = spawn(options.executable, args, { env, stdio: ["ignore", "pipe", "pipe"] })
        let out = ""
        child.stdout.on("data", (chunk) => (out += String(chunk)))
        child.stderr.on("data", (chunk) => (out += String(chunk)))
        child.on("error", (error) => resume(Effect.fail(error)))
        child.on("close", (code) => {
          const tps = /tps = ([0-9.]+) \(without initial connection time\)/.exec(out)
          if (code === 0 && tps !== null && !out.includes("aborted")) resume(Effect.succeed(Number(tps[1])))
          else resume(Effect.fail(new Error(`pgbench exited with ${code}:\n${out}`)))
        })
        return Effect.sync(() => child.kill("SIGINT"))
      }),
    ({ directory }) => Effect.sync(() => fs.rmSync(directory, { recursive: true, force: true }))
  )

// ---------------------------------------------------------------------------
// Worker processes: a bench script started again as a child, driven by lines
// ---------------------------------------------------------------------------

/** Lines a worker writes for its parent start with this; anything else on its stdout is passed on to stderr. */
export const workerProtocolPrefix = "@@ "

/**
 * The worker's side of `spawnWorkerProcess`, for the scope: `next` takes the
 * parent's next line (trimmed; `exitLine` once stdin closes, i.e. when the
 * parent goes away), and `say` writes a reply line.
 */
export const workerChannel = (exitLine: string): Effect.Effect<
  { readonly next: Effect.Effect<string>; readonly say: (line: string) => void },
  never,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const lines = yield* Queue.unbounded<string>()
    const input = yield* Effect.acquireRelease(
      Effect.sync(() => readline.createInterface({ input: process.stdin })),
      (input) => Effect.sync(() => input.close())
    )
    input.on("line", (line) => Queue.unsafeOffer(lines, line.trim()))
    input.on("close", () => Queue.unsafeOffer(lines, exitLine))
    return {
      next: Queue.take(lines),
      say: (line: string) => void process.stdout.write(`${workerProtocolPrefix}${line}\n`)
    }
  })

/** A worker process, as its parent drives it. */
export interface WorkerProcess {
  /** Sends `line` and waits for the reply line starting with `reply`; returns the rest of it. */
  readonly ask: (line: string, reply: string) => Effect.Effect<string, Error>
  /** Waits for a reply line without sending anything. */
  readonly expect: (reply: string) => Effect.Effect<string, Error>
}

/**
 * Starts `script` (a bench's own `import.meta.url`) again as a child process
 * for the scope, with `config` as JSON in the environment variable `envVar`.
 * On release it is sent `exitLine`, and killed if it has not exited within
 * 10 s.
 */
export const spawnWorkerProcess = (options: {
  readonly script: string
  readonly envVar: string
  readonly config: { readonly nodeId: string }
  readonly exitLine: string
  readonly replyTimeoutSeconds: number
}): Effect.Effect<WorkerProcess, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const { nodeId } = options.config
      const replies = yield* Queue.unbounded<string>()
      const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(options.script)], {
        env: { ...process.env, [options.envVar]: JSON.stringify(options.config) },
        stdio: ["pipe", "pipe", "inherit"]
      })
      const output = readline.createInterface({ input: child.stdout })
      output.on("line", (line) => {
        if (line.startsWith(workerProtocolPrefix)) Queue.unsafeOffer(replies, line.slice(workerProtocolPrefix.length))
        else process.stderr.write(`[${nodeId}] ${line}\n`)
      })
      const exited = new Promise<void>((resolve) =>
        child.on("exit", (code, signal) => {
          Queue.unsafeOffer(replies, `exited ${code ?? signal}`)
          resolve()
        })
      )
      const expect = (reply: string) =>
        Effect.flatMap(Queue.take(replies), (line) =>
          line.startsWith(reply)
            ? Effect.succeed(line.slice(reply.length).trim())
            : Effect.fail(new Error(`${nodeId}: expected "${reply}", got "${line.slice(0, 200)}"`))).pipe(
            Effect.timeoutFail({
              duration: `${options.replyTimeoutSeconds} seconds`,
              onTimeout: () => new Error(`${nodeId}: no "${reply}" within ${options.replyTimeoutSeconds} s`)
            })
          )
      const ask = (line: string, reply: string) =>
        Effect.zipRight(Effect.sync(() => child.stdin.write(`${line}\n`)), expect(reply))
      return { child, exited, worker: { ask, expect } satisfies WorkerProcess }
    }),
    ({ child, exited }) =>
      Effect.promise(async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.stdin.end(`${options.exitLine}\n`)
          const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
          await exited
          clearTimeout(timer)
        }
      })
  ).pipe(Effect.map(({ worker }) => worker))
