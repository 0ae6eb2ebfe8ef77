/**
 * The `effect-fsm` CLI (src/bin.ts, src/Cli.ts).
 *
 * The data is produced by the examples: the `npm start` order demo
 * (examples/order.ts) writes a SQLite file and, with `pg`, a fresh
 * PostgreSQL schema; on the SQLite file the same machine then creates a few
 * more orders through the library: one waiting for payment (a live timer),
 * one whose payment timer is dead-lettered, one whose ChargeCard command
 * fails and is dead-lettered by the outbox dispatcher.
 *
 * The CLI runs as a process (`node --import tsx src/bin.ts`) for what only
 * a process shows: stdout carrying exactly the `--json` document, errors
 * as one line on stderr, the exit code; a dozen and a half spawns, a few at
 * a time. The remaining commands and options run in-process through
 * `Cli.run` on a copy of the SQLite file (they write to it).
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Cause, ConfigProvider, Context, Effect, Exit, Layer, Option, Redacted, Scope } from "effect"
import { Visualize } from "effect-fsm"
import * as Cli from "effect-fsm/Cli"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { demo, Order } from "../examples/order.js"
import { postgres } from "./utils/backends.js"
import { moreOrders, quiet } from "./utils/orderData.js"
import * as Pg from "./utils/pg.js"

const root = path.resolve(import.meta.dirname, "..")
const machinesModule = "examples/order.ts"

// ---------------------------------------------------------------------------
// Running the CLI as a process
// ---------------------------------------------------------------------------

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** The environment without the CLI's own variables, so that only the arguments say where to look. */
const cliEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1" }
  delete env.EFFECT_FSM_DB
  delete env.EFFECT_FSM_MACHINES
  return env
}

let running = 0
const waiting: Array<() => void> = []
/** A few processes at a time: each takes a second of CPU to start. */
const slot = async <A>(body: () => Promise<A>): Promise<A> => {
  if (running >= 3) await new Promise<void>((resolve) => waiting.push(resolve))
  running++
  try {
    return await body()
  } finally {
    running--
    waiting.shift()?.()
  }
}

const spawnCli = (args: ReadonlyArray<string>): Promise<Ran> =>
  slot(() =>
    new Promise((resolve) => {
      execFile(
        process.execPath,
        ["--import", "tsx", "src/bin.ts", ...args],
        { cwd: root, env: cliEnv(), timeout: 60_000, encoding: "utf8" },
        (error, stdout, stderr) => {
          const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
          resolve({ code, stdout, stderr })
        }
      )
    })
  )

const json = (ran: Ran): any => {
  expect(ran.stderr).toBe("")
  expect(ran.code).toBe(0)
  return JSON.parse(ran.stdout)
}

/** A failed run: exit code 1, nothing on stdout, exactly one line on stderr. */
const failure = (ran: Ran): string => {
  expect(ran.code).toBe(1)
  expect(ran.stdout).toBe("")
  const lines = ran.stderr.trimEnd().split("\n")
  expect(lines).toHaveLength(1)
  return lines[0]!
}

// ---------------------------------------------------------------------------
// Running it in-process
// ---------------------------------------------------------------------------

/** `Cli.run` with what it prints captured (the Console writes through the global console). */
const runCli = (...args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const out: Array<string> = []
    const err: Array<string> = []
    const original = { log: console.log, error: console.error }
    const exit = yield* Effect.acquireUseRelease(
      Effect.sync(() => {
        console.log = (...parts: Array<unknown>) => void out.push(parts.join(" "))
        console.error = (...parts: Array<unknown>) => void err.push(parts.join(" "))
      }),
      () => Effect.exit(Cli.run(args)),
      () =>
        Effect.sync(() => {
          console.log = original.log
          console.error = original.error
        })
    )
    return { exit, stdout: out.join("\n"), stderr: err.join("\n") }
  }).pipe(Effect.provide(NodeContext.layer))

const runJson = (...args: ReadonlyArray<string>) =>
  Effect.map(runCli(...args, "--json"), ({ exit, stdout }) => {
    expect(Exit.isSuccess(exit) ? "success" : String(Exit.isFailure(exit) && exit.cause)).toBe("success")
    return JSON.parse(stdout)
  })

/** The one-line message of an in-process failure, as the bin prints it. */
const runFailure = (...args: ReadonlyArray<string>) =>
  Effect.map(runCli(...args), ({ exit }) => {
    if (Exit.isSuccess(exit)) throw new Error(`expected ${args.join(" ")} to fail`)
    return Cli.describeFailure(Option.getOrThrow(Cause.failureOption(exit.cause)))
  })

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

// ---------------------------------------------------------------------------
// The data
// ---------------------------------------------------------------------------

const silent = () => Effect.void

let directory = ""
let sqliteFile = ""
/** A copy of the data for the in-process commands that write. */
let mutableFile = ""
let emptyFile = ""

const pgEnabled = postgres.skip === undefined
const pgScope = Effect.runSync(Scope.make())
let pgSchema = ""
let pgEmptySchema = ""
/** The database's URL without a schema: the CLI is given `--schema`. */
const pgUrl = () => Redacted.value(Pg.clientConfig().url!)

const onSqlite = (...args: ReadonlyArray<string>) => [...args, "--machines", machinesModule, "--db", sqliteFile]
const onMutable = (...args: ReadonlyArray<string>) => [...args, "--machines", machinesModule, "--db", mutableFile]
const onPg = (...args: ReadonlyArray<string>) => [
  ...args,
  "--machines",
  machinesModule,
  "--db",
  pgUrl(),
  "--schema",
  pgSchema,
  "--table-prefix",
  "order_demo_"
]

/** The SQLite data: the demo's file, then more orders on it. */
const sqliteData = async () => {
  sqliteFile = path.join(directory, "orders.db")
  await Effect.runPromise(
    Effect.zipRight(demo({ filename: sqliteFile, paymentTimeout: "300 millis", print: silent }), moreOrders(SqliteEventStore.layer({ filename: sqliteFile }), { hostile: false })).pipe(quiet)
  )
  mutableFile = path.join(directory, "mutable.db")
  fs.copyFileSync(sqliteFile, mutableFile)
  // An empty file is an empty SQLite database: no tables.
  emptyFile = path.join(directory, "empty.db")
  fs.writeFileSync(emptyFile, "")
}

/** The PostgreSQL data: the demo's --pg mode (it reads DATABASE_URL) with its tables in a fresh schema. */
const pgData = async () => {
  pgSchema = await Effect.runPromise(Scope.extend(Pg.freshSchema, pgScope))
  pgEmptySchema = await Effect.runPromise(Scope.extend(Pg.freshSchema, pgScope))
  const demoUrl = Redacted.value(Pg.clientConfig(pgSchema).url!)
  await Effect.runPromise(
    demo({ pg: true, paymentTimeout: "300 millis", print: silent }).pipe(
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["DATABASE_URL", demoUrl]]))),
      quiet
    )
  )
}

/**
 * Every process run of the tests below, started together once the data is
 * there (a few at a time), so that their start-up costs overlap with each
 * other and with the in-process tests; each test awaits its own.
 */
const processRuns = {
  instancesPage: () => onSqlite("instances", "order", "--limit", "4", "--json"),
  instancesTable: () => onSqlite("instances", "order", "--state", "Pending"),
  show: () => onSqlite("show", "order", "order-4", "--json"),
  deadLetters: () => onSqlite("dead-letters", "order", "--json"),
  unknownMachine: () => onSqlite("counts", "orders", "--json"),
  unknownInstance: () => onSqlite("show", "order", "order-99", "--json"),
  missingModule: () => ["counts", "order", "--machines", "examples/nope.ts", "--db", sqliteFile],
  missingFile: () => ["counts", "order", "--machines", machinesModule, "--db", path.join(directory, "typo.db")],
  noTables: () => ["instances", "order", "--machines", machinesModule, "--db", emptyFile, "--table-prefix", "app_"],
  badLimit: () => onSqlite("instances", "order", "--limit", "0"),
  noParse: () => ["instances", "order", "--db", sqliteFile]
}
const pgRuns = {
  pgInstances: () => onPg("instances", "order", "--json"),
  pgShow: () => onPg("show", "order", "order-3", "--json"),
  pgTrace: () => onPg("diagram", "order", "order-3"),
  pgRefused: () => {
    const unreachable = new URL(pgUrl())
    unreachable.port = "1"
    return ["counts", "order", "--machines", machinesModule, "--db", unreachable.toString()]
  },
  pgNoTables: () => ["counts", "order", "--machines", machinesModule, "--db", pgUrl(), "--schema", pgEmptySchema]
}
const ran = {} as Record<keyof typeof processRuns | keyof typeof pgRuns, Promise<Ran>>

beforeAll(async () => {
  directory = fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-cli-"))
  const [sqlite, pg] = await Promise.allSettled([sqliteData(), pgEnabled ? pgData() : Promise.resolve()])
  if (sqlite.status === "rejected") throw sqlite.reason
  for (const [name, args] of Object.entries(processRuns)) ran[name as keyof typeof processRuns] = spawnCli(args())
  // Under CI an unreachable PostgreSQL is not skipped (see ./utils/backends.ts): its tests fail with the reason.
  for (const [name, args] of pgEnabled ? Object.entries(pgRuns) : []) {
    ran[name as keyof typeof pgRuns] = pg.status === "rejected" ? Promise.reject(pg.reason) : spawnCli(args())
    ran[name as keyof typeof pgRuns].catch(() => {})
  }
}, 120_000)

afterAll(async () => {
  await Effect.runPromise(Scope.close(pgScope, Exit.void))
  if (directory !== "") fs.rmSync(directory, { recursive: true, force: true })
})

// ---------------------------------------------------------------------------
// In-process: the rest of the commands and options
// ---------------------------------------------------------------------------

describe("effect-fsm in-process (Cli.run)", () => {
  it.live("instances page by page with --after; show and history --json", () =>
    Effect.gen(function*() {
      const first = yield* runJson(...onSqlite("instances", "order", "--limit", "4"))
      const rest = yield* runJson(...onSqlite("instances", "order", "--after", first.next))
      expect(rest.next).toBeNull()
      const all = [...first.instances, ...rest.instances]
      expect(Object.fromEntries(all.map((row: { instanceId: string; stateTag: string; stopped: boolean }) =>
        [row.instanceId, `${row.stateTag}${row.stopped ? " stopped" : ""}`]
      ))).toEqual({
        "order-1": "Delivered",
        "order-2": "Shipped",
        "order-3": "Cancelled stopped",
        "order-4": "Pending",
        "order-5": "Pending",
        "order-6": "Charging"
      })
      const text = yield* runCli(...onSqlite("instances", "order", "--limit", "4"))
      expect(text.stdout.split("\n").at(-1)).toBe(`4 instance(s); next page: --after ${first.next}`)

      const detail = yield* runJson(...onSqlite("show", "order", "order-2"))
      expect(detail.summary).toMatchObject({ instanceId: "order-2", stateTag: "Shipped", seqNr: 4, stopped: false })
      expect(detail.state).toEqual({ _tag: "Shipped", orderId: "order-2", amount: 25, tracking: "TRK-1002" })
      expect([detail.deadlines, detail.timers, detail.commands, detail.lease]).toEqual([[], [], [], null])

      const page = yield* runJson(...onSqlite("history", "order", "order-2", "--from", "2", "--limit", "2"))
      expect(page.entries.map((e: any) => [e.seqNr, e.tag, e.metadata.source, e.stateTag])).toEqual([
        [2, "Pay", "user", "Charging"],
        [3, "PaymentCaptured", "outbox", "Paid"]
      ])
      expect(page.entries[1].payload).toEqual({ _tag: "PaymentCaptured", chargeId: "ch_order-2" })
      expect(page.next).toBe(4)
    }))

  it.live("counts, instances filtered by state, age and stoppedness", () =>
    Effect.gen(function*() {
      const counts = yield* runJson(...onSqlite("counts", "order"))
      expect(counts).toEqual([
        { stateTag: "Cancelled", stopped: true, count: 1 },
        { stateTag: "Charging", stopped: false, count: 1 },
        { stateTag: "Delivered", stopped: false, count: 1 },
        { stateTag: "Pending", stopped: false, count: 2 },
        { stateTag: "Shipped", stopped: false, count: 1 }
      ])
      const ids = (page: { instances: ReadonlyArray<{ instanceId: string }> }) => page.instances.map((row) => row.instanceId).sort()
      expect(ids(yield* runJson(...onSqlite("instances", "order", "--stopped")))).toEqual(["order-3"])
      expect(ids(yield* runJson(...onSqlite("instances", "order", "--running", "--state", "Pending")))).toEqual(["order-4", "order-5"])
      expect(ids(yield* runJson(...onSqlite("instances", "order", "--older-than", "1 hour")))).toEqual([])
      expect(ids(yield* runJson(...onSqlite("instances", "order", "--older-than", "1 millis"))).length).toBe(6)
      const text = yield* runCli(...onSqlite("counts", "order"))
      expect(text.stdout).toBe([
        "STATE               COUNT",
        "Cancelled  stopped  1",
        "Charging   running  1",
        "Delivered  running  1",
        "Pending    running  2",
        "Shipped    running  1",
        "",
        "6 instance(s)"
      ].join("\n"))
    }))

  it.live("timers: an instance's rows, the machine's upcoming ones; fire-timer makes one due now, cancel-timer deletes it", () =>
    Effect.gen(function*() {
      const own = yield* runJson(...onMutable("timers", "order", "order-4"))
      expect(own).toMatchObject([{ instanceId: "order-4", name: "payment", stateTag: "Pending", generation: 1 }])
      const upcoming = yield* runJson(...onMutable("timers", "order"))
      expect(upcoming.map((t: any) => [t.instanceId, t.name])).toEqual([["order-4", "payment"]])
      expect(yield* runJson(...onMutable("timers", "order", "--within", "1 second"))).toEqual([])

      const before = Date.now()
      expect(yield* runJson(...onMutable("fire-timer", "order", "order-4", "payment"))).toEqual({
        fired: { machine: "order", instanceId: "order-4", name: "payment", generation: 1 }
      })
      const [fired] = yield* runJson(...onMutable("timers", "order", "order-4"))
      expect(fired.dueAt).toBeGreaterThanOrEqual(before)
      expect(fired.dueAt).toBeLessThanOrEqual(Date.now())
      expect((yield* runCli(...onMutable("cancel-timer", "order", "order-4", "payment"))).stdout).toBe(
        `order/order-4: timer "payment" cancelled; it will not fire`
      )
      expect(yield* runJson(...onMutable("timers", "order", "order-4"))).toEqual([])
      expect(yield* runFailure(...onMutable("fire-timer", "order", "order-4", "payment"))).toBe(
        `effect-fsm: order/order-4 has no armed timer "payment"`
      )
    }))

  it.live("redrive and discard dead letters; a second time there is nothing to do", () =>
    Effect.gen(function*() {
      expect(yield* runJson(...onMutable("redrive", "order", "order-6", "--command", "2:0"))).toEqual({
        redriven: { machine: "order", instanceId: "order-6", seqNr: 2, index: 0 }
      })
      const detail = yield* runJson(...onMutable("show", "order", "order-6"))
      expect(detail.commands).toMatchObject([{ seqNr: 2, index: 0, tag: "ChargeCard", attempts: 0 }])
      expect((yield* runCli(...onMutable("discard", "order", "order-5", "--timer", "payment"))).stdout).toBe(
        `order/order-5: dead-lettered timer "payment" discarded`
      )
      expect(yield* runJson(...onMutable("dead-letters", "order"))).toEqual({ timers: [], commands: [] })
      expect(yield* runFailure(...onMutable("redrive", "order", "order-6", "--command", "2:0"))).toBe(
        "effect-fsm: order/order-6 has no dead-lettered command 2:0"
      )
      expect(yield* runFailure(...onMutable("discard", "order", "order-5", "--timer", "payment"))).toBe(
        `effect-fsm: order/order-5 has no dead-lettered timer "payment"`
      )
      const text = yield* runCli(...onMutable("dead-letters", "order"))
      expect(text.stdout).toBe("timers: none\n\ncommands: none")
    }))

  it.live("stop: a durable stop; a second one is refused", () =>
    Effect.gen(function*() {
      expect(yield* runJson(...onMutable("stop", "order", "order-5"))).toEqual({
        stopped: { machine: "order", instanceId: "order-5", stateTag: "Pending", seqNr: 2 }
      })
      expect((yield* runJson(...onMutable("show", "order", "order-5"))).summary).toMatchObject({ stopped: true, seqNr: 2 })
      expect(yield* runFailure(...onMutable("stop", "order", "order-5"))).toMatch(/^effect-fsm: order\/order-5: instance is stopped/)
    }))

  it.live("show and history as text", () =>
    Effect.gen(function*() {
      const show = (yield* runCli(...onSqlite("show", "order", "order-4"))).stdout.split("\n")
      expect(show[0]).toBe("order/order-4")
      expect(show[1]).toBe("  state         Pending")
      expect(show[2]).toMatch(/^ {2}in state for {2}\d+[sm].* \(since \d{4}-\d\d-\d\dT[\d:.]+Z\)$/)
      expect(show).toContain("deadlines")
      expect(show.find((line) => line.startsWith("  payment"))).toMatch(/^ {2}payment {2}\d{4}-.*Z \(in [1-4]m( \d+s)?\)$/)
      const history = (yield* runCli(...onSqlite("history", "order", "order-6"))).stdout.split("\n")
      expect(history[0]).toMatch(/^SEQNR {2}TIME {22}EVENT {5}SOURCE {2}STATE AFTER {2}PAYLOAD$/)
      expect(history[2]).toMatch(/^2 {6}\S+ {2}Pay {7}user {4}Charging {5}\{"_tag":"Pay","amount":30\}$/)
    }))

  it.live("diagram: the machine's Mermaid (no database), or the trace of an instance", () =>
    Effect.gen(function*() {
      const machine = yield* runCli("diagram", "order", "--machines", machinesModule)
      expect(machine.stdout).toBe(Visualize.mermaid(Order).trimEnd())
      const trace = yield* runJson(...onSqlite("diagram", "order", "order-2"))
      expect(trace.mermaid).toMatch(/^sequenceDiagram\n/)
      expect(trace.mermaid).toContain("  outbox-)instance: 3 · PaymentCaptured<br/>")
      expect(yield* runFailure("diagram", "order", "order-2", "--machines", machinesModule)).toBe(
        "effect-fsm: the trace of an instance reads its log: give --db"
      )
    }))

  it.live("migrate: the only command that writes schema; a missing SQLite file only with --create", () =>
    Effect.gen(function*() {
      const fresh = path.join(directory, "fresh.db")
      expect(yield* runFailure("migrate", "--db", fresh)).toMatch(/^effect-fsm: SQLite database not found/)
      expect(fs.existsSync(fresh)).toBe(false)
      const applied = yield* runJson("migrate", "--db", fresh, "--create", "--table-prefix", "app_")
      expect(applied.applied.map((m: { id: number }) => m.id)).toEqual([1, 2, 3, 4, 5])
      expect(yield* runJson("migrate", "--db", fresh, "--table-prefix", "app_")).toEqual({ applied: [] })
      expect(yield* runJson("counts", "order", "--machines", machinesModule, "--db", fresh, "--table-prefix", "app_")).toEqual([])
      // Other commands never migrate: the default prefix's tables are still missing.
      expect(yield* runFailure("counts", "order", "--machines", machinesModule, "--db", fresh)).toMatch(
        /has no effect-fsm tables \(table fsm_state_counts is missing\)/
      )
    }))

  it.live("a negative --older-than is refused, a password in the URL's query is masked, a SQLite file keeps its journal mode", () =>
    Effect.gen(function*() {
      expect(yield* runFailure(...onSqlite("instances", "order", "--older-than", "-1 hour"))).toBe(
        `effect-fsm: --older-than: expected a duration such as "1 hour" or "30 minutes", got "-1 hour"`
      )
      const masked = yield* runFailure("counts", "order", "--machines", machinesModule, "--db", "postgres://u@127.0.0.1:1/db?password=sekret")
      expect(masked).not.toContain("sekret")
      expect(masked).toContain("password=***")
      // A file in rollback-journal mode stays so after the CLI looked at it.
      const file = path.join(path.dirname(sqliteFile), "journal.db")
      const journalMode = Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(SqliteEventStore.layerClient({ filename: file, wal: false }))
        const rows = yield* Context.get(context, SqlClient.SqlClient)<{ readonly journal_mode: string }>`PRAGMA journal_mode`
        return rows[0]?.journal_mode
      }))
      expect(yield* journalMode).toBe("delete")
      expect(Exit.isSuccess((yield* runCli("migrate", "--db", file)).exit)).toBe(true)
      expect(Exit.isSuccess((yield* runCli(...["counts", "order", "--machines", machinesModule, "--db", file])).exit)).toBe(true)
      expect(yield* journalMode).toBe("delete")
    }))

  it.live("bad option values and combinations", () =>
    Effect.gen(function*() {
      expect(yield* runFailure(...onSqlite("instances", "order", "--stopped", "--running"))).toBe(
        "effect-fsm: --stopped and --running exclude each other"
      )
      expect(yield* runFailure(...onSqlite("instances", "order", "--after", "nope"))).toBe(
        `effect-fsm: --after: not a cursor printed by this command: "nope"`
      )
      expect(yield* runFailure(...onSqlite("redrive", "order", "order-6"))).toBe(
        "effect-fsm: name the dead letter: --timer NAME or --command SEQNR:INDEX"
      )
      expect(yield* runFailure(...onSqlite("redrive", "order", "order-6", "--timer", "t", "--command", "2:0"))).toBe(
        "effect-fsm: give either --timer NAME or --command SEQNR:INDEX, not both"
      )
      expect(yield* runFailure(...onSqlite("discard", "order", "order-6", "--command", "2"))).toBe(
        `effect-fsm: --command: expected SEQNR:INDEX (as dead-letters prints it), got "2"`
      )
      expect(yield* runFailure(...onSqlite("counts", "order", "--schema", "app"))).toBe(
        "effect-fsm: --schema applies to PostgreSQL only; --db names a SQLite file"
      )
      expect(yield* runFailure(...onSqlite("history", "order", "order-1", "--from", "0"))).toBe(
        "effect-fsm: --from must be a sequence number of at least 1, got 0"
      )
      expect(yield* runFailure(...onSqlite("counts", "order", "--table-prefix", "App-"))).toMatch(
        /^effect-fsm: invalid table prefix "App-"/
      )
      expect(yield* runFailure("counts", "order", "--machines", machinesModule, "--db", "postgres://[::1")).toBe(
        "effect-fsm: cannot open PostgreSQL (malformed URL): not a valid URL (postgres://user:password@host:port/database)"
      )
    }))

  it.live("a broken machines module, a module without machines, a TypeScript module without tsx", () =>
    Effect.gen(function*() {
      expect(yield* runFailure(...["counts", "order", "--machines", "test/fixtures/cliBroken.mjs", "--db", sqliteFile])).toBe(
        "effect-fsm: could not load test/fixtures/cliBroken.mjs: the machines module failed at import"
      )
      expect(yield* runFailure(...["counts", "order", "--machines", "test/utils/eventually.ts", "--db", sqliteFile])).toMatch(
        /^effect-fsm: test\/utils\/eventually\.ts exports no machine/
      )
      const noTsx = yield* Effect.flip(Cli.loadMachines(machinesModule, {
        active: false,
        importTsx: () => Promise.reject(new Error("Cannot find package 'tsx'"))
      }))
      expect(noTsx).toMatchObject({ _tag: "ModuleLoadError", path: machinesModule })
      expect(noTsx.message).toBe(
        "cannot load the TypeScript module examples/order.ts: tsx is not installed. " +
          "Install tsx (npm install --save-dev tsx) or point --machines at compiled JavaScript"
      )
    }))

  it("formats durations, tables and cursors", () => {
    expect([0, 999, 45_000, 200_000, 3 * 3_600_000 + 12 * 60_000 + 5_000, 2 * 86_400_000 + 4 * 3_600_000, 86_400_000].map(
      Cli.formatDuration
    )).toEqual(["0s", "0s", "45s", "3m 20s", "3h 12m", "2d 4h", "1d"])
    expect(Cli.formatTable(["A", "LONG HEADER", "C"], [["xxxx", "y", "z"], ["", "", ""]])).toBe(
      "A     LONG HEADER  C\nxxxx  y            z\n"
    )
    const cursor = { enteredAt: 1_700_000_000_000, instanceId: "a b:c/é" }
    expect(Cli.encodeCursor(cursor)).toMatch(/^[A-Za-z0-9_-]+$/)
    expect(Cli.decodeCursor(Cli.encodeCursor(cursor))).toEqual(Option.some(cursor))
    expect(Cli.decodeCursor("W1sxXV0")).toEqual(Option.none())
  })
})

// ---------------------------------------------------------------------------
// As a process, on SQLite
// ---------------------------------------------------------------------------

describe("effect-fsm as a process, on a SQLite file from the order demo", () => {
  it("instances --json: a page, oldest entry first, with the cursor of the next", async () => {
    const page = json(await ran.instancesPage)
    expect(page.instances).toHaveLength(4)
    expect(typeof page.next).toBe("string")
    const entered = page.instances.map((row: { enteredAt: number }) => row.enteredAt)
    expect(entered).toEqual([...entered].sort((a, b) => a - b))
    expect(page.instances[0]).toEqual({
      machine: "order",
      instanceId: expect.any(String),
      stateTag: expect.any(String),
      seqNr: expect.any(Number),
      enteredAt: expect.any(Number),
      updatedAt: expect.any(Number),
      stopped: expect.any(Boolean)
    })
  })

  it("instances: an aligned table with ISO times and time in state", async () => {
    const { code, stderr, stdout } = await ran.instancesTable
    expect([code, stderr]).toEqual([0, ""])
    const [header, ...rest] = stdout.trimEnd().split("\n")
    expect(header).toMatch(/^ID {7}STATE {4}IN STATE FOR {2}ENTERED {19}UPDATED {19}SEQNR$/)
    const rows = rest.slice(0, 2)
    expect(rows.map((row) => row.slice(0, 9).trim())).toEqual(["order-4", "order-5"])
    for (const row of rows) {
      expect(row.slice(header!.indexOf("STATE"))).toMatch(/^Pending {2}/)
      expect(row.slice(header!.indexOf("IN STATE FOR"))).toMatch(/^\d+(m \d+)?s /)
      expect(row.slice(header!.indexOf("ENTERED"))).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z {2}\d{4}-/)
      expect(row.slice(header!.indexOf("SEQNR"))).toBe("1")
    }
    expect(rest.slice(2)).toEqual(["", "2 instance(s)"])
  })

  it("show --json: summary, encoded state, deadlines, timer rows, commands, lease", async () => {
    const detail = json(await ran.show)
    expect(detail.summary).toMatchObject({ machine: "order", instanceId: "order-4", stateTag: "Pending", seqNr: 1, stopped: false })
    expect(detail.state).toEqual({ _tag: "Pending", orderId: "order-4", total: 10 })
    expect(detail.deadlines).toEqual([{ name: "payment", dueAt: detail.summary.enteredAt + 5 * 60_000 }])
    expect(detail.timers).toMatchObject([{ name: "payment", generation: 1, attempts: 0, lastError: null }])
    expect([detail.commands, detail.lease]).toEqual([[], null])
  })

  it("dead-letters --json: the timer and the command, with their last errors", async () => {
    const letters = json(await ran.deadLetters)
    expect(letters.timers).toMatchObject([{ instanceId: "order-5", name: "payment", generation: 1, lastError: "sweeper gave up: boom" }])
    expect(letters.commands).toMatchObject([{ instanceId: "order-6", seqNr: 2, index: 0, tag: "ChargeCard", attempts: 1 }])
    expect(letters.commands[0].lastError).toContain("card network down")
  })
})

// ---------------------------------------------------------------------------
// As a process: every error is one line on stderr and exit code 1
// ---------------------------------------------------------------------------

describe("effect-fsm errors as a process", () => {
  it("an unknown machine lists the known ones; an unknown instance is named (stdout stays empty under --json)", async () => {
    expect(failure(await ran.unknownMachine)).toBe(`effect-fsm: unknown machine "orders": the machines module exports "order"`)
    expect(failure(await ran.unknownInstance)).toBe("effect-fsm: order/order-99: instance not found")
  })

  it("a missing machines module, a missing SQLite file (not created), a file without tables (suggesting migrate)", async () => {
    expect(failure(await ran.missingModule)).toBe(
      `effect-fsm: module not found: examples/nope.ts (looked at ${path.join(root, "examples/nope.ts")})`
    )
    const missingFile = path.join(directory, "typo.db")
    expect(failure(await ran.missingFile)).toBe(
      `effect-fsm: SQLite database not found: ${missingFile} (--db is a SQLite file unless it is a postgres:// URL; ` +
        `the CLI does not create files: check the path, or run \`effect-fsm migrate --db ${missingFile} --create\`)`
    )
    expect(fs.existsSync(missingFile)).toBe(false)
    expect(failure(await ran.noTables)).toBe(
      `effect-fsm: SQLite file ${emptyFile} has no effect-fsm tables (table app_instances is missing); ` +
        `create them with \`effect-fsm migrate --db ${emptyFile} --table-prefix app_\``
    )
  })

  it("a bad option value, and a command line that does not parse", async () => {
    expect(failure(await ran.badLimit)).toBe("effect-fsm: --limit must be a whole number from 1 to 10000, got 0")
    // @effect/cli's own message (with a blank line after it).
    const parse = await ran.noParse
    expect([parse.code, parse.stdout]).toEqual([1, ""])
    expect(parse.stderr).toContain("Expected to find option: '--machines'")
  })
})

// ---------------------------------------------------------------------------
// As a process, on PostgreSQL
// ---------------------------------------------------------------------------

describe.skipIf(!pgEnabled)("effect-fsm as a process, on PostgreSQL", () => {
  it("instances --json, show --json and the trace of an instance, in the demo's schema and table prefix", async () => {
    const page = json(await ran.pgInstances)
    expect(page.instances.map((row: any) => [row.instanceId, row.stateTag, row.stopped]).sort()).toEqual([
      ["order-1", "Delivered", false],
      ["order-2", "Shipped", false],
      ["order-3", "Cancelled", true]
    ])
    expect(page.next).toBeNull()
    const detail = json(await ran.pgShow)
    expect(detail.summary).toMatchObject({ stateTag: "Cancelled", stopped: true, seqNr: 2 })
    expect(detail.state).toEqual({ _tag: "Cancelled", orderId: "order-3", reason: "not paid in time" })
    const trace = await ran.pgTrace
    expect([trace.code, trace.stderr]).toEqual([0, ""])
    expect(trace.stdout.split("\n")[0]).toBe("sequenceDiagram")
    expect(trace.stdout).toContain("  timeout-->>instance: 2 · PaymentTimeout<br/>")
    expect(trace.stdout).toContain("  Note right of instance: → Cancelled, stopped")
  })

  it("an unreachable server, and a schema without tables (suggesting migrate with the same options)", async () => {
    const target = new URL(pgUrl())
    target.port = "1"
    if (target.password !== "") target.password = "***"
    expect(failure(await ran.pgRefused)).toMatch(
      new RegExp(`^effect-fsm: cannot open PostgreSQL ${escapeRegExp(target.toString())}: .*ECONNREFUSED`)
    )
    expect(failure(await ran.pgNoTables)).toMatch(
      new RegExp(
        `^effect-fsm: PostgreSQL .* has no effect-fsm tables \\(table ${pgEmptySchema}\\.fsm_state_counts is missing\\); ` +
          `create them with \`effect-fsm migrate --db .* --schema ${pgEmptySchema}\`$`
      )
    )
  })
})
