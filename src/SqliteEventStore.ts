/**
 * The SQLite driver module: the event store, timer store and lease store of
 * `SqlEventStore` in a SQLite file, on a better-sqlite3 client
 * (`@effect/sql-sqlite-node`) tuned for it, and the embedded default — the
 * runtime, the store and durable timeouts — in one layer.
 *
 * It is a module of its own, imported as `effect-fsm/SqliteEventStore`, so
 * that `import { FSMRuntime } from "effect-fsm"` never loads a driver.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { FSMRuntime } from "effect-fsm"
 * import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
 *
 * program.pipe(Effect.provide(SqliteEventStore.layerRuntime({ machines: [Order], filename: "orders.db" })))
 * ```
 *
 * @since 0.1.0
 */
import type * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { InvalidConfiguration, type MachineDefinitionError, type PersistenceError } from "./Errors.js"
import * as FSMRuntime from "./FSMRuntime.js"
import * as SqliteConnection from "./internal/sqliteClient.js"
import { mapSqlError, persistenceError } from "./internal/sqlShared.js"
import type * as Machine from "./Machine.js"
import * as SqlEventStore from "./SqlEventStore.js"
import * as TimeoutStrategy from "./TimeoutStrategy.js"

/**
 * Options of the SQLite client that `layerClient` builds.
 *
 * @example
 * ```ts
 * const client: SqliteEventStore.ClientOptions = { filename: "data/orders.db", busyTimeout: "10 seconds" }
 * ```
 *
 * @since 0.1.0
 */
export interface ClientOptions {
  /** Path of the database file; created when missing (its directory must exist). `":memory:"` works too. */
  readonly filename: string
  /**
   * How long a write waits for another process holding the database's write
   * lock before failing. Default 5 seconds.
   */
  readonly busyTimeout?: Duration.DurationInput | undefined
  /**
   * Switch the file to the WAL journal when opening it (a setting stored in
   * the file). Default `true`; `false` leaves the file's journal mode as it
   * is, for a tool that must not change the file it looks at (the
   * `effect-fsm` CLI).
   */
  readonly wal?: boolean | undefined
}

/**
 * Options of `layer`: the store's options and the client's.
 *
 * @example
 * ```ts
 * const options: SqliteEventStore.Options = { filename: "orders.db", tablePrefix: "orders_" }
 * ```
 *
 * @since 0.1.0
 */
export interface Options extends SqlEventStore.Options, ClientOptions {}

const maxBusyTimeoutMillis = 2 ** 31 - 1

/**
 * A SQLite client (better-sqlite3) tuned as an embedded event store: WAL
 * journal (readers never block the writer), `synchronous = NORMAL` (durable
 * across application crashes; an OS crash may lose the last commits, never
 * corrupt the file) and a busy timeout. Provide it yourself to share the
 * database with your own queries.
 *
 * It is `@effect/sql-sqlite-node`'s `SqliteClient` service (both tags) on a
 * connection of its own: prepared statements are kept in a plain map, and
 * the store's commits outside a transaction run in one synchronous step
 * (`BEGIN`, the statements, `COMMIT`) while no transaction holds the
 * connection; one of yours makes them wait, and inside one of yours they are
 * written with it.
 *
 * @example
 * ```ts
 * const Client = SqliteEventStore.layerClient({ filename: "orders.db" })
 * const Store = SqlEventStore.layer().pipe(Layer.provideMerge(Client)) // store + SqlClient for your own tables
 * ```
 *
 * @since 0.1.0
 */
export const layerClient = (
  options: ClientOptions
): Layer.Layer<SqliteClient.SqliteClient | SqlClient.SqlClient, PersistenceError | InvalidConfiguration> => {
  const decoded = Duration.decodeUnknown(options.busyTimeout ?? "5 seconds")
  const requested = Option.isSome(decoded) ? Duration.toMillis(decoded.value) : NaN
  if (Number.isNaN(requested) || requested < 0) {
    return Layer.fail(
      new InvalidConfiguration({
        component: "SqliteEventStore",
        option: "busyTimeout",
        reason: `must be a duration of at least 0 ms, got ${JSON.stringify(String(options.busyTimeout))}`
      })
    )
  }
  const busyMillis = Math.min(maxBusyTimeoutMillis, Math.max(0, Math.round(requested)))
  const client = SqliteConnection.layer({ filename: options.filename, disableWAL: options.wal === false }).pipe(
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
 * The event store, timer store and lease store in a SQLite file, with the client built
 * and tuned by `layerClient`. Several layers or processes may open the same
 * file: writers take turns (a commit takes the write lock before reading,
 * and within a process never holds it across a fiber switch), so a lost race
 * on an instance is a `SequenceConflict`, not a "database is locked" error —
 * unless another process keeps the lock longer than `busyTimeout`.
 *
 * @example
 * ```ts
 * program.pipe(
 *   Effect.provide(FSMRuntime.layer({ machines: [Order] })),
 *   Effect.provide(SqliteEventStore.layer({ filename: "orders.db" }))
 * )
 * ```
 *
 * @since 0.1.0
 */
export const layer = (
  options: Options
): Layer.Layer<SqlEventStore.Stores, SqlEventStore.MakeError> =>
  SqlEventStore.layer({ tablePrefix: options.tablePrefix, migrate: options.migrate, groupCommit: options.groupCommit }).pipe(
    Layer.provide(layerClient({ filename: options.filename, busyTimeout: options.busyTimeout }))
  )

/**
 * Options of `layerRuntime`: the runtime's, the store's and the durable
 * timeout sweeper's.
 *
 * @example
 * ```ts
 * const options: SqliteEventStore.RuntimeOptions<[typeof Order]> = {
 *   machines: [Order],
 *   filename: "orders.db",
 *   timeouts: { pollInterval: "1 second" }
 * }
 * ```
 *
 * @since 0.1.0
 */
export interface RuntimeOptions<Ms extends ReadonlyArray<Machine.Any>> extends FSMRuntime.Options<Ms>, Options {
  /** Options of the durable timeout sweeper. */
  readonly timeouts?: TimeoutStrategy.DurableOptions
}

/**
 * The embedded default in one layer: the runtime on a SQLite file, with
 * durable timeouts. Provides the `EventStore`, `TimeoutStore` and
 * `LeaseStore` too.
 *
 * @example
 * ```ts
 * program.pipe(Effect.provide(SqliteEventStore.layerRuntime({ machines: [Order], filename: "orders.db" })))
 * ```
 *
 * @since 0.1.0
 */
export const layerRuntime = <const Ms extends ReadonlyArray<Machine.Any>>(
  options: RuntimeOptions<Ms>
): Layer.Layer<
  FSMRuntime.FSMRuntime | SqlEventStore.Stores,
  MachineDefinitionError | InvalidConfiguration | SqlEventStore.MakeError,
  Machine.Context<Ms[number]>
> => {
  const { busyTimeout, filename, groupCommit, migrate, tablePrefix, timeouts, ...runtime } = options
  return FSMRuntime.layer(runtime).pipe(
    Layer.provide(TimeoutStrategy.layerDurable(timeouts)),
    Layer.provideMerge(layer({ filename, busyTimeout, tablePrefix, migrate, groupCommit }))
  )
}
