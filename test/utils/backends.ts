/**
 * The EventStore backends every shared suite runs against (each provides
 * the TimeoutStore and LeaseStore of the same database too). Each `layer()`
 * call must give a fresh, empty store (its own database, file or schema), so
 * tests never interfere.
 *
 * - memory: `EventStore.layerMemory`.
 * - sqlite: `SqliteEventStore.layer` on a new file in a temporary
 *   directory, removed when the layer's scope closes.
 * - postgres: `PgEventStore.layer` on a new schema, dropped when the
 *   layer's scope closes (see `./pg.ts` for the connection settings). When
 *   PostgreSQL is not reachable it is left out of `backends` and its suites
 *   in `allBackends` are skipped, with a warning; under `CI=true` it stays in
 *   and fails.
 */
import { Effect, Layer } from "effect"
import { EventStore, type SqlEventStore } from "effect-fsm"
import * as PgEventStore from "effect-fsm/PgEventStore"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Pg from "./pg.js"

export interface Backend {
  readonly name: string
  /** A fresh, empty store each time the returned layer is built. */
  readonly layer: () => Layer.Layer<SqlEventStore.Stores, unknown>
  /** Set when the backend cannot run here: suites over `allBackends` skip it. */
  readonly skip?: string | undefined
}

export const memory: Backend = { name: "memory", layer: () => EventStore.layerMemory }

/** A new temporary directory, removed with everything in it when the scope closes. */
export const tempDirectory = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-"))),
  (directory) => Effect.sync(() => fs.rmSync(directory, { recursive: true, force: true }))
)

export const sqlite: Backend = {
  name: "sqlite",
  layer: () =>
    Layer.unwrapScoped(
      Effect.map(tempDirectory, (directory) => SqliteEventStore.layer({ filename: path.join(directory, "store.db") }))
    )
}

const pgSkip = Pg.unavailable !== undefined && !Pg.required ? Pg.unavailable : undefined
if (pgSkip !== undefined) {
  console.warn(
    `\n${"!".repeat(78)}\n!! ${pgSkip}\n!! The PostgreSQL suites are SKIPPED. Start PostgreSQL or set PGHOST/PGPORT/PGUSER/\n!! PGDATABASE or DATABASE_URL; with CI=true they fail instead.\n${
      "!".repeat(78)
    }\n`
  )
}

export const postgres: Backend = {
  name: "postgres",
  layer: () =>
    Layer.unwrapScoped(Effect.map(Pg.freshSchema, (schema) => PgEventStore.layer(Pg.clientConfig(schema)))),
  skip: pgSkip
}

/** Every backend, including those that cannot run here (see `skip`). */
export const allBackends: ReadonlyArray<Backend> = [memory, sqlite, postgres]

/** The backends that can run here. */
export const backends: ReadonlyArray<Backend> = allBackends.filter((backend) => backend.skip === undefined)
