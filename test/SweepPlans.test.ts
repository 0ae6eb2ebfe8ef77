/**
 * The sweeper's and the dispatcher's queries stay index plans at scale: with
 * 300,000 timer rows and 300,000 outbox rows over two machines (analyzed),
 * PostgreSQL claims due rows and finds the next due time with one ordered
 * index scan per machine, never a sequential scan of the table nor a sort of
 * every due row. (Checked from `EXPLAIN ANALYZE`, not from timings.)
 */
import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Statement from "@effect/sql/Statement"
import { Context, Effect, Layer } from "effect"
import { OutboxStore, SqlEventStore, TimeoutStore } from "effect-fsm"
import { postgres } from "./utils/backends.js"
import * as Pg from "./utils/pg.js"

const rows = 300_000
const machines = ["order", "invoice"]

describe.skipIf(postgres.skip !== undefined)("sweeper and dispatcher queries on postgres at scale", () => {
  it.scoped("claim and next-due queries use the (machine, due_at) indexes with two machines and 300k rows each", () =>
    Effect.gen(function*() {
      const schema = yield* Pg.freshSchema
      const context = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(Pg.layerClient(schema))))
      const sql = Context.get(context, SqlClient.SqlClient)
      const t = yield* SqlEventStore.tableNames()
      // Half of the rows due long ago, half far in the future; some claimed.
      yield* sql`INSERT INTO ${sql(t.timers)} (machine, instance_id, name, generation, state_tag, due_at, payload, attempts, claimed_by, claimed_until)
        SELECT CASE WHEN g % 2 = 0 THEN 'order' ELSE 'invoice' END, 'i' || g, 'payment', 1, 'Pending',
               CASE WHEN g % 3 = 0 THEN 1000000000 + g ELSE g END, '{"_tag":"T"}'::jsonb, 0,
               CASE WHEN g % 10 = 0 THEN 'n' ELSE NULL END, CASE WHEN g % 10 = 0 THEN 5000 ELSE NULL END
        FROM generate_series(1, ${rows}) AS g`
      yield* sql`INSERT INTO ${sql(t.outbox)} (machine, instance_id, seq_nr, idx, kind, tag, payload, created_at, due_at, attempts)
        SELECT CASE WHEN g % 2 = 0 THEN 'order' ELSE 'invoice' END, 'i' || g, 2, 0, 'handler', 'Charge',
               '{"_tag":"Charge"}'::jsonb, g, CASE WHEN g % 3 = 0 THEN 1000000000 + g ELSE g END, 0
        FROM generate_series(1, ${rows}) AS g`
      yield* sql`ANALYZE ${sql(t.timers)}`
      yield* sql`ANALYZE ${sql(t.outbox)}`

      // The statements the stores really run, captured as they are compiled, then explained.
      const statementsOf = <A, E>(effect: Effect.Effect<A, E>) =>
        Effect.gen(function*() {
          const seen: Array<readonly [string, ReadonlyArray<unknown>]> = []
          yield* effect.pipe(
            Statement.withTransformer((self) => Effect.sync(() => (seen.push(self.compile()), self)))
          )
          return seen
        })
      const explain = ([text, params]: readonly [string, ReadonlyArray<unknown>]) =>
        Effect.map(
          sql.unsafe<{ readonly "QUERY PLAN": string }>(`EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) ${text}`, params),
          (lines) => lines.map((line) => line["QUERY PLAN"]).join("\n")
        )
      const timers = Context.get(context, TimeoutStore.TimeoutStore)
      const outbox = Context.get(context, OutboxStore.OutboxStore)
      const claim = { machines, now: 500_000, limit: 200, nodeId: "explain", claimUntil: 600_000 }
      const statements = [
        ...(yield* statementsOf(timers.claimDue(claim))),
        ...(yield* statementsOf(timers.nextDueAt(machines))),
        ...(yield* statementsOf(outbox.claimDue(claim))),
        ...(yield* statementsOf(outbox.nextDueAt(machines)))
      ]
      expect(statements.length).toBe(4)
      for (const statement of statements) {
        const text = yield* explain(statement)
        const where = `${statement[0]}\n${text}`
        expect(text, where).not.toMatch(/Seq Scan/)
        expect(text, where).not.toMatch(/external|Disk/)
        expect(text, where).toMatch(/Index Scan using \w+_due/)
      }
    }), 120_000)
})
