/**
 * pg-boss, the peer of the durable timers: how fast it drains a backlog of
 * due jobs on the same PostgreSQL, in its best configuration here
 * (`batchSize: 100`, `pollingIntervalSeconds: 0.5`, `burstWhenBatchFull`,
 * `localConcurrency: 4`), with `ANALYZE` after inserting. Used by
 * `timeouts.ts` for `timeouts.pg.pgboss` and the `timeouts.pg.fired`
 * comparison; a dev dependency of the benches only.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { Effect, type Scope } from "effect"
import { PgBoss } from "pg-boss"
import { pgTarget } from "./db.js"

const queue = "bench_due"

/** A pg-boss in a schema of its own for the scope (dropped at the end), started, with its queue. */
export const openPgBoss = (sql: SqlClient.SqlClient): Effect.Effect<{ readonly boss: PgBoss; readonly schema: string }, unknown, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise(async () => {
      const schema = `pgboss_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`
      const boss = new PgBoss({
        host: pgTarget.host,
        port: pgTarget.port,
        user: pgTarget.user,
        ...(pgTarget.password === undefined ? {} : { password: pgTarget.password }),
        database: pgTarget.database,
        schema,
        max: 10
      })
      boss.on("error", (error) => process.stderr.write(`pg-boss: ${String(error)}\n`))
      await boss.start()
      await boss.createQueue(queue)
      return { boss, schema }
    }),
    ({ boss, schema }) =>
      Effect.promise(() => boss.stop({ graceful: false })).pipe(
        Effect.zipRight(sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)),
        Effect.ignore
      )
  )

/** Jobs per second pg-boss completes, draining `count` due jobs: from its workers' start to the last completion. */
export const drainWithPgBoss = (
  opened: { readonly boss: PgBoss; readonly schema: string },
  sql: SqlClient.SqlClient,
  count: number
): Effect.Effect<number, unknown> =>
  Effect.gen(function*() {
    const { boss, schema } = opened
    yield* Effect.tryPromise(async () => {
      for (let done = 0; done < count; done += 1_000) {
        await boss.insert(queue, Array.from({ length: Math.min(1_000, count - done) }, (_, i) => ({ data: { i: done + i } })))
      }
    })
    yield* sql.unsafe(`ANALYZE "${schema}".job`)
    const completed = () =>
      Effect.map(
        sql.unsafe<{ readonly n: unknown }>(`SELECT count(*) AS n FROM "${schema}".job WHERE name = $1 AND state = 'completed'`, [queue]),
        (rows) => Number(rows[0]?.n ?? 0)
      )
    const before = yield* completed()
    const started = performance.now()
    const worker = yield* Effect.tryPromise(() =>
      boss.work(queue, { batchSize: 100, pollingIntervalSeconds: 0.5, burstWhenBatchFull: true, localConcurrency: 4 }, async () => {})
    )
    let done = before
    while (done < before + count) {
      yield* Effect.sleep("20 millis")
      done = yield* completed()
    }
    const ms = performance.now() - started
    yield* Effect.tryPromise(() => boss.offWork(queue, { id: worker, wait: true }))
    return count / (ms / 1000)
  })
