/**
 * The `TimeoutStore` on a `SqlClient`, over the timer and dead-letter tables
 * that `append` writes in the same commit as the events.
 *
 * Every operation is one atomic step against a delivery commit, which
 * deletes the timer row it delivers: `complete` and `retryLater` are single
 * statements; `deadLetter` and `redrive` move a row with `dialect.move`, so a
 * row is moved only by the operation whose delete removed it (a timer that
 * fired meanwhile leaves no dead letter for `redrive` to fire again).
 *
 * @internal
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import type * as TimeoutStore from "../TimeoutStore.js"
import type { Dialect } from "./sqlDialect.js"
import {
  claimableKeys,
  decodeRows,
  driverCode,
  mapSqlError,
  nextClaimable,
  type Tables,
  toNumber,
  toStringOrNull
} from "./sqlShared.js"
import { span } from "./spans.js"

interface TimerRow {
  readonly machine: string
  readonly instance_id: string
  readonly name: string
  readonly generation: unknown
  readonly state_tag: string
  readonly due_at: unknown
  readonly payload: string
  readonly attempts: unknown
  readonly last_error: string | null
}

interface DeadLetterRow extends TimerRow {
  readonly failed_at: unknown
}

const decodeTimer = (row: TimerRow): TimeoutStore.TimerRecord => ({
  machine: row.machine,
  instanceId: row.instance_id,
  name: row.name,
  generation: toNumber(row.generation),
  stateTag: row.state_tag,
  dueAt: toNumber(row.due_at),
  payload: JSON.parse(row.payload),
  attempts: toNumber(row.attempts),
  lastError: toStringOrNull(row.last_error)
})

const byDueAt = (a: TimeoutStore.TimerRecord, b: TimeoutStore.TimerRecord) =>
  a.dueAt - b.dueAt || (a.machine < b.machine ? -1 : a.machine > b.machine ? 1 : 0) ||
  (a.instanceId < b.instanceId ? -1 : a.instanceId > b.instanceId ? 1 : 0) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)

export const makeTimeoutStore = (
  sql: SqlClient.SqlClient,
  dialect: Dialect,
  t: Tables
): TimeoutStore.TimeoutStore["Type"] => {
  const T = sql(t.timers)
  const D = sql(t.deadLetters)
  const timerColumns = sql`machine, instance_id, name, generation, state_tag, due_at, ${
    dialect.jsonText("payload")
  } AS payload, attempts, last_error`
  const keyOf = (timer: Omit<TimeoutStore.TimerKey, "generation">) =>
    sql`machine = ${timer.machine} AND instance_id = ${timer.instanceId} AND name = ${timer.name}`
  /** What a move between the timer and dead-letter tables carries over. */
  const movedColumns = ["machine", "instance_id", "name", "generation", "state_tag", "due_at", "payload", "attempts", "last_error"]

  const claimDue = (options: TimeoutStore.ClaimOptions) => {
    if (options.machines.length === 0 || options.limit <= 0) return Effect.succeed([])
    // Several nodes claim at once: on PostgreSQL rows another claim holds are
    // skipped; on SQLite the single statement runs under the write lock.
    return sql<TimerRow>`UPDATE ${T} SET claimed_by = ${options.nodeId}, claimed_until = ${options.claimUntil} WHERE (machine, instance_id, name) IN (${
      claimableKeys(sql, {
        table: t.timers,
        keys: "machine, instance_id, name",
        machines: options.machines,
        now: options.now,
        limit: Math.floor(options.limit),
        lock: dialect.skipLocked
      })
    }) RETURNING ${timerColumns}`.pipe(
      mapSqlError("claimDue"),
      Effect.flatMap((rows) => decodeRows("claimDue", rows, decodeTimer)),
      Effect.map((timers) => timers.sort(byDueAt)),
      span("SqlTimeoutStore.claimDue", { attributes: { limit: options.limit, node: options.nodeId } })
    )
  }

  const complete = (timer: TimeoutStore.TimerKey) =>
    sql`DELETE FROM ${T} WHERE ${keyOf(timer)} AND generation = ${timer.generation}`.pipe(
      Effect.asVoid,
      mapSqlError("complete")
    )

  const retryLater = (timer: TimeoutStore.TimerKey, options: { readonly dueAt: number; readonly error: string }) =>
    sql`UPDATE ${T} SET due_at = ${options.dueAt}, attempts = attempts + 1, last_error = ${options.error}, claimed_by = NULL, claimed_until = NULL WHERE ${
      keyOf(timer)
    } AND generation = ${timer.generation}`.pipe(Effect.asVoid, mapSqlError("retryLater"))

  // `WHERE true` lets SQLite parse the ON CONFLICT of an INSERT ... SELECT.
  const deadLetter = (timer: TimeoutStore.TimerKey, options: { readonly error: string; readonly now: number }) =>
    dialect.move({
      from: t.timers,
      where: sql`${keyOf(timer)} AND generation = ${timer.generation}`,
      columns: movedColumns,
      insert: (moved) =>
        sql`INSERT INTO ${D} (machine, instance_id, name, generation, state_tag, due_at, payload, attempts, last_error, failed_at) SELECT machine, instance_id, name, generation, state_tag, due_at, payload, attempts + 1, ${options.error}, CAST(${options.now} AS BIGINT) FROM ${moved} WHERE true ON CONFLICT (machine, instance_id, name) DO UPDATE SET generation = excluded.generation, state_tag = excluded.state_tag, due_at = excluded.due_at, payload = excluded.payload, attempts = excluded.attempts, last_error = excluded.last_error, failed_at = excluded.failed_at`
    }).pipe(Effect.asVoid, mapSqlError("deadLetter"))

  // When claimDue could next return something: a timer's deadline, or the
  // end of its claim when that is later.
  const nextDueAt = (machines: ReadonlyArray<string>) => nextClaimable(sql, { table: t.timers, machines })

  const pending = (machine: string, instanceId: string) =>
    sql<TimerRow>`SELECT ${timerColumns} FROM ${T} WHERE machine = ${machine} AND instance_id = ${instanceId} ORDER BY due_at, name`.pipe(
      mapSqlError("pending"),
      Effect.flatMap((rows) => decodeRows("pending", rows, decodeTimer))
    )

  const deadLetters = (machine: string) =>
    sql<DeadLetterRow>`SELECT ${timerColumns}, failed_at FROM ${D} WHERE machine = ${machine} ORDER BY failed_at, instance_id, name`.pipe(
      mapSqlError("deadLetters"),
      Effect.flatMap((rows) =>
        decodeRows("deadLetters", rows, (row): TimeoutStore.DeadLetter => ({
          ...decodeTimer(row),
          failedAt: toNumber(row.failed_at)
        }))
      )
    )

  // A live timer of that name wins: the dead letter is not deleted when one
  // is stored, and one committed concurrently (after the check, before the
  // insert) makes the insert hit the primary key, which fails the whole move.
  const redrive = (timer: Omit<TimeoutStore.TimerKey, "generation">, now: number) =>
    dialect.move<{ readonly name: string }>({
      from: t.deadLetters,
      where: sql`${keyOf(timer)} AND NOT EXISTS (SELECT 1 FROM ${T} WHERE ${keyOf(timer)})`,
      columns: movedColumns,
      insert: (moved) =>
        sql`INSERT INTO ${T} (machine, instance_id, name, generation, state_tag, due_at, payload, attempts, last_error) SELECT machine, instance_id, name, generation, state_tag, CAST(${now} AS BIGINT), payload, 0, last_error FROM ${moved} WHERE true RETURNING name`
    }).pipe(
      Effect.map((moved) => moved.length > 0),
      Effect.catchIf(
        (error) => driverCode(error) === "23505" || driverCode(error) === "SQLITE_CONSTRAINT_PRIMARYKEY",
        () => Effect.succeed(false)
      ),
      mapSqlError("redrive")
    )

  const discard = (timer: Omit<TimeoutStore.TimerKey, "generation">) =>
    sql`DELETE FROM ${D} WHERE ${keyOf(timer)} RETURNING name`.pipe(
      Effect.map((rows) => rows.length > 0),
      mapSqlError("discard")
    )

  const reschedule = (timer: TimeoutStore.TimerKey, dueAt: number) =>
    sql`UPDATE ${T} SET due_at = ${dueAt}, claimed_by = NULL, claimed_until = NULL WHERE ${
      keyOf(timer)
    } AND generation = ${timer.generation} RETURNING name`.pipe(
      Effect.map((rows) => rows.length > 0),
      mapSqlError("reschedule")
    )

  const cancel = (timer: TimeoutStore.TimerKey) =>
    sql`DELETE FROM ${T} WHERE ${keyOf(timer)} AND generation = ${timer.generation} RETURNING name`.pipe(
      Effect.map((rows) => rows.length > 0),
      mapSqlError("cancel")
    )

  // The (machine, due_at) index, read in order up to the limit.
  const upcoming = (machine: string, options: { readonly before: number; readonly limit: number }) =>
    sql<TimerRow>`SELECT ${timerColumns} FROM ${T} WHERE machine = ${machine} AND due_at < ${options.before} ORDER BY due_at, instance_id, name LIMIT ${options.limit}`
      .pipe(
        mapSqlError("upcoming"),
        Effect.flatMap((rows) => decodeRows("upcoming", rows, decodeTimer))
      )

  return {
    claimDue,
    complete,
    retryLater,
    deadLetter,
    nextDueAt,
    pending,
    deadLetters,
    redrive,
    discard,
    reschedule,
    cancel,
    upcoming
  }
}
