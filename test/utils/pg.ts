/**
 * PostgreSQL for tests: connection settings from the environment, a probe
 * run once per test file, and a fresh schema per store so tests never share
 * tables.
 *
 * Settings: `DATABASE_URL`, else `PGHOST` / `PGPORT` / `PGUSER` /
 * `PGPASSWORD` / `PGDATABASE`, defaulting to 127.0.0.1:5432, user postgres,
 * database test. Without a reachable database the Postgres suites are
 * skipped with a warning, except under `CI=true`, where they run and fail.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, Layer, Redacted, type Scope } from "effect"

/** Under CI a missing database is a failure, not a skip. */
export const required = process.env.CI === "true"

const baseUrl = (): URL => {
  const env = process.env
  if (env.DATABASE_URL !== undefined && env.DATABASE_URL !== "") return new URL(env.DATABASE_URL)
  const url = new URL("postgres://localhost")
  const host = env.PGHOST ?? "127.0.0.1"
  // A socket directory goes in the query string (pg-connection-string reads `host` there).
  if (host.startsWith("/")) url.searchParams.set("host", host)
  else url.hostname = host
  url.port = env.PGPORT ?? "5432"
  url.username = encodeURIComponent(env.PGUSER ?? "postgres")
  if (env.PGPASSWORD !== undefined && env.PGPASSWORD !== "") url.password = encodeURIComponent(env.PGPASSWORD)
  url.pathname = `/${encodeURIComponent(env.PGDATABASE ?? "test")}`
  return url
}

/** Where the tests connect, without the password. */
export const describeTarget = (): string => {
  const url = baseUrl()
  url.password = ""
  return url.toString()
}

/** Client settings; with `schema`, every connection uses it as its `search_path`. */
export const clientConfig = (schema?: string): PgClient.PgClientConfig => {
  const url = baseUrl()
  if (schema !== undefined) url.searchParams.set("options", `-c search_path=${schema}`)
  return { url: Redacted.make(url.toString()), connectTimeout: "5 seconds" }
}

/** A client layer on `schema` (or the database's default search_path). */
export const layerClient = (schema?: string): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, unknown> =>
  PgClient.layer(clientConfig(schema))

const probe = Effect.scoped(
  Effect.flatMap(
    Layer.build(PgClient.layer({ ...clientConfig(), connectTimeout: "3 seconds" })),
    (context) => Context.get(context, PgClient.PgClient)`SELECT 1`
  )
)

/** `undefined` when PostgreSQL answers, else why not. */
export const unavailable: string | undefined = await Effect.runPromise(
  Effect.match(probe, {
    onFailure: (error) => `PostgreSQL is not reachable at ${describeTarget()}: ${String((error as Error).message ?? error)}`,
    onSuccess: () => undefined
  })
)

/**
 * Creates a schema with a random name, dropped (with everything in it) when
 * the scope closes.
 */
export const freshSchema: Effect.Effect<string, unknown, Scope.Scope> = Effect.gen(function*() {
  const admin = Context.get(yield* Layer.build(PgClient.layer({ ...clientConfig(), maxConnections: 1 })), PgClient.PgClient)
  const schema = `fsm_test_${crypto.randomUUID().replace(/-/g, "").slice(0, 20)}`
  yield* admin`CREATE SCHEMA ${admin(schema)}`
  yield* Effect.addFinalizer(() =>
    admin`DROP SCHEMA ${admin(schema)} CASCADE`.pipe(
      Effect.catchAllCause((cause) => Effect.logWarning(`could not drop test schema ${schema}`, cause))
    )
  )
  return schema
})

/** A client on a fresh schema, for each build of the layer. */
export const layerFreshClient: Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, unknown> = Layer.unwrapScoped(
  Effect.map(freshSchema, layerClient)
)
