/**
 * For the demos' `--pg` mode: drops the demo's own tables (named by its
 * prefix) so that every run starts from an empty log, on the PostgreSQL
 * configured by DATABASE_URL or PGHOST / PGUSER / PGDATABASE.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"
import { SqlEventStore } from "effect-fsm"
import * as PgEventStore from "effect-fsm/PgEventStore"

export const resetPgTables = (tablePrefix: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const tables = yield* SqlEventStore.tableNames(tablePrefix)
    for (const table of Object.values(tables)) yield* sql`DROP TABLE IF EXISTS ${sql(table)}`
  }).pipe(Effect.provide(PgClient.layerConfig(PgEventStore.configFromEnv)), Effect.scoped)
