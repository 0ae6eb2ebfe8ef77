/**
 * The runtime does not load the database drivers: a program that imports
 * `effect-fsm` and runs in memory works in a Node process where pg,
 * better-sqlite3 and their `@effect/sql-*` wrappers cannot be loaded at all
 * (test/fixtures/blockDrivers.mjs); only the driver modules, reached as
 * `effect-fsm/SqliteEventStore` and `effect-fsm/PgEventStore`, load them.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")
const blockDrivers = path.join(root, "test", "fixtures", "blockDrivers.mjs")

interface Run {
  readonly exitCode: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs an ES module's source in a new Node process, with TypeScript (tsx) and the drivers blocked. */
const runBlocked = (source: string): Effect.Effect<Run> =>
  Effect.async<Run>((resume) => {
    const child = execFile(
      process.execPath,
      ["--import", "tsx", "--import", blockDrivers, "--input-type=module", "-e", source],
      { cwd: root },
      (_error, stdout, stderr) => resume(Effect.succeed({ exitCode: child.exitCode, stdout, stderr }))
    )
    return Effect.sync(() => child.kill())
  })

const inMemoryProgram = `
import { Effect, Schema } from "effect"
import { EventStore, FSMRuntime, Machine } from "effect-fsm"

const Door = Machine.make({
  name: "door",
  version: 1,
  state: Schema.Union(Schema.TaggedStruct("Closed", {}), Schema.TaggedStruct("Open", {})),
  event: Schema.TaggedStruct("Push", {}),
  transitions: { Closed: { Push: { to: "Open", build: () => ({}) } } }
})

const outcome = await Effect.gen(function*() {
  const doors = yield* FSMRuntime.client(Door)
  yield* doors.create("front", { _tag: "Closed" })
  return yield* doors.send("front", { _tag: "Push" })
}).pipe(
  Effect.provide(FSMRuntime.layer({ machines: [Door] })),
  Effect.provide(EventStore.layerMemory),
  Effect.runPromise
)
console.log(JSON.stringify(outcome))
`

const loadEach = `
import { createRequire } from "node:module"
const require = createRequire(import.meta.url)
const attempts = {
  "import pg": () => import("pg"),
  "import better-sqlite3": () => import("better-sqlite3"),
  "require pg": async () => require("pg"),
  "require better-sqlite3": async () => require("better-sqlite3"),
  "import effect-fsm/SqliteEventStore": () => import("effect-fsm/SqliteEventStore"),
  "import effect-fsm/PgEventStore": () => import("effect-fsm/PgEventStore")
}
const results = {}
for (const [name, attempt] of Object.entries(attempts)) {
  results[name] = await attempt().then(() => "loaded", (error) => error.message)
}
console.log(JSON.stringify(results))
`

describe("Drivers", () => {
  it.effect("importing effect-fsm and running in memory loads neither pg nor better-sqlite3", () =>
    Effect.gen(function*() {
      const run = yield* runBlocked(inMemoryProgram)
      expect(run.stderr).not.toContain("blocked driver")
      expect(run.exitCode).toBe(0)
      expect(JSON.parse(run.stdout)).toEqual({ _tag: "Goto", state: { _tag: "Open" }, seqNr: 2 })
    }))

  it.effect("the blocking is real: the drivers and the driver modules fail to load under it", () =>
    Effect.gen(function*() {
      const run = yield* runBlocked(loadEach)
      expect(run.exitCode).toBe(0)
      expect(JSON.parse(run.stdout)).toEqual({
        "import pg": expect.stringContaining("blocked driver: pg"),
        "import better-sqlite3": expect.stringContaining("blocked driver: better-sqlite3"),
        "require pg": expect.stringContaining("blocked driver: pg"),
        "require better-sqlite3": expect.stringContaining("blocked driver: better-sqlite3"),
        // The store's client imports both; Node resolves a module's imports concurrently, so either may be refused first.
        "import effect-fsm/SqliteEventStore": expect.stringMatching(/^blocked driver: (@effect\/sql-sqlite-node|better-sqlite3)/),
        "import effect-fsm/PgEventStore": expect.stringContaining("blocked driver: @effect/sql-pg")
      })
    }))
})
