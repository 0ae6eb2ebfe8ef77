/**
 * The sweeper's and the dispatcher's queries stay index plans at scale: with
 * 300,000 timer rows and 300,000 outbox rows over two machines (analyzed),
 * PostgreSQL claims due rows and finds the next due time with one ordered
 * index scan per machine, never a sequential scan of the table nor a sort of
 * every due row; and the batch load of claimed instances and the group
 * commit of their deliveries touch their own rows only, even with
 * statistics that have not caught up with the tables.
 * (Checked from `EXPLAIN ANALYZE`, not from timings.)
 */
import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Statement from "@effect/sql/Statement"
import { Context, Effect, Layer } from "effect"
import { EventStore, OutboxStore, SqlEventStore, TimeoutStore } from "effect-fsm"
import { postgres } from "./utils/backends.js"
import * as Pg from "./utils/pg.js"

const rows = 300_000
const machines = ["order", "invoice"]

/** The stores on a fresh schema, with their client and table names. */
const freshStore = Effect.gen(function*() {
  const schema = yield* Pg.freshSchema
  const context = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(Pg.layerClient(schema))))
  return { context, sql: Context.get(context, SqlClient.SqlClient), t: yield* SqlEventStore.tableNames() }
})

/** The statements `effect` runs, captured as they are compiled. */
const statementsOf = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const seen: Array<readonly [string, ReadonlyArray<unknown>]> = []
    yield* effect.pipe(
      Statement.withTransformer((self) => Effect.sync(() => (seen.push(self.compile()), self)))
    )
    return seen
  })

/** The plan PostgreSQL ran a captured statement with, or (`run: false`, for a write) would run it with. */
const explain = (
  sql: SqlClient.SqlClient,
  [text, params]: readonly [string, ReadonlyArray<unknown>],
  options: { readonly run: boolean } = { run: true }
) =>
  Effect.map(
    sql.unsafe<{ readonly "QUERY PLAN": string }>(
      `EXPLAIN (${options.run ? "ANALYZE, COSTS OFF, TIMING OFF" : "COSTS OFF"}) ${text}`,
      params
    ),
    (lines) => lines.map((line) => line["QUERY PLAN"]).join("\n")
  )

describe.skipIf(postgres.skip !== undefined)("sweeper and dispatcher queries on postgres at scale", () => {
  it.scoped("claim and next-due queries use the (machine, due_at) indexes with two machines and 300k rows each", () =>
    Effect.gen(function*() {
      const { context, sql, t } = yield* freshStore
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
        const text = yield* explain(sql, statement)
        const where = `${statement[0]}\n${text}`
        expect(text, where).not.toMatch(/Seq Scan/)
        expect(text, where).not.toMatch(/external|Disk/)
        expect(text, where).toMatch(/Index Scan using \w+_due/)
      }
    }), 120_000)

  it.scoped("a batch load reads only its instances' events when the statistics lag behind the log", () =>
    Effect.gen(function*() {
      const { context, sql, t } = yield* freshStore
      const E = sql(t.events)
      const insertEvents = (machine: string, instances: number, perInstance: number) =>
        sql`INSERT INTO ${E} (machine, instance_id, seq_nr, tag, payload, state_tag, schema_version, ts, source)
          SELECT ${machine}, 'i' || (g / ${perInstance}), g % ${perInstance} + 1, 'Paid', '{"_tag":"Paid"}'::jsonb, 'Paid', 1, g, 'command'
          FROM generate_series(0, ${instances * perInstance - 1}) AS g`
      // Statistics taken before this machine had any events (a machine
      // added to a running store), and no autovacuum to refresh them.
      yield* sql`ALTER TABLE ${E} SET (autovacuum_enabled = false)`
      yield* insertEvents("other", 20_000, 1)
      yield* sql`ANALYZE ${E}`
      yield* insertEvents("order", 10_000, 10)

      const store = Context.get(context, EventStore.EventStore)
      const ids = Array.from({ length: 64 }, (_, i) => `i${i * 150}`)
      let loaded: ReadonlyArray<EventStore.Recovery> = []
      const statements = yield* statementsOf(
        Effect.map(store.recoveryBatch("order", ids, 1000), (batch) => (loaded = batch))
      )
      expect(loaded.map((r) => [r.instanceId, r.events.length])).toEqual(ids.map((id) => [id, 10]))
      expect(statements.length).toBe(2)
      const events = statements.find(([text]) => text.includes(t.events))!
      const plan = yield* explain(sql, events)
      const where = `${events[0]}\n${plan}`
      // One index range scan per instance: 64 loops of 10 rows, never the machine's 100,000 events.
      expect(plan, where).toMatch(new RegExp(`Index Scan using ${t.events}_pkey on ${t.events} e \\(actual rows=10 loops=64\\)`))
      expect(plan, where).not.toMatch(/Seq Scan|Bitmap Heap Scan|Hash Join/)
    }), 120_000)

  it.scoped("a group commit of timer deliveries touches only its instances' rows when the statistics lag behind the tables", () =>
    Effect.gen(function*() {
      const { context, sql, t } = yield* freshStore
      const tables = [t.events, t.timers, t.instances]
      for (const table of tables) yield* sql`ALTER TABLE ${sql(table)} SET (autovacuum_enabled = false)`
      // Statistics taken while only another machine had rows (a machine
      // added to a running store), then 100,000 instances of this one, each
      // with one event, its current-state row and one armed timer.
      const fill = (machine: string, n: number) =>
        Effect.all([
          sql`INSERT INTO ${sql(t.events)} (machine, instance_id, seq_nr, tag, payload, state_tag, schema_version, ts, source)
            SELECT ${machine}, 'i' || g, 1, '@created', '{"_tag":"Pending"}'::jsonb, 'Pending', 1, g, 'user' FROM generate_series(1, ${n}) AS g`,
          sql`INSERT INTO ${sql(t.instances)} (machine, instance_id, state_tag, seq_nr, entered_at, updated_at, stopped)
            SELECT ${machine}, 'i' || g, 'Pending', 1, g, g, false FROM generate_series(1, ${n}) AS g`,
          sql`INSERT INTO ${sql(t.timers)} (machine, instance_id, name, generation, state_tag, due_at, payload, attempts)
            SELECT ${machine}, 'i' || g, 'payment', 1, 'Pending', g, '{"_tag":"T"}'::jsonb, 0 FROM generate_series(1, ${n}) AS g`
        ], { discard: true })
      yield* fill("other", 20_000)
      for (const table of tables) yield* sql`ANALYZE ${sql(table)}`
      yield* fill("order", 100_000)

      const store = Context.get(context, EventStore.EventStore)
      const deliver = (k: number) =>
        store.append({
          machine: "order",
          instanceId: `i${k * 1000}`,
          expectedSeqNr: 1,
          events: [{
            tag: "PaymentTimeout",
            payload: { _tag: "PaymentTimeout" },
            stateTag: "Cancelled",
            schemaVersion: 1,
            metadata: { timestamp: 200_000, source: "timeout", correlationId: null, node: "n", commitId: `c${k}`, timer: "payment" }
          }],
          timers: { cancelAll: true, schedule: [], fired: { name: "payment", generation: 1 } }
        })
      // Concurrent deliveries of different instances: after the first, the rest go out as one group.
      const statements = yield* statementsOf(Effect.forEach(Array.from({ length: 64 }, (_, k) => k + 1), deliver, { concurrency: "unbounded" }))
      const group = statements.filter(([text]) => text.includes("fired AS"))
      expect(group.length).toBeGreaterThanOrEqual(1)
      for (const statement of group) {
        const plan = yield* explain(sql, statement, { run: false })
        const where = `${statement[0].slice(0, 200)}\n${plan}`
        // Primary-key probes per commit, never a scan of a table of 100,000 instances.
        expect(plan, where).not.toMatch(/Seq Scan on fsm_|Bitmap Heap Scan on fsm_/)
      }
      for (let k = 1; k <= 64; k++) {
        expect(yield* store.highestSequenceNr("order", `i${k * 1000}`)).toBe(2)
      }
    }), 120_000)
})
