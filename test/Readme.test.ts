/**
 * The README matches the code: every ```ts snippet of README.md type-checks
 * against the sources, with the project's compiler options.
 *
 * A snippet that imports from "effect" is a whole module and is checked as
 * it stands. Any other snippet is a fragment: its imports are hoisted, and
 * its body is checked inside an `Effect.gen` (so `yield*` works), after a
 * preamble that imports the modules and the example order machine and
 * declares the free names fragments use (`id`, `event`, ...). Unused names
 * are allowed: fragments show calls whose results they do not use.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import ts from "typescript"

const root = path.resolve(import.meta.dirname, "..")
const readme = fs.readFileSync(path.join(root, "README.md"), "utf8")

const snippets = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => ({
  code: match[1]!,
  line: readme.slice(0, match.index).split("\n").length + 1
}))

const preamble = `
import { Context, Duration, Effect, Layer, Option, Schedule, Schema, Stream } from "effect"
import { EventStore, FSMRuntime, Inspector, LockingStrategy, Machine, Outbox, OutboxStore, TimeoutStore, TimeoutStrategy, Visualize } from "effect-fsm"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import { Order, OrderEvent, OrderState } from "../examples/order.js"
declare const id: string
declare const initialState: Machine.StateOf<typeof Order>
declare const event: Machine.EventOf<typeof Order>
declare const correlationId: string
declare const program: Effect.Effect<void, never, FSMRuntime.FSMRuntime>
declare const Payments: {
  readonly charge: (amount: number, key: string) => Effect.Effect<{ readonly ok: true; readonly id: string } | { readonly ok: false; readonly reason: string }>
}
declare const Mailer: { readonly send: (orderId: string, key: string) => Effect.Effect<void> }
void [Context, Duration, Layer, Option, Stream, Schedule, Schema, EventStore, Inspector, LockingStrategy, Outbox, OutboxStore, TimeoutStore, TimeoutStrategy, Visualize, SqliteEventStore, OrderEvent, OrderState, id, initialState, event, correlationId, program, Payments, Mailer]
`

/** The TypeScript source a snippet is checked as. */
const sourceOf = (code: string): string => {
  if (/^import .* from "effect"$/m.test(code)) return code
  const lines = code.split("\n")
  const imports = lines.filter((line) => line.startsWith("import "))
  const body = lines.filter((line) => !line.startsWith("import ")).join("\n")
  return `${imports.join("\n")}\n${preamble}\nexport const snippet = Effect.gen(function*() {\n${body}\n})\n`
}

describe("README", () => {
  it("has TypeScript snippets", () => {
    expect(snippets.length).toBeGreaterThanOrEqual(5)
  })

  it("every TypeScript snippet type-checks against the sources", () => {
    const config = ts.readConfigFile(path.join(root, "tsconfig.json"), ts.sys.readFile)
    const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, root)
    const options: ts.CompilerOptions = { ...parsed.options, noUnusedLocals: false, noUnusedParameters: false, noEmit: true }
    // Virtual files inside the project, so that `effect-fsm` resolves to the package itself.
    const files = new Map(snippets.map((snippet, i) => [path.join(root, "test", `__readme_${i + 1}.ts`), snippet]))
    const host = ts.createCompilerHost(options)
    const getSourceFile = host.getSourceFile.bind(host)
    host.getSourceFile = (fileName, language, onError, create) => {
      const snippet = files.get(path.resolve(fileName))
      return snippet === undefined
        ? getSourceFile(fileName, language, onError, create)
        : ts.createSourceFile(fileName, sourceOf(snippet.code), language, true)
    }
    const fileExists = host.fileExists.bind(host)
    host.fileExists = (fileName) => files.has(path.resolve(fileName)) || fileExists(fileName)
    const program = ts.createProgram([...files.keys()], options, host)
    const problems = ts.getPreEmitDiagnostics(program)
      .filter((d) => d.file !== undefined && files.has(path.resolve(d.file.fileName)))
      .map((d) => {
        const snippet = files.get(path.resolve(d.file!.fileName))!
        return `README.md snippet at line ${snippet.line}: ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`
      })
    expect(problems).toEqual([])
  }, 120_000)
})
