/**
 * Writes the diagrams of every machine a module exports.
 *
 *   tsx bin/diagram.ts <module path> [outDir]
 *   tsx bin/diagram.ts examples/order.ts            -> diagrams/order.mmd, diagrams/order.dot
 *
 * The module is imported (so it must not start work at import time; a
 * `main` guarded by `import.meta.url`, as in `examples/order.ts`, is fine),
 * and each exported value that is a compiled machine (it has `name`,
 * `stateTags` and `table`) is drawn with `Visualize.mermaid` and
 * `Visualize.dot` into `<outDir>/<machine name>.mmd` and `.dot`. A missing
 * module, a module that fails to load, one that exports no machine, or a
 * file that cannot be written is printed as a typed error, with exit code 1.
 */
import { Console, Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { Visualize } from "../src/index.js"
import { loadMachines, type ModuleLoadError, type ModuleNotFound, type NoMachinesFound } from "../src/Cli.js"

// Loading machines from a module is the CLI's (`effect-fsm diagram` prints one machine's Mermaid).
export { findMachines, isMachine, ModuleLoadError, ModuleNotFound, NoMachinesFound } from "../src/Cli.js"

export class UsageError extends Schema.TaggedError<UsageError>()("UsageError", {
  message: Schema.String
}) {}

export class WriteError extends Schema.TaggedError<WriteError>()("WriteError", {
  path: Schema.String,
  message: Schema.String
}) {}

export type DiagramError = UsageError | ModuleNotFound | ModuleLoadError | NoMachinesFound | WriteError

const fileSafe = (name: string): string => name.replace(/[^A-Za-z0-9._-]/g, "_").replace(/^\.+/, "_") || "machine"

const messageOf = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/**
 * Imports `modulePath` (relative to the working directory) and writes a
 * `.mmd` and a `.dot` file per exported machine into `outDir`. Succeeds with
 * the paths written.
 */
export const diagram = (
  modulePath: string,
  outDir = "diagrams"
): Effect.Effect<ReadonlyArray<string>, Exclude<DiagramError, UsageError>> =>
  Effect.gen(function*() {
    const machines = yield* loadMachines(modulePath)
    const used = new Set<string>()
    const written: Array<string> = []
    for (const { exportName, machine } of machines) {
      let base = fileSafe(machine.name)
      // Two exported machines with the same name: the later one is told apart by its export name.
      if (used.has(base)) base = `${base}-${fileSafe(exportName)}`
      used.add(base)
      for (const [extension, text] of [["mmd", Visualize.mermaid(machine)], ["dot", Visualize.dot(machine)]] as const) {
        const file = path.join(outDir, `${base}.${extension}`)
        yield* Effect.try({
          try: () => {
            fs.mkdirSync(outDir, { recursive: true })
            fs.writeFileSync(file, text)
          },
          catch: (cause) => new WriteError({ path: file, message: `could not write ${file}: ${messageOf(cause)}` })
        })
        written.push(file)
      }
    }
    return written
  })

/** The command line: prints each file written, or the error, and sets the exit code. */
export const main = (argv: ReadonlyArray<string>): Effect.Effect<void> => {
  const [modulePath, outDir] = argv
  const program: Effect.Effect<ReadonlyArray<string>, DiagramError> = modulePath === undefined || modulePath === ""
    ? new UsageError({ message: "usage: npm run diagram -- <module path> [outDir]" })
    : diagram(modulePath, outDir)
  return program.pipe(
    Effect.flatMap((files) => Effect.forEach(files, (file) => Console.log(`wrote ${file}`), { discard: true })),
    Effect.catchAll((error) =>
      Effect.zipRight(Console.error(`diagram: ${error._tag}: ${error.message}`), Effect.sync(() => {
        process.exitCode = 1
      }))
    )
  )
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void Effect.runPromise(main(process.argv.slice(2)))
}
