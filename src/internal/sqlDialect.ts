/**
 * Everything that differs between PostgreSQL and SQLite, chosen once per
 * store with `sql.onDialectOrElse`: column types (DDL), how JSON is bound and
 * read, how migrations are serialized between nodes, how a write transaction
 * starts, how a commit is applied, and which clock judges lease expiry.
 *
 * - PostgreSQL applies a commit as ONE statement (a chain of data-modifying
 *   CTEs): a single statement is atomic on its own, so the common case costs
 *   one round trip and no `BEGIN` / `COMMIT`. The expected-seqNr check and the
 *   fired-timer check gate every write of that statement; a concurrent writer
 *   that got there first makes the events insert hit the primary key, which is
 *   reported as `SequenceConflict`. A fenced commit adds a `FOR SHARE` read
 *   of its lease row to that gate: a takeover (an `UPDATE` of the row) waits
 *   for the commit's statement, or the commit waits for the takeover and then
 *   finds the new token, so the two are ordered one way or the other.
 * - SQLite applies it as a short transaction whose first statement is the
 *   guarded events insert, so the write lock is taken (with the busy timeout)
 *   before anything is read. The transaction runs without a cooperative yield:
 *   another connection of the same process can then never find the write lock
 *   held by a suspended fiber (better-sqlite3 waits for a lock by blocking the
 *   thread, which would freeze the very fiber that holds it). Its COMMIT and
 *   ROLLBACK are issued here rather than by `sql.withTransaction`: a COMMIT
 *   that fails leaves a SQLite transaction open, and it must be rolled back
 *   before the connection serves anyone else. A fenced commit reads its lease
 *   row after that insert, under the write lock, and rolls back when the
 *   token moved on. The statements of a commit are written once, as `Steps`
 *   (`sqliteDirect.ts`): on the store's own client they run in one
 *   synchronous step, BEGIN to COMMIT, when no transaction holds the
 *   connection; otherwise statement by statement.
 *
 * Which check a commit that wrote nothing failed is reported in one order on
 * every backend (and in memory): `FencingRejected` first (a node that lost
 * its lease must stop, not retry), then `SequenceConflict`, then `StaleTimer`.
 *
 * @internal
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import type { Fragment } from "@effect/sql/Statement"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import { FencingRejected, PersistenceError, SequenceConflict, StaleCommand, StaleTimer } from "../Errors.js"
import { countSlot, type CurrentChange } from "./currentState.js"
import { directOf, runSteps, type Steps } from "./sqliteDirect.js"
import { isTracing, span } from "./spans.js"

/** Count rows per (machine, state) on PostgreSQL, so that concurrent commits rarely wait on one row lock. */
const pgCountSlots = 16
import { driverCode, runner, type Tables, toBoolean, toNumber, transactionFailures } from "./sqlShared.js"

/** An event of a commit with its sequence number assigned and its payload as JSON text. */
export interface EncodedEvent {
  readonly seqNr: number
  readonly tag: string
  readonly payload: string
  readonly stateTag: string
  readonly schemaVersion: number
  readonly timestamp: number
  readonly source: string
  readonly correlationId: string | null
  readonly node: string | null
  readonly commitId: string | null
  readonly timer: string | null
}

export interface EncodedSnapshot {
  readonly seqNr: number
  readonly state: string
  readonly stopped: boolean
  readonly schemaVersion: number
  readonly timestamp: number
}

export interface EncodedTimer {
  readonly name: string
  readonly generation: number
  readonly stateTag: string
  readonly dueAt: number
  readonly payload: string
}

export interface EncodedCommand {
  readonly index: number
  readonly kind: string
  readonly tag: string
  readonly payload: string
  readonly targetMachine: string | null
  readonly targetInstanceId: string | null
  readonly correlationId: string | null
  readonly fenceToken: number | null
}

export interface CommandKey {
  readonly machine: string
  readonly instanceId: string
  readonly seqNr: number
  readonly index: number
}

/** Why a commit wrote nothing. */
export type AppendFailure = SequenceConflict | StaleTimer | StaleCommand | FencingRejected | PersistenceError

/** What the checks of one commit of a group found. */
interface GroupCheck {
  readonly written: boolean
  readonly actual: number
  readonly fenced: boolean
  readonly firedPending: boolean
  readonly completePending: boolean
}

/** The row of a SQLite group's check read, per commit. */
interface GroupCheckRow {
  readonly actual: unknown
  readonly fenced: unknown
  readonly fired_pending: unknown
  readonly complete_pending: unknown
  readonly cur_tag: string | null
  readonly cur_entered: unknown
}

/**
 * `items` in chunks whose sizes are powers of two, largest first (the binary
 * digits of its length): SQLite's group statements are written a chunk at a
 * time, so that each has a few texts whatever the group's size, each
 * prepared once (one text per group size filled the client's statement cache
 * with programs of up to a group's rows, prepared again and again).
 */
export const chunked = <A>(items: ReadonlyArray<A>): Array<ReadonlyArray<A>> => {
  const chunks: Array<ReadonlyArray<A>> = []
  let at = 0
  let size = 1
  while (size * 2 <= items.length) size *= 2
  for (; size >= 1; size /= 2) {
    if (items.length - at >= size) {
      chunks.push(at === 0 && size === items.length ? items : items.slice(at, at + size))
      at += size
    }
  }
  return chunks
}

type Cell = string | number | boolean | null | undefined

const mustEscape = /["\\]/
const escaped = /["\\]/g

/**
 * A PostgreSQL array literal of the `cell` of each item, one array parameter of a
 * group's `unnest` (`null` and `undefined` are `NULL`; numbers are the
 * integers the store writes, which `String` writes in plain digits).
 */
const pgArray = <A>(items: ReadonlyArray<A>, cell: (item: A) => Cell): string => {
  let text = "{"
  for (let i = 0; i < items.length; i++) {
    const value = cell(items[i]!)
    if (i > 0) text += ","
    if (value === null || value === undefined) text += "NULL"
    else if (typeof value === "string") text += mustEscape.test(value) ? `"${value.replace(escaped, "\\$&")}"` : `"${value}"`
    else if (typeof value === "boolean") text += value ? "t" : "f"
    else text += String(value)
  }
  return `${text}}`
}

/** A JSON array of JSON texts the store wrote (`jsonText`), `null` for none: a group's payloads, parsed once. */
const jsonArray = (texts: ReadonlyArray<string | undefined>): string => {
  let text = "["
  for (let i = 0; i < texts.length; i++) text += `${i > 0 ? "," : ""}${texts[i] ?? "null"}`
  return `${text}]`
}

/** One column of a group's rows: its name, its PostgreSQL type and its value per item. */
interface GroupColumn<A> {
  readonly name: string
  readonly type: string
  readonly value: (item: A) => Cell
}

/** The columns of a group's commits (the payload and snapshot state go as JSON beside them). */
const groupInputColumns: ReadonlyArray<GroupColumn<EncodedCommit>> = [
  { name: "machine", type: "text", value: (c) => c.machine },
  { name: "instance_id", type: "text", value: (c) => c.instanceId },
  { name: "expected", type: "bigint", value: (c) => c.expectedSeqNr },
  { name: "seq_nr", type: "bigint", value: (c) => c.events[0]!.seqNr },
  { name: "tag", type: "text", value: (c) => c.events[0]!.tag },
  { name: "state_tag", type: "text", value: (c) => c.events[0]!.stateTag },
  { name: "schema_version", type: "integer", value: (c) => c.events[0]!.schemaVersion },
  { name: "ts", type: "bigint", value: (c) => c.events[0]!.timestamp },
  { name: "source", type: "text", value: (c) => c.events[0]!.source },
  { name: "correlation_id", type: "text", value: (c) => c.events[0]!.correlationId },
  { name: "node", type: "text", value: (c) => c.events[0]!.node },
  { name: "commit_id", type: "text", value: (c) => c.events[0]!.commitId },
  { name: "timer", type: "text", value: (c) => c.events[0]!.timer },
  { name: "fired_name", type: "text", value: (c) => c.fired?.name },
  { name: "fired_gen", type: "bigint", value: (c) => c.fired?.generation },
  { name: "fence_owner", type: "text", value: (c) => c.fence?.owner },
  { name: "fence_token", type: "bigint", value: (c) => c.fence?.token },
  { name: "c_machine", type: "text", value: (c) => c.complete?.machine },
  { name: "c_instance", type: "text", value: (c) => c.complete?.instanceId },
  { name: "c_seq", type: "bigint", value: (c) => c.complete?.seqNr },
  { name: "c_idx", type: "integer", value: (c) => c.complete?.index },
  { name: "cancel_all", type: "boolean", value: (c) => c.cancelAll },
  { name: "snap_seq", type: "bigint", value: (c) => c.snapshot?.seqNr },
  { name: "snap_stopped", type: "boolean", value: (c) => c.snapshot?.stopped },
  { name: "snap_version", type: "integer", value: (c) => c.snapshot?.schemaVersion },
  { name: "snap_ts", type: "bigint", value: (c) => c.snapshot?.timestamp },
  { name: "cur_state", type: "text", value: (c) => c.current.stateTag },
  { name: "cur_seq", type: "bigint", value: (c) => c.current.seqNr },
  { name: "cur_entered", type: "bigint", value: (c) => c.current.enteredAt },
  { name: "cur_updated", type: "bigint", value: (c) => c.current.updatedAt },
  { name: "cur_stopped", type: "boolean", value: (c) => c.current.stopped },
  { name: "cur_mode", type: "text", value: (c) => c.current.entered },
  { name: "slot", type: "integer", value: (c) => countSlot(c.instanceId, pgCountSlots) }
]

/** The group's `input` columns from its `unnest`: the state tag compared as the current-state table's column is. */
const groupInputSelect = groupInputColumns.map(({ name }) => name === "cur_state" ? `u.${name} COLLATE "C" AS ${name}` : `u.${name}`).join(", ")

/** The timers a group schedules, by the index `k` of their commit (the payload goes as JSON beside them). */
const scheduleColumns: ReadonlyArray<GroupColumn<{ readonly k: number; readonly timer: EncodedTimer }>> = [
  { name: "k", type: "integer", value: ({ k }) => k },
  { name: "name", type: "text", value: ({ timer }) => timer.name },
  { name: "generation", type: "bigint", value: ({ timer }) => timer.generation },
  { name: "state_tag", type: "text", value: ({ timer }) => timer.stateTag },
  { name: "due_at", type: "bigint", value: ({ timer }) => timer.dueAt }
]

/** The outbox commands a group produces, by the index `k` of their commit (the payload goes as JSON beside them). */
const commandColumns: ReadonlyArray<GroupColumn<{ readonly k: number; readonly command: EncodedCommand }>> = [
  { name: "k", type: "integer", value: ({ k }) => k },
  { name: "idx", type: "integer", value: ({ command }) => command.index },
  { name: "kind", type: "text", value: ({ command }) => command.kind },
  { name: "tag", type: "text", value: ({ command }) => command.tag },
  { name: "target_machine", type: "text", value: ({ command }) => command.targetMachine },
  { name: "target_instance_id", type: "text", value: ({ command }) => command.targetInstanceId },
  { name: "correlation_id", type: "text", value: ({ command }) => command.correlationId },
  { name: "fence_token", type: "bigint", value: ({ command }) => command.fenceToken }
]

/** A write the steps asked to roll back, carrying their result through the transaction's failure path. */
class RolledBack<A> {
  constructor(readonly result: A) {}
}

/** A commit ready for SQL: JSON encoded, sequence numbers assigned, scheduled timers deduplicated by name. */
export interface EncodedCommit {
  readonly machine: string
  readonly instanceId: string
  readonly expectedSeqNr: number
  readonly events: ReadonlyArray<EncodedEvent>
  readonly snapshot: EncodedSnapshot | undefined
  readonly fired: { readonly name: string; readonly generation: number } | undefined
  readonly cancelAll: boolean
  readonly schedule: ReadonlyArray<EncodedTimer>
  /** The lease the commit is made under (`EventStore.Commit.fence`). */
  readonly fence: { readonly owner: string; readonly token: number } | undefined
  /** Outbox rows, keyed by the last event's seqNr, created at its timestamp. */
  readonly produce: ReadonlyArray<EncodedCommand>
  /** The pending command the commit completes. */
  readonly complete: CommandKey | undefined
  /** The commit's change to the current-state table. */
  readonly current: CurrentChange
}

export interface Dialect {
  readonly name: "pg" | "sqlite"
  /** A JSON text bound for a JSON column. */
  readonly json: (text: string) => Fragment
  /** A JSON column read back as JSON text. */
  readonly jsonText: (column: string) => Fragment
  /** A boolean as the driver can bind it. */
  readonly bool: (value: boolean) => boolean | number
  /**
   * Runs a read and gives its rows. On the store's own SQLite client in one
   * synchronous step when nothing would tell the difference (as the
   * dialect's writes: no tracer installed, no statement transformer, not
   * inside a caller's transaction, no transaction holding the connection),
   * else as `statement` runs.
   */
  readonly read: <A extends object>(statement: Statement.Statement<A>) => Effect.Effect<ReadonlyArray<A>, SqlError>
  /** `read`, with the rows as arrays (`statement.values`). */
  readonly readValues: (statement: Statement.Statement<any>) => Effect.Effect<ReadonlyArray<ReadonlyArray<unknown>>, SqlError>
  /**
   * Aggregates of the rows a query reads, one per column of `columns` (SQL
   * expressions), in order: each a JSON text of an array of that column's
   * values in the order the query reads the rows (the caller checks it),
   * the `json` column's values (JSON text) embedded as they are; then
   * whether every `json` value is strict JSON, which is what makes
   * embedding them as they are safe (a value that is not would break the
   * array, or be read as something else). With no rows the `json` column's
   * aggregate is `NULL`, the others' `[]`. One text and one `JSON.parse` a
   * column instead of a driver row and a parse per row (SQLite), or
   * `undefined` where rows read faster.
   */
  readonly jsonColumns: ((columns: ReadonlyArray<string>, json: string) => Fragment) | undefined
  /** Orders text by code points: `COLLATE "C"` on PostgreSQL, nothing on SQLite (BINARY already is). */
  readonly collateC: Fragment
  /** `FOR UPDATE SKIP LOCKED` where the database has it. */
  readonly skipLocked: Fragment
  /** The statements of migration 1. */
  readonly createTables: Effect.Effect<void, SqlError>
  /** Migration 2: each event's commit id and fired timer name. */
  readonly addCommitColumns: Effect.Effect<void, SqlError>
  /** Migration 3: the lease table. */
  readonly createLeases: Effect.Effect<void, SqlError>
  /** Migration 4: the outbox and its dead letters. */
  readonly createOutbox: Effect.Effect<void, SqlError>
  /** Migration 5: the current-state table, filled from the logs written before it. */
  readonly createInstances: Effect.Effect<void, SqlError>
  /**
   * The time lease expiry is judged by, in epoch milliseconds: the
   * database's clock on PostgreSQL (`now`, the caller's clock, is ignored),
   * `now` on SQLite (one machine, so one clock).
   */
  readonly leaseClock: (now: number) => Fragment
  /** Runs the migrator so that nodes starting at once take turns. */
  readonly serializeMigrations: <A, E, R>(run: Effect.Effect<A, E, R>) => Effect.Effect<A, E | SqlError, R>
  /** A transaction for writes of several statements. */
  readonly writeTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | SqlError, R>
  /**
   * Deletes the rows of table `from` matching `where` and inserts what the delete
   * returned (`columns`), through `insert`, which reads them from the
   * relation `moved`: a row is moved only by the writer whose delete removed
   * it, never copied after a concurrent writer deleted or changed it.
   * Returns the rows `insert` returns.
   */
  readonly move: <A extends object>(options: {
    readonly from: string
    readonly where: Fragment
    readonly columns: ReadonlyArray<string>
    readonly insert: (moved: Fragment) => Fragment
  }) => Effect.Effect<ReadonlyArray<A>, SqlError>
  /** Writes a snapshot unless a newer one is stored. */
  readonly upsertSnapshot: (machine: string, instanceId: string, snapshot: EncodedSnapshot) => Effect.Effect<unknown, SqlError>
  /** Applies a commit atomically. */
  readonly append: (commit: EncodedCommit) => Effect.Effect<void, AppendFailure | SqlError>
  /**
   * Whether a failed write surely wrote nothing: the database answered with
   * an error (PostgreSQL: a SQLSTATE; SQLite: always, it runs in process),
   * as opposed to a lost connection, after which a COMMIT may have landed.
   */
  readonly refused: (error: SqlError) => boolean
  /**
   * Applies commits of different instances, one event each, in one atomic
   * unit (one statement on PostgreSQL, one transaction on SQLite), each
   * checked on its own as `append` checks it: a refused commit writes
   * nothing and the others are written. One outcome per commit, in order;
   * a failure of the unit (nothing written) fails the whole effect.
   */
  readonly appendGroup: (
    commits: ReadonlyArray<EncodedCommit>
  ) => Effect.Effect<ReadonlyArray<Either.Either<void, AppendFailure>>, SqlError>
}

const eventColumns =
  "machine, instance_id, seq_nr, tag, payload, state_tag, schema_version, ts, source, correlation_id, node, commit_id, timer"
const snapshotColumns = "machine, instance_id, seq_nr, state, stopped, schema_version, ts"
const snapshotUpdate =
  "seq_nr = excluded.seq_nr, state = excluded.state, stopped = excluded.stopped, schema_version = excluded.schema_version, ts = excluded.ts"
const timerReset =
  "generation = excluded.generation, state_tag = excluded.state_tag, due_at = excluded.due_at, payload = excluded.payload, attempts = 0, last_error = NULL, claimed_by = NULL, claimed_until = NULL"

/** Builds the dialect of the client; fails for databases other than PostgreSQL and SQLite. */
export const makeDialect = (sql: SqlClient.SqlClient, t: Tables): Effect.Effect<Dialect, PersistenceError> => {
  const E = sql(t.events)
  const S = sql(t.snapshots)
  const T = sql(t.timers)
  const D = sql(t.deadLetters)
  const empty = sql.literal("")

  const highestStatement = (machine: string, instanceId: string) =>
    sql<{ readonly seq_nr: unknown }>`SELECT COALESCE(MAX(seq_nr), 0) AS seq_nr FROM ${E} WHERE machine = ${machine} AND instance_id = ${instanceId}`
  const highest = (machine: string, instanceId: string) =>
    Effect.map(highestStatement(machine, instanceId), (rows) => toNumber(rows[0]?.seq_nr ?? 0))

  const conflict = (commit: EncodedCommit, actual: number) =>
    new SequenceConflict({
      machine: commit.machine,
      instanceId: commit.instanceId,
      expected: commit.expectedSeqNr,
      actual
    })

  /** A duplicate key on the events table: another writer appended the same seqNr first. */
  const isSequenceKeyViolation = (error: SqlError): boolean => {
    const code = driverCode(error)
    const cause = error.cause as { readonly constraint?: unknown; readonly message?: unknown } | undefined
    return (code === "23505" && cause?.constraint === t.eventsKey) ||
      (code === "SQLITE_CONSTRAINT_PRIMARYKEY" && String(cause?.message).includes(`${t.events}.seq_nr`))
  }

  const onSequenceKeyViolation = <A, E, R>(commit: EncodedCommit, effect: Effect.Effect<A, E | SqlError, R>) =>
    Effect.catchIf(
      effect,
      (error): error is SqlError => error instanceof SqlError && isSequenceKeyViolation(error),
      () => Effect.flatMap(highest(commit.machine, commit.instanceId), (actual) => Effect.fail(conflict(commit, actual)))
    )

  /** `(seq_nr, tag, payload, ...)` rows; `typed` adds the casts pg needs inside `VALUES` of a subquery. */
  const eventRows = (commit: EncodedCommit, typed: (value: unknown, type: string) => Fragment) =>
    sql.csv(commit.events.map((e) =>
      sql`(${typed(e.seqNr, "bigint")}, ${typed(e.tag, "text")}, ${typed(e.payload, "jsonb")}, ${
        typed(e.stateTag, "text")
      }, ${typed(e.schemaVersion, "integer")}, ${typed(e.timestamp, "bigint")}, ${typed(e.source, "text")}, ${
        typed(e.correlationId, "text")
      }, ${typed(e.node, "text")}, ${typed(e.commitId, "text")}, ${typed(e.timer, "text")})`
    ))

  const upsertSnapshot = (json: (text: string) => Fragment, bool: (value: boolean) => boolean | number) =>
  (machine: string, instanceId: string, s: EncodedSnapshot) =>
    sql`INSERT INTO ${S} (${sql.literal(snapshotColumns)}) VALUES (${machine}, ${instanceId}, ${s.seqNr}, ${
      json(s.state)
    }, ${bool(s.stopped)}, ${s.schemaVersion}, ${s.timestamp}) ON CONFLICT (machine, instance_id) DO UPDATE SET ${
      sql.literal(snapshotUpdate)
    } WHERE ${S}.seq_nr < excluded.seq_nr`

  /**
   * Why a commit wrote nothing; `fenced` is whether its lease check (if
   * any) passed, `firedPending` and `completePending` whether the timer row
   * it delivers and the command it completes (if any) were there.
   */
  const failUnapplied = (
    commit: EncodedCommit,
    actual: number,
    fenced: boolean,
    firedPending: boolean,
    completePending: boolean
  ): Effect.Effect<never, AppendFailure> => Effect.fail(unapplied(commit, actual, fenced, firedPending, completePending))

  const unapplied = (
    commit: EncodedCommit,
    actual: number,
    fenced: boolean,
    firedPending: boolean,
    completePending: boolean
  ): AppendFailure => {
    const fence = commit.fence
    if (fence !== undefined && !fenced) {
      return new FencingRejected({ machine: commit.machine, instanceId: commit.instanceId, owner: fence.owner, token: fence.token })
    }
    if (actual !== commit.expectedSeqNr) return conflict(commit, actual)
    const fired = commit.fired
    if (fired !== undefined && !firedPending) {
      return new StaleTimer({ machine: commit.machine, instanceId: commit.instanceId, name: fired.name, generation: fired.generation })
    }
    const complete = commit.complete
    if (complete !== undefined && !completePending) {
      return new StaleCommand({ machine: complete.machine, instanceId: complete.instanceId, seqNr: complete.seqNr, index: complete.index })
    }
    return new PersistenceError({ operation: "append", reason: "the commit's events were not inserted" })
  }

  /**
   * The outcome of each commit of a group from its checks: written, refused
   * for the first check it failed, or (every check passed, nothing written)
   * beaten by a writer whose event landed after the checks read the log:
   * then the log's end is read again for the conflict.
   */
  const groupOutcomes = (
    commits: ReadonlyArray<EncodedCommit>,
    checks: ReadonlyArray<GroupCheck>
  ): Effect.Effect<ReadonlyArray<Either.Either<void, AppendFailure>>, SqlError> =>
    Effect.forEach(commits, (c, k): Effect.Effect<Either.Either<void, AppendFailure>, SqlError> => {
      const check = checks[k]
      if (check === undefined) {
        return Effect.succeed(Either.left(new PersistenceError({ operation: "append", reason: "the group commit returned no outcome for this commit" })))
      }
      if (check.written) return Effect.succeed(Either.right(undefined))
      const refused = unapplied(c, check.actual, check.fenced, check.firedPending, check.completePending)
      if (refused._tag !== "PersistenceError") return Effect.succeed(Either.left(refused))
      // Not written: a failed read of the log's end fails this commit alone,
      // and (not being the group's write) is never taken for a refused group.
      return highest(c.machine, c.instanceId).pipe(
        Effect.map((actual) => Either.left<AppendFailure>(conflict(c, actual))),
        Effect.catchAll((error) =>
          Effect.succeed(Either.left(
            new PersistenceError({
              operation: "append",
              reason: `the commit was not written (another writer was first) and the log's end could not be read: ${error.message}`
            })
          ))
        )
      )
    })

  const L = sql(t.leases)
  const O = sql(t.outbox)
  const OD = sql(t.outboxDeadLetters)
  const commandKey = (key: CommandKey) =>
    sql`machine = ${key.machine} AND instance_id = ${key.instanceId} AND seq_nr = ${key.seqNr} AND idx = ${key.index}`

  /** Migration 4; `types` are the column types of the dialect (`json`, `bigint`, `int`, `text`), `suffix` ends a table. */
  const createOutbox = (types: { readonly json: string; readonly bigint: string; readonly int: string; readonly text: string }, suffix: string) => {
    const columns = `machine ${types.text} NOT NULL,
          instance_id ${types.text} NOT NULL,
          seq_nr ${types.bigint} NOT NULL,
          idx ${types.int} NOT NULL,
          kind ${types.text} NOT NULL,
          tag ${types.text} NOT NULL,
          payload ${types.json} NOT NULL,
          target_machine ${types.text},
          target_instance_id ${types.text},
          correlation_id ${types.text},
          fence_token ${types.bigint},
          created_at ${types.bigint} NOT NULL,
          due_at ${types.bigint} NOT NULL,
          attempts ${types.int} NOT NULL DEFAULT 0,
          last_error ${types.text},`
    return Effect.all([
      sql`CREATE TABLE ${O} (${sql.literal(columns)}
          claimed_by ${sql.literal(types.text)},
          claimed_until ${sql.literal(types.bigint)},
          PRIMARY KEY (machine, instance_id, seq_nr, idx)
        ) ${sql.literal(suffix)}`,
      sql`CREATE INDEX ${sql(t.outboxDue)} ON ${O} (machine, due_at)`,
      sql`CREATE TABLE ${OD} (${sql.literal(columns)}
          failed_at ${sql.literal(types.bigint)} NOT NULL,
          PRIMARY KEY (machine, instance_id, seq_nr, idx)
        ) ${sql.literal(suffix)}`
    ], { discard: true })
  }

  const I = sql(t.instances)
  const instanceColumns = "machine, instance_id, state_tag, seq_nr, entered_at, updated_at, stopped"

  /** How an upsert of the current-state row sets `entered_at` (see `CurrentChange.entered`). */
  const enteredAt = (change: CurrentChange) =>
    change.entered === "yes"
      ? sql.literal("excluded.entered_at")
      : change.entered === "no"
      ? sql`${I}.entered_at`
      : sql`CASE WHEN ${I}.state_tag = excluded.state_tag THEN ${I}.entered_at ELSE excluded.entered_at END`

  const C = sql(t.stateCounts)

  /**
   * The moves between counts a commit makes, as rows `(state_tag, stopped,
   * n)`: +1 for the state it leaves the instance in, -1 for the one it was
   * in (read from the current-state row before the commit's upsert); equal
   * ones net out, so a commit that stays writes nothing. Ordered, so that
   * concurrent commits lock count rows in one order.
   */
  const countMoves = (
    m: string,
    i: string,
    change: CurrentChange,
    typed: (value: unknown, type: string) => Fragment,
    bool: (value: boolean) => boolean | number
  ) =>
    sql`SELECT d.state_tag, d.stopped, SUM(d.n) AS n FROM (SELECT ${typed(change.stateTag, "text COLLATE \"C\"")} AS state_tag, ${
      typed(bool(change.stopped), "boolean")
    } AS stopped, 1 AS n UNION ALL SELECT state_tag, stopped, -1 AS n FROM ${I} WHERE machine = ${m} AND instance_id = ${i}) AS d GROUP BY d.state_tag, d.stopped HAVING SUM(d.n) <> 0`

  const countsUpdate = sql`ON CONFLICT (machine, state_tag, stopped, slot) DO UPDATE SET n = ${C}.n + excluded.n`

  const currentUpdate = (change: CurrentChange) =>
    sql`ON CONFLICT (machine, instance_id) DO UPDATE SET state_tag = excluded.state_tag, seq_nr = excluded.seq_nr, entered_at = ${
      enteredAt(change)
    }, updated_at = excluded.updated_at, stopped = excluded.stopped`

  /**
   * Migration 5. `textC` is the type of the text columns that are ordered
   * (code-point order on both databases). The rows of logs written before
   * it are rebuilt from the events: the state entered when its tag last
   * changed, stopped after an `@stopped` record or a stopped snapshot (an
   * instance ended by a `Machine.stop` transition with no snapshot since
   * shows as running: which transitions stop is known to the machine only).
   */
  const createInstances = (
    types: {
      readonly textC: string
      readonly bigint: string
      readonly int: string
      readonly bool: string
      readonly text: string
    },
    suffix: string,
    countTriggers: boolean
  ) =>
    Effect.all([
      sql`CREATE TABLE ${I} (
          machine ${sql.literal(types.text)} NOT NULL,
          instance_id ${sql.literal(types.textC)} NOT NULL,
          state_tag ${sql.literal(types.textC)} NOT NULL,
          seq_nr ${sql.literal(types.bigint)} NOT NULL,
          entered_at ${sql.literal(types.bigint)} NOT NULL,
          updated_at ${sql.literal(types.bigint)} NOT NULL,
          stopped ${sql.literal(types.bool)} NOT NULL,
          PRIMARY KEY (machine, instance_id)
        ) ${sql.literal(suffix)}`,
      // `stopped` last: a page of one state filtered by stoppedness reads this index alone.
      sql`CREATE INDEX ${sql(t.instancesState)} ON ${I} (machine, state_tag, entered_at, instance_id, stopped)`,
      sql`CREATE INDEX ${sql(t.instancesEntered)} ON ${I} (machine, entered_at, instance_id)`,
      // For instancesByCorrelation; partial, so events without one cost nothing.
      sql`CREATE INDEX IF NOT EXISTS ${sql(`${t.prefix}events_correlation`)} ON ${E} (machine, correlation_id) WHERE correlation_id IS NOT NULL`,
      sql`INSERT INTO ${I} (${sql.literal(instanceColumns)})
        SELECT l.machine, l.instance_id, l.state_tag, l.seq_nr,
          COALESCE((SELECT MIN(x.ts) FROM ${E} x WHERE x.machine = l.machine AND x.instance_id = l.instance_id AND x.seq_nr > COALESCE(
            (SELECT MAX(y.seq_nr) FROM ${E} y WHERE y.machine = l.machine AND y.instance_id = l.instance_id AND y.state_tag <> l.state_tag), 0)), l.ts),
          l.ts,
          EXISTS (SELECT 1 FROM ${E} s WHERE s.machine = l.machine AND s.instance_id = l.instance_id AND s.tag = '@stopped')
            OR EXISTS (SELECT 1 FROM ${S} p WHERE p.machine = l.machine AND p.instance_id = l.instance_id AND p.stopped = ${
        sql.literal(types.bool === "boolean" ? "true" : "1")
      })
        FROM ${E} l
        WHERE l.seq_nr = (SELECT MAX(z.seq_nr) FROM ${E} z WHERE z.machine = l.machine AND z.instance_id = l.instance_id)`,
      // Counts per state, kept by every commit that moves an instance between them, in slots.
      sql`CREATE TABLE ${C} (
          machine ${sql.literal(types.text)} NOT NULL,
          state_tag ${sql.literal(types.textC)} NOT NULL,
          stopped ${sql.literal(types.bool)} NOT NULL,
          slot ${sql.literal(types.int)} NOT NULL,
          n ${sql.literal(types.bigint)} NOT NULL,
          PRIMARY KEY (machine, state_tag, stopped, slot)
        ) ${sql.literal(suffix)}`,
      sql`INSERT INTO ${C} (machine, state_tag, stopped, slot, n) SELECT machine, state_tag, stopped, 0, COUNT(*) FROM ${I} GROUP BY machine, state_tag, stopped`,
      ...(countTriggers ? countsTriggers() : [])
    ], { discard: true })

  /**
   * SQLite keeps the counts with triggers on the current-state table: run
   * by SQLite itself inside the commit's statement, they save the commit a
   * statement (and its round through the driver) per state change.
   * PostgreSQL keeps them in the commit's own statement (a CTE), where a
   * trigger would add a function call per row for nothing.
   */
  const countsTriggers = () => [
    sql`CREATE TRIGGER ${sql(`${t.prefix}instances_counted_insert`)} AFTER INSERT ON ${I} BEGIN
        INSERT INTO ${C} (machine, state_tag, stopped, slot, n) VALUES (new.machine, new.state_tag, new.stopped, 0, 1)
          ON CONFLICT (machine, state_tag, stopped, slot) DO UPDATE SET n = n + 1;
      END`,
    sql`CREATE TRIGGER ${sql(`${t.prefix}instances_counted_update`)} AFTER UPDATE OF state_tag, stopped ON ${I}
        WHEN old.state_tag IS NOT new.state_tag OR old.stopped IS NOT new.stopped BEGIN
        INSERT INTO ${C} (machine, state_tag, stopped, slot, n) VALUES (new.machine, new.state_tag, new.stopped, 0, 1)
          ON CONFLICT (machine, state_tag, stopped, slot) DO UPDATE SET n = n + 1;
        UPDATE ${C} SET n = n - 1 WHERE machine = old.machine AND state_tag = old.state_tag AND stopped = old.stopped AND slot = 0;
      END`
  ]

  const pg = (): Dialect => {
    const typed = (value: unknown, type: string) => sql`${value}::${sql.literal(type)}`
    const json = (text: string) => sql`${text}::jsonb`
    const bool = (value: boolean) => value

    const commitStatement = (c: EncodedCommit) => {
      const m = c.machine
      const i = c.instanceId
      const fired = c.fired
      const ctes: Array<Fragment> = [
        sql`guard AS (SELECT COALESCE(MAX(seq_nr), 0) AS actual FROM ${E} WHERE machine = ${m} AND instance_id = ${i})`
      ]
      if (fired !== undefined) {
        ctes.push(
          // Locked, so a concurrent change of that timer row (retried,
          // dead-lettered) is waited for and seen.
          sql`fired AS (SELECT 1 FROM ${T} WHERE machine = ${m} AND instance_id = ${i} AND name = ${fired.name} AND generation = ${fired.generation} FOR UPDATE)`
        )
      }
      const fence = c.fence
      if (fence !== undefined) {
        ctes.push(
          // FOR SHARE: a takeover updating the row waits for this statement,
          // or this statement waits for the takeover and re-reads the row
          // (then with the new token, so the commit is refused). The takeover
          // locks only that row, so the two cannot deadlock.
          sql`fence AS (SELECT 1 FROM ${L} WHERE machine = ${m} AND instance_id = ${i} AND owner = ${fence.owner} AND token = ${fence.token}::bigint FOR SHARE)`
        )
      }
      const complete = c.complete
      if (complete !== undefined) {
        // Locked like the fired timer: a concurrent completion is waited for and seen.
        ctes.push(sql`pending AS (SELECT 1 FROM ${O} WHERE ${commandKey(complete)} FOR UPDATE)`)
      }
      ctes.push(
        sql`ok AS (SELECT 1 FROM guard WHERE actual = ${c.expectedSeqNr}${
          fired === undefined ? empty : sql` AND EXISTS (SELECT 1 FROM fired)`
        }${fence === undefined ? empty : sql` AND EXISTS (SELECT 1 FROM fence)`}${
          complete === undefined ? empty : sql` AND EXISTS (SELECT 1 FROM pending)`
        })`,
        sql`ins AS (INSERT INTO ${E} (${sql.literal(eventColumns)}) SELECT ${m}::text, ${i}::text, v.* FROM (VALUES ${
          eventRows(c, typed)
        }) AS v WHERE EXISTS (SELECT 1 FROM ok) RETURNING 1)`
      )
      const s = c.snapshot
      if (s !== undefined) {
        ctes.push(
          sql`snap AS (INSERT INTO ${S} (${sql.literal(snapshotColumns)}) SELECT ${m}::text, ${i}::text, ${s.seqNr}::bigint, ${s.state}::jsonb, ${s.stopped}::boolean, ${s.schemaVersion}::integer, ${s.timestamp}::bigint WHERE EXISTS (SELECT 1 FROM ok) ON CONFLICT (machine, instance_id) DO UPDATE SET ${
            sql.literal(snapshotUpdate)
          } WHERE ${S}.seq_nr < excluded.seq_nr)`
        )
      }
      // One statement must not touch a row twice, so the delete spares the
      // names the schedule (an upsert) writes anyway.
      if (c.cancelAll || fired !== undefined) {
        const which = c.cancelAll || fired === undefined ? empty : sql` AND name = ${fired.name}`
        const spare = c.schedule.length === 0 ? empty : sql` AND name NOT IN ${sql.in(c.schedule.map((timer) => timer.name))}`
        ctes.push(
          sql`del AS (DELETE FROM ${T} WHERE machine = ${m} AND instance_id = ${i}${which}${spare} AND EXISTS (SELECT 1 FROM ok))`
        )
      }
      if (c.schedule.length > 0) {
        const rows = sql.csv(c.schedule.map((timer) =>
          sql`(${timer.name}::text, ${timer.generation}::bigint, ${timer.stateTag}::text, ${timer.dueAt}::bigint, ${timer.payload}::jsonb)`
        ))
        ctes.push(
          sql`sched AS (INSERT INTO ${T} (machine, instance_id, name, generation, state_tag, due_at, payload, attempts) SELECT ${m}::text, ${i}::text, v.*, 0 FROM (VALUES ${rows}) AS v WHERE EXISTS (SELECT 1 FROM ok) ON CONFLICT (machine, instance_id, name) DO UPDATE SET ${
            sql.literal(timerReset)
          })`
        )
      }
      if (complete !== undefined) {
        ctes.push(sql`done AS (DELETE FROM ${O} WHERE ${commandKey(complete)} AND EXISTS (SELECT 1 FROM ok))`)
      }
      if (c.produce.length > 0) {
        const last = c.events[c.events.length - 1]!
        const rows = sql.csv(c.produce.map((command) =>
          sql`(${command.index}::integer, ${command.kind}::text, ${command.tag}::text, ${command.payload}::jsonb, ${command.targetMachine}::text, ${command.targetInstanceId}::text, ${command.correlationId}::text, ${command.fenceToken}::bigint)`
        ))
        ctes.push(
          sql`cmds AS (INSERT INTO ${O} (machine, instance_id, seq_nr, idx, kind, tag, payload, target_machine, target_instance_id, correlation_id, fence_token, created_at, due_at, attempts) SELECT ${m}::text, ${i}::text, ${last.seqNr}::bigint, v.*, ${last.timestamp}::bigint, ${last.timestamp}::bigint, 0 FROM (VALUES ${rows}) AS v WHERE EXISTS (SELECT 1 FROM ok))`
        )
      }
      const cur = c.current
      ctes.push(
        // Reads the row before `cur` rewrites it: every CTE sees the statement's
        // snapshot. Always there, so that the counts follow the stored rows
        // whatever the commit says of itself (one that stays nets to no row).
        sql`counts AS (INSERT INTO ${C} (machine, state_tag, stopped, slot, n) SELECT ${m}::text, moves.state_tag, moves.stopped, ${
          countSlot(i, pgCountSlots)
        }::integer, moves.n FROM (${countMoves(m, i, cur, typed, bool)}) AS moves WHERE EXISTS (SELECT 1 FROM ok) ORDER BY moves.state_tag, moves.stopped ${countsUpdate})`,
        sql`cur AS (INSERT INTO ${I} (${sql.literal(instanceColumns)}) SELECT ${m}::text, ${i}::text, ${cur.stateTag}::text, ${cur.seqNr}::bigint, ${cur.enteredAt}::bigint, ${cur.updatedAt}::bigint, ${cur.stopped}::boolean WHERE EXISTS (SELECT 1 FROM ok) ${
          currentUpdate(cur)
        })`
      )
      const exists = (cte: string, present: boolean) => sql.literal(present ? `EXISTS (SELECT 1 FROM ${cte})` : "true")
      return sql<
        {
          readonly actual: unknown
          readonly inserted: unknown
          readonly fenced: unknown
          readonly fired_pending: unknown
          readonly complete_pending: unknown
        }
      >`WITH ${sql.csv(ctes)} SELECT (SELECT actual FROM guard) AS actual, (SELECT count(*) FROM ins)::integer AS inserted, ${
        exists("fence", fence !== undefined)
      } AS fenced, ${exists("fired", fired !== undefined)} AS fired_pending, ${
        exists("pending", complete !== undefined)
      } AS complete_pending`
    }

    const append = (c: EncodedCommit) => {
      const once = Effect.flatMap(commitStatement(c), (rows) => {
        const row = rows[0]
        return toNumber(row?.inserted ?? 0) === c.events.length
          ? Effect.void
          : failUnapplied(
            c,
            toNumber(row?.actual ?? 0),
            toBoolean(row?.fenced ?? false),
            toBoolean(row?.fired_pending ?? false),
            toBoolean(row?.complete_pending ?? false)
          )
      })
      // Inside a caller's transaction a failed statement would poison it (and
      // the conflict lookup after it): a savepoint keeps the failure local.
      const inPlace = Effect.flatMap(
        Effect.serviceOption(SqlClient.TransactionConnection),
        (outer) => Option.isSome(outer) ? transactionFailures(sql.withTransaction(once)) : once
      )
      return onSequenceKeyViolation(c, inPlace)
    }

    /** `unnest(...) WITH ORDINALITY AS u(..., ord)` of `items`: one array parameter a column, whatever the number of items. */
    const unnest = <A>(items: ReadonlyArray<A>, columns: ReadonlyArray<GroupColumn<A>>) =>
      sql`unnest(${sql.csv(columns.map((column) => sql`${pgArray(items, column.value)}::${sql.literal(column.type)}[]`))}) WITH ORDINALITY AS ${
        sql.literal(`u(${columns.map((column) => column.name).join(", ")}, ord)`)
      }`

    /**
     * A group as one statement. `input` holds one row per commit (`k` is
     * its index); the checks read the statement's snapshot as a lone
     * commit's do, and every write after the events insert is gated on the
     * events that insert really wrote (`done`): an event beaten to its slot
     * by a concurrent writer is skipped (`ON CONFLICT DO NOTHING`, one
     * event per commit), and so are its timer, outbox, snapshot, count and
     * current-state writes. Rows are written in `(machine, instance_id)`
     * order (the caller sorts the group), so two groups meet in one order.
     */
    const groupStatement = (cs: ReadonlyArray<EncodedCommit>) => {
      const anyFired = cs.some((c) => c.fired !== undefined)
      const anyFence = cs.some((c) => c.fence !== undefined)
      const anyComplete = cs.some((c) => c.complete !== undefined)
      const anySnapshot = cs.some((c) => c.snapshot !== undefined)
      const anyDelete = cs.some((c) => c.cancelAll || c.fired !== undefined)
      const schedules = cs.flatMap((c, k) => c.schedule.map((timer) => ({ k, timer })))
      const commands = cs.flatMap((c, k) => c.produce.map((command) => ({ k, command })))
      const ctes: Array<Fragment> = [
        sql`input AS (SELECT (u.ord - 1)::integer AS k, ${sql.literal(groupInputSelect)}, ${
          jsonArray(cs.map((c) => c.events[0]!.payload))
        }::jsonb -> (u.ord - 1)::integer AS payload, CASE WHEN u.snap_seq IS NULL THEN NULL ELSE ${
          jsonArray(cs.map((c) => c.snapshot?.state))
        }::jsonb -> (u.ord - 1)::integer END AS snap_state FROM ${unnest(cs, groupInputColumns)})`,
        sql`guard AS (SELECT i.k, (SELECT COALESCE(MAX(x.seq_nr), 0) FROM ${E} x WHERE x.machine = i.machine AND x.instance_id = i.instance_id) AS actual FROM input i)`
      ]
      // Locked as a lone commit locks them (see `commitStatement`).
      if (anyFired) {
        ctes.push(
          sql`fired AS (SELECT i.k FROM input i JOIN ${T} x ON x.machine = i.machine AND x.instance_id = i.instance_id AND x.name = i.fired_name AND x.generation = i.fired_gen ORDER BY i.k FOR UPDATE OF x)`
        )
      }
      if (anyFence) {
        ctes.push(
          sql`fence AS (SELECT i.k FROM input i JOIN ${L} x ON x.machine = i.machine AND x.instance_id = i.instance_id AND x.owner = i.fence_owner AND x.token = i.fence_token ORDER BY i.k FOR SHARE OF x)`
        )
      }
      if (anyComplete) {
        ctes.push(
          sql`pending AS (SELECT i.k FROM input i JOIN ${O} x ON x.machine = i.c_machine AND x.instance_id = i.c_instance AND x.seq_nr = i.c_seq AND x.idx = i.c_idx ORDER BY i.k FOR UPDATE OF x)`
        )
      }
      ctes.push(
        sql`ok AS (SELECT i.k FROM input i JOIN guard g ON g.k = i.k WHERE g.actual = i.expected${
          anyFired ? sql` AND (i.fired_name IS NULL OR i.k IN (SELECT k FROM fired))` : empty
        }${anyFence ? sql` AND (i.fence_owner IS NULL OR i.k IN (SELECT k FROM fence))` : empty}${
          anyComplete ? sql` AND (i.c_machine IS NULL OR i.k IN (SELECT k FROM pending))` : empty
        })`,
        sql`ins AS (INSERT INTO ${E} (${
          sql.literal(eventColumns)
        }) SELECT i.machine, i.instance_id, i.seq_nr, i.tag, i.payload, i.state_tag, i.schema_version, i.ts, i.source, i.correlation_id, i.node, i.commit_id, i.timer FROM input i WHERE i.k IN (SELECT k FROM ok) ORDER BY i.k ON CONFLICT (machine, instance_id, seq_nr) DO NOTHING RETURNING machine, instance_id)`,
        sql`done AS (SELECT i.* FROM input i JOIN ins ON ins.machine = i.machine AND ins.instance_id = i.instance_id)`
      )
      if (anySnapshot) {
        ctes.push(
          sql`snap AS (INSERT INTO ${S} (${
            sql.literal(snapshotColumns)
          }) SELECT d.machine, d.instance_id, d.snap_seq, d.snap_state, d.snap_stopped, d.snap_version, d.snap_ts FROM done d WHERE d.snap_seq IS NOT NULL ORDER BY d.k ON CONFLICT (machine, instance_id) DO UPDATE SET ${
            sql.literal(snapshotUpdate)
          } WHERE ${S}.seq_nr < excluded.seq_nr)`
        )
      }
      if (schedules.length > 0) {
        ctes.push(
          sql`sched AS (SELECT u.k, u.name, u.generation, u.state_tag, u.due_at, ${
            jsonArray(schedules.map(({ timer }) => timer.payload))
          }::jsonb -> (u.ord - 1)::integer AS payload FROM ${unnest(schedules, scheduleColumns)})`
        )
      }
      if (anyDelete) {
        // Spares the names the schedule writes anyway (one statement must not touch a row twice).
        ctes.push(
          sql`del AS (DELETE FROM ${T} x USING done d WHERE x.machine = d.machine AND x.instance_id = d.instance_id AND (d.cancel_all OR x.name = d.fired_name)${
            schedules.length > 0 ? sql` AND NOT EXISTS (SELECT 1 FROM sched s WHERE s.k = d.k AND s.name = x.name)` : empty
          })`
        )
      }
      if (schedules.length > 0) {
        ctes.push(
          sql`schedw AS (INSERT INTO ${T} (machine, instance_id, name, generation, state_tag, due_at, payload, attempts) SELECT d.machine, d.instance_id, s.name, s.generation, s.state_tag, s.due_at, s.payload, 0 FROM sched s, done d WHERE d.k = s.k ORDER BY d.k, s.name ON CONFLICT (machine, instance_id, name) DO UPDATE SET ${
            sql.literal(timerReset)
          })`
        )
      }
      if (anyComplete) {
        ctes.push(
          sql`donecmd AS (DELETE FROM ${O} x USING done d WHERE x.machine = d.c_machine AND x.instance_id = d.c_instance AND x.seq_nr = d.c_seq AND x.idx = d.c_idx)`
        )
      }
      if (commands.length > 0) {
        ctes.push(
          sql`cmd AS (SELECT u.k, u.idx, u.kind, u.tag, ${
            jsonArray(commands.map(({ command }) => command.payload))
          }::jsonb -> (u.ord - 1)::integer AS payload, u.target_machine, u.target_instance_id, u.correlation_id, u.fence_token FROM ${
            unnest(commands, commandColumns)
          })`,
          sql`cmds AS (INSERT INTO ${O} (machine, instance_id, seq_nr, idx, kind, tag, payload, target_machine, target_instance_id, correlation_id, fence_token, created_at, due_at, attempts) SELECT d.machine, d.instance_id, d.seq_nr, c.idx, c.kind, c.tag, c.payload, c.target_machine, c.target_instance_id, c.correlation_id, c.fence_token, d.ts, d.ts, 0 FROM cmd c, done d WHERE d.k = c.k)`
        )
      }
      ctes.push(
        // As a lone commit's: +1 for the state each commit leaves its
        // instance in, -1 for the stored row's (the statement's snapshot,
        // before `cur`), netted per count row, locked in one order.
        sql`counts AS (INSERT INTO ${C} (machine, state_tag, stopped, slot, n) SELECT m.machine, m.state_tag, m.stopped, m.slot, SUM(m.n) FROM (SELECT d.machine, d.cur_state AS state_tag, d.cur_stopped AS stopped, d.slot, 1 AS n FROM done d UNION ALL SELECT x.machine, x.state_tag, x.stopped, d.slot, -1 AS n FROM done d JOIN ${I} x ON x.machine = d.machine AND x.instance_id = d.instance_id) AS m GROUP BY m.machine, m.state_tag, m.stopped, m.slot HAVING SUM(m.n) <> 0 ORDER BY m.machine, m.state_tag, m.stopped, m.slot ${countsUpdate})`,
        sql`cur AS (INSERT INTO ${I} (${
          sql.literal(instanceColumns)
        }) SELECT d.machine, d.instance_id, d.cur_state, d.cur_seq, CASE WHEN x.instance_id IS NULL OR d.cur_mode = 'yes' THEN d.cur_entered WHEN d.cur_mode = 'no' OR x.state_tag = d.cur_state THEN x.entered_at ELSE d.cur_entered END, d.cur_updated, d.cur_stopped FROM done d LEFT JOIN ${I} x ON x.machine = d.machine AND x.instance_id = d.instance_id WHERE true ORDER BY d.k ON CONFLICT (machine, instance_id) DO UPDATE SET state_tag = excluded.state_tag, seq_nr = excluded.seq_nr, entered_at = excluded.entered_at, updated_at = excluded.updated_at, stopped = excluded.stopped)`
      )
      const passed = (cte: string, column: string, present: boolean) =>
        present ? sql.literal(`(i.${column} IS NULL OR i.k IN (SELECT k FROM ${cte}))`) : sql.literal("true")
      return sql<
        {
          readonly k: unknown
          readonly actual: unknown
          readonly written: unknown
          readonly fenced: unknown
          readonly fired_pending: unknown
          readonly complete_pending: unknown
        }
      >`WITH ${sql.csv(ctes)} SELECT i.k, g.actual, (i.k IN (SELECT k FROM done)) AS written, ${
        passed("fence", "fence_owner", anyFence)
      } AS fenced, ${passed("fired", "fired_name", anyFired)} AS fired_pending, ${
        passed("pending", "c_machine", anyComplete)
      } AS complete_pending FROM input i JOIN guard g ON g.k = i.k ORDER BY i.k`
    }

    const appendGroup = (cs: ReadonlyArray<EncodedCommit>) =>
      Effect.flatMap(groupStatement(cs), (rows) =>
        groupOutcomes(
          cs,
          rows.map((row) => ({
            written: toBoolean(row.written),
            actual: toNumber(row.actual),
            fenced: toBoolean(row.fenced),
            firedPending: toBoolean(row.fired_pending),
            completePending: toBoolean(row.complete_pending)
          }))
        ))

    return {
      name: "pg",
      json,
      read: (statement) => statement,
      readValues: (statement) => statement.values,
      jsonText: (column) => sql`${sql(column)}::text`,
      bool,
      // json_agg on the server: a replay read 385k events a second against 507k with rows.
      jsonColumns: undefined,
      skipLocked: sql.literal("FOR UPDATE SKIP LOCKED"),
      collateC: sql.literal('COLLATE "C"'),
      createTables: Effect.all([
        sql`CREATE TABLE ${E} (
          machine text NOT NULL,
          instance_id text NOT NULL,
          seq_nr bigint NOT NULL,
          tag text NOT NULL,
          payload jsonb NOT NULL,
          state_tag text NOT NULL,
          schema_version integer NOT NULL,
          ts bigint NOT NULL,
          source text NOT NULL,
          correlation_id text,
          node text,
          CONSTRAINT ${sql(t.eventsKey)} PRIMARY KEY (machine, instance_id, seq_nr)
        )`,
        sql`CREATE INDEX ${sql(t.eventsFirst)} ON ${E} (machine, instance_id) WHERE seq_nr = 1`,
        sql`CREATE TABLE ${S} (
          machine text NOT NULL,
          instance_id text NOT NULL,
          seq_nr bigint NOT NULL,
          state jsonb NOT NULL,
          stopped boolean NOT NULL,
          schema_version integer NOT NULL,
          ts bigint NOT NULL,
          PRIMARY KEY (machine, instance_id)
        )`,
        sql`CREATE TABLE ${T} (
          machine text NOT NULL,
          instance_id text NOT NULL,
          name text NOT NULL,
          generation bigint NOT NULL,
          state_tag text NOT NULL,
          due_at bigint NOT NULL,
          payload jsonb NOT NULL,
          attempts integer NOT NULL DEFAULT 0,
          last_error text,
          claimed_by text,
          claimed_until bigint,
          PRIMARY KEY (machine, instance_id, name)
        )`,
        sql`CREATE INDEX ${sql(t.timersDue)} ON ${T} (machine, due_at)`,
        sql`CREATE TABLE ${D} (
          machine text NOT NULL,
          instance_id text NOT NULL,
          name text NOT NULL,
          generation bigint NOT NULL,
          state_tag text NOT NULL,
          due_at bigint NOT NULL,
          payload jsonb NOT NULL,
          attempts integer NOT NULL,
          last_error text,
          failed_at bigint NOT NULL,
          PRIMARY KEY (machine, instance_id, name)
        )`
      ], { discard: true }),
      addCommitColumns: Effect.all([
        sql`ALTER TABLE ${E} ADD COLUMN commit_id text`,
        sql`ALTER TABLE ${E} ADD COLUMN timer text`
      ], { discard: true }),
      // A released lease keeps its row (owner NULL), so its token goes on increasing.
      createLeases: sql`CREATE TABLE ${L} (
          machine text NOT NULL,
          instance_id text NOT NULL,
          owner text,
          token bigint NOT NULL,
          expires_at bigint NOT NULL,
          PRIMARY KEY (machine, instance_id)
        )`.pipe(Effect.asVoid),
      createOutbox: createOutbox({ json: "jsonb", bigint: "bigint", int: "integer", text: "text" }, ""),
      createInstances: createInstances({ textC: "text COLLATE \"C\"", bigint: "bigint", int: "integer", bool: "boolean", text: "text" }, "", false),
      leaseClock: () => sql.literal("(extract(epoch from clock_timestamp()) * 1000)::bigint"),
      // The Migrator creates its table with "SELECT 'name'::regclass, else
      // CREATE TABLE", which races between nodes and, inside a transaction,
      // aborts it. So: one transaction holding an advisory lock per schema and
      // prefix, which creates the migrations table (same shape as the
      // Migrator's) before the Migrator runs in a savepoint of it.
      serializeMigrations: (run) =>
        sql.withTransaction(
          sql`SELECT pg_advisory_xact_lock(hashtext(COALESCE(current_schema(), '') || '.' || ${t.migrations}::text))`.pipe(
            // A chosen schema is created first (under the lock: nodes take turns).
            Effect.zipRight(t.schema === undefined ? Effect.void : sql`CREATE SCHEMA IF NOT EXISTS ${sql(t.schema)}`),
            Effect.zipRight(
              sql`CREATE TABLE IF NOT EXISTS ${sql(t.migrations)} (
                migration_id integer primary key,
                created_at timestamp with time zone not null default now(),
                name text not null
              )`
            ),
            Effect.zipRight(run)
          )
        ),
      writeTransaction: (effect) => transactionFailures(sql.withTransaction(effect)),
      // One statement: the delete locks the row (waiting for a commit that
      // holds it, then re-checking `where`), and the insert sees only what it
      // deleted.
      move: <A extends object>({ columns, from, insert, where }: Parameters<Dialect["move"]>[0]) =>
        sql<A>`WITH moved AS (DELETE FROM ${sql(from)} WHERE ${where} RETURNING ${sql.literal(columns.join(", "))}) ${
          insert(sql.literal("moved"))
        }`,
      upsertSnapshot: upsertSnapshot(json, bool),
      append,
      appendGroup,
      // Only the server's own answer (a DatabaseError: it has a severity)
      // means the statement failed and was rolled back, and only for the
      // classes a commit's data or a race can cause: data exceptions (22),
      // integrity (23), rollbacks such as deadlocks (40), a trigger's errors
      // (42, P0). Not a socket error (EPIPE looks like a SQLSTATE) nor the
      // connection, resource, lock-wait or cancel classes, after which the
      // group may have landed, or writing each commit alone would only fail
      // as many times over.
      refused: (error) => {
        const cause = error.cause as { readonly severity?: unknown } | undefined
        const code = driverCode(error)
        return typeof cause?.severity === "string" && typeof code === "string" && /^(22|23|40|42|P0)[0-9A-Z]{3}$/.test(code)
      }
    }
  }

  /** The outbox row of a command a commit produces: keyed by its last event, created at its time. */
  const outboxRow = (c: EncodedCommit, command: EncodedCommand) => {
    const last = c.events[c.events.length - 1]!
    return {
      machine: c.machine,
      instance_id: c.instanceId,
      seq_nr: last.seqNr,
      idx: command.index,
      kind: command.kind,
      tag: command.tag,
      payload: command.payload,
      target_machine: command.targetMachine,
      target_instance_id: command.targetInstanceId,
      correlation_id: command.correlationId,
      fence_token: command.fenceToken,
      created_at: last.timestamp,
      due_at: last.timestamp,
      attempts: 0
    }
  }

  /** Arms timers (a re-armed name replaces its row, attempts reset), in one multi-row statement. */
  const scheduleTimers = (timers: ReadonlyArray<{ readonly c: EncodedCommit; readonly timer: EncodedTimer }>) =>
    sql`INSERT INTO ${T} ${
      sql.insert(timers.map(({ c, timer }) => ({
        machine: c.machine,
        instance_id: c.instanceId,
        name: timer.name,
        generation: timer.generation,
        state_tag: timer.stateTag,
        due_at: timer.dueAt,
        payload: timer.payload,
        attempts: 0
      })))
    } ON CONFLICT (machine, instance_id, name) DO UPDATE SET ${sql.literal(timerReset)}`

  const sqlite = (): Dialect => {
    const typed = (value: unknown) => sql`${value}`
    const json = (text: string) => sql`${text}`
    const bool = (value: boolean) => value ? 1 : 0
    const snapshotWriter = upsertSnapshot(json, bool)
    // `sql.withTransaction` turns a failed COMMIT into a defect and releases
    // the connection as it is; SQLite (unlike PostgreSQL) keeps a transaction
    // whose COMMIT failed (a deferred foreign key, SQLITE_BUSY) open, so the
    // next statements of any fiber would run inside it and the next BEGIN
    // would fail. So the outermost transaction is run here: COMMIT, and
    // ROLLBACK when it fails, on the reserved connection, before its permit
    // is released (the rollback cannot hit another fiber's transaction).
    const outermost = <A, E, R>(effect: Effect.Effect<A, E, R>, begin = "BEGIN"): Effect.Effect<A, E | SqlError, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.scoped(Effect.gen(function*() {
          const conn = yield* sql.reserve
          // Prepared once and cached by the client (`executeUnprepared` would prepare them on every commit).
          const run = (statement: string) => conn.execute(statement, [], undefined)
          yield* run(begin)
          const exit = yield* Effect.exit(restore(Effect.provideService(effect, SqlClient.TransactionConnection, [conn, 0])))
          if (Exit.isFailure(exit)) return yield* Effect.zipRight(run("ROLLBACK"), exit)
          // The ROLLBACK fails only where SQLite has ended the transaction itself.
          yield* Effect.tapError(run("COMMIT"), () => Effect.ignore(run("ROLLBACK")))
          return exit.value
        }))
      ).pipe(span("sql.transaction", { kind: "client" }))
    const writeTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>, begin = "BEGIN"): Effect.Effect<A, E | SqlError, R> =>
      Effect.withMaxOpsBeforeYield(
        Effect.flatMap(
          Effect.serviceOption(SqlClient.TransactionConnection),
          (outer) => Option.isSome(outer) ? transactionFailures(sql.withTransaction(effect)) : outermost(effect, begin)
        ),
        Number.MAX_SAFE_INTEGER
      )

    /**
     * A write of `steps` as its own transaction (`begin`), rolled back when
     * `rollback` accepts its result: in one synchronous step on the
     * connection when the client offers one (`directOf`) and nothing would
     * tell the difference (no tracer installed, which keeps the `sql.execute`
     * spans; no statement transformer; not inside a caller's transaction,
     * whose connection it must use), else statement by statement.
     */
    const direct = directOf(sql)
    /** Whether a statement may run on `direct` in `fiber` without anything telling the difference. */
    const directAllowed = (fiber: Fiber.RuntimeFiber<unknown, unknown>) =>
      !isTracing(fiber) && Option.isNone(fiber.getFiberRef(Statement.currentTransformer)) &&
      Option.isNone(Context.getOption(fiber.currentContext, SqlClient.TransactionConnection))
    const readDirect = <A>(statement: Statement.Statement<any>, asValues: boolean, usual: Effect.Effect<ReadonlyArray<A>, SqlError>) =>
      direct === undefined ? usual : Effect.withFiberRuntime<ReadonlyArray<A>, SqlError>((fiber) => {
        if (!directAllowed(fiber)) return usual
        const [text, params] = statement.compile()
        return Effect.flatMap(direct.query(text, params, asValues), (ran) => Option.isSome(ran) ? Effect.succeed(ran.value) : usual)
      })
    const writeSteps = <A>(
      begin: "BEGIN" | "BEGIN IMMEDIATE",
      steps: () => Steps<A>,
      rollback: (result: A) => boolean
    ): Effect.Effect<A, SqlError> => {
      const usual = Effect.catchIf(
        writeTransaction(
          // Always there: both kinds of write transaction provide it.
          Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (transaction) =>
            Effect.flatMap(
              runSteps(steps, runner(transaction)),
              (result) => rollback(result) ? Effect.fail(new RolledBack(result)) : Effect.succeed(result)
            )),
          begin
        ),
        (error): error is RolledBack<A> => error instanceof RolledBack,
        (rolledBack) => Effect.succeed(rolledBack.result)
      )
      if (direct === undefined) return usual
      return Effect.withFiberRuntime((fiber) => {
        if (!directAllowed(fiber)) return usual
        return Effect.flatMap(direct.transaction(begin, steps, rollback), (ran) => Option.isSome(ran) ? Effect.succeed(ran.value) : usual)
      })
    }

    /** The statements of a lone commit; `undefined` when it is written, else why it was not (and nothing was). */
    function* appendSteps(c: EncodedCommit): Steps<AppendFailure | undefined> {
      const m = c.machine
      const i = c.instanceId
      const inserted = yield sql`INSERT INTO ${E} (${sql.literal(eventColumns)}) SELECT ${m}, ${i}, v.* FROM (VALUES ${
        eventRows(c, typed)
      }) AS v WHERE (SELECT COALESCE(MAX(seq_nr), 0) FROM ${E} WHERE machine = ${m} AND instance_id = ${i}) = ${c.expectedSeqNr} RETURNING seq_nr`
      // Read under the write lock the insert took: no takeover can come between.
      const fence = c.fence
      const fenced = fence === undefined ||
        (yield sql`SELECT 1 AS held FROM ${L} WHERE machine = ${m} AND instance_id = ${i} AND owner = ${fence.owner} AND token = ${fence.token}`)
            .length > 0
      if (inserted.length !== c.events.length) {
        const rows = yield highestStatement(m, i)
        return unapplied(c, toNumber(rows[0]?.seq_nr ?? 0), fenced, true, true)
      }
      if (!fenced) return unapplied(c, c.expectedSeqNr, fenced, true, true)
      const fired = c.fired
      if (fired !== undefined) {
        const deleted = yield sql`DELETE FROM ${T} WHERE machine = ${m} AND instance_id = ${i} AND name = ${fired.name} AND generation = ${fired.generation} RETURNING name`
        if (deleted.length === 0) return unapplied(c, c.expectedSeqNr, fenced, false, true)
      }
      const complete = c.complete
      if (complete !== undefined) {
        const done = yield sql`DELETE FROM ${O} WHERE ${commandKey(complete)} RETURNING idx`
        if (done.length === 0) return unapplied(c, c.expectedSeqNr, fenced, true, false)
      }
      if (c.produce.length > 0) {
        yield sql`INSERT INTO ${O} ${sql.insert(c.produce.map((command) => outboxRow(c, command)))}`
      }
      if (c.cancelAll) yield sql`DELETE FROM ${T} WHERE machine = ${m} AND instance_id = ${i}`
      if (c.schedule.length > 0) yield scheduleTimers(c.schedule.map((timer) => ({ c, timer })))
      if (c.snapshot !== undefined) yield snapshotWriter(m, i, c.snapshot)
      const cur = c.current
      // The counts per state follow by trigger (see `countsTriggers`).
      yield sql`INSERT INTO ${I} (${sql.literal(instanceColumns)}) VALUES (${m}, ${i}, ${cur.stateTag}, ${cur.seqNr}, ${cur.enteredAt}, ${cur.updatedAt}, ${
        bool(cur.stopped)
      }) ${currentUpdate(cur)}`
      return undefined
    }

    const append = (c: EncodedCommit) =>
      onSequenceKeyViolation(
        c,
        Effect.flatMap(
          writeSteps("BEGIN", () => appendSteps(c), (failure) => failure !== undefined),
          (failure) => failure === undefined ? Effect.void : Effect.fail(failure)
        )
      )

    /** The checks of a chunk of a group's commits, a row per commit, in order (see `groupSteps`). */
    const checkRead = (chunk: ReadonlyArray<EncodedCommit>) =>
      sql`WITH v (k, m, i, fence_owner, fence_token, fired_name, fired_gen, c_machine, c_instance, c_seq, c_idx) AS (VALUES ${
        sql.csv(chunk.map((c, k) =>
          sql`(${k}, ${c.machine}, ${c.instanceId}, ${c.fence?.owner ?? null}, ${c.fence?.token ?? null}, ${c.fired?.name ?? null}, ${
            c.fired?.generation ?? null
          }, ${c.complete?.machine ?? null}, ${c.complete?.instanceId ?? null}, ${c.complete?.seqNr ?? null}, ${c.complete?.index ?? null})`
        ))
      }) SELECT (SELECT COALESCE(MAX(seq_nr), 0) FROM ${E} WHERE machine = v.m AND instance_id = v.i) AS actual, (v.fence_owner IS NULL OR EXISTS (SELECT 1 FROM ${L} WHERE machine = v.m AND instance_id = v.i AND owner = v.fence_owner AND token = v.fence_token)) AS fenced, (v.fired_name IS NULL OR EXISTS (SELECT 1 FROM ${T} WHERE machine = v.m AND instance_id = v.i AND name = v.fired_name AND generation = v.fired_gen)) AS fired_pending, (v.c_machine IS NULL OR EXISTS (SELECT 1 FROM ${O} WHERE machine = v.c_machine AND instance_id = v.c_instance AND seq_nr = v.c_seq AND idx = v.c_idx)) AS complete_pending, c.state_tag AS cur_tag, c.entered_at AS cur_entered FROM v LEFT JOIN ${I} c ON c.machine = v.m AND c.instance_id = v.i ORDER BY v.k`

    /**
     * A group as one transaction that takes the write lock first (`BEGIN
     * IMMEDIATE`): a read checks the commits (and reads the current-state
     * rows they replace), then each table gets multi-row writes for the
     * commits that passed, each a chunk at a time (see `chunked`). Under the
     * write lock nothing can change between the checks and the writes.
     */
    function* groupSteps(cs: ReadonlyArray<EncodedCommit>): Steps<ReadonlyArray<GroupCheck>> {
      const rows: Array<GroupCheckRow> = []
      for (const chunk of chunked(cs)) rows.push(...((yield checkRead(chunk)) as ReadonlyArray<GroupCheckRow>))
      const checks: Array<GroupCheck> = []
      const ok: Array<{ readonly c: EncodedCommit; readonly enteredAt: number }> = []
      for (let k = 0; k < cs.length; k++) {
        const c = cs[k]!
        const row = rows[k]
        const check = {
          written: false,
          actual: toNumber(row?.actual ?? -1),
          fenced: toBoolean(row?.fenced ?? false),
          firedPending: toBoolean(row?.fired_pending ?? false),
          completePending: toBoolean(row?.complete_pending ?? false)
        }
        const passes = row !== undefined && check.actual === c.expectedSeqNr && check.fenced && check.firedPending &&
          check.completePending
        checks.push(passes ? { ...check, written: true } : check)
        if (!passes) continue
        const cur = c.current
        const storedTag = row.cur_tag
        const enteredAt = storedTag === null || cur.entered === "yes" ||
            (cur.entered === "ifTagChanged" && storedTag !== cur.stateTag)
          ? cur.enteredAt
          : toNumber(row.cur_entered)
        ok.push({ c, enteredAt })
      }
      if (ok.length === 0) return checks
      const okChunks = chunked(ok)
      for (const chunk of okChunks) {
        yield sql`INSERT INTO ${E} (${sql.literal(eventColumns)}) VALUES ${
          sql.csv(chunk.map(({ c }) => {
            const e = c.events[0]!
            return sql`(${c.machine}, ${c.instanceId}, ${e.seqNr}, ${e.tag}, ${e.payload}, ${e.stateTag}, ${e.schemaVersion}, ${e.timestamp}, ${e.source}, ${e.correlationId}, ${e.node}, ${e.commitId}, ${e.timer})`
          }))
        }`
      }
      for (const chunk of chunked(ok.filter(({ c }) => c.fired !== undefined))) {
        yield sql`DELETE FROM ${T} WHERE (machine, instance_id, name, generation) IN (VALUES ${
          sql.csv(chunk.map(({ c }) => sql`(${c.machine}, ${c.instanceId}, ${c.fired!.name}, ${c.fired!.generation})`))
        })`
      }
      for (const chunk of chunked(ok.filter(({ c }) => c.complete !== undefined))) {
        yield sql`DELETE FROM ${O} WHERE (machine, instance_id, seq_nr, idx) IN (VALUES ${
          sql.csv(chunk.map(({ c }) => {
            const key = c.complete!
            return sql`(${key.machine}, ${key.instanceId}, ${key.seqNr}, ${key.index})`
          }))
        })`
      }
      for (const chunk of chunked(ok.flatMap(({ c }) => c.produce.map((command) => ({ c, command }))))) {
        yield sql`INSERT INTO ${O} ${sql.insert(chunk.map(({ c, command }) => outboxRow(c, command)))}`
      }
      for (const chunk of chunked(ok.filter(({ c }) => c.cancelAll))) {
        yield sql`DELETE FROM ${T} WHERE (machine, instance_id) IN (VALUES ${
          sql.csv(chunk.map(({ c }) => sql`(${c.machine}, ${c.instanceId})`))
        })`
      }
      for (const chunk of chunked(ok.flatMap(({ c }) => c.schedule.map((timer) => ({ c, timer }))))) {
        yield scheduleTimers(chunk)
      }
      for (const chunk of chunked(ok.filter(({ c }) => c.snapshot !== undefined))) {
        yield sql`INSERT INTO ${S} (${sql.literal(snapshotColumns)}) VALUES ${
          sql.csv(chunk.map(({ c }) => {
            const s = c.snapshot!
            return sql`(${c.machine}, ${c.instanceId}, ${s.seqNr}, ${s.state}, ${bool(s.stopped)}, ${s.schemaVersion}, ${s.timestamp})`
          }))
        } ON CONFLICT (machine, instance_id) DO UPDATE SET ${sql.literal(snapshotUpdate)} WHERE ${S}.seq_nr < excluded.seq_nr`
      }
      // The counts per state follow by trigger (see `countsTriggers`).
      for (const chunk of okChunks) {
        yield sql`INSERT INTO ${I} (${sql.literal(instanceColumns)}) VALUES ${
          sql.csv(chunk.map(({ c, enteredAt }) => {
            const cur = c.current
            return sql`(${c.machine}, ${c.instanceId}, ${cur.stateTag}, ${cur.seqNr}, ${enteredAt}, ${cur.updatedAt}, ${bool(cur.stopped)})`
          }))
        } ON CONFLICT (machine, instance_id) DO UPDATE SET state_tag = excluded.state_tag, seq_nr = excluded.seq_nr, entered_at = excluded.entered_at, updated_at = excluded.updated_at, stopped = excluded.stopped`
      }
      return checks
    }

    const appendGroup = (cs: ReadonlyArray<EncodedCommit>) =>
      Effect.flatMap(writeSteps("BEGIN IMMEDIATE", () => groupSteps(cs), () => false), (checks) => groupOutcomes(cs, checks))

    return {
      name: "sqlite",
      json,
      read: (statement) => readDirect(statement, false, statement),
      readValues: (statement) => readDirect(statement, true, statement.values),
      jsonText: (column) => sql`${sql(column)}`,
      bool,
      // The aggregate sees the rows in the order they are read (an ORDER BY
      // inside it, SQLite 3.44, would sort them again: a fifth slower).
      jsonColumns: (columns, json) =>
        sql.literal(
          `${
            columns.map((column) => column === json ? `'[' || group_concat(${column}, ',') || ']'` : `json_group_array(${column})`)
              .join(", ")
          }, COALESCE(MIN(json_valid(${json}, 1)), 1)`
        ),
      skipLocked: empty,
      collateC: empty,
      // STRICT: a value of the wrong type (a fractional timestamp) is an
      // error, as on PostgreSQL, instead of being stored as something else.
      createTables: Effect.all([
        sql`CREATE TABLE ${E} (
          machine TEXT NOT NULL,
          instance_id TEXT NOT NULL,
          seq_nr INTEGER NOT NULL,
          tag TEXT NOT NULL,
          payload TEXT NOT NULL,
          state_tag TEXT NOT NULL,
          schema_version INTEGER NOT NULL,
          ts INTEGER NOT NULL,
          source TEXT NOT NULL,
          correlation_id TEXT,
          node TEXT,
          PRIMARY KEY (machine, instance_id, seq_nr)
        ) STRICT, WITHOUT ROWID`,
        sql`CREATE INDEX ${sql(t.eventsFirst)} ON ${E} (machine, instance_id) WHERE seq_nr = 1`,
        sql`CREATE TABLE ${S} (
          machine TEXT NOT NULL,
          instance_id TEXT NOT NULL,
          seq_nr INTEGER NOT NULL,
          state TEXT NOT NULL,
          stopped INTEGER NOT NULL,
          schema_version INTEGER NOT NULL,
          ts INTEGER NOT NULL,
          PRIMARY KEY (machine, instance_id)
        ) STRICT, WITHOUT ROWID`,
        sql`CREATE TABLE ${T} (
          machine TEXT NOT NULL,
          instance_id TEXT NOT NULL,
          name TEXT NOT NULL,
          generation INTEGER NOT NULL,
          state_tag TEXT NOT NULL,
          due_at INTEGER NOT NULL,
          payload TEXT NOT NULL,
          attempts INTEGER NOT NULL DEFAULT 0,
          last_error TEXT,
          claimed_by TEXT,
          claimed_until INTEGER,
          PRIMARY KEY (machine, instance_id, name)
        ) STRICT, WITHOUT ROWID`,
        sql`CREATE INDEX ${sql(t.timersDue)} ON ${T} (machine, due_at)`,
        sql`CREATE TABLE ${D} (
          machine TEXT NOT NULL,
          instance_id TEXT NOT NULL,
          name TEXT NOT NULL,
          generation INTEGER NOT NULL,
          state_tag TEXT NOT NULL,
          due_at INTEGER NOT NULL,
          payload TEXT NOT NULL,
          attempts INTEGER NOT NULL,
          last_error TEXT,
          failed_at INTEGER NOT NULL,
          PRIMARY KEY (machine, instance_id, name)
        ) STRICT, WITHOUT ROWID`
      ], { discard: true }),
      addCommitColumns: Effect.all([
        sql`ALTER TABLE ${E} ADD COLUMN commit_id TEXT`,
        sql`ALTER TABLE ${E} ADD COLUMN timer TEXT`
      ], { discard: true }),
      createLeases: sql`CREATE TABLE ${L} (
          machine TEXT NOT NULL,
          instance_id TEXT NOT NULL,
          owner TEXT,
          token INTEGER NOT NULL,
          expires_at INTEGER NOT NULL,
          PRIMARY KEY (machine, instance_id)
        ) STRICT, WITHOUT ROWID`.pipe(Effect.asVoid),
      createOutbox: createOutbox({ json: "TEXT", bigint: "INTEGER", int: "INTEGER", text: "TEXT" }, "STRICT, WITHOUT ROWID"),
      createInstances: createInstances({ textC: "TEXT", bigint: "INTEGER", int: "INTEGER", bool: "INTEGER", text: "TEXT" }, "STRICT, WITHOUT ROWID", true),
      leaseClock: (now) => sql`${now}`,
      // The migrations table (same shape as the Migrator's) is created first,
      // on its own; the migration transaction then starts with a write to it,
      // so it holds the write lock (waiting with the busy timeout for another
      // process) before the Migrator reads which migrations have run.
      serializeMigrations: (run) =>
        sql`CREATE TABLE IF NOT EXISTS ${sql(t.migrations)} (
          migration_id integer PRIMARY KEY NOT NULL,
          created_at datetime NOT NULL DEFAULT current_timestamp,
          name VARCHAR(255) NOT NULL
        )`.pipe(
          Effect.zipRight(writeTransaction(Effect.zipRight(sql`DELETE FROM ${sql(t.migrations)} WHERE 1 = 0`, run)))
        ),
      writeTransaction,
      // The delete comes first, so the transaction takes the write lock
      // before it reads, and inserts only the row it deleted (at most one:
      // callers match a primary key, but every returned row is moved).
      move: <A extends object>({ columns, from, insert, where }: Parameters<Dialect["move"]>[0]) =>
        writeTransaction(Effect.flatMap(
          sql<Record<string, unknown>>`DELETE FROM ${sql(from)} WHERE ${where} RETURNING ${sql.literal(columns.join(", "))}`,
          (rows): Effect.Effect<ReadonlyArray<A>, SqlError> => {
            if (rows.length === 0) return Effect.succeed([])
            const moved = sql.join(" UNION ALL ", false)(
              rows.map((row) => sql`SELECT ${sql.csv(columns.map((column) => sql`${row[column] ?? null} AS ${sql(column)}`))}`)
            )
            return sql<A>`${insert(sql`(${moved}) AS moved`)}`
          }
        )),
      upsertSnapshot: snapshotWriter,
      append,
      appendGroup,
      // In process: a failed statement or COMMIT is rolled back (see
      // `outermost`). Not when the file stayed locked past the busy timeout:
      // writing each commit alone would wait as many times over.
      refused: (error) => !/^SQLITE_(BUSY|LOCKED)/.test(String(driverCode(error)))
    }
  }

  return sql.onDialectOrElse({
    pg: () => Effect.succeed(pg()),
    sqlite: () => Effect.succeed(sqlite()),
    orElse: () =>
      Effect.fail(
        new PersistenceError({
          operation: "make",
          reason: "SqlEventStore supports PostgreSQL (@effect/sql-pg) and SQLite (@effect/sql-sqlite-*) clients only"
        })
      )
  })
}
