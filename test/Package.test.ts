/**
 * The package as a user gets it: `npm pack` (its prepack builds dist/ from
 * scratch), the tarball installed into a fresh ES-module project next to
 * what a user installs, and run there with plain `node`, no tsx and no
 * source condition:
 *
 * 1. an in-memory program (the quickstart's machine on `EventStore.layerMemory`)
 *    with no database driver installed at all;
 * 2. the quickstart itself (examples/quickstart.ts, its types stripped) on
 *    SQLite after `npm install @effect/sql-sqlite-node`;
 * 3. `effect-fsm/internal/*` refused by `exports`, and the `.d.ts` files
 *    checked by `tsc --noEmit` on a program using the API (under NodeNext
 *    and Bundler resolution, without skipLibCheck).
 *
 * It really installs from the registry (npm's cache makes it quick after the
 * first run), except that better-sqlite3's native addon is copied from the
 * repository's own build of the same version instead of being compiled again
 * (about a minute of CPU in the middle of the suite). The
 * versions of the peers are the repository's own (from its lock), so a run
 * is reproducible. Nothing here is skipped: a missing piece fails.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import ts from "typescript"

const root = path.resolve(import.meta.dirname, "..")
const minutes = (n: number) => n * 60_000

/** The version of a package installed in the repository (from its lock). */
const installedVersion = (name: string): string =>
  (JSON.parse(fs.readFileSync(path.join(root, "node_modules", name, "package.json"), "utf8")) as { version: string })
    .version

/**
 * The environment of a user's shell: without the repository's source
 * condition (vitest.config.ts puts it in NODE_OPTIONS) and without the
 * variables `npm test` sets for its own package.
 */
const userEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (key === "NODE_OPTIONS" || key === "INIT_CWD") continue
    if (/^npm_/i.test(key) && !/^npm_config_(cache|registry|userconfig|globalconfig)$/i.test(key)) continue
    env[key] = value
  }
  return env
}

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const run = (command: string, args: ReadonlyArray<string>, cwd: string, timeout = minutes(5)): Promise<Ran> =>
  new Promise((resolve) => {
    execFile(command, args, { cwd, env: userEnv(), timeout, maxBuffer: 64 << 20, encoding: "utf8" }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
      resolve({ code, stdout, stderr: error !== null && error.killed ? `${stderr}\n(killed after ${timeout} ms)` : stderr })
    })
  })

/** Runs a command that must succeed; its output is in the failure message. */
const ok = async (command: string, args: ReadonlyArray<string>, cwd: string, timeout?: number): Promise<string> => {
  const ran = await run(command, args, cwd, timeout)
  if (ran.code !== 0) {
    throw new Error(`${command} ${args.join(" ")} (in ${cwd}) exited ${ran.code}\n--- stdout\n${ran.stdout}\n--- stderr\n${ran.stderr}`)
  }
  return ran.stdout
}

const npm = process.platform === "win32" ? "npm.cmd" : "npm"
const quiet = ["--prefer-offline", "--no-audit", "--no-fund"]

/** Last line of stdout, parsed: the programs below print one JSON line. */
const lastJson = (stdout: string): unknown => JSON.parse(stdout.trim().split("\n").pop() ?? "null")

// The quickstart's machine and program, in JavaScript, on the in-memory store.
const memoryProgram = `
import { Effect, Either, Schema } from "effect"
import { EventStore, FSMRuntime, Machine } from "effect-fsm"

const State = Schema.Union(
  Schema.TaggedStruct("Pending", { orderId: Schema.String }),
  Schema.TaggedStruct("Paid", { orderId: Schema.String, amount: Schema.Number }),
  Schema.TaggedStruct("Cancelled", { orderId: Schema.String, reason: Schema.String })
)
const Event = Schema.Union(
  Schema.TaggedStruct("Pay", { amount: Schema.Number }),
  Schema.TaggedStruct("PaymentTimeout", {})
)

export const Order = Machine.make({
  name: "order", version: 1, state: State, event: Event,
  transitions: {
    Pending: {
      Pay: { to: "Paid", guard: (_, e) => e.amount > 0, build: (s, e) => ({ orderId: s.orderId, amount: e.amount }) },
      PaymentTimeout: { to: "Cancelled", build: (s) => ({ orderId: s.orderId, reason: "unpaid" }) }
    }
  },
  timeouts: { Pending: { payment: { after: "5 minutes", event: { _tag: "PaymentTimeout" } } } }
})

const program = Effect.gen(function*() {
  const orders = yield* FSMRuntime.client(Order)
  const created = yield* orders.create("order-1", { _tag: "Pending", orderId: "order-1" })
  const outcome = yield* orders.send("order-1", { _tag: "Pay", amount: 42 })
  yield* orders.create("order-2", { _tag: "Pending", orderId: "order-2" })
  const refused = yield* Effect.either(orders.send("order-2", { _tag: "Pay", amount: 0 }))
  const history = yield* orders.history("order-1")
  return {
    created: created.seqNr,
    outcome: { _tag: outcome._tag, state: outcome.state, seqNr: outcome.seqNr },
    refused: Either.isLeft(refused) ? refused.left._tag : "accepted",
    history: history.length
  }
})

program.pipe(
  Effect.provide(FSMRuntime.layer({ machines: [Order] })),
  Effect.provide(EventStore.layerMemory),
  Effect.runPromise
).then((result) => console.log(JSON.stringify(result)))
`

// A program against the declarations: it must compile, and every expected
// error must occur (declarations that had decayed to `any` fail it too).
const typedProgram = `
import { Effect, Schema } from "effect"
import { EventStore, FSMRuntime, Machine } from "effect-fsm"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
// @ts-expect-error internal modules are not part of the package's exports
import * as Core from "effect-fsm/internal/core"

const State = Schema.Union(
  Schema.TaggedStruct("Pending", { orderId: Schema.String }),
  Schema.TaggedStruct("Paid", { orderId: Schema.String, amount: Schema.Number })
)
const Event = Schema.Union(Schema.TaggedStruct("Pay", { amount: Schema.Number }))

export const Order = Machine.make({
  name: "order",
  version: 1,
  state: State,
  event: Event,
  transitions: { Pending: { Pay: { to: "Paid", build: (s, e) => ({ orderId: s.orderId, amount: e.amount }) } } }
})

export const Misspelt = Machine.make({
  name: "misspelt",
  version: 1,
  state: State,
  event: Event,
  transitions: {
    Pending: {
      // @ts-expect-error "Payed" is not a state of the machine
      Pay: { to: "Payed", build: (s, e) => ({ orderId: s.orderId, amount: e.amount }) }
    }
  }
})

const program = Effect.gen(function*() {
  const orders = yield* FSMRuntime.client(Order)
  yield* orders.create("o", { _tag: "Pending", orderId: "o" })
  const outcome = yield* orders.send("o", { _tag: "Pay", amount: 42 })
  // @ts-expect-error "Refund" is not an event of the machine
  yield* orders.send("o", { _tag: "Refund" })
  const seqNr: number = outcome.seqNr
  return seqNr
})

export const inMemory: Effect.Effect<number, unknown> = program.pipe(
  Effect.provide(FSMRuntime.layer({ machines: [Order] })),
  Effect.provide(EventStore.layerMemory)
)
export const onSqlite: Effect.Effect<number, unknown> = program.pipe(
  Effect.provide(FSMRuntime.layer({ machines: [Order] })),
  Effect.provide(SqliteEventStore.layer({ filename: "typed.db" }))
)
export const core: unknown = Core
`

describe("the packed package", () => {
  let work = ""
  let app = ""
  let tarball = ""
  let packed: ReadonlyArray<string> = []
  let sqliteDriver: Promise<string> | undefined
  /** `npm install @effect/sql-sqlite-node` in the project, once. */
  const installSqliteDriver = (): Promise<string> => {
    const driver = ["@effect/sql-sqlite-node", "better-sqlite3"].map((name) => `${name}@${installedVersion(name)}`)
    // Installed as a user installs it, except that better-sqlite3's native
    // addon is not compiled again (a minute of one core, in the middle of the
    // suite): its install script is skipped and the addon the repository
    // built for the same version, Node and machine is copied in.
    sqliteDriver ??= ok(npm, ["install", "--ignore-scripts", ...driver, ...quiet], app, minutes(10)).then((out) => {
      const addon = path.join("node_modules", "better-sqlite3", "build", "Release", "better_sqlite3.node")
      fs.mkdirSync(path.dirname(path.join(app, addon)), { recursive: true })
      fs.copyFileSync(path.join(root, addon), path.join(app, addon))
      return out
    })
    return sqliteDriver
  }

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-package-"))
    // prepack runs `npm run build`, which removes dist/ first.
    const out = await ok(npm, ["pack", "--json", "--pack-destination", work], root, minutes(5))
    const [info] = JSON.parse(out) as ReadonlyArray<{ filename: string; files: ReadonlyArray<{ path: string }> }>
    tarball = path.join(work, info!.filename)
    packed = info!.files.map((file) => file.path)

    app = path.join(work, "app")
    fs.mkdirSync(app)
    fs.writeFileSync(
      path.join(app, "package.json"),
      JSON.stringify({ name: "effect-fsm-user", private: true, type: "module", allowScripts: { "better-sqlite3": true } }, null, 2)
    )
    const peers = ["effect", "@effect/platform", "@effect/sql"].map((name) => `${name}@${installedVersion(name)}`)
    await ok(npm, ["install", tarball, ...peers, ...quiet], app, minutes(8))
  }, minutes(15))

  afterAll(() => {
    if (work !== "") fs.rmSync(work, { recursive: true, force: true })
  })

  it("holds dist (JavaScript, declarations, maps), the sources they map to, README and LICENSE, not the tests", () => {
    for (const file of ["index.js", "index.d.ts", "index.js.map", "index.d.ts.map", "SqliteEventStore.js", "PgEventStore.d.ts"]) {
      expect(packed).toContain(`dist/${file}`)
    }
    expect(packed).toContain("README.md")
    expect(packed).toContain("LICENSE")
    expect(packed).toContain("package.json")
    // The sources the declaration and source maps point at (go to definition).
    expect(packed).toContain("src/index.ts")
    const installed = path.join(app, "node_modules", "effect-fsm", "dist")
    for (const map of ["index.d.ts.map", "Machine.js.map"]) {
      const { sources } = JSON.parse(fs.readFileSync(path.join(installed, map), "utf8")) as { sources: Array<string> }
      expect(sources.length, map).toBeGreaterThan(0)
      for (const source of sources) expect(fs.existsSync(path.resolve(installed, source)), `${map} -> ${source}`).toBe(true)
    }
    expect(packed.filter((file) => /^(test|bench|chaos|examples|bin|diagrams)\//.test(file))).toEqual([])
    expect(packed.filter((file) => file.endsWith(".test.ts"))).toEqual([])
  })

  it("the web inspector's mermaid is an optional peer: not installed, and Ui.start says so", async () => {
    expect(fs.existsSync(path.join(app, "node_modules", "mermaid")), "mermaid is installed").toBe(false)
    fs.writeFileSync(
      path.join(app, "ui.mjs"),
      `import { Effect, Exit } from "effect"
import { Inspector } from "effect-fsm"
import * as Ui from "effect-fsm/Ui"
const exit = await Effect.runPromiseExit(
  Effect.scoped(Ui.start({ machines: [], port: 0 })).pipe(Effect.provideService(Inspector.Inspector, {}))
)
console.log(JSON.stringify(Exit.isFailure(exit) ? exit.cause.error?.message ?? String(exit.cause) : "served"))
`
    )
    const stdout = await ok(process.execPath, ["ui.mjs"], app, minutes(1))
    expect(lastJson(stdout)).toMatch(/mermaid package, which is not installed: npm install mermaid/)
  }, minutes(2))

  it("runs in memory with plain node and no database driver installed", async () => {
    for (const driver of ["@effect/sql-pg", "@effect/sql-sqlite-node", "pg", "better-sqlite3"]) {
      expect(fs.existsSync(path.join(app, "node_modules", driver)), `${driver} is installed`).toBe(false)
    }
    fs.writeFileSync(path.join(app, "memory.mjs"), memoryProgram)
    const stdout = await ok(process.execPath, ["memory.mjs"], app, minutes(1))
    expect(lastJson(stdout)).toEqual({
      created: 1,
      outcome: { _tag: "Goto", state: { _tag: "Paid", orderId: "order-1", amount: 42 }, seqNr: 2 },
      refused: "GuardRejected",
      history: 2
    })
  }, minutes(2))

  it("a driver module needs its driver: effect-fsm/SqliteEventStore fails to load without it", async () => {
    const ran = await run(process.execPath, ["--input-type=module", "-e", `await import("effect-fsm/SqliteEventStore")`], app, minutes(1))
    expect(ran.code).not.toBe(0)
    expect(ran.stderr).toContain("@effect/sql-sqlite-node")
  }, minutes(2))

  it("runs the quickstart on SQLite once @effect/sql-sqlite-node is installed", async () => {
    await installSqliteDriver()
    const source = fs.readFileSync(path.join(root, "examples", "quickstart.ts"), "utf8")
    const js = ts.transpileModule(source, {
      compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, verbatimModuleSyntax: false }
    }).outputText
    fs.writeFileSync(path.join(app, "quickstart.mjs"), js)
    const stdout = await ok(process.execPath, ["quickstart.mjs"], app, minutes(1))
    expect(stdout).toContain("_tag: 'Goto'")
    expect(stdout).toMatch(/state: \{ _tag: 'Paid', orderId: 'order-\d+', amount: 42 \}/)
    expect(stdout).toContain("seqNr: 2")
    expect(fs.existsSync(path.join(app, "quickstart.db"))).toBe(true)
  }, minutes(12))

  it("refuses effect-fsm/internal/* although the files are in the tarball", async () => {
    expect(fs.existsSync(path.join(app, "node_modules", "effect-fsm", "dist", "internal", "core.js"))).toBe(true)
    for (const specifier of ["effect-fsm/internal/core", "effect-fsm/internal/core.js"]) {
      const ran = await run(process.execPath, ["--input-type=module", "-e", `await import(${JSON.stringify(specifier)})`], app, minutes(1))
      expect(ran.code, specifier).not.toBe(0)
      expect(ran.stderr, specifier).toContain("ERR_PACKAGE_PATH_NOT_EXPORTED")
    }
    // A public subpath resolves, to dist/.
    const resolved = await ok(process.execPath, ["--input-type=module", "-e", `console.log(import.meta.resolve("effect-fsm/Machine"))`], app)
    expect(resolved.trim()).toMatch(/node_modules\/effect-fsm\/dist\/Machine\.js$/)
  }, minutes(2))

  it("type-checks a program against the declarations (NodeNext and Bundler resolution)", async () => {
    await installSqliteDriver() // typed.ts imports effect-fsm/SqliteEventStore
    fs.writeFileSync(path.join(app, "typed.ts"), typedProgram)
    const tsc = path.join(root, "node_modules", "typescript", "bin", "tsc")
    const compilerOptions = {
      target: "ES2022",
      // Effect's declarations name URL, AbortSignal and ReadableStream: DOM
      // types stand in for @types/node, which this project does not install.
      lib: ["ES2022", "DOM"],
      strict: true,
      exactOptionalPropertyTypes: true,
      noEmit: true,
      skipLibCheck: false,
      types: []
    }
    const configs = {
      "tsconfig.nodenext.json": { ...compilerOptions, module: "NodeNext", moduleResolution: "NodeNext" },
      "tsconfig.bundler.json": { ...compilerOptions, module: "ESNext", moduleResolution: "Bundler" }
    }
    for (const [name, options] of Object.entries(configs)) {
      fs.writeFileSync(path.join(app, name), JSON.stringify({ compilerOptions: options, files: ["typed.ts"] }, null, 2))
      const ran = await run(process.execPath, [tsc, "-p", name], app, minutes(3))
      expect(`${name}: ${ran.stdout}${ran.stderr}`.trim()).toBe(`${name}:`)
      expect(ran.code).toBe(0)
    }
  }, minutes(15))
})
