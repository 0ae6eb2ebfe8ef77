/**
 * The PostgreSQL driver module: the event store, timer store and lease store of
 * `SqlEventStore` in PostgreSQL, on an `@effect/sql-pg` client (a
 * connection pool) built from options, from the standard `PG*` /
 * `DATABASE_URL` environment variables, or from `Config`s.
 *
 * It is a module of its own, imported as `effect-fsm/PgEventStore`, so that
 * `import { FSMRuntime } from "effect-fsm"` never loads a driver.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { FSMRuntime } from "effect-fsm"
 * import * as PgEventStore from "effect-fsm/PgEventStore"
 *
 * // PostgreSQL configured from PGHOST / PGUSER / ... or DATABASE_URL.
 * const Production = FSMRuntime.layer({ machines: [Order] }).pipe(
 *   Layer.provideMerge(PgEventStore.layerConfig())
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type { PersistenceError } from "./Errors.js"
import * as PgPool from "./internal/pgPool.js"
import { persistenceError } from "./internal/sqlShared.js"
import * as SqlEventStore from "./SqlEventStore.js"

/**
 * Options of `layer`: the store's options and the `@effect/sql-pg` client's.
 *
 * @example
 * ```ts
 * const options: PgEventStore.Options = { host: "db", database: "app", username: "app", tablePrefix: "orders_" }
 * ```
 *
 * @since 0.1.0
 */
export interface Options extends StoreOptions, PgClient.PgClientConfig {}

/**
 * Options of `layerClient`: the `@effect/sql-pg` client's and whether it
 * sends repeated statements as prepared statements.
 *
 * @example
 * ```ts
 * const options: PgEventStore.ClientOptions = { url: Redacted.make(process.env.DATABASE_URL!), preparedStatements: false }
 * ```
 *
 * @since 0.1.0
 */
export interface ClientOptions extends PgClient.PgClientConfig, Pick<StoreOptions, "preparedStatements"> {}

/**
 * The store's options on PostgreSQL: those of every SQL store and how the
 * connections send statements.
 *
 * @example
 * ```ts
 * // Behind PgBouncer in transaction mode (before 1.21): no prepared statements.
 * const options: PgEventStore.StoreOptions = { tablePrefix: "orders_", preparedStatements: false }
 * ```
 *
 * @since 0.1.0
 */
export interface StoreOptions extends SqlEventStore.Options {
  /**
   * Send the statements a node repeats (the commits, claims and loads) as
   * named prepared statements, so that PostgreSQL parses and plans each once
   * per connection instead of on every execution. Default `true`; set `false`
   * behind a pooler that does not keep prepared statements across
   * transactions (PgBouncer in transaction mode before 1.21).
   */
  readonly preparedStatements?: boolean | undefined
}

const pgClient = <E>(
  client: Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, E | SqlError>
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, Exclude<E, SqlError> | PersistenceError> =>
  Layer.catchAll(client, (error) =>
    Layer.fail(
      error instanceof SqlError ? persistenceError("connect", error) : error as Exclude<E, SqlError>
    ))

/**
 * The `@effect/sql-pg` client (a connection pool) that `layer` opens: the
 * pool `PgClient.layer(options)` opens, whose connections send the
 * statements a node repeats as named prepared statements (unless
 * `preparedStatements: false`). Provide it yourself to share the pool with
 * your own queries; they are prepared by the same rule, on their second use.
 *
 * @example
 * ```ts
 * const Client = PgEventStore.layerClient({ host: "db", database: "app", maxConnections: 20 })
 * const Store = SqlEventStore.layer().pipe(Layer.provideMerge(Client)) // store + SqlClient for your own tables
 * ```
 *
 * @since 0.1.0
 */
export const layerClient = (
  options: ClientOptions
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, PersistenceError> => {
  const { preparedStatements, ...client } = options
  return pgClient(PgPool.layer(client, preparedStatements ?? true))
}

/**
 * The event store, timer store and lease store in PostgreSQL, with an `@effect/sql-pg`
 * client built from the options (a connection pool).
 *
 * @example
 * ```ts
 * const Store = PgEventStore.layer({ host: "127.0.0.1", database: "app", username: "app", maxConnections: 20 })
 * // The tables in schema "orders" (created by the migrations):
 * const InSchema = PgEventStore.layer({ database: "app", schema: "orders" })
 * ```
 *
 * @since 0.1.0
 */
export const layer = (
  options: Options
): Layer.Layer<SqlEventStore.Stores, SqlEventStore.MakeError> => {
  const { groupCommit, migrate, preparedStatements, schema, tablePrefix, ...client } = options
  return SqlEventStore.layer({ tablePrefix, migrate, schema, groupCommit }).pipe(
    Layer.provide(layerClient({ ...client, preparedStatements }))
  )
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
 * const settings = yield* PgEventStore.configFromEnv // { host: "db", port: 5432, ... }
 * ```
 *
 * @since 0.1.0
 */
export const configFromEnv: Config.Config<PgClient.PgClientConfig> = Config.all({
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
 * `layer` with the connection read by `configFromEnv` (the standard `PG*`
 * variables or `DATABASE_URL`, through Effect's `ConfigProvider`).
 *
 * @example
 * ```ts
 * // PGHOST=db PGUSER=app PGDATABASE=app node main.js
 * const Store = PgEventStore.layerConfig({ tablePrefix: "orders_" })
 * ```
 *
 * @since 0.1.0
 */
export const layerConfig = (
  options: StoreOptions = {}
): Layer.Layer<SqlEventStore.Stores, SqlEventStore.MakeError | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(configFromEnv, (client) => layer({ ...options, ...client })))

/**
 * `layer` with every option read from `Config`s.
 *
 * @example
 * ```ts
 * const Store = PgEventStore.layerFromConfig({
 *   url: Config.redacted("ORDERS_DATABASE_URL"),
 *   tablePrefix: Config.succeed("orders_")
 * })
 * ```
 *
 * @since 0.1.0
 */
export const layerFromConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<SqlEventStore.Stores, SqlEventStore.MakeError | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(config), layer))
