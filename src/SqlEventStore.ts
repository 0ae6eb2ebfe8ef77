/**
 * The event store (and the durable timer store) on SQL: PostgreSQL through
 * `@effect/sql-pg`, SQLite through `@effect/sql-sqlite-node`, or any
 * PostgreSQL / SQLite `SqlClient` you already have.
 *
 * One commit is one atomic unit: its events, the optional snapshot and its
 * timer changes are all written, or nothing is. The events table's primary
 * key `(machine, instance_id, seq_nr)` is the optimistic lock: a writer that
 * lost the race gets a `SequenceConflict` carrying the log's actual end.
 * On PostgreSQL a commit is a single statement (one round trip); on SQLite it
 * is a short transaction that takes the write lock first.
 *
 * Tables are named from one prefix (default `fsm_`): `fsm_events`,
 * `fsm_snapshots`, `fsm_timers`, `fsm_dead_letters`, and the migrations
 * table `fsm_migrations`. The layers run the library's migrations when they
 * start (idempotent, and safe when several nodes start at once); pass
 * `migrate: false` to run them yourself with `SqlEventStore.migrate`.
 *
 * Every per-instance table leads its primary key with `(machine,
 * instance_id)`, so the tables can later be hash-partitioned or sharded by
 * instance.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { FSMRuntime, SqlEventStore } from "effect-fsm"
 *
 * // An embedded SQLite file...
 * const Local = FSMRuntime.layer({ machines: [Order] }).pipe(
 *   Layer.provide(SqlEventStore.layerSqlite({ filename: "orders.db" }))
 * )
 * // ...or PostgreSQL configured from PGHOST / PGUSER / ... or DATABASE_URL.
 * const Production = FSMRuntime.layer({ machines: [Order] }).pipe(
 *   Layer.provide(SqlEventStore.layerPgConfig())
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { PersistenceError } from "./Errors.js"
import * as EventStore from "./EventStore.js"
import { type Dialect, makeDialect } from "./internal/sqlDialect.js"
import { makeBackend } from "./internal/sqlEventStore.js"
import { migrate as runMigrations } from "./internal/sqlMigrations.js"
import { mapSqlError, persistenceError, tablePrefixPattern, type Tables, tables } from "./internal/sqlShared.js"
import { makeTimeoutStore as makeSqlTimeoutStore } from "./internal/sqlTimeoutStore.js"
import * as TimeoutStore from "./TimeoutStore.js"

/**
 * The table prefix was rejected. Prefixes become part of SQL identifiers, so
 * only lowercase letters, digits and `_` are accepted (not starting with a
 * digit, at most 31 characters).
 *
 * @example
 * ```ts
 * SqlEventStore.layerSqlite({ filename: "x.db", tablePrefix: "Orders-" }) // fails with InvalidTablePrefix
 * ```
 *
 * @since 0.1.0
 */
export class InvalidTablePrefix extends Schema.TaggedError<InvalidTablePrefix>()(
  "InvalidTablePrefix",
  { prefix: Schema.String }
) {
  override get message() {
    return `invalid table prefix ${
      JSON.stringify(this.prefix)
    }: use lowercase letters, digits and "_", not starting with a digit, at most 31 characters`
  }
}

/**
 * The prefix used when none is given.
 *
 * @example
 * ```ts
 * SqlEventStore.defaultTablePrefix // "fsm_": tables fsm_events, fsm_snapshots, ...
 * ```
 *
 * @since 0.1.0
 */
export const defaultTablePrefix = "fsm_"

/**
 * Options shared by every constructor.
 *
 * @example
 * ```ts
 * const options: SqlEventStore.Options = { tablePrefix: "orders_", migrate: false }
 * ```
 *
 * @since 0.1.0
 */
export interface Options {
  /** Prefix of every table name. Default `"fsm_"`. Must match `/^[a-z_][a-z0-9_]{0,30}$/`. */
  readonly tablePrefix?: string | undefined
  /** Run the library's migrations when the store is built. Default `true`. */
  readonly migrate?: boolean | undefined
}

/**
 * Why building a SQL store can fail.
 *
 * @example
 * ```ts
 * const handled = Layer.catchAll(SqlEventStore.layerSqlite({ filename: "x.db" }), (error: SqlEventStore.MakeError) =>
 *   Layer.die(error)
 * )
 * ```
 *
 * @since 0.1.0
 */
export type MakeError = PersistenceError | InvalidTablePrefix

/**
 * The names of a store's tables.
 *
 * @example
 * ```ts
 * const names = yield* SqlEventStore.tableNames("orders_") // { events: "orders_events", ... }
 * ```
 *
 * @since 0.1.0
 */
export interface TableNames {
  readonly events: string
  readonly snapshots: string
  readonly timers: string
  readonly deadLetters: string
  readonly migrations: string
}

const resolveTables = (prefix: string | undefined): Effect.Effect<Tables, InvalidTablePrefix> => {
  const chosen = prefix ?? defaultTablePrefix
  return typeof chosen === "string" && tablePrefixPattern.test(chosen)
    ? Effect.succeed(tables(chosen))
    : Effect.fail(new InvalidTablePrefix({ prefix: String(chosen) }))
}

/**
 * The table names a prefix gives (for operations, psql sessions, backups),
 * or `InvalidTablePrefix`.
 *
 * @example
 * ```ts
 * const { events } = yield* SqlEventStore.tableNames() // "fsm_events"
 * ```
 *
 * @since 0.1.0
 */
export const tableNames = (tablePrefix?: string): Effect.Effect<TableNames, InvalidTablePrefix> =>
  Effect.map(resolveTables(tablePrefix), (t) => ({
    events: t.events,
    snapshots: t.snapshots,
    timers: t.timers,
    deadLetters: t.deadLetters,
    migrations: t.migrations
  }))

interface Prepared {
  readonly sql: SqlClient.SqlClient
  readonly dialect: Dialect
  readonly tables: Tables
}

const prepare = (options: Options | undefined): Effect.Effect<Prepared, MakeError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const t = yield* resolveTables(options?.tablePrefix)
    // Column names are ours: a client configured to transform names must not rename them.
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const dialect = yield* makeDialect(sql, t)
    if (options?.migrate ?? true) yield* runMigrations(dialect, t)
    return { sql, dialect, tables: t }
  }).pipe(Effect.withSpan("SqlEventStore.make", { attributes: { tablePrefix: options?.tablePrefix ?? defaultTablePrefix } }))

/**
 * Runs the library's migrations that have not run yet on the `SqlClient` in
 * context, and returns the ones it ran. Idempotent; nodes running it at once
 * take turns (an advisory lock on PostgreSQL, the write lock on SQLite).
 * Useful with `migrate: false`, to migrate in a deployment step.
 *
 * @example
 * ```ts
 * const ran = yield* SqlEventStore.migrate({ tablePrefix: "orders_" }) // [[1, "create_tables"]], then []
 * ```
 *
 * @since 0.1.0
 */
export const migrate = (
  options?: Pick<Options, "tablePrefix">
): Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, MakeError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const t = yield* resolveTables(options?.tablePrefix)
    const dialect = yield* makeDialect((yield* SqlClient.SqlClient).withoutTransforms(), t)
    return yield* runMigrations(dialect, t)
  })

/**
 * Builds the `EventStore` service on the `SqlClient` in context (PostgreSQL
 * or SQLite), migrating first unless `migrate: false`.
 *
 * @example
 * ```ts
 * const store = yield* SqlEventStore.make({ tablePrefix: "orders_" }).pipe(Effect.provide(PgClient.layer({ database: "app" })))
 * yield* store.append({ machine: "order", instanceId: "o-1", expectedSeqNr: 0, events: [created] })
 * ```
 *
 * @since 0.1.0
 */
export const make = (options?: Options): Effect.Effect<EventStore.EventStore["Type"], MakeError, SqlClient.SqlClient> =>
  Effect.map(prepare(options), (p) => EventStore.make(makeBackend(p.sql, p.dialect, p.tables)))

/**
 * Builds the `TimeoutStore` service (durable timer rows, written by the
 * event store's commits) on the `SqlClient` in context.
 *
 * @example
 * ```ts
 * const timers = yield* SqlEventStore.makeTimeoutStore()
 * const pending = yield* timers.pending("order", "o-1")
 * ```
 *
 * @since 0.1.0
 */
export const makeTimeoutStore = (
  options?: Options
): Effect.Effect<TimeoutStore.TimeoutStore["Type"], MakeError, SqlClient.SqlClient> =>
  Effect.map(prepare(options), (p) => makeSqlTimeoutStore(p.sql, p.dialect, p.tables))

/**
 * The `EventStore` and the `TimeoutStore` on the `SqlClient` in context,
 * migrated once when the layer is built.
 *
 * @example
 * ```ts
 * const Store = SqlEventStore.layer({ tablePrefix: "orders_" }).pipe(Layer.provide(PgClient.layer({ database: "app" })))
 * ```
 *
 * @since 0.1.0
 */
export const layer = (
  options?: Options
): Layer.Layer<EventStore.EventStore | TimeoutStore.TimeoutStore, MakeError, SqlClient.SqlClient> =>
  Layer.effectContext(
    Effect.map(prepare(options), (p) =>
      Context.make(EventStore.EventStore, EventStore.make(makeBackend(p.sql, p.dialect, p.tables))).pipe(
        Context.add(TimeoutStore.TimeoutStore, makeSqlTimeoutStore(p.sql, p.dialect, p.tables))
      ))
  )

// ---------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------

/**
 * Options of the SQLite client that `layerSqlite` builds.
 *
 * @example
 * ```ts
 * const client: SqlEventStore.SqliteClientOptions = { filename: "data/orders.db", busyTimeout: "10 seconds" }
 * ```
 *
 * @since 0.1.0
 */
export interface SqliteClientOptions {
  /** Path of the database file; created when missing (its directory must exist). `":memory:"` works too. */
  readonly filename: string
  /**
   * How long a write waits for another process holding the database's write
   * lock before failing. Default 5 seconds.
   */
  readonly busyTimeout?: Duration.DurationInput | undefined
}

/**
 * Options of `layerSqlite`.
 *
 * @example
 * ```ts
 * const options: SqlEventStore.SqliteOptions = { filename: "orders.db", tablePrefix: "orders_" }
 * ```
 *
 * @since 0.1.0
 */
export interface SqliteOptions extends Options, SqliteClientOptions {}

const maxBusyTimeoutMillis = 2 ** 31 - 1

/**
 * A SQLite client (better-sqlite3) tuned as an embedded event store: WAL
 * journal (readers never block the writer), `synchronous = NORMAL` (durable
 * across application crashes; an OS crash may lose the last commits, never
 * corrupt the file) and a busy timeout. Provide it yourself to share the
 * database with your own queries.
 *
 * @example
 * ```ts
 * const Client = SqlEventStore.layerSqliteClient({ filename: "orders.db" })
 * const Store = SqlEventStore.layer().pipe(Layer.provideMerge(Client)) // store + SqlClient for your own tables
 * ```
 *
 * @since 0.1.0
 */
export const layerSqliteClient = (
  options: SqliteClientOptions
): Layer.Layer<SqliteClient.SqliteClient | SqlClient.SqlClient, PersistenceError> => {
  const busyMillis = Math.min(
    maxBusyTimeoutMillis,
    Math.max(0, Math.round(Duration.toMillis(Duration.decode(options.busyTimeout ?? "5 seconds"))))
  )
  const client = SqliteClient.layer({ filename: options.filename }).pipe(
    Layer.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Layer.failCause(cause as Cause.Cause<never>)
        : Layer.fail(persistenceError(`open ${options.filename}`, Cause.squash(cause)))
    )
  )
  const tune = Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`PRAGMA busy_timeout = ${busyMillis}`)
    yield* sql.unsafe("PRAGMA synchronous = NORMAL")
  }).pipe(mapSqlError(`open ${options.filename}`))
  return Layer.effectDiscard(tune).pipe(Layer.provideMerge(client))
}

/**
 * The event store and timer store in a SQLite file, with the client built
 * and tuned by `layerSqliteClient`. Several layers or processes may open
 * the same file: writers take turns (a commit takes the write lock before
 * reading, and within a process never holds it across a fiber switch), so a
 * lost race on an instance is a `SequenceConflict`, not a "database is
 * locked" error — unless another process keeps the lock longer than
 * `busyTimeout`.
 *
 * @example
 * ```ts
 * program.pipe(
 *   Effect.provide(FSMRuntime.layer({ machines: [Order] })),
 *   Effect.provide(SqlEventStore.layerSqlite({ filename: "orders.db" }))
 * )
 * ```
 *
 * @since 0.1.0
 */
export const layerSqlite = (
  options: SqliteOptions
): Layer.Layer<EventStore.EventStore | TimeoutStore.TimeoutStore, MakeError> =>
  layer({ tablePrefix: options.tablePrefix, migrate: options.migrate }).pipe(
    Layer.provide(layerSqliteClient({ filename: options.filename, busyTimeout: options.busyTimeout }))
  )

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/**
 * Options of `layerPg`: the store's options and the `@effect/sql-pg` client's.
 *
 * @example
 * ```ts
 * const options: SqlEventStore.PgOptions = { host: "db", database: "app", username: "app", tablePrefix: "orders_" }
 * ```
 *
 * @since 0.1.0
 */
export interface PgOptions extends Options, PgClient.PgClientConfig {}

const pgClient = <E>(
  client: Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, E | SqlError>
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, Exclude<E, SqlError> | PersistenceError> =>
  Layer.catchAll(client, (error) =>
    Layer.fail(
      error instanceof SqlError ? persistenceError("connect", error) : error as Exclude<E, SqlError>
    ))

/**
 * The event store and timer store in PostgreSQL, with an `@effect/sql-pg`
 * client built from the options (a connection pool).
 *
 * @example
 * ```ts
 * const Store = SqlEventStore.layerPg({ host: "127.0.0.1", database: "app", username: "app", maxConnections: 20 })
 * ```
 *
 * @since 0.1.0
 */
export const layerPg = (
  options: PgOptions
): Layer.Layer<EventStore.EventStore | TimeoutStore.TimeoutStore, MakeError> => {
  const { migrate, tablePrefix, ...client } = options
  return layer({ tablePrefix, migrate }).pipe(Layer.provide(pgClient(PgClient.layer(client))))
}

const nonEmpty = (config: Config.Config<string>) =>
  Config.map(Config.option(config), Option.filter((value) => value !== ""))

/**
 * PostgreSQL connection settings from the standard environment variables:
 * `DATABASE_URL` when it is set (it then wins), else `PGHOST`, `PGPORT`,
 * `PGUSER`, `PGPASSWORD` and `PGDATABASE` (each optional; the pg driver's
 * defaults fill the rest).
 *
 * @example
 * ```ts
 * const settings = yield* SqlEventStore.pgConfigFromEnv // { host: "db", port: 5432, ... }
 * ```
 *
 * @since 0.1.0
 */
export const pgConfigFromEnv: Config.Config<PgClient.PgClientConfig> = Config.all({
  url: Config.map(Config.option(Config.redacted("DATABASE_URL")), Option.filter((url) => Redacted.value(url) !== "")),
  host: nonEmpty(Config.string("PGHOST")),
  port: Config.option(Config.port("PGPORT")),
  username: nonEmpty(Config.string("PGUSER")),
  password: Config.option(Config.redacted("PGPASSWORD")),
  database: nonEmpty(Config.string("PGDATABASE"))
}).pipe(Config.map((env): PgClient.PgClientConfig =>
  Option.isSome(env.url) ? { url: env.url.value } : {
    host: Option.getOrUndefined(env.host),
    port: Option.getOrUndefined(env.port),
    username: Option.getOrUndefined(env.username),
    password: Option.getOrUndefined(env.password),
    database: Option.getOrUndefined(env.database)
  }
))

/**
 * `layerPg` with the connection read by `pgConfigFromEnv` (the standard
 * `PG*` variables or `DATABASE_URL`, through Effect's `ConfigProvider`).
 *
 * @example
 * ```ts
 * // PGHOST=db PGUSER=app PGDATABASE=app node main.js
 * const Store = SqlEventStore.layerPgConfig({ tablePrefix: "orders_" })
 * ```
 *
 * @since 0.1.0
 */
export const layerPgConfig = (
  options?: Options
): Layer.Layer<EventStore.EventStore | TimeoutStore.TimeoutStore, MakeError | ConfigError.ConfigError> =>
  layer(options).pipe(Layer.provide(pgClient(PgClient.layerConfig(pgConfigFromEnv))))

/**
 * `layerPg` with every option read from `Config`s.
 *
 * @example
 * ```ts
 * const Store = SqlEventStore.layerConfig({
 *   url: Config.redacted("ORDERS_DATABASE_URL"),
 *   tablePrefix: Config.succeed("orders_")
 * })
 * ```
 *
 * @since 0.1.0
 */
export const layerConfig = (
  config: Config.Config.Wrap<PgOptions>
): Layer.Layer<EventStore.EventStore | TimeoutStore.TimeoutStore, MakeError | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(config), layerPg))
