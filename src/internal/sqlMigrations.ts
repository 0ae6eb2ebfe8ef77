/**
 * The library's migrations, run with `@effect/sql`'s `Migrator` in a
 * migrations table named after the prefix.
 *
 * @internal
 */
import * as Migrator from "@effect/sql/Migrator"
import type * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { PersistenceError } from "../Errors.js"
import type { Dialect } from "./sqlDialect.js"
import { persistenceError, type Tables } from "./sqlShared.js"

/**
 * Runs the migrations that have not run yet and returns them. Nodes starting
 * at once take turns (see `Dialect.serializeMigrations`); the later ones find
 * nothing to do.
 */
export const migrate = (
  dialect: Dialect,
  t: Tables
): Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, PersistenceError, SqlClient.SqlClient> =>
  dialect.serializeMigrations(
    Migrator.make({})({
      loader: Migrator.fromRecord({
        "1_create_tables": dialect.createTables,
        "2_commit_columns": dialect.addCommitColumns,
        "3_leases": dialect.createLeases,
        "4_outbox": dialect.createOutbox,
        "5_instances": dialect.createInstances
      }),
      table: t.migrations
    })
  ).pipe(
    Effect.mapError((error) => persistenceError("migrate", error)),
    // The Migrator reports a failed migration, and @effect/sql a failed
    // COMMIT, as defects; both are persistence failures here.
    Effect.catchSomeDefect((defect) =>
      defect instanceof SqlError || defect instanceof Migrator.MigrationError
        ? Option.some(Effect.fail(persistenceError("migrate", defect)))
        : Option.none()
    ),
    Effect.withSpan("SqlEventStore.migrate", { attributes: { table: t.migrations } })
  )
