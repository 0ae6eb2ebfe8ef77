/**
 * The `effect-fsm` command line: the `Inspector` over a SQLite file or a
 * PostgreSQL database, for operators and scripts.
 *
 *   effect-fsm instances order --machines dist/machines.js --db orders.db --state Charging --older-than "10 minutes"
 *   effect-fsm show order order-1 --machines src/machines.ts --db postgres://app@db/app --json
 *
 * Machines come from a module the user names (`--machines`): every exported
 * value shaped like a compiled machine is registered, as `npm run diagram`
 * draws them. A TypeScript module needs `tsx` when the CLI runs under plain
 * `node` (it is registered on demand). The database is `--db`: a
 * `postgres://` or `postgresql://` URL means PostgreSQL, anything else is the
 * path of an existing SQLite file (never created). The stores are opened
 * with `migrate: false` and as an API-only node (no sweeper, no outbox
 * dispatcher), so the CLI is safe next to running nodes; only `migrate`
 * writes schema.
 *
 * Every failure is printed as one line on stderr with a non-zero exit code;
 * with `--json`, stdout carries exactly one JSON document.
 *
 * @example
 * ```ts
 * import { NodeContext, NodeRuntime } from "@effect/platform-node"
 * import * as Cli from "effect-fsm/Cli"
 *
 * Cli.main(process.argv).pipe(Effect.provide(NodeContext.layer), NodeRuntime.runMain({ disableErrorReporting: true }))
 * ```
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import type * as CliApp from "@effect/cli/CliApp"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { type InvalidConfiguration, type MachineDefinitionError, PersistenceError } from "./Errors.js"
import * as EventStore from "./EventStore.js"
import * as FSMRuntime from "./FSMRuntime.js"
import * as Inspector from "./Inspector.js"
import type * as Machine from "./Machine.js"
import * as Outbox from "./Outbox.js"
import type * as OutboxStore from "./OutboxStore.js"
import * as SqlEventStore from "./SqlEventStore.js"
import type * as TimeoutStore from "./TimeoutStore.js"
import * as TimeoutStrategy from "./TimeoutStrategy.js"
import * as Ui from "./Ui.js"
import * as Visualize from "./Visualize.js"
import { plain } from "./internal/plainJson.js"

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/**
 * A command line that parses but cannot be carried out as given: a bad
 * option value, options that exclude each other, a missing `--db`.
 *
 * @since 0.1.0
 */
export class UsageError extends Schema.TaggedError<UsageError>()("UsageError", {
  message: Schema.String
}) {}

/**
 * The machines module does not exist.
 *
 * @since 0.1.0
 */
export class ModuleNotFound extends Schema.TaggedError<ModuleNotFound>()("ModuleNotFound", {
  path: Schema.String,
  message: Schema.String
}) {}

/**
 * The machines module exists but could not be imported (a syntax error, a
 * missing dependency, an error thrown at import time, or a TypeScript module
 * without a TypeScript loader).
 *
 * @since 0.1.0
 */
export class ModuleLoadError extends Schema.TaggedError<ModuleLoadError>()("ModuleLoadError", {
  path: Schema.String,
  message: Schema.String
}) {}

/**
 * The machines module exports no compiled machine.
 *
 * @since 0.1.0
 */
export class NoMachinesFound extends Schema.TaggedError<NoMachinesFound>()("NoMachinesFound", {
  path: Schema.String,
  message: Schema.String
}) {}

/**
 * A command named a machine the machines module does not export.
 *
 * @since 0.1.0
 */
export class UnknownMachine extends Schema.TaggedError<UnknownMachine>()("UnknownMachine", {
  machine: Schema.String,
  known: Schema.Array(Schema.String)
}) {
  override get message() {
    return `unknown machine ${JSON.stringify(this.machine)}: the machines module exports ${
      this.known.map((name) => JSON.stringify(name)).join(", ")
    }`
  }
}

/**
 * `--db` names a SQLite file that does not exist. The CLI never creates one
 * (a typo would otherwise leave an empty database behind), except `migrate
 * --create`.
 *
 * @since 0.1.0
 */
export class DatabaseNotFound extends Schema.TaggedError<DatabaseNotFound>()("DatabaseNotFound", {
  path: Schema.String
}) {
  override get message() {
    return `SQLite database not found: ${this.path} (--db is a SQLite file unless it is a postgres:// URL; ` +
      `the CLI does not create files: check the path, or run \`effect-fsm migrate --db ${this.path} --create\`)`
  }
}

/**
 * The database could not be opened or reached: a malformed URL, a host that
 * does not answer, refused credentials, a driver that is not installed.
 *
 * @since 0.1.0
 */
export class DatabaseUnavailable extends Schema.TaggedError<DatabaseUnavailable>()("DatabaseUnavailable", {
  target: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `cannot open ${this.target}: ${this.reason}`
  }
}

/**
 * The database has no effect-fsm tables (under this prefix and schema), or
 * lacks some of a newer version: `effect-fsm migrate` creates them.
 *
 * @since 0.1.0
 */
export class TablesMissing extends Schema.TaggedError<TablesMissing>()("TablesMissing", {
  target: Schema.String,
  reason: Schema.String,
  migrate: Schema.String
}) {
  override get message() {
    return `${this.target} has no effect-fsm tables (${this.reason}); create them with \`${this.migrate}\``
  }
}

/**
 * An intervention found nothing to act on (no such dead letter, no armed
 * timer of that name).
 *
 * @since 0.1.0
 */
export class NothingToDo extends Schema.TaggedError<NothingToDo>()("NothingToDo", {
  message: Schema.String
}) {}

// ---------------------------------------------------------------------------
// Loading machines from a module
// ---------------------------------------------------------------------------

/**
 * A compiled machine, recognised by shape: the module may have its own copy
 * of effect-fsm.
 *
 * @example
 * ```ts
 * Cli.isMachine(Order) // true
 * Cli.isMachine({ name: "order" }) // false
 * ```
 *
 * @since 0.1.0
 */
export const isMachine = (u: unknown): u is Machine.Any => {
  if (typeof u !== "object" || u === null) return false
  const m = u as Record<string, unknown>
  return typeof m.name === "string" && Array.isArray(m.stateTags) && Array.isArray(m.eventTags) &&
    m.table instanceof Map && m.timeouts instanceof Map && typeof m.initial === "object" && m.initial !== null
}

/**
 * Every distinct machine a module exports, in export-name order, with the
 * name it was found under.
 *
 * @example
 * ```ts
 * Cli.findMachines(await import("./machines.js")) // [{ exportName: "Order", machine: Order }, ...]
 * ```
 *
 * @since 0.1.0
 */
export const findMachines = (
  exports: Record<string, unknown>
): ReadonlyArray<{ readonly exportName: string; readonly machine: Machine.Any }> => {
  const seen = new Set<unknown>()
  const found: Array<{ exportName: string; machine: Machine.Any }> = []
  for (const exportName of Object.keys(exports).sort()) {
    const value = exports[exportName]
    if (isMachine(value) && !seen.has(value)) {
      seen.add(value)
      found.push({ exportName, machine: value })
    }
  }
  return found
}

const messageOf = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/** A failure's message followed by those of its causes, each once: "PgClient: Failed to connect: connect ECONNREFUSED ...". */
const messageChain = (cause: unknown): string => {
  const parts: Array<string> = []
  let current: unknown = cause
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    const message = messageOf(current)
    if (message !== "" && !parts.some((part) => part.includes(message))) parts.push(message)
    current = typeof current === "object" ? (current as { readonly cause?: unknown }).cause : undefined
  }
  return parts.join(": ")
}

const typeScriptExtension = /\.(ts|mts|cts|tsx)$/

/**
 * How a TypeScript module is made importable: `"loaded"` when a loader is
 * already active (this module itself runs from TypeScript sources, under
 * tsx or vitest), else `tsx`'s ESM API is registered. Replaceable for tests.
 *
 * @since 0.1.0
 */
export interface TypeScriptLoader {
  readonly importTsx: () => Promise<unknown>
  readonly active: boolean
}

const tsxSpecifier = "tsx/esm/api"

const defaultTypeScriptLoader: TypeScriptLoader = {
  // A variable specifier: tsx is optional, and the build must not need its types.
  importTsx: () => import(tsxSpecifier),
  active: import.meta.url.endsWith(".ts")
}

let tsxRegistered = false

const ensureTypeScript = (modulePath: string, loader: TypeScriptLoader): Effect.Effect<void, ModuleLoadError> => {
  if (loader.active || tsxRegistered) return Effect.void
  const missing = (why: string) =>
    new ModuleLoadError({
      path: modulePath,
      message: `cannot load the TypeScript module ${modulePath}: ${why}. Install tsx (npm install --save-dev tsx) ` +
        `or point --machines at compiled JavaScript`
    })
  return Effect.tryPromise({ try: loader.importTsx, catch: () => missing("tsx is not installed") }).pipe(
    Effect.flatMap((api) => {
      const register = (api as { readonly register?: unknown }).register
      if (typeof register !== "function") return Effect.fail(missing("tsx/esm/api has no register()"))
      return Effect.try({
        try: () => {
          register()
          tsxRegistered = true
        },
        catch: (cause) => missing(`registering tsx failed: ${messageOf(cause)}`)
      })
    })
  )
}

/**
 * Imports `modulePath` (relative to the working directory) and returns the
 * machines it exports: `ModuleNotFound`, `ModuleLoadError` (registering
 * `tsx` first for a TypeScript module under plain node) or `NoMachinesFound`
 * otherwise.
 *
 * @example
 * ```ts
 * const machines = yield* Cli.loadMachines("examples/order.ts") // [{ exportName: "Order", machine: Order }]
 * ```
 *
 * @since 0.1.0
 */
export const loadMachines = (
  modulePath: string,
  loader: TypeScriptLoader = defaultTypeScriptLoader
): Effect.Effect<
  ReadonlyArray<{ readonly exportName: string; readonly machine: Machine.Any }>,
  ModuleNotFound | ModuleLoadError | NoMachinesFound
> =>
  Effect.gen(function*() {
    const absolute = path.resolve(modulePath)
    if (!fs.existsSync(absolute) || !fs.statSync(absolute).isFile()) {
      return yield* new ModuleNotFound({ path: modulePath, message: `module not found: ${modulePath} (looked at ${absolute})` })
    }
    if (typeScriptExtension.test(absolute)) yield* ensureTypeScript(modulePath, loader)
    const exports = yield* Effect.tryPromise({
      try: () => import(pathToFileURL(absolute).href) as Promise<Record<string, unknown>>,
      catch: (cause) => new ModuleLoadError({ path: modulePath, message: `could not load ${modulePath}: ${messageOf(cause)}` })
    })
    const machines = findMachines(exports)
    if (machines.length === 0) {
      return yield* new NoMachinesFound({
        path: modulePath,
        message: `${modulePath} exports no machine (a value with name, stateTags and table, as Machine.make returns)`
      })
    }
    return machines
  })

/** One machine per name (the first export wins), in export-name order. */
const uniqueByName = (found: ReadonlyArray<{ readonly machine: Machine.Any }>): ReadonlyArray<Machine.Any> => {
  const byName = new Map<string, Machine.Any>()
  for (const { machine } of found) if (!byName.has(machine.name)) byName.set(machine.name, machine)
  return [...byName.values()]
}

// ---------------------------------------------------------------------------
// Opening the database
// ---------------------------------------------------------------------------

/**
 * Where the data is: `--db`, `--table-prefix`, `--schema`.
 *
 * @since 0.1.0
 */
export interface Database {
  readonly db: string
  readonly tablePrefix: Option.Option<string>
  readonly schema: Option.Option<string>
}

const isPostgresUrl = (db: string) => /^postgres(ql)?:\/\//i.test(db)

/** The database as messages name it: a URL without its password, or the file path. */
const describeDatabase = (db: string): string => {
  if (!isPostgresUrl(db)) return `SQLite file ${db}`
  try {
    const url = new URL(db)
    if (url.password !== "") url.password = "***"
    for (const key of [...url.searchParams.keys()]) {
      if (/pass/i.test(key)) url.searchParams.set(key, "***")
    }
    return `PostgreSQL ${url.toString()}`
  } catch {
    return "PostgreSQL (malformed URL)"
  }
}

const shellQuoted = (text: string) => (/^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`)

const migrateCommandFor = (database: Database): string =>
  [
    "effect-fsm migrate",
    `--db ${
      isPostgresUrl(database.db) && (/^[^/]*\/\/[^/@]*:[^/@]*@/.test(database.db) || /[?&][^=&]*pass/i.test(database.db))
        ? "<url>"
        : shellQuoted(database.db)
    }`,
    ...Option.match(database.tablePrefix, { onNone: () => [], onSome: (p) => [`--table-prefix ${p}`] }),
    ...Option.match(database.schema, { onNone: () => [], onSome: (s) => [`--schema ${s}`] })
  ].join(" ")

const missingTablePattern = /no such table|relation "?[^"]*"? does not exist|\b42P01\b/i

/** The text of a failure and of everything it wraps, for recognising a missing table. */
const fullText = (u: unknown, depth = 0): string => {
  if (depth > 5 || typeof u !== "object" || u === null) return String(u)
  const record = u as { readonly message?: unknown; readonly reason?: unknown; readonly code?: unknown; readonly cause?: unknown }
  return [record.message, record.reason, record.code].filter((part) => part !== undefined).map(String).join(" ") +
    (record.cause === undefined ? "" : ` ${fullText(record.cause, depth + 1)}`)
}

/** A store's persistence failure, read as what an operator should do about it. */
const classifyPersistence = (database: Database) => (error: PersistenceError): TablesMissing | DatabaseUnavailable | PersistenceError => {
  const text = fullText(error)
  if (missingTablePattern.test(text)) {
    const table = /no such table:?\s*([\w.]+)/i.exec(text)?.[1] ?? /relation "([^"]+)" does not exist/i.exec(text)?.[1]
    return new TablesMissing({
      target: describeDatabase(database.db),
      reason: table === undefined ? "a table is missing" : `table ${table} is missing`,
      migrate: migrateCommandFor(database)
    })
  }
  if (error.operation === "connect" || error.operation.startsWith("open ")) {
    return new DatabaseUnavailable({ target: describeDatabase(database.db), reason: error.reason })
  }
  return error
}

const driverMissing = (database: Database, driver: string) => (cause: unknown) =>
  new DatabaseUnavailable({
    target: describeDatabase(database.db),
    reason: `the driver ${driver} could not be loaded (npm install ${driver}): ${messageOf(cause)}`
  })

/**
 * A `SqlClient` on the database, never creating a SQLite file unless
 * `create`.
 */
const clientLayer = (
  database: Database,
  options: { readonly create: boolean }
): Effect.Effect<Layer.Layer<SqlClient.SqlClient, DatabaseUnavailable>, DatabaseNotFound | DatabaseUnavailable | UsageError> =>
  Effect.gen(function*() {
    const target = describeDatabase(database.db)
    const unavailable = (cause: Cause.Cause<unknown>) =>
      Layer.fail(new DatabaseUnavailable({ target, reason: messageChain(Cause.squash(cause)) }))
    if (isPostgresUrl(database.db)) {
      const valid = yield* Effect.try({ try: () => new URL(database.db), catch: () => undefined }).pipe(
        Effect.orElseSucceed(() => undefined)
      )
      if (valid === undefined) {
        return yield* new DatabaseUnavailable({ target, reason: "not a valid URL (postgres://user:password@host:port/database)" })
      }
      const PgClient = yield* Effect.tryPromise({
        try: () => import("@effect/sql-pg/PgClient"),
        catch: driverMissing(database, "@effect/sql-pg")
      })
      return PgClient.layer({ url: Redacted.make(database.db), connectTimeout: "10 seconds" }).pipe(
        Layer.catchAllCause(unavailable)
      )
    }
    if (Option.isSome(database.schema)) {
      return yield* new UsageError({ message: "--schema applies to PostgreSQL only; --db names a SQLite file" })
    }
    const filename = path.resolve(database.db)
    const stat = fs.statSync(filename, { throwIfNoEntry: false })
    if (stat === undefined && !options.create) return yield* new DatabaseNotFound({ path: database.db })
    if (stat !== undefined && !stat.isFile()) {
      return yield* new DatabaseUnavailable({ target, reason: "it is not a file" })
    }
    const Sqlite = yield* Effect.tryPromise({
      try: () => import("./SqliteEventStore.js"),
      catch: driverMissing(database, "@effect/sql-sqlite-node")
    })
    // wal: false: looking at a file must not change its journal mode.
    return Sqlite.layerClient({ filename, wal: false }).pipe(Layer.catchAllCause(unavailable))
  })

const storeOptions = (database: Database): SqlEventStore.Options => ({
  migrate: false,
  tablePrefix: Option.getOrUndefined(database.tablePrefix),
  schema: Option.getOrUndefined(database.schema)
})

/**
 * The inspector over the database as an API-only node: the runtime
 * registers the machines, durable timer rows are written by its commits
 * (a stop cancels them) but no sweeper runs, and no outbox command is
 * dispatched. Nothing is migrated.
 *
 * @example
 * ```ts
 * const layer = yield* Cli.inspectorLayer({ db: "orders.db", tablePrefix: Option.none(), schema: Option.none() }, [Order])
 * ```
 *
 * @since 0.1.0
 */
export const inspectorLayer = (
  database: Database,
  machines: ReadonlyArray<Machine.Any>
): Effect.Effect<
  Layer.Layer<
    Inspector.Inspector,
    DatabaseUnavailable | SqlEventStore.MakeError | MachineDefinitionError | InvalidConfiguration
  >,
  DatabaseNotFound | DatabaseUnavailable | UsageError
> =>
  Effect.map(clientLayer(database, { create: false }), (client) =>
    Inspector.layer({ machines }).pipe(
      Layer.provideMerge(FSMRuntime.layer({ machines, cacheSize: 100, disableTracing: true })),
      Layer.provide(TimeoutStrategy.layerDurable({ sweep: false })),
      Layer.provide(Outbox.layer({ dispatch: false })),
      Layer.provideMerge(SqlEventStore.layer(storeOptions(database))),
      Layer.provide(client)
      // The machines' own services (what their entry and exit actions need)
      // are not here: the inspector never sends an event, and a stop runs no
      // action, so none of them is ever asked for.
    ) as Layer.Layer<
      Inspector.Inspector,
      DatabaseUnavailable | SqlEventStore.MakeError | MachineDefinitionError | InvalidConfiguration
    >)

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/**
 * A duration as people read it: the two largest units (`"3h 12m"`,
 * `"2d 4h"`, `"45s"`).
 *
 * @example
 * ```ts
 * Cli.formatDuration(3 * 3_600_000 + 12 * 60_000) // "3h 12m"
 * ```
 *
 * @since 0.1.0
 */
export const formatDuration = (millis: number): string => {
  const seconds = Math.floor(Math.abs(millis) / 1000)
  const days = Math.floor(seconds / 86_400)
  const hours = Math.floor((seconds % 86_400) / 3600)
  const minutes = Math.floor((seconds % 3600) / 60)
  const rest = seconds % 60
  if (days > 0) return hours > 0 ? `${days}d ${hours}h` : `${days}d`
  if (hours > 0) return minutes > 0 ? `${hours}h ${minutes}m` : `${hours}h`
  if (minutes > 0) return rest > 0 ? `${minutes}m ${rest}s` : `${minutes}m`
  return `${rest}s`
}

const iso = (millis: number): string => new Date(millis).toISOString()

const relative = (at: number, now: number): string =>
  at >= now ? `in ${formatDuration(at - now)}` : `${formatDuration(now - at)} ago`

/**
 * Rows as aligned columns under a header line.
 *
 * @example
 * ```ts
 * Cli.formatTable(["ID", "STATE"], [["order-1", "Paid"]]) // "ID       STATE\norder-1  Paid"
 * ```
 *
 * @since 0.1.0
 */
export const formatTable = (headers: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => (row[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  ").trimEnd()
  return [line(headers), ...rows.map(line)].join("\n")
}

const compact = (value: unknown, max = 60): string => {
  const text = JSON.stringify(value) ?? "null"
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}

const orDash = (text: string | null | undefined) => (text === null || text === undefined || text === "" ? "-" : text)


const toJson = (value: unknown): string => JSON.stringify(plain(value), null, 2)

/**
 * An instance-page cursor as the CLI prints it: opaque, shell-safe
 * (base64url of `[enteredAt, instanceId]`).
 *
 * @example
 * ```ts
 * Cli.decodeCursor(Cli.encodeCursor({ enteredAt: 1, instanceId: "o-1" })) // Option.some({ enteredAt: 1, instanceId: "o-1" })
 * ```
 *
 * @since 0.1.0
 */
export const encodeCursor = (cursor: EventStore.InstanceCursor): string =>
  Buffer.from(JSON.stringify([cursor.enteredAt, cursor.instanceId])).toString("base64url")

/**
 * Reads a cursor printed by `encodeCursor`; `None` when it is not one.
 *
 * @since 0.1.0
 */
export const decodeCursor = (text: string): Option.Option<EventStore.InstanceCursor> => {
  try {
    const decoded: unknown = JSON.parse(Buffer.from(text, "base64url").toString("utf8"))
    return Array.isArray(decoded) && decoded.length === 2 && Number.isSafeInteger(decoded[0]) &&
        typeof decoded[1] === "string"
      ? Option.some({ enteredAt: decoded[0] as number, instanceId: decoded[1] })
      : Option.none()
  } catch {
    return Option.none()
  }
}

// ---------------------------------------------------------------------------
// Shared options
// ---------------------------------------------------------------------------

const machinesOption = Options.text("machines").pipe(
  Options.withAlias("m"),
  Options.withDescription(
    "Module exporting the machines (.js/.mjs, or .ts with tsx installed). Default: $EFFECT_FSM_MACHINES"
  ),
  Options.withFallbackConfig(Config.string("EFFECT_FSM_MACHINES"))
)

const dbOption = Options.text("db").pipe(
  Options.withDescription("A postgres:// URL, or the path of an existing SQLite file. Default: $EFFECT_FSM_DB"),
  Options.withFallbackConfig(Config.string("EFFECT_FSM_DB"))
)

const tablePrefixOption = Options.text("table-prefix").pipe(
  Options.withDescription(`Prefix of the tables (default "${SqlEventStore.defaultTablePrefix}")`),
  Options.optional
)

const schemaOption = Options.text("schema").pipe(
  Options.withDescription("PostgreSQL schema of the tables (default: the connection's search_path)"),
  Options.optional
)

const jsonOption = Options.boolean("json").pipe(Options.withDescription("Print JSON on stdout, for scripts"))

const databaseOptions = { db: dbOption, tablePrefix: tablePrefixOption, schema: schemaOption }

const machineArg = Args.text({ name: "machine" }).pipe(Args.withDescription("The machine's name"))
const instanceArg = Args.text({ name: "id" }).pipe(Args.withDescription("The instance id"))

const limitOption = (fallback: number) =>
  Options.integer("limit").pipe(Options.withDescription(`Page size (default ${fallback})`), Options.withDefault(fallback))

// ---------------------------------------------------------------------------
// Running a command against the database
// ---------------------------------------------------------------------------

interface Context {
  readonly inspector: Inspector.Inspector["Type"]
  readonly machine: Machine.Any
  readonly now: number
}

const checkLimit = (limit: number): Effect.Effect<number, UsageError> =>
  Number.isSafeInteger(limit) && limit >= 1 && limit <= EventStore.maxPageSize
    ? Effect.succeed(limit)
    : Effect.fail(new UsageError({ message: `--limit must be a whole number from 1 to ${EventStore.maxPageSize}, got ${limit}` }))

const parseDuration = (option: string, text: string): Effect.Effect<number, UsageError> => {
  // Duration reads "-1 hour" as zero: a sign is refused here instead.
  const decoded = /^\s*-/.test(text) ? Option.none() : Duration.decodeUnknown(text)
  return Option.isSome(decoded) && Duration.isFinite(decoded.value)
    ? Effect.succeed(Duration.toMillis(decoded.value))
    : Effect.fail(
      new UsageError({ message: `${option}: expected a duration such as "1 hour" or "30 minutes", got ${JSON.stringify(text)}` })
    )
}

/**
 * Loads the machines, opens the database and runs `body` with the
 * inspector and the named machine; every store failure is read as what to
 * do about it (a missing table suggests `migrate`).
 */
const withInspector = <A, E>(
  options: { readonly machines: string; readonly machine: string } & Database,
  body: (context: Context) => Effect.Effect<A, E>
) =>
  Effect.gen(function*() {
    const machines = uniqueByName(yield* loadMachines(options.machines))
    const machine = machines.find((m) => m.name === options.machine)
    if (machine === undefined) return yield* new UnknownMachine({ machine: options.machine, known: machines.map((m) => m.name) })
    const layer = yield* inspectorLayer(options, machines)
    return yield* Effect.scoped(
      Effect.gen(function*() {
        const context = yield* Layer.build(layer)
        const inspector = yield* Effect.provide(Inspector.Inspector, context)
        return yield* body({ inspector, machine, now: yield* Clock.currentTimeMillis })
      })
    )
  }).pipe(
    Effect.catchIf(
      (error): error is PersistenceError => error instanceof PersistenceError,
      (error) => Effect.fail(classifyPersistence(options)(error))
    )
  )

const print = (json: boolean, value: unknown, text: () => string) => Console.log(json ? toJson(value) : text())

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

const instancesCommand = Command.make("instances", {
  machine: machineArg,
  machines: machinesOption,
  ...databaseOptions,
  json: jsonOption,
  state: Options.text("state").pipe(Options.withDescription("Only instances in this state"), Options.optional),
  olderThan: Options.text("older-than").pipe(
    Options.withDescription(`Only instances in their state for longer than this ("1 hour", "30 minutes")`),
    Options.optional
  ),
  stopped: Options.boolean("stopped").pipe(Options.withDescription("Only stopped instances")),
  running: Options.boolean("running").pipe(Options.withDescription("Only instances not stopped")),
  limit: limitOption(50),
  after: Options.text("after").pipe(Options.withDescription("The cursor printed by the previous page"), Options.optional)
}, (options) =>
  Effect.gen(function*() {
    if (options.stopped && options.running) return yield* new UsageError({ message: "--stopped and --running exclude each other" })
    const limit = yield* checkLimit(options.limit)
    const olderThan = yield* Option.match(options.olderThan, {
      onNone: () => Effect.succeed(undefined),
      onSome: (text) => parseDuration("--older-than", text)
    })
    const after = yield* Option.match(options.after, {
      onNone: () => Effect.succeed(undefined),
      onSome: (text) =>
        Option.match(decodeCursor(text), {
          onNone: () => Effect.fail(new UsageError({ message: `--after: not a cursor printed by this command: ${JSON.stringify(text)}` })),
          onSome: Effect.succeed
        })
    })
    yield* withInspector(options, ({ inspector, machine, now }) =>
      Effect.gen(function*() {
        const page = yield* inspector.instances({
          machine: machine.name,
          stateTag: Option.getOrUndefined(options.state),
          enteredBefore: olderThan === undefined ? undefined : now - olderThan,
          stopped: options.stopped ? true : options.running ? false : undefined,
          after,
          limit
        })
        const next = Option.map(page.next, encodeCursor)
        yield* print(options.json, { instances: page.instances, next }, () => {
          if (page.instances.length === 0) return `no ${machine.name} instances match`
          const rows = page.instances.map((row) => [
            row.instanceId,
            row.stateTag,
            formatDuration(now - row.enteredAt),
            iso(row.enteredAt),
            iso(row.updatedAt),
            String(row.seqNr),
            row.stopped ? "stopped" : ""
          ])
          const table = formatTable(["ID", "STATE", "IN STATE FOR", "ENTERED", "UPDATED", "SEQNR", ""], rows)
          const footer = Option.match(next, {
            onNone: () => `${page.instances.length} instance(s)`,
            onSome: (cursor) => `${page.instances.length} instance(s); next page: --after ${cursor}`
          })
          return `${table}\n\n${footer}`
        })
      }))
  })).pipe(Command.withDescription("List instances of a machine by state, oldest entry first (keyset pages)"))

const countsCommand = Command.make("counts", {
  machine: machineArg,
  machines: machinesOption,
  ...databaseOptions,
  json: jsonOption
}, (options) =>
  withInspector(options, ({ inspector, machine }) =>
    Effect.gen(function*() {
      const counts = yield* inspector.counts(machine.name)
      yield* print(options.json, counts, () => {
        if (counts.length === 0) return `no ${machine.name} instances`
        const total = counts.reduce((sum, c) => sum + c.count, 0)
        const rows = counts.map((c) => [c.stateTag, c.stopped ? "stopped" : "running", String(c.count)])
        return `${formatTable(["STATE", "", "COUNT"], rows)}\n\n${total} instance(s)`
      })
    }))).pipe(Command.withDescription("How many instances are in each state"))

const timerRows = (timers: ReadonlyArray<TimeoutStore.TimerRecord>, now: number, withInstance: boolean) =>
  formatTable(
    [...(withInstance ? ["ID"] : []), "TIMER", "STATE", "GENERATION", "DUE", "ATTEMPTS", "LAST ERROR"],
    timers.map((t) => [
      ...(withInstance ? [t.instanceId] : []),
      t.name,
      t.stateTag,
      String(t.generation),
      `${iso(t.dueAt)} (${relative(t.dueAt, now)})`,
      String(t.attempts),
      orDash(t.lastError)
    ])
  )

const commandRows = (commands: ReadonlyArray<OutboxStore.CommandRecord>, now: number, withInstance: boolean) =>
  formatTable(
    [...(withInstance ? ["ID"] : []), "COMMAND", "TAG", "KIND", "DUE", "ATTEMPTS", "LAST ERROR"],
    commands.map((c) => [
      ...(withInstance ? [c.instanceId] : []),
      `${c.seqNr}:${c.index}`,
      c.tag,
      c.kind,
      `${iso(c.dueAt)} (${relative(c.dueAt, now)})`,
      String(c.attempts),
      orDash(c.lastError)
    ])
  )

const showCommand = Command.make("show", {
  machine: machineArg,
  id: instanceArg,
  machines: machinesOption,
  ...databaseOptions,
  json: jsonOption
}, (options) =>
  withInspector(options, ({ inspector, machine, now }) =>
    Effect.gen(function*() {
      const detail = yield* inspector.instance(machine.name, options.id)
      yield* print(options.json, detail, () => {
        const { summary } = detail
        const lease = Option.match(detail.lease, {
          onNone: () => "none",
          onSome: (l) => `${l.owner} (token ${l.token}, expires ${iso(l.expiresAt)})`
        })
        const lines = [
          `${summary.machine}/${summary.instanceId}`,
          formatTable(["", ""], [
            ["state", `${summary.stateTag}${summary.stopped ? " (stopped)" : ""}`],
            ["in state for", `${formatDuration(now - summary.enteredAt)} (since ${iso(summary.enteredAt)})`],
            ["updated", `${iso(summary.updatedAt)} (${relative(summary.updatedAt, now)})`],
            ["seqNr", String(summary.seqNr)],
            ["lease", lease]
          ]).split("\n").slice(1).map((line) => `  ${line}`).join("\n"),
          "",
          "data",
          ...JSON.stringify(detail.state, null, 2).split("\n").map((line) => `  ${line}`),
          "",
          detail.deadlines.length === 0 ? "deadlines: none" : "deadlines",
          ...(detail.deadlines.length === 0 ? [] : indent(formatTable(
            ["TIMER", "DUE"],
            detail.deadlines.map((d) => [d.name, `${iso(d.dueAt)} (${relative(d.dueAt, now)})`])
          ))),
          "",
          detail.timers.length === 0 ? "timer rows: none" : "timer rows",
          ...(detail.timers.length === 0 ? [] : indent(timerRows(detail.timers, now, false))),
          "",
          detail.commands.length === 0 ? "outbox commands: none" : "outbox commands",
          ...(detail.commands.length === 0 ? [] : indent(commandRows(detail.commands, now, false)))
        ]
        return lines.join("\n")
      })
    }))).pipe(Command.withDescription("One instance in detail: state, data, deadlines, timer rows, outbox commands, lease"))

const indent = (text: string): ReadonlyArray<string> => text.split("\n").map((line) => `  ${line}`)

const historyCommand = Command.make("history", {
  machine: machineArg,
  id: instanceArg,
  machines: machinesOption,
  ...databaseOptions,
  json: jsonOption,
  from: Options.integer("from").pipe(Options.withDescription("First sequence number (default 1)"), Options.withDefault(1)),
  limit: limitOption(100)
}, (options) =>
  Effect.gen(function*() {
    const limit = yield* checkLimit(options.limit)
    if (options.from < 1) return yield* new UsageError({ message: `--from must be a sequence number of at least 1, got ${options.from}` })
    yield* withInspector(options, ({ inspector, machine }) =>
      Effect.gen(function*() {
        const page = yield* inspector.history(machine.name, options.id, { fromSeqNr: options.from, limit })
        yield* print(options.json, page, () => {
          if (page.entries.length === 0) return `no events from seqNr ${options.from}`
          const rows = page.entries.map((e) => [
            String(e.seqNr),
            iso(e.metadata.timestamp),
            e.tag,
            e.metadata.source,
            e.stateTag,
            compact(e.payload)
          ])
          const table = formatTable(["SEQNR", "TIME", "EVENT", "SOURCE", "STATE AFTER", "PAYLOAD"], rows)
          return Option.match(page.next, {
            onNone: () => table,
            onSome: (next) => `${table}\n\nnext page: --from ${next}`
          })
        })
      }))
  })).pipe(Command.withDescription("An instance's stored log, a page at a time"))

const timersCommand = Command.make("timers", {
  machine: machineArg,
  id: Args.optional(instanceArg),
  machines: machinesOption,
  ...databaseOptions,
  json: jsonOption,
  within: Options.text("within").pipe(
    Options.withDescription(`Without an id: timers due within this time (default "1 hour")`),
    Options.withDefault("1 hour")
  ),
  limit: limitOption(100)
}, (options) =>
  Effect.gen(function*() {
    const limit = yield* checkLimit(options.limit)
    const within = yield* parseDuration("--within", options.within)
    yield* withInspector(options, ({ inspector, machine, now }) =>
      Effect.gen(function*() {
        const timers = yield* Option.match(options.id, {
          onNone: () => inspector.upcomingTimers(machine.name, { before: now + within, limit }),
          onSome: (id) => Effect.map(inspector.instance(machine.name, id), (detail) => detail.timers)
        })
        yield* print(options.json, timers, () =>
          timers.length === 0
            ? Option.match(options.id, {
              onNone: () => `no ${machine.name} timers due within ${formatDuration(within)}`,
              onSome: (id) => `${machine.name}/${id} has no timer rows`
            })
            : timerRows(timers, now, Option.isNone(options.id)))
      }))
  })).pipe(Command.withDescription("An instance's durable timers, or the machine's timers due soon"))

const deadLettersCommand = Command.make("dead-letters", {
  machine: machineArg,
  machines: machinesOption,
  ...databaseOptions,
  json: jsonOption
}, (options) =>
  withInspector(options, ({ inspector, machine, now }) =>
    Effect.gen(function*() {
      const letters = yield* inspector.deadLetters(machine.name)
      yield* print(options.json, letters, () => {
        const timers = letters.timers.length === 0
          ? ["timers: none"]
          : ["timers", ...indent(formatTable(
            ["ID", "TIMER", "STATE", "GENERATION", "FAILED", "ATTEMPTS", "LAST ERROR"],
            letters.timers.map((d) => [
              d.instanceId,
              d.name,
              d.stateTag,
              String(d.generation),
              `${iso(d.failedAt)} (${relative(d.failedAt, now)})`,
              String(d.attempts),
              orDash(d.lastError)
            ])
          ))]
        const commands = letters.commands.length === 0
          ? ["commands: none"]
          : ["commands", ...indent(formatTable(
            ["ID", "COMMAND", "TAG", "KIND", "FAILED", "ATTEMPTS", "LAST ERROR"],
            letters.commands.map((d) => [
              d.instanceId,
              `${d.seqNr}:${d.index}`,
              d.tag,
              d.kind,
              `${iso(d.failedAt)} (${relative(d.failedAt, now)})`,
              String(d.attempts),
              orDash(d.lastError)
            ])
          ))]
        return [...timers, "", ...commands].join("\n")
      })
    }))).pipe(Command.withDescription("Timers and outbox commands that failed too often, with their last error"))

/** Which dead letter `redrive` and `discard` act on. */
type DeadLetterTarget =
  | { readonly _tag: "Timer"; readonly name: string }
  | { readonly _tag: "Command"; readonly seqNr: number; readonly index: number }

const deadLetterTarget = (
  timer: Option.Option<string>,
  command: Option.Option<string>
): Effect.Effect<DeadLetterTarget, UsageError> => {
  if (Option.isSome(timer) && Option.isSome(command)) {
    return Effect.fail(new UsageError({ message: "give either --timer NAME or --command SEQNR:INDEX, not both" }))
  }
  if (Option.isSome(timer)) return Effect.succeed({ _tag: "Timer", name: timer.value })
  if (Option.isSome(command)) {
    const match = /^(\d+):(\d+)$/.exec(command.value)
    return match === null
      ? Effect.fail(new UsageError({ message: `--command: expected SEQNR:INDEX (as dead-letters prints it), got ${JSON.stringify(command.value)}` }))
      : Effect.succeed({ _tag: "Command", seqNr: Number(match[1]), index: Number(match[2]) })
  }
  return Effect.fail(new UsageError({ message: "name the dead letter: --timer NAME or --command SEQNR:INDEX" }))
}

const deadLetterCommand = (verb: "redrive" | "discard") =>
  Command.make(verb, {
    machine: machineArg,
    id: instanceArg,
    machines: machinesOption,
    ...databaseOptions,
    json: jsonOption,
    timer: Options.text("timer").pipe(Options.withDescription("The dead-lettered timer's name"), Options.optional),
    command: Options.text("command").pipe(
      Options.withDescription("The dead-lettered command, as SEQNR:INDEX"),
      Options.optional
    )
  }, (options) =>
    Effect.gen(function*() {
      const target = yield* deadLetterTarget(options.timer, options.command)
      yield* withInspector(options, ({ inspector, machine }) =>
        Effect.gen(function*() {
          const key = { machine: machine.name, instanceId: options.id }
          const what = target._tag === "Timer"
            ? `timer ${JSON.stringify(target.name)}`
            : `command ${target.seqNr}:${target.index}`
          const done = target._tag === "Timer"
            ? yield* (verb === "redrive" ? inspector.redriveTimer : inspector.discardTimer)({ ...key, name: target.name })
            : yield* (verb === "redrive" ? inspector.redriveCommand : inspector.discardCommand)({
              ...key,
              seqNr: target.seqNr,
              index: target.index
            })
          if (!done) {
            return yield* new NothingToDo({ message: `${machine.name}/${options.id} has no dead-lettered ${what}` })
          }
          yield* print(
            options.json,
            { [verb === "redrive" ? "redriven" : "discarded"]: target._tag === "Timer" ? { ...key, timer: target.name } : { ...key, seqNr: target.seqNr, index: target.index } },
            () =>
              verb === "redrive"
                ? `${machine.name}/${options.id}: dead-lettered ${what} is due again now (a node's ${target._tag === "Timer" ? "sweeper" : "dispatcher"} will run it)`
                : `${machine.name}/${options.id}: dead-lettered ${what} discarded`
          )
        }))
    })).pipe(
      Command.withDescription(
        verb === "redrive"
          ? "Move a dead-lettered timer or command back, due now"
          : "Delete a dead-lettered timer or command for good"
      )
    )

const armedTimer = (inspector: Inspector.Inspector["Type"], machine: string, id: string, name: string) =>
  Effect.flatMap(inspector.instance(machine, id), (detail) => {
    const timer = detail.timers.find((t) => t.name === name)
    return timer === undefined
      ? Effect.fail(
        new NothingToDo({
          message: `${machine}/${id} has no armed timer ${JSON.stringify(name)}${
            detail.timers.length === 0 ? "" : ` (armed: ${detail.timers.map((t) => t.name).join(", ")})`
          }`
        })
      )
      : Effect.succeed(timer)
  })

const timerCommand = (verb: "fire-timer" | "cancel-timer") =>
  Command.make(verb, {
    machine: machineArg,
    id: instanceArg,
    name: Args.text({ name: "timer" }).pipe(Args.withDescription("The timer's name")),
    machines: machinesOption,
    ...databaseOptions,
    json: jsonOption
  }, (options) =>
    withInspector(options, ({ inspector, machine }) =>
      Effect.gen(function*() {
        const timer = yield* armedTimer(inspector, machine.name, options.id, options.name)
        const key = { machine: machine.name, instanceId: options.id, name: timer.name, generation: timer.generation }
        const done = yield* (verb === "fire-timer" ? inspector.fireTimer : inspector.cancelTimer)(key)
        if (!done) {
          return yield* new NothingToDo({ message: `${machine.name}/${options.id}: timer ${JSON.stringify(options.name)} moved meanwhile; look again` })
        }
        yield* print(options.json, { [verb === "fire-timer" ? "fired" : "cancelled"]: key }, () =>
          verb === "fire-timer"
            ? `${machine.name}/${options.id}: timer ${JSON.stringify(timer.name)} is due now (a node's sweeper delivers it)`
            : `${machine.name}/${options.id}: timer ${JSON.stringify(timer.name)} cancelled; it will not fire`)
      }))).pipe(
      Command.withDescription(
        verb === "fire-timer"
          ? "Make an armed durable timer due now; a sweeping node delivers it once"
          : "Delete an armed durable timer: it will not fire"
      )
    )

const stopCommand = Command.make("stop", {
  machine: machineArg,
  id: instanceArg,
  machines: machinesOption,
  ...databaseOptions,
  json: jsonOption
}, (options) =>
  withInspector(options, ({ inspector, machine }) =>
    Effect.gen(function*() {
      const outcome = yield* inspector.stop(machine.name, options.id)
      yield* print(
        options.json,
        { stopped: { machine: machine.name, instanceId: options.id, stateTag: outcome.state._tag, seqNr: outcome.seqNr } },
        () => `${machine.name}/${options.id}: stopped in state ${outcome.state._tag} (seqNr ${outcome.seqNr})`
      )
    }))).pipe(Command.withDescription("Stop an instance durably: it rejects every further event"))

const diagramCommand = Command.make("diagram", {
  machine: machineArg,
  id: Args.optional(instanceArg),
  machines: machinesOption,
  db: Options.optional(dbOption),
  tablePrefix: tablePrefixOption,
  schema: schemaOption,
  json: jsonOption
}, (options) =>
  Option.match(options.id, {
    onNone: () =>
      Effect.gen(function*() {
        const machines = uniqueByName(yield* loadMachines(options.machines))
        const machine = machines.find((m) => m.name === options.machine)
        if (machine === undefined) {
          return yield* new UnknownMachine({ machine: options.machine, known: machines.map((m) => m.name) })
        }
        const mermaid = Visualize.mermaid(machine)
        yield* print(options.json, { mermaid }, () => mermaid.trimEnd())
      }),
    onSome: (id) =>
      Effect.gen(function*() {
        if (Option.isNone(options.db)) {
          return yield* new UsageError({ message: "the trace of an instance reads its log: give --db" })
        }
        yield* withInspector({ ...options, db: options.db.value }, ({ inspector, machine }) =>
          Effect.gen(function*() {
            const { entries } = yield* inspector.decodedHistory(machine.name, id)
            const mermaid = Visualize.trace(entries, { machine, instanceId: id })
            yield* print(options.json, { mermaid }, () => mermaid.trimEnd())
          }))
      })
  })).pipe(Command.withDescription("Mermaid diagram of a machine, or the sequence diagram of one instance's history"))

const migrateCommand = Command.make("migrate", {
  ...databaseOptions,
  json: jsonOption,
  create: Options.boolean("create").pipe(Options.withDescription("Create the SQLite file when it does not exist"))
}, (options) =>
  Effect.gen(function*() {
    const client = yield* clientLayer(options, { create: options.create })
    const applied = yield* SqlEventStore.migrate(storeOptions(options)).pipe(
      Effect.provide(client),
      Effect.catchIf(
        (error): error is PersistenceError => error instanceof PersistenceError,
        (error) => Effect.fail(classifyPersistence(options)(error))
      )
    )
    yield* print(
      options.json,
      { applied: applied.map(([id, name]) => ({ id, name })) },
      () => {
        const where = `${describeDatabase(options.db)}, tables ${Option.getOrElse(options.tablePrefix, () => SqlEventStore.defaultTablePrefix)}*${
          Option.match(options.schema, { onNone: () => "", onSome: (schema) => ` in schema ${schema}` })
        }`
        return applied.length === 0
          ? `${where}: up to date`
          : `${where}: applied ${applied.map(([id, name]) => `${id}_${name}`).join(", ")}`
      }
    )
  })).pipe(Command.withDescription("Create or upgrade the effect-fsm tables (the only command that writes schema)"))

const uiCommand = Command.make("ui", {
  machines: machinesOption,
  ...databaseOptions,
  port: Options.integer("port").pipe(Options.withDescription("Port to listen on (default 4000; 0 picks a free one)"), Options.withDefault(4000)),
  host: Options.text("host").pipe(
    Options.withDescription("Address to bind (default 127.0.0.1: only this machine can connect)"),
    Options.withDefault("127.0.0.1")
  ),
  allowActions: Options.boolean("allow-actions").pipe(
    Options.withDescription("Allow re-drive and discard of dead letters from the page (each needs the token printed at start-up)")
  )
}, (options) =>
  Effect.gen(function*() {
    if (!Number.isSafeInteger(options.port) || options.port < 0 || options.port > 65_535) {
      return yield* new UsageError({ message: `--port must be a whole number from 0 to 65535, got ${options.port}` })
    }
    const machines = uniqueByName(yield* loadMachines(options.machines))
    const layer = yield* inspectorLayer(options, machines)
    yield* Effect.scoped(
      Effect.gen(function*() {
        const context = yield* Layer.build(layer)
        const server = yield* Ui.start({ machines, port: options.port, host: options.host, allowActions: options.allowActions }).pipe(
          Effect.provide(context),
          Effect.mapError((error) =>
            new UsageError({
              message: error._tag === "MermaidNotInstalled"
                ? error.message
                : `cannot listen on ${options.host}:${options.port}: ${String(error.cause)}`
            })
          )
        )
        yield* Console.log(`effect-fsm inspector on ${server.url} (${describeDatabase(options.db)}; Ctrl-C stops it)`)
        if (!Ui.isLoopback(options.host)) {
          yield* Console.log(`warning: listening on ${options.host}: whoever reaches it can read every instance`)
        }
        if (server.allowActions) {
          yield* Console.log(`actions allowed; token ${server.token}`)
          yield* Console.log(`open ${server.url}#token=${server.token} to re-drive and discard from the page`)
        } else {
          yield* Console.log("read-only (start with --allow-actions to re-drive and discard dead letters)")
        }
        return yield* Effect.never
      })
    )
  }).pipe(
    Effect.catchIf(
      (error): error is PersistenceError => error instanceof PersistenceError,
      (error) => Effect.fail(classifyPersistence(options)(error))
    )
  )).pipe(Command.withDescription("Serve the web inspector (read-only unless --allow-actions) until interrupted"))

/**
 * The `effect-fsm` command and its subcommands.
 *
 * @since 0.1.0
 */
export const command = Command.make("effect-fsm").pipe(
  Command.withDescription("Inspect and operate effect-fsm instances in a SQLite file or a PostgreSQL database"),
  Command.withSubcommands([
    instancesCommand,
    countsCommand,
    showCommand,
    historyCommand,
    timersCommand,
    deadLettersCommand,
    deadLetterCommand("redrive"),
    deadLetterCommand("discard"),
    timerCommand("fire-timer"),
    timerCommand("cancel-timer"),
    stopCommand,
    diagramCommand,
    migrateCommand,
    uiCommand
  ])
)

/** The package's version: its package.json is one level above both src/ and dist/. */
const version = (() => {
  try {
    const manifest: unknown = JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url), "utf8"))
    const found = (manifest as { readonly version?: unknown }).version
    return typeof found === "string" ? found : "unknown"
  } catch {
    return "unknown"
  }
})()

const cli = Command.run(command, { name: "effect-fsm", version })

/** Logs (the runtime's warnings) go to stderr, so that stdout stays the command's output. */
const stderrLogger = Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))

/**
 * Runs the command line `args` (without `node` and the script), printing
 * its output; fails with the error (not printed yet) when the command
 * fails, or with a `ValidationError` (already printed, with help) when the
 * command line does not parse.
 *
 * @example
 * ```ts
 * yield* Cli.run(["counts", "order", "--machines", "dist/machines.js", "--db", "orders.db"])
 * ```
 *
 * @since 0.1.0
 */
export const run = (args: ReadonlyArray<string>) =>
  cli(["node", "effect-fsm", ...args]).pipe(
    Logger.withMinimumLogLevel(LogLevel.Warning),
    Effect.provide(stderrLogger)
  )

/**
 * The failures of `run`.
 *
 * @since 0.1.0
 */
export type Failure = Effect.Effect.Error<ReturnType<typeof run>>

/**
 * One line for a failure of `run` (`""` for a command line that did not
 * parse: @effect/cli printed it already).
 *
 * @example
 * ```ts
 * Cli.describeFailure(new Cli.UsageError({ message: "--limit must be ..." })) // "effect-fsm: --limit must be ..."
 * ```
 *
 * @since 0.1.0
 */
export const describeFailure = (failure: unknown): string => {
  if (ValidationError.isValidationError(failure)) return ""
  const message = typeof failure === "object" && failure !== null && "message" in failure
    ? String((failure as { readonly message: unknown }).message)
    : String(failure)
  return `effect-fsm: ${message}`
}

/**
 * The whole program of the bin: runs `argv` (as `process.argv`: node and
 * the script first) and prints a failure as one line on stderr. It fails
 * (so the process exits with code 1) when the command did.
 *
 * @example
 * ```ts
 * Cli.main(process.argv).pipe(Effect.provide(NodeContext.layer), NodeRuntime.runMain({ disableErrorReporting: true }))
 * ```
 *
 * @since 0.1.0
 */
export const main = (argv: ReadonlyArray<string>): Effect.Effect<void, Failure, CliApp.CliApp.Environment> =>
  run(argv.slice(2)).pipe(
    Effect.tapError((failure) => {
      const line = describeFailure(failure)
      return line === "" ? Effect.void : Console.error(line)
    }),
    // A defect (a bug here, or a machine function that throws where nothing
    // catches it) still gets one line, not silence.
    Effect.tapDefect((cause) => {
      const defect = Cause.squash(cause)
      return Console.error(`effect-fsm: internal error: ${defect instanceof Error ? defect.message : String(defect)}`)
    })
  )
