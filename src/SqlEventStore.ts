/**
 * The event store (and the durable timer store and the lease store) on any PostgreSQL or SQLite
 * `SqlClient`. This module imports `@effect/sql` only; the drivers live in
 * their own modules, which build a client and this store in one layer:
 * `effect-fsm/SqliteEventStore` (`@effect/sql-sqlite-node`) and
 * `effect-fsm/PgEventStore` (`@effect/sql-pg`).
 *
 * One commit is one atomic unit: its events, the optional snapshot and its
 * timer changes are all written, or nothing is. The events table's primary
 * key `(machine, instance_id, seq_nr)` is the optimistic lock: a writer that
 * lost the race gets a `SequenceConflict` carrying the log's actual end.
 * On PostgreSQL a commit is a single statement (one round trip); on SQLite it
 * is a short transaction that takes the write lock first. A commit made
 * under a lease (`fence`) reads the lease row in that same unit.
 *
 * Leases (`LeaseStore`) live in the same database: expiry is judged by the
 * database's clock on PostgreSQL, and by the caller's Effect `Clock` on
 * SQLite (an embedded file: one machine, so one clock).
 *
 * Tables are named from one prefix (default `fsm_`): `fsm_events`,
 * `fsm_snapshots`, `fsm_timers`, `fsm_dead_letters`, `fsm_leases`, `fsm_outbox`,
 * `fsm_outbox_dead_letters`, `fsm_instances` (the current-state table), `fsm_state_counts`, and the migrations
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
 * import { Layer } from "effect"
 * import { FSMRuntime, SqlEventStore } from "effect-fsm"
 * import * as PgClient from "@effect/sql-pg/PgClient"
 *
 * // On a client you build yourself (and share with your own queries)...
 * const Store = SqlEventStore.layer({ tablePrefix: "orders_" }).pipe(
 *   Layer.provideMerge(PgClient.layer({ database: "app" }))
 * )
 * const Production = FSMRuntime.layer({ machines: [Order] }).pipe(Layer.provideMerge(Store))
 * // ...or with the driver modules: SqliteEventStore.layer({ filename: "orders.db" }),
 * // PgEventStore.layerConfig() (PGHOST / PGUSER / ... or DATABASE_URL).
 * ```
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { InvalidConfiguration as InvalidConfigurationError, type PersistenceError } from "./Errors.js"
import * as EventStore from "./EventStore.js"
import * as LeaseStore from "./LeaseStore.js"
import { type Dialect, makeDialect } from "./internal/sqlDialect.js"
import { makeBackend } from "./internal/sqlEventStore.js"
import { makeLeaseBackend } from "./internal/sqlLeaseStore.js"
import { migrate as runMigrations } from "./internal/sqlMigrations.js"
import { schemaPattern, tablePrefixPattern, type Tables, tables } from "./internal/sqlShared.js"
import { makeOutboxStore as makeSqlOutboxStore } from "./internal/sqlOutboxStore.js"
import { makeTimeoutStore as makeSqlTimeoutStore } from "./internal/sqlTimeoutStore.js"
import * as OutboxStore from "./OutboxStore.js"
import * as TimeoutStore from "./TimeoutStore.js"

/**
 * The table prefix was rejected. Prefixes become part of SQL identifiers, so
 * only lowercase letters, digits and `_` are accepted (not starting with a
 * digit, at most 31 characters).
 *
 * @example
 * ```ts
 * SqlEventStore.layer({ tablePrefix: "Orders-" }) // fails with InvalidTablePrefix
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
  /**
   * PostgreSQL only: the schema the tables live in (created by the
   * migrations when it does not exist). Default: the connection's
   * `search_path` (usually `public`). Must match `/^[a-z_][a-z0-9_]{0,62}$/`.
   * On SQLite it is an `InvalidConfiguration`.
   */
  readonly schema?: string | undefined
  /** Run the library's migrations when the store is built. Default `true`. */
  readonly migrate?: boolean | undefined
  /**
   * Group commit. Default `true`: commits of different instances that
   * arrive while the store is writing are written together by its next
   * write (one statement on PostgreSQL, one transaction on SQLite), each
   * checked on its own, so one conflicting or fenced commit fails alone and
   * the others are written. Every caller hears its own outcome once the
   * shared write is durable. A lone writer is written at once, alone (no
   * timer, no waiting for company); commits inside a transaction of the
   * caller's, and commits of several events, are never grouped. A group the
   * database refuses is written again commit by commit, so only the one at
   * fault fails. `false`: every commit is its own write.
   * The sizes of the groups are the histogram `fsm_commit_group_size`.
   */
  readonly groupCommit?: boolean | undefined
}

/**
 * Why building a SQL store can fail.
 *
 * @example
 * ```ts
 * const handled = Layer.catchAll(SqlEventStore.layer(), (error: SqlEventStore.MakeError) =>
 *   Layer.die(error)
 * )
 * ```
 *
 * @since 0.1.0
 */
export type MakeError = PersistenceError | InvalidTablePrefix | InvalidConfigurationError

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
  readonly leases: string
  readonly outbox: string
  readonly outboxDeadLetters: string
  /** The current-state table (`EventStore.InstanceSummary`). */
  readonly instances: string
  /** Counts per state (`EventStore.stateCounts`), kept by the commits. */
  readonly stateCounts: string
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
    leases: t.leases,
    outbox: t.outbox,
    outboxDeadLetters: t.outboxDeadLetters,
    instances: t.instances,
    stateCounts: t.stateCounts,
    migrations: t.migrations
  }))

interface Prepared {
  readonly sql: SqlClient.SqlClient
  readonly dialect: Dialect
  readonly tables: Tables
  readonly groupCommit: boolean
}

/** The tables of `options` on `sql`: a schema only on PostgreSQL, and only a well-formed one. */
const resolveStore = (
  sql: SqlClient.SqlClient,
  options: Pick<Options, "tablePrefix" | "schema"> | undefined
): Effect.Effect<{ readonly t: Tables; readonly dialect: Dialect }, MakeError> =>
  Effect.gen(function*() {
    const t0 = yield* resolveTables(options?.tablePrefix)
    const schema = options?.schema
    const invalidSchema = (reason: string) =>
      Effect.fail(new InvalidConfigurationError({ component: "SqlEventStore", option: "schema", reason }))
    if (schema !== undefined && (typeof schema !== "string" || !schemaPattern.test(schema))) {
      return yield* invalidSchema(
        `use lowercase letters, digits and "_", not starting with a digit, at most 63 characters; got ${JSON.stringify(schema)}`
      )
    }
    const t = schema === undefined ? t0 : tables(t0.prefix, schema)
    const dialect = yield* makeDialect(sql, t)
    if (schema !== undefined && dialect.name !== "pg") {
      return yield* invalidSchema("is for PostgreSQL; SQLite has no schemas (use tablePrefix, or another file)")
    }
    return { t, dialect }
  })

const prepare = (options: Options | undefined): Effect.Effect<Prepared, MakeError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    // Column names are ours: a client configured to transform names must not rename them.
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const { dialect, t } = yield* resolveStore(sql, options)
    if (options?.migrate ?? true) yield* runMigrations(dialect, t)
    return { sql, dialect, tables: t, groupCommit: options?.groupCommit ?? true }
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
  options?: Pick<Options, "tablePrefix" | "schema">
): Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, MakeError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const { dialect, t } = yield* resolveStore((yield* SqlClient.SqlClient).withoutTransforms(), options)
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
  Effect.map(prepare(options), (p) => EventStore.make(makeBackend(p.sql, p.dialect, p.tables, { groupCommit: p.groupCommit })))

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
 * Builds the `OutboxStore` service (pending commands and their dead
 * letters, written by `append` in the same commit as the events), e.g. for
 * an operations tool that lists and re-drives dead letters.
 *
 * @example
 * ```ts
 * const outbox = yield* SqlEventStore.makeOutboxStore()
 * const letters = yield* outbox.deadLetters("order")
 * ```
 *
 * @since 0.1.0
 */
export const makeOutboxStore = (
  options?: Options
): Effect.Effect<OutboxStore.OutboxStore["Type"], MakeError, SqlClient.SqlClient> =>
  Effect.map(prepare(options), (p) => makeSqlOutboxStore(p.sql, p.dialect, p.tables))

/**
 * Everything a store layer provides: the event log and, in the same
 * database, timers, outbox and leases.
 *
 * @since 0.1.0
 */
export type Stores = EventStore.EventStore | TimeoutStore.TimeoutStore | OutboxStore.OutboxStore | LeaseStore.LeaseStore

/**
 * Builds the `LeaseStore` service (lease rows in the same database, read by
 * fenced commits) on the `SqlClient` in context. On PostgreSQL expiry is
 * judged by the database's clock; on SQLite by the caller's Effect `Clock`,
 * which assumes every process using the file runs on one machine (one clock).
 *
 * @example
 * ```ts
 * const leases = yield* SqlEventStore.makeLeaseStore()
 * const lease = yield* leases.acquire({ machine: "order", instanceId: "o-1" }, "node-a", { ttl: "10 seconds", wait: "5 seconds" })
 * ```
 *
 * @since 0.1.0
 */
export const makeLeaseStore = (
  options?: Options
): Effect.Effect<LeaseStore.LeaseStore["Type"], MakeError, SqlClient.SqlClient> =>
  Effect.map(prepare(options), (p) => LeaseStore.make(makeLeaseBackend(p.sql, p.dialect, p.tables)))

/**
 * The `EventStore`, the `TimeoutStore`, the `OutboxStore` and the `LeaseStore` on the
 * `SqlClient` in context, migrated once when the layer is built.
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
): Layer.Layer<Stores, MakeError, SqlClient.SqlClient> =>
  Layer.effectContext(
    Effect.map(prepare(options), (p) =>
      Context.make(EventStore.EventStore, EventStore.make(makeBackend(p.sql, p.dialect, p.tables, { groupCommit: p.groupCommit }))).pipe(
        Context.add(TimeoutStore.TimeoutStore, makeSqlTimeoutStore(p.sql, p.dialect, p.tables)),
        Context.add(OutboxStore.OutboxStore, makeSqlOutboxStore(p.sql, p.dialect, p.tables)),
        Context.add(LeaseStore.LeaseStore, LeaseStore.make(makeLeaseBackend(p.sql, p.dialect, p.tables)))
      ))
  )
