/**
 * The SQLite client of `SqliteEventStore.layerClient`: one better-sqlite3
 * connection behind `@effect/sql`'s `SqlClient`, built as
 * `@effect/sql-sqlite-node` builds its own (its `SqliteClient` service and
 * tag, the same compiler, transactions taking turns on the one connection,
 * statements prepared once), with two differences that make a statement
 * cheaper:
 *
 * - Prepared statements are kept in a plain synchronous map (at most
 *   `maxStatements`, least recently used out), where `@effect/sql-sqlite-node`
 *   keeps them in an Effect `Cache`: a lookup there is a dozen Effect
 *   operations, a clock read and a hash of the statement's whole text, on
 *   every statement.
 * - The store's commits can run in one synchronous step on the connection
 *   (the `Direct` of `sqliteDirect.ts`, found with `directOf(client)`), with
 *   no Effect per statement, when no transaction holds the connection: with
 *   better-sqlite3 a statement runs on the calling thread anyway, so nothing
 *   can come between the steps of a synchronous run.
 *
 * @internal
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as Client from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import Sqlite from "better-sqlite3"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { Lru } from "./lru.js"
import { type Direct, DirectId, type Steps } from "./sqliteDirect.js"

/** Prepared statements kept per connection (`@effect/sql-sqlite-node`'s default cache size). */
export const maxStatements = 200

/** Whether `error` is one of better-sqlite3's (a database error, not a bug of the caller). */
const isDriverError = (error: unknown): boolean => error instanceof Sqlite.SqliteError

const sqlError = (message: string) => (cause: unknown) => new SqlError({ cause, message })

export interface Options {
  readonly filename: string
  /** Leave the file's journal mode as it is instead of switching it to WAL. */
  readonly disableWAL?: boolean | undefined
}

const make = (options: Options): Effect.Effect<SqliteClient.SqliteClient, SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function*() {
    const compiler = Statement.makeCompilerSqlite()
    const db = yield* Effect.acquireRelease(
      Effect.try({ try: () => new Sqlite(options.filename), catch: sqlError(`Failed to open ${options.filename}`) }),
      (db) => Effect.sync(() => db.close())
    )
    if (options.disableWAL !== true) {
      yield* Effect.try({ try: () => db.pragma("journal_mode = WAL"), catch: sqlError("Failed to switch to the WAL journal") })
    }
    const statements = new Lru<string, Sqlite.Statement>(maxStatements)
    const prepared = (sql: string): Sqlite.Statement => {
      let statement = statements.get(sql)
      if (statement === undefined) {
        statement = db.prepare(sql)
        statements.set(sql, statement)
      }
      return statement
    }
    const rows = (statement: Sqlite.Statement, params: ReadonlyArray<unknown>): ReadonlyArray<any> => {
      if (statement.reader) return statement.all(...params)
      statement.run(...params)
      return []
    }
    /** Rows as arrays (`raw`), the statement left in object mode. */
    const values = (statement: Sqlite.Statement, params: ReadonlyArray<unknown>): ReadonlyArray<ReadonlyArray<unknown>> => {
      if (!statement.reader) {
        statement.run(...params)
        return []
      }
      statement.raw(true)
      try {
        return statement.all(...params) as ReadonlyArray<ReadonlyArray<unknown>>
      } finally {
        statement.raw(false)
      }
    }
    /** The prepared statement of one of the store's own statements (no bigints: the store reads numbers). */
    const own = (sql: string) => prepared(sql).safeIntegers(false)
    const exec = (sql: string, params: ReadonlyArray<unknown>) => rows(own(sql), params)
    const transactionSync = <A>(begin: string, steps: () => Steps<A>, rollback: (result: A) => boolean): A => {
      exec(begin, [])
      let result: A
      try {
        const generator = steps()
        let step = generator.next([])
        while (step.done !== true) {
          const [text, params] = step.value.compile()
          step = generator.next(exec(text, params))
        }
        result = step.value
        if (rollback(result)) {
          exec("ROLLBACK", [])
          return result
        }
        exec("COMMIT", [])
      } catch (error) {
        // A failed statement or COMMIT; the ROLLBACK fails only where SQLite has ended the transaction itself.
        if (db.inTransaction) {
          try {
            exec("ROLLBACK", [])
          } catch {
            // The error to report is the first one.
          }
        }
        throw error
      }
      return result
    }
    const fail = sqlError("Failed to execute statement")
    /**
     * `f` on the statement of `sql` (prepared once, or by `prepare` each
     * time), returning integers as bigints under `SqlClient.SafeIntegers`.
     */
    const run = <A>(sql: string, f: (statement: Sqlite.Statement) => A, prepare: (sql: string) => Sqlite.Statement = prepared) =>
      Effect.withFiberRuntime<A, SqlError>((fiber) => {
        try {
          const statement = prepare(sql)
          statement.safeIntegers(Context.get(fiber.currentContext, Client.SafeIntegers))
          return Effect.succeed(f(statement))
        } catch (error) {
          return Effect.fail(fail(error))
        }
      })
    const connection: Connection = {
      execute: (sql, params, transformRows) =>
        run(sql, (statement) => {
          const result = rows(statement, params)
          return transformRows === undefined ? result : transformRows(result)
        }),
      executeRaw: (sql, params) => run(sql, (statement) => statement.reader ? statement.all(...params) : statement.run(...params)),
      executeValues: (sql, params) => run(sql, (statement) => values(statement, params)),
      executeUnprepared: (sql, params, transformRows) =>
        run(sql, (statement) => {
          const result = rows(statement, params ?? [])
          return transformRows === undefined ? result : transformRows(result)
        }, (sql) => db.prepare(sql)),
      // As `@effect/sql-sqlite-node`'s client: better-sqlite3 holds the connection while it iterates.
      executeStream: () => Effect.dieMessage("executeStream not implemented") as never
    }

    // One connection: a transaction holds it from BEGIN to COMMIT; a lone statement only while it is handed out.
    const semaphore = yield* Effect.makeSemaphore(1)
    const acquirer = semaphore.withPermits(1)(Effect.succeed(connection))
    const transactionAcquirer = Effect.uninterruptibleMask((restore) =>
      Effect.as(
        Effect.zipRight(
          restore(semaphore.take(1)),
          Effect.tap(Effect.scope, (scope) => Scope.addFinalizer(scope, semaphore.release(1)))
        ),
        connection
      )
    )
    /**
     * `run` in one synchronous step while no transaction holds the
     * connection (`None` while one does); what it throws is `failure`'s.
     */
    const whileFree = <A>(run: () => A, failure: (error: unknown) => Effect.Effect<never, SqlError>) =>
      semaphore.withPermitsIfAvailable(1)(Effect.suspend(() => {
        try {
          return Effect.succeed(run())
        } catch (error) {
          return failure(error)
        }
      }))
    const direct: Direct = {
      transaction: (begin, steps, rollback) =>
        whileFree(
          () => transactionSync(begin, steps, rollback),
          (error) => isDriverError(error) ? Effect.fail(fail(error)) : Effect.die(error)
        ),
      // As `execute` / `executeValues` with no SafeIntegers: a failure of any kind is the statement's SqlError.
      query: (sql, params, asValues) =>
        whileFree(() => asValues ? values(own(sql), params) : rows(own(sql), params), (error) => Effect.fail(fail(error)))
    }
    const client = yield* Client.make({
      acquirer,
      compiler,
      transactionAcquirer,
      spanAttributes: [["db.system.name", "sqlite"]]
    })
    return Object.assign(client, {
      [SqliteClient.TypeId]: SqliteClient.TypeId,
      [DirectId]: direct,
      config: { filename: options.filename, disableWAL: options.disableWAL },
      export: Effect.try({ try: () => db.serialize() as Uint8Array, catch: sqlError("Failed to export database") }),
      backup: (destination: string) =>
        Effect.tryPromise({ try: () => db.backup(destination), catch: sqlError("Failed to backup database") }),
      loadExtension: (path: string) =>
        Effect.try({
          try: () => {
            db.loadExtension(path)
            statements.clear()
          },
          catch: sqlError("Failed to load extension")
        })
    }) as unknown as SqliteClient.SqliteClient
  })

/** The client as `SqliteClient.layer` provides it (both tags), on this file. */
export const layer = (options: Options): Layer.Layer<SqliteClient.SqliteClient | Client.SqlClient, SqlError> =>
  Layer.scopedContext(
    Effect.map(make(options), (client) => Context.make(SqliteClient.SqliteClient, client).pipe(Context.add(Client.SqlClient, client)))
  ).pipe(Layer.provide(Reactivity.layer))
