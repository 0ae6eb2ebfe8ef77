/**
 * The `OutboxStore` on a `SqlClient`, over the outbox and outbox dead-letter
 * tables that `append` writes in the same commit as the events.
 *
 * Every operation is one atomic step against a completing commit, which
 * deletes the row it completes: `complete`, `extendClaim` and `retryLater`
 * are single statements on the row's key; `deadLetter` and `redrive` move a
 * row with `dialect.move`, so a row is moved only by the operation whose
 * delete removed it (a command completed meanwhile leaves no dead letter).
 *
 * @internal
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import type * as OutboxStore from "../OutboxStore.js"
import type { Dialect } from "./sqlDialect.js"
import {
  claimableKeys,
  decodeRows,
  mapSqlError,
  nextClaimable,
  type Tables,
  toNumber,
  toStringOrNull
} from "./sqlShared.js"
import { span } from "./spans.js"

interface CommandRow {
  readonly machine: string
  readonly instance_id: string
  readonly seq_nr: unknown
  readonly idx: unknown
  readonly kind: string
  readonly tag: string
  readonly payload: string
  readonly target_machine: string | null
  readonly target_instance_id: string | null
  readonly correlation_id: string | null
  readonly fence_token: unknown
  readonly created_at: unknown
  readonly due_at: unknown
  readonly attempts: unknown
  readonly last_error: string | null
}

interface DeadLetterRow extends CommandRow {
  readonly failed_at: unknown
}

const decodeCommand = (row: CommandRow): OutboxStore.CommandRecord => ({
  machine: row.machine,
  instanceId: row.instance_id,
  seqNr: toNumber(row.seq_nr),
  index: toNumber(row.idx),
  kind: row.kind as OutboxStore.CommandKind,
  tag: row.tag,
  payload: JSON.parse(row.payload),
  target: row.target_machine === null || row.target_instance_id === null
    ? null
    : { machine: row.target_machine, instanceId: row.target_instance_id },
  correlationId: toStringOrNull(row.correlation_id),
  fenceToken: row.fence_token === null || row.fence_token === undefined ? null : toNumber(row.fence_token),
  createdAt: toNumber(row.created_at),
  dueAt: toNumber(row.due_at),
  attempts: toNumber(row.attempts),
  lastError: toStringOrNull(row.last_error)
})

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

const byDue = (a: OutboxStore.CommandRecord, b: OutboxStore.CommandRecord) =>
  a.dueAt - b.dueAt || compare(a.machine, b.machine) || compare(a.instanceId, b.instanceId) || a.seqNr - b.seqNr ||
  a.index - b.index

export const makeOutboxStore = (
  sql: SqlClient.SqlClient,
  dialect: Dialect,
  t: Tables
): OutboxStore.OutboxStore["Type"] => {
  const O = sql(t.outbox)
  const D = sql(t.outboxDeadLetters)
  const kept =
    "machine, instance_id, seq_nr, idx, kind, tag, payload, target_machine, target_instance_id, correlation_id, fence_token, created_at, due_at, attempts, last_error"
  const columns = sql`machine, instance_id, seq_nr, idx, kind, tag, ${
    dialect.jsonText("payload")
  } AS payload, target_machine, target_instance_id, correlation_id, fence_token, created_at, due_at, attempts, last_error`
  const keyOf = (key: OutboxStore.CommandKey) =>
    sql`machine = ${key.machine} AND instance_id = ${key.instanceId} AND seq_nr = ${key.seqNr} AND idx = ${key.index}`
  const movedColumns = kept.split(", ")

  const claimDue = (options: OutboxStore.ClaimOptions) => {
    if (options.machines.length === 0 || options.limit <= 0) return Effect.succeed([])
    // Several nodes claim at once: on PostgreSQL rows another claim holds are
    // skipped; on SQLite the single statement runs under the write lock.
    return sql<CommandRow>`UPDATE ${O} SET claimed_by = ${options.nodeId}, claimed_until = ${options.claimUntil} WHERE (machine, instance_id, seq_nr, idx) IN (${
      claimableKeys(sql, {
        table: t.outbox,
        keys: "machine, instance_id, seq_nr, idx",
        machines: options.machines,
        now: options.now,
        limit: Math.floor(options.limit),
        lock: dialect.skipLocked
      })
    }) RETURNING ${columns}`.pipe(
      mapSqlError("claimDue"),
      Effect.flatMap((rows) => decodeRows("claimDue", rows, decodeCommand)),
      Effect.map((commands) => commands.sort(byDue)),
      span("SqlOutboxStore.claimDue", { attributes: { limit: options.limit, node: options.nodeId } })
    )
  }

  const extendClaim = (command: OutboxStore.CommandKey, options: { readonly nodeId: string; readonly claimUntil: number }) =>
    sql`UPDATE ${O} SET claimed_until = ${options.claimUntil} WHERE ${keyOf(command)} AND claimed_by = ${options.nodeId} RETURNING idx`
      .pipe(Effect.map((rows) => rows.length > 0), mapSqlError("extendClaim"))

  const complete = (command: OutboxStore.CommandKey, options?: { readonly claimedBy?: string }) =>
    sql`DELETE FROM ${O} WHERE ${keyOf(command)}${
      options?.claimedBy === undefined ? sql.literal("") : sql` AND claimed_by = ${options.claimedBy}`
    } RETURNING idx`.pipe(
      Effect.map((rows) => rows.length > 0),
      mapSqlError("complete")
    )

  const retryLater = (
    command: OutboxStore.CommandKey,
    options: { readonly dueAt: number; readonly error: string; readonly nodeId: string }
  ) =>
    sql`UPDATE ${O} SET due_at = ${options.dueAt}, attempts = attempts + 1, last_error = ${options.error}, claimed_by = NULL, claimed_until = NULL WHERE ${
      keyOf(command)
    } AND claimed_by = ${options.nodeId}`.pipe(Effect.asVoid, mapSqlError("retryLater"))

  // `WHERE true` lets SQLite parse an INSERT ... SELECT with a trailing clause.
  const deadLetter = (
    command: OutboxStore.CommandKey,
    options: { readonly error: string; readonly now: number; readonly nodeId: string }
  ) =>
    dialect.move({
      from: t.outbox,
      where: sql`${keyOf(command)} AND claimed_by = ${options.nodeId}`,
      columns: movedColumns,
      insert: (moved) =>
        sql`INSERT INTO ${D} (${sql.literal(kept)}, failed_at) SELECT machine, instance_id, seq_nr, idx, kind, tag, payload, target_machine, target_instance_id, correlation_id, fence_token, created_at, due_at, attempts + 1, ${options.error}, CAST(${options.now} AS BIGINT) FROM ${moved} WHERE true`
    }).pipe(Effect.asVoid, mapSqlError("deadLetter"))

  const nextDueAt = (machines: ReadonlyArray<string>) => nextClaimable(sql, { table: t.outbox, machines })

  const pending = (machine: string, instanceId: string) =>
    sql<CommandRow>`SELECT ${columns} FROM ${O} WHERE machine = ${machine} AND instance_id = ${instanceId} ORDER BY seq_nr, idx`.pipe(
      mapSqlError("pending"),
      Effect.flatMap((rows) => decodeRows("pending", rows, decodeCommand))
    )

  const deadLetters = (machine: string) =>
    sql<DeadLetterRow>`SELECT ${columns}, failed_at FROM ${D} WHERE machine = ${machine} ORDER BY failed_at, due_at, instance_id, seq_nr, idx`.pipe(
      mapSqlError("deadLetters"),
      Effect.flatMap((rows) =>
        decodeRows("deadLetters", rows, (row): OutboxStore.DeadLetter => ({ ...decodeCommand(row), failedAt: toNumber(row.failed_at) }))
      )
    )

  const redrive = (command: OutboxStore.CommandKey, now: number) =>
    dialect.move<{ readonly idx: unknown }>({
      from: t.outboxDeadLetters,
      where: keyOf(command),
      columns: movedColumns,
      insert: (moved) =>
        sql`INSERT INTO ${O} (${sql.literal(kept)}) SELECT machine, instance_id, seq_nr, idx, kind, tag, payload, target_machine, target_instance_id, correlation_id, fence_token, created_at, CAST(${now} AS BIGINT), 0, last_error FROM ${moved} WHERE true RETURNING idx`
    }).pipe(Effect.map((moved) => moved.length > 0), mapSqlError("redrive"))

  const discard = (command: OutboxStore.CommandKey) =>
    sql`DELETE FROM ${D} WHERE ${keyOf(command)} RETURNING idx`.pipe(
      Effect.map((rows) => rows.length > 0),
      mapSqlError("discard")
    )

  return { claimDue, extendClaim, complete, retryLater, deadLetter, nextDueAt, pending, deadLetters, redrive, discard }
}
