/**
 * Queries of the current-state table at scale: with `--instances`
 * (1,000,000) rows of one machine in 8 states, on SQLite and PostgreSQL.
 *
 * Prints, for each backend (each the median over the repetitions of the
 * per-query p50 and p99 of `--queries` queries, after a warm-up):
 * - `queries.<pg|sqlite>.state_page_p50` / `_p99` (ms): "instances in state
 *   S, oldest first, page of 100" (`EventStore.listInstances`, a random
 *   state and a random starting cursor each time);
 * - `queries.<pg|sqlite>.counts_p50` / `_p99` (ms): counts per state
 *   (`EventStore.stateCounts`);
 * each against the same percentile of a primary-key point lookup
 * (`EventStore.instance` of a random id) measured in the same run: ratio =
 * point lookup / query, so a ratio of 0.5 is "twice as slow as a point
 * lookup". Query results are checked (a full page in order; counts summing
 * to the number of instances).
 *
 * The rows are seeded with one set-based INSERT (the bench measures reads,
 * not the write path), the counts table from them as migration 5 builds it,
 * then `ANALYZE`d.
 *
 *   npm run bench -- queries [--instances 1000000] [--queries 200] [--reps 3] [--warmup 1]
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, Option, type Scope } from "effect"
import { EventStore, SqlEventStore } from "effect-fsm"
import { type Backend, openBenchDatabase, pgUnreachable, runScript } from "./db.js"
import { commonFlags, isMain, median, parseFlags, percentile, printBench, progress } from "./run.js"

const machine = "order"
const states = ["Pending", "Charging", "Paid", "Packed", "Shipped", "Delivered", "Cancelled", "Refunded"]

/** Rows `0..n-1`: instance `i` is `o<i>` in state `i % 8`, entered at a time spread over a day. */
const seed = (sql: SqlClient.SqlClient, backend: Backend, n: number) =>
  Effect.gen(function*() {
    const names = yield* SqlEventStore.tableNames()
    const table = sql(names.instances)
    // The counts the commits would have kept, as migration 5 builds them
    // (on SQLite its triggers have counted the seeded rows already).
    const countsTable = sql(names.stateCounts)
    const counts = sql`INSERT INTO ${countsTable} (machine, state_tag, stopped, slot, n) SELECT machine, state_tag, stopped, 0, COUNT(*) FROM ${table} WHERE NOT EXISTS (SELECT 1 FROM ${countsTable}) GROUP BY machine, state_tag, stopped`
    const cases = states.map((s, i) => `WHEN ${i} THEN '${s}'`).join(" ")
    // A pseudo-random but reproducible entry time: (i * 7919) mod 86,400,000.
    if (backend === "pg") {
      yield* sql`INSERT INTO ${table} (machine, instance_id, state_tag, seq_nr, entered_at, updated_at, stopped)
        SELECT ${machine}, 'o' || i, CASE i % 8 ${sql.literal(cases)} END, 1 + i % 5, (i::bigint * 7919) % 86400000, (i::bigint * 7919) % 86400000, i % 8 = 5
        FROM generate_series(0, ${n - 1}) AS i`
      yield* counts
      yield* sql`ANALYZE ${table}`
    } else {
      yield* sql`WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ${n - 1})
        INSERT INTO ${table} (machine, instance_id, state_tag, seq_nr, entered_at, updated_at, stopped)
        SELECT ${machine}, 'o' || i, CASE i % 8 ${sql.literal(cases)} END, 1 + i % 5, (i * 7919) % 86400000, (i * 7919) % 86400000, i % 8 = 5
        FROM seq`
      yield* counts
      yield* sql`ANALYZE`
    }
  })

const timed = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<readonly [number, A], E> =>
  Effect.suspend(() => {
    const started = performance.now()
    return Effect.map(effect, (a) => [performance.now() - started, a] as const)
  })

const measure = (
  backend: Backend,
  flags: { readonly instances: number; readonly queries: number; readonly reps: number; readonly warmup: number }
): Effect.Effect<void, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const db = yield* openBenchDatabase(backend, { maxConnections: 1 })
    const store = Context.get(db.store, EventStore.EventStore)
    const seedStarted = performance.now()
    yield* seed(db.sql, backend, flags.instances)
    progress(`queries.${backend}: seeded ${flags.instances} instances in ${Math.round(performance.now() - seedStarted)} ms`)

    // Reproducible randomness.
    let x = 12345
    const random = (n: number) => {
      x = (x * 1103515245 + 12345) % 2147483648
      return x % n
    }

    const point = Effect.gen(function*() {
      const id = `o${random(flags.instances)}`
      const [ms, row] = yield* timed(store.instance(machine, id))
      if (Option.isNone(row)) return yield* Effect.fail(new Error(`${id} not found`))
      return ms
    })
    const statePage = Effect.gen(function*() {
      const stateTag = states[random(states.length)]!
      const enteredAt = random(86_400_000)
      const [ms, page] = yield* timed(
        store.listInstances({ machine, stateTag, limit: 100, after: { enteredAt, instanceId: "\u0001" } })
      )
      const rows = page.instances
      const ordered = rows.every((row, i) =>
        row.stateTag === stateTag && (i === 0 || rows[i - 1]!.enteredAt <= row.enteredAt)
      )
      // Near the end of the day a page may be short; elsewhere it is full.
      if (!ordered || (enteredAt < 80_000_000 && rows.length !== 100)) {
        return yield* Effect.fail(new Error(`bad page for ${stateTag} after ${enteredAt}: ${rows.length} rows`))
      }
      return ms
    })
    const counts = Effect.gen(function*() {
      const [ms, rows] = yield* timed(store.stateCounts(machine))
      const total = rows.reduce((sum, row) => sum + row.count, 0)
      if (total !== flags.instances) return yield* Effect.fail(new Error(`counts sum to ${total}`))
      return ms
    })

    const percentiles = (xs: Array<number>) => {
      const sorted = [...xs].sort((a, b) => a - b)
      return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) }
    }
    const samples = { point: [] as Array<{ p50: number; p99: number }>, page: [] as Array<{ p50: number; p99: number }>, counts: [] as Array<{ p50: number; p99: number }> }
    for (let round = 0; round < flags.warmup + flags.reps; round++) {
      const pointMs: Array<number> = []
      const pageMs: Array<number> = []
      const countMs: Array<number> = []
      // Interleaved, so that noise hits the query and its baseline alike.
      for (let q = 0; q < flags.queries; q++) {
        pointMs.push(yield* point)
        pageMs.push(yield* statePage)
        if (q % 10 === 0) countMs.push(yield* counts)
      }
      const r = { point: percentiles(pointMs), page: percentiles(pageMs), counts: percentiles(countMs) }
      progress(
        `  queries.${backend} ${round < flags.warmup ? "warmup" : "rep"} ${round + 1}: point p50 ${r.point.p50.toFixed(2)} ms, page p50 ${
          r.page.p50.toFixed(2)
        } / p99 ${r.page.p99.toFixed(2)} ms, counts p50 ${r.counts.p50.toFixed(1)} / p99 ${r.counts.p99.toFixed(1)} ms`
      )
      if (round >= flags.warmup) {
        samples.point.push(r.point)
        samples.page.push(r.page)
        samples.counts.push(r.counts)
      }
    }
    const med = (xs: ReadonlyArray<{ p50: number; p99: number }>, p: "p50" | "p99") => median(xs.map((s) => s[p]))
    for (const p of ["p50", "p99"] as const) {
      const baseline = med(samples.point, p)
      printBench(`queries.${backend}.state_page_${p}`, { value: med(samples.page, p), unit: "ms", baseline, lowerIsBetter: true })
      printBench(`queries.${backend}.counts_${p}`, { value: med(samples.counts, p), unit: "ms", baseline, lowerIsBetter: true })
    }
  })

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const flags = parseFlags("queries", args, {
    reps: { ...commonFlags.reps, default: 3 },
    warmup: { ...commonFlags.warmup, default: 1 },
    instances: { default: 1_000_000, description: "instances in the current-state table" },
    queries: { default: 200, description: "point lookups and state pages per repetition (counts: a tenth as many)" }
  })
  await runScript(Effect.scoped(Effect.gen(function*() {
    const unreachable = yield* pgUnreachable
    if (unreachable === undefined) yield* Effect.scoped(measure("pg", flags))
    else progress(`queries.pg skipped: ${unreachable}`)
    yield* Effect.scoped(measure("sqlite", flags))
  })))
}

if (isMain(import.meta.url)) await main(process.argv.slice(2))
