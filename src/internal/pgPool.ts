/**
 * The `@effect/sql-pg` client of `PgEventStore.layer`: the same connection
 * pool `PgClient.layer` opens, whose connections send the statements a node
 * repeats as named prepared statements.
 *
 * `@effect/sql-pg` hands node-postgres each statement as text, which it
 * sends unnamed: PostgreSQL parses, analyses and plans it again on every
 * execution. For the store's statements that is most of their time (the
 * commit statement: about 840 µs unnamed, 350 µs prepared, on this machine's
 * PostgreSQL 15). A text with parameters seen a second time on the pool gets
 * a name, and each connection prepares it once; PostgreSQL then keeps its
 * plan (a generic one after five executions, when that costs no more).
 *
 * Only statements with parameters are named: node-postgres sends the others
 * (`BEGIN`, `COMMIT`, migrations of several statements) by the simple
 * protocol, which a name would change. The names are bounded (`maxNamed` per
 * pool, the rest stay unnamed), so statements of varying text cannot fill the
 * server's memory.
 *
 * Poolers that do not keep prepared statements across transactions
 * (PgBouncer in transaction mode before 1.21) need
 * `preparedStatements: false`, which opens the plain `PgClient.layer`.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import type * as Pg from "pg"

/** At most this many statement texts get a name per pool. */
export const maxNamed = 256

/**
 * The naming rule of one pool: a text's name on its second sighting, `undefined`
 * before that and once `limit` texts are named. The texts seen once are kept
 * up to `limit` too (forgotten all at once when full), so one-off statements
 * cost no more than a set.
 */
export const makeNamer = (limit: number, prefix = "effect_fsm_") => {
  const names = new Map<string, string>()
  let seenOnce = new Set<string>()
  return (text: string): string | undefined => {
    const name = names.get(text)
    if (name !== undefined || names.size >= limit) return name
    if (!seenOnce.delete(text)) {
      if (seenOnce.size >= limit) seenOnce = new Set()
      seenOnce.add(text)
      return undefined
    }
    const fresh = `${prefix}${names.size + 1}`
    names.set(text, fresh)
    return fresh
  }
}

const hasValues = (values: unknown): boolean => Array.isArray(values) && values.length > 0

/** The client class of one pool: `query` names what `nameOf` names. */
const namingClient = (pg: typeof Pg, nameOf: (text: string) => string | undefined): typeof Pg.Client =>
  class NamingClient extends pg.Client {
    // node-postgres's `query` has a dozen overloads; this one forwards them all.
    override query(config: any, values?: any, callback?: any): any {
      if (typeof config === "string" && hasValues(values)) {
        const name = nameOf(config)
        if (name !== undefined) return super.query({ text: config, name } as any, values, callback)
      } else if (
        config !== null && typeof config === "object" && typeof config.submit !== "function" &&
        typeof config.text === "string" && config.name === undefined && hasValues(config.values)
      ) {
        const name = nameOf(config.text)
        if (name !== undefined) return super.query({ ...config, name }, values, callback)
      }
      return super.query(config, values, callback)
    }
  }

/**
 * The pool `PgClient.make` opens for `config` (the same settings, its first
 * `SELECT 1` and its timeout), with connections of `namingClient`.
 */
// `pg` is loaded here, not imported by the module: the driver module's only
// static driver import stays `@effect/sql-pg` (which loads `pg` itself), so a
// missing driver is reported the same way whatever the load order.
const loadPg = Effect.tryPromise({
  try: (): Promise<typeof Pg> => import("pg"),
  catch: (cause) => new SqlError({ cause, message: "PgClient: Failed to load the pg driver" })
})

const acquirePool = (config: PgClient.PgClientConfig) =>
  Effect.flatMap(loadPg, (pg) => Effect.acquireRelease(
    Effect.sync(() => {
      const pool = new pg.Pool({
        Client: namingClient(pg, makeNamer(maxNamed)),
        connectionString: config.url ? Redacted.value(config.url) : undefined,
        user: config.username,
        host: config.host,
        database: config.database,
        password: config.password ? Redacted.value(config.password) : undefined,
        ssl: config.ssl,
        port: config.port,
        ...(config.stream ? { stream: config.stream } : {}),
        connectionTimeoutMillis: config.connectTimeout ? Duration.toMillis(config.connectTimeout) : undefined,
        idleTimeoutMillis: config.idleTimeout ? Duration.toMillis(config.idleTimeout) : undefined,
        max: config.maxConnections,
        min: config.minConnections,
        maxLifetimeSeconds: config.connectionTTL ? Duration.toSeconds(config.connectionTTL) : undefined,
        application_name: config.applicationName ?? "@effect/sql-pg",
        types: config.types
      } as Pg.PoolConfig)
      // A broken idle connection is dropped by the pool; its error is reported
      // to the statement that uses the pool next.
      pool.on("error", () => {})
      return pool
    }),
    (pool) => Effect.promise(() => pool.end()).pipe(Effect.interruptible, Effect.timeoutOption(1000))
  )).pipe(
    Effect.tap((pool) =>
      Effect.tryPromise({
        try: () => pool.query("SELECT 1"),
        catch: (cause) => new SqlError({ cause, message: "PgClient: Failed to connect" })
      }).pipe(Effect.timeoutFail({
        duration: config.connectTimeout ?? Duration.seconds(5),
        onTimeout: () => new SqlError({ cause: new Error("Connection timed out"), message: "PgClient: Connection timed out" })
      }))
    )
  )

/**
 * `PgClient.layer(config)` with named prepared statements, or exactly
 * `PgClient.layer(config)` when `preparedStatements` is `false`.
 */
export const layer = (
  config: PgClient.PgClientConfig,
  preparedStatements: boolean
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, SqlError> =>
  preparedStatements
    ? PgClient.layerFromPool({
      acquire: acquirePool(config),
      applicationName: config.applicationName,
      spanAttributes: config.spanAttributes,
      transformResultNames: config.transformResultNames,
      transformQueryNames: config.transformQueryNames,
      transformJson: config.transformJson,
      types: config.types
    })
    : PgClient.layer(config)
