/**
 * The synchronous way onto a SQLite connection, as the store's SQLite
 * dialect sees it: a write of several statements as `Steps`, run
 * statement by statement (`runSteps`) or, on the store's own client
 * (`sqliteClient.ts`, which offers a `Direct`), in one synchronous step;
 * and a read in one step on that client.
 * Apart from that client so that the dialect (loaded with `effect-fsm`'s
 * main entry) never loads the driver.
 *
 * @internal
 */
import type * as Client from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Effect from "effect/Effect"
import type * as Option from "effect/Option"

/**
 * A write of several statements as a generator: it yields each statement and
 * is resumed with its rows, so one body serves both the synchronous run
 * (`Direct.transaction`) and the usual one (`runSteps`).
 */
export type Steps<A> = Generator<Statement.Statement<any>, A, ReadonlyArray<any>>

/** Runs `steps` with `run` executing each statement (the usual way: an Effect per statement). */
export const runSteps = <A>(
  steps: () => Steps<A>,
  run: (statement: Statement.Statement<any>) => Effect.Effect<ReadonlyArray<any>, SqlError>
): Effect.Effect<A, SqlError> =>
  Effect.suspend(() => {
    const generator = steps()
    const next = (rows: ReadonlyArray<any>): Effect.Effect<A, SqlError> => {
      const step = generator.next(rows)
      return step.done === true ? Effect.succeed(step.value) : Effect.flatMap(run(step.value), next)
    }
    return next([])
  })

/**
 * The synchronous way onto a client's connection. `transaction` runs
 * `steps` between `begin` and `COMMIT` in one synchronous step when no
 * transaction holds the connection (holding it meanwhile), and answers
 * `None` when one does (the caller then goes the usual way, which waits its
 * turn). It rolls back, and the connection is left with no transaction
 * open, when a statement fails (a `SqlError`), when `COMMIT` fails, or when
 * `steps` returns a value `rollback` accepts (returned as it is).
 */
export interface Direct {
  readonly transaction: <A>(
    begin: string,
    steps: () => Steps<A>,
    rollback: (result: A) => boolean
  ) => Effect.Effect<Option.Option<A>, SqlError>
  /**
   * One statement (a read) in one synchronous step when no transaction
   * holds the connection: its rows as objects, or as arrays with `values`;
   * `None` when a transaction holds the connection.
   */
  readonly query: (
    sql: string,
    params: ReadonlyArray<unknown>,
    values: boolean
  ) => Effect.Effect<Option.Option<ReadonlyArray<any>>, SqlError>
}

export const DirectId: unique symbol = Symbol.for("effect-fsm/internal/sqliteDirect/Direct")

/** The synchronous way onto `client`'s connection, when `client` is one of these. */
export const directOf = (client: Client.SqlClient): Direct | undefined => (client as { readonly [DirectId]?: Direct })[DirectId]

