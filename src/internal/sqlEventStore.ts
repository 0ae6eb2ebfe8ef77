/**
 * The `EventStore.Backend` on a `SqlClient`: encoding of commits, paged reads
 * of logs and instance lists, snapshots.
 *
 * @internal
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { Fragment } from "@effect/sql/Statement"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { PersistenceError as PersistenceErrorClass, type PersistenceError } from "../Errors.js"
import * as EventStore from "../EventStore.js"
import * as Metrics from "../Metrics.js"
import { currentChange, instancePage } from "./currentState.js"
import { make as makeGroupCommit } from "./groupCommit.js"
import type { AppendFailure, Dialect, EncodedCommand, EncodedCommit, EncodedEvent, EncodedTimer } from "./sqlDialect.js"
import {
  decodeRows,
  encodeJson,
  jsonText,
  mapSqlError,
  type Tables,
  toBoolean,
  toNumber,
  toStringOrNull
} from "./sqlShared.js"
import { span } from "./spans.js"

const durable: EventStore.AppendResult = { durable: true }
const notYetDurable: EventStore.AppendResult = { durable: false }

/** Rows per query when streaming a log or an instance list. */
export const pageSize = 256


interface InstanceRow {
  readonly instance_id: string
  readonly state_tag: string
  readonly seq_nr: unknown
  readonly entered_at: unknown
  readonly updated_at: unknown
  readonly stopped: unknown
}

interface SnapshotRow {
  readonly seq_nr: unknown
  readonly state: string
  readonly stopped: unknown
  readonly schema_version: unknown
  readonly ts: unknown
}

/** A commit as SQL writes it, or why a value of it cannot be written (synchronous: one Effect per append, not per value). */
const encodeCommit = (commit: EventStore.Commit): EncodedCommit | PersistenceError => {
  const events: Array<EncodedEvent> = []
  let seqNr = commit.expectedSeqNr
  for (const event of commit.events) {
    const payload = jsonText("append", event.payload)
    if (typeof payload !== "string") return payload
    events.push({
      seqNr: ++seqNr,
      tag: event.tag,
      payload,
      stateTag: event.stateTag,
      schemaVersion: event.schemaVersion,
      timestamp: event.metadata.timestamp,
      source: event.metadata.source,
      correlationId: event.metadata.correlationId,
      node: event.metadata.node,
      commitId: event.metadata.commitId,
      timer: event.metadata.timer
    })
  }
  let snapshot: EncodedCommit["snapshot"]
  if (commit.snapshot !== undefined) {
    const state = jsonText("append", commit.snapshot.state)
    if (typeof state !== "string") return state
    snapshot = {
      seqNr: commit.snapshot.seqNr,
      state,
      stopped: commit.snapshot.stopped,
      schemaVersion: commit.snapshot.schemaVersion,
      timestamp: commit.snapshot.timestamp
    }
  }
  // A later timer of the same name replaces an earlier one, as in memory.
  const byName = new Map<string, EncodedTimer>()
  for (const timer of commit.timers?.schedule ?? []) {
    const payload = jsonText("append", timer.payload)
    if (typeof payload !== "string") return payload
    byName.delete(timer.name)
    byName.set(timer.name, {
      name: timer.name,
      generation: timer.generation,
      stateTag: timer.stateTag,
      dueAt: timer.dueAt,
      payload
    })
  }
  const fired = commit.timers?.fired
  const produce: Array<EncodedCommand> = []
  for (const command of commit.outbox?.produce ?? []) {
    const payload = jsonText("append", command.payload)
    if (typeof payload !== "string") return payload
    produce.push({
      index: command.index,
      kind: command.kind,
      tag: command.tag,
      payload,
      targetMachine: command.target?.machine ?? null,
      targetInstanceId: command.target?.instanceId ?? null,
      correlationId: command.correlationId,
      fenceToken: command.fenceToken
    })
  }
  const complete = commit.outbox?.complete
  return {
    current: currentChange(commit),
    machine: commit.machine,
    instanceId: commit.instanceId,
    expectedSeqNr: commit.expectedSeqNr,
    events,
    snapshot,
    fired: fired === undefined ? undefined : { name: fired.name, generation: fired.generation },
    cancelAll: commit.timers?.cancelAll ?? false,
    schedule: [...byName.values()],
    fence: commit.fence === undefined ? undefined : { owner: commit.fence.owner, token: commit.fence.token },
    produce,
    complete: complete === undefined
      ? undefined
      : { machine: complete.machine, instanceId: complete.instanceId, seqNr: complete.seqNr, index: complete.index }
  }
}

/** Where `events(fromSeqNr)` starts, following the memory backend for odd inputs. */
const firstSeqNr = (fromSeqNr: number): number => Number.isNaN(fromSeqNr) ? 1 : Math.max(1, Math.floor(fromSeqNr))

/**
 * The most commits one group commit writes. On PostgreSQL more than the
 * durable sweeper claims at once by default (`batchSize` 200, `concurrency`
 * 256), so that a claimed batch commits as one group: draining 10,000 due
 * timers in one process (`bench/sweep-profile.ts`, pairs of runs on a noisy
 * machine), 128 against 64 gave 4,587 / 5,531 against 3,967 / 5,195
 * timers/s (about a fifth less CPU a timer), 256 (groups of 200) against
 * 128 gave 4,993 / 6,079 against 4,382 / 5,005. On SQLite 128 (7,391 /
 * 9,833 against 6,854 / 9,234 timers/s at 64): groups of 256 made the
 * million-instance run of `bench/memory.ts` peak at 336-413 MB of RSS
 * against 168-184 MB at 64 or 128 (a cause not found yet: not the
 * statements' texts, which `chunked` bounds).
 */
export const maxGroup = (dialect: Dialect): number => dialect.name === "pg" ? 256 : 128

/** The characters of JSON text a commit writes (its group's budget, see `maxWeight`). */
const commitWeight = (c: EncodedCommit): number => {
  let weight = c.snapshot?.state.length ?? 0
  for (const event of c.events) weight += event.payload.length
  for (const timer of c.schedule) weight += timer.payload.length
  for (const command of c.produce) weight += command.payload.length
  return weight
}

const commitKey = (c: EncodedCommit) => `${c.machine.length}:${c.machine}${c.instanceId}`

export const makeBackend = (
  sql: SqlClient.SqlClient,
  dialect: Dialect,
  t: Tables,
  options?: { readonly groupCommit?: boolean | undefined }
): EventStore.Backend => {
  const E = sql(t.events)
  const S = sql(t.snapshots)

  /**
   * What a page of the log is read as: the columns before and after the
   * payload (each `expression AS name` or a column name), and how a row of
   * them, in order and with its payload parsed by `payload`, is decoded.
   */
  interface PageShape<A> {
    readonly operation: string
    readonly before: string
    readonly after: string
    readonly decode: (machine: string, instanceId: string, payload: (value: unknown) => unknown) => (row: ReadonlyArray<unknown>) => A
  }

  const recordShape: PageShape<EventStore.EventRecord> = {
    operation: "events",
    before: "seq_nr, tag",
    after: "state_tag, schema_version, ts, source, correlation_id, node, commit_id, timer",
    decode: (machine, instanceId, payload) => (row) => ({
      machine,
      instanceId,
      seqNr: toNumber(row[0]),
      tag: row[1] as string,
      payload: payload(row[2]),
      stateTag: row[3] as string,
      schemaVersion: toNumber(row[4]),
      metadata: {
        timestamp: toNumber(row[5]),
        source: row[6] as EventStore.Source,
        correlationId: toStringOrNull(row[7]),
        node: toStringOrNull(row[8]),
        commitId: toStringOrNull(row[9]),
        timer: toStringOrNull(row[10])
      }
    })
  }

  // A replay reads no metadata strings it does not fold (the commit id is
  // 36 characters an event).
  const replayShape: PageShape<EventStore.ReplayRecord> = {
    operation: "replayPage",
    before: "seq_nr, tag",
    after: "state_tag, ts, source, timer, commit_id IS NOT NULL AS has_commit_id",
    decode: (_machine, _instanceId, payload) => (row) => ({
      seqNr: toNumber(row[0]),
      tag: row[1] as string,
      payload: payload(row[2]),
      stateTag: row[3] as string,
      timestamp: toNumber(row[4]),
      source: row[5] as EventStore.Source,
      timer: toStringOrNull(row[6]),
      hasCommitId: toBoolean(row[7])
    })
  }
  const parsePayload = (value: unknown) => JSON.parse(value as string)
  const parsedPayload = (value: unknown) => value

  const pageQuery = <A>(
    shape: PageShape<A>,
    payload: Fragment,
    machine: string,
    instanceId: string,
    from: number,
    limit: number
  ) =>
    sql`SELECT ${sql.literal(shape.before)}, ${payload} AS payload, ${
      sql.literal(shape.after)
    } FROM ${E} WHERE machine = ${machine} AND instance_id = ${instanceId} AND seq_nr >= ${from} ORDER BY seq_nr LIMIT ${limit}`

  // Rows as arrays (`.values`): the drivers build no object with a key per
  // column per row, which was most of a replay's time on SQLite.
  const readRows = <A>(shape: PageShape<A>) => (machine: string, instanceId: string, from: number, limit: number) =>
    dialect.readValues(pageQuery(shape, dialect.jsonText("payload"), machine, instanceId, from, limit)).pipe(
      mapSqlError(shape.operation),
      Effect.flatMap((rows) => decodeRows(shape.operation, rows, shape.decode(machine, instanceId, parsePayload)))
    )

  // Where the dialect has it, the page as one JSON text a column, each
  // parsed once: no driver row arrays, no per-row strings, no parse per
  // payload, and the payloads go into their array as they are stored
  // (better-sqlite3 alone, 100,000 events with records built: 1.29M
  // events/s, against 0.94M for one array per row, and about half that for
  // driver rows). It is read as the range of seqNrs `[from, from + limit)`,
  // which is the page as long as the log has no gaps (SQLite reads a range
  // a tenth faster than an ordered `LIMIT` subquery), with the log's last
  // seqNr beside it: a short page of a log that goes on past the range
  // (a gap, which only a writer other than the store makes) is read as rows
  // instead. So is a page with a payload that is not strict JSON (which
  // would not go into an array as it is), one SQLite cannot build (a text
  // over better-sqlite3's 512 MiB, which a page of 4,000 events of over
  // 130 KB each reaches, and which is then built and dropped before the
  // rows are read), one that does not parse, or whose seqNrs do not
  // ascend; the rows' error names the row at fault.
  const jsonColumns = dialect.jsonColumns
  const pageReader = <A extends { readonly seqNr: number }>(shape: PageShape<A>) => {
    const rows = readRows(shape)
    if (jsonColumns === undefined) return rows
    const columns = [...shape.before.split(", "), "payload", ...shape.after.split(", ")].map((column) => column.split(" AS ")[0]!)
    const aggregates = jsonColumns(columns, "payload")
    const width = columns.length
    return (machine: string, instanceId: string, from: number, limit: number) =>
      dialect.readValues(
        sql`SELECT ${aggregates}, (SELECT MAX(seq_nr) FROM ${E} WHERE machine = ${machine} AND instance_id = ${instanceId}) FROM ${E} WHERE machine = ${machine} AND instance_id = ${instanceId} AND seq_nr >= ${from} AND seq_nr < ${
          from + limit
        }`
      ).pipe(
        Effect.flatMap((result) =>
          Effect.try(() => {
            const row = result[0] ?? []
            if (toNumber(row[width]) !== 1) throw new Error("a payload that is not strict JSON")
            const values: Array<ReadonlyArray<unknown>> = []
            for (let k = 0; k < width; k++) {
              const text = row[k]
              const parsed: unknown = text === null || text === undefined ? [] : JSON.parse(text as string)
              if (!Array.isArray(parsed) || (k > 0 && parsed.length !== values[0]!.length)) throw new Error("not a column")
              values.push(parsed)
            }
            const count = values[0]!.length
            if (count < limit && toNumber(row[width + 1] ?? 0) >= from + limit) throw new Error("a gap in the range")
            const decode = shape.decode(machine, instanceId, parsedPayload)
            // One row of the columns at a time: `decode` keeps none of it.
            const scratch = new Array<unknown>(width)
            const records = new Array<A>(count)
            for (let i = 0; i < count; i++) {
              for (let k = 0; k < width; k++) scratch[k] = values[k]![i]
              records[i] = decode(scratch)
              if (i > 0 && !(records[i]!.seqNr > records[i - 1]!.seqNr)) throw new Error("out of order")
            }
            return records
          })
        ),
        Effect.orElse(() => rows(machine, instanceId, from, limit))
      )
  }
  const readPage = pageReader(recordShape)
  const readReplayPage = pageReader(replayShape)

  const events = (machine: string, instanceId: string, fromSeqNr: number) => {
    const start = firstSeqNr(fromSeqNr)
    if (!Number.isFinite(start)) return Stream.empty
    return Stream.paginateChunkEffect(start, (from) =>
      Effect.map(readPage(machine, instanceId, from, pageSize), (records) => {
        const last = records[records.length - 1]
        return [
          Chunk.unsafeFromArray(records),
          records.length < pageSize || last === undefined ? Option.none() : Option.some(last.seqNr + 1)
        ] as const
      })).pipe(Stream.withSpan("SqlEventStore.events", { attributes: { machine, instanceId, fromSeqNr } }))
  }

  const highestSequenceNr = (machine: string, instanceId: string) =>
    dialect.read(sql<{ readonly seq_nr: unknown }>`SELECT COALESCE(MAX(seq_nr), 0) AS seq_nr FROM ${E} WHERE machine = ${machine} AND instance_id = ${instanceId}`).pipe(
      Effect.map((rows) => toNumber(rows[0]?.seq_nr ?? 0)),
      mapSqlError("highestSequenceNr"),
      span("SqlEventStore.highestSequenceNr", { attributes: { machine, instanceId } })
    )

  const saveSnapshot = (snapshot: EventStore.SnapshotRecord) =>
    Effect.flatMap(encodeJson("saveSnapshot", snapshot.state), (state) =>
      dialect.upsertSnapshot(snapshot.machine, snapshot.instanceId, {
        seqNr: snapshot.seqNr,
        state,
        stopped: snapshot.stopped,
        schemaVersion: snapshot.schemaVersion,
        timestamp: snapshot.timestamp
      }).pipe(mapSqlError("saveSnapshot"))).pipe(
        Effect.asVoid,
        span("SqlEventStore.saveSnapshot", {
          attributes: { machine: snapshot.machine, instanceId: snapshot.instanceId, seqNr: snapshot.seqNr }
        })
      )

  /** A snapshot row; `instanceIdOf` names its instance (known to the caller, or read from the row). */
  const decodeSnapshot = <Row extends SnapshotRow>(machine: string, instanceIdOf: (row: Row) => string) =>
  (row: Row): EventStore.SnapshotRecord => ({
    machine,
    instanceId: instanceIdOf(row),
    seqNr: toNumber(row.seq_nr),
    state: JSON.parse(row.state),
    stopped: toBoolean(row.stopped),
    schemaVersion: toNumber(row.schema_version),
    timestamp: toNumber(row.ts)
  })

  const loadSnapshot = (machine: string, instanceId: string) =>
    dialect.read(sql<SnapshotRow>`SELECT seq_nr, ${
      dialect.jsonText("state")
    } AS state, stopped, schema_version, ts FROM ${S} WHERE machine = ${machine} AND instance_id = ${instanceId}`).pipe(
      mapSqlError("loadSnapshot"),
      Effect.flatMap((rows) => decodeRows("loadSnapshot", rows, decodeSnapshot(machine, () => instanceId))),
      Effect.map((snapshots) => Option.fromNullable(snapshots[0])),
      span("SqlEventStore.loadSnapshot", { attributes: { machine, instanceId } })
    )

  // Every log starts at seqNr 1, so the partial index on the first events
  // holds exactly one entry per instance.
  const instancesPage = (machine: string, after: string) =>
    dialect.read(sql<{ readonly instance_id: string }>`SELECT instance_id FROM ${E} WHERE machine = ${machine} AND seq_nr = 1 AND instance_id > ${after} ORDER BY instance_id LIMIT ${pageSize}`)
      .pipe(
        mapSqlError("instances"),
        Effect.map((rows) => rows.map((row) => String(row.instance_id)))
      )

  const instances = (machine: string) =>
    Stream.paginateChunkEffect("", (after) =>
      Effect.map(instancesPage(machine, after), (ids) => {
        const last = ids[ids.length - 1]
        return [
          Chunk.unsafeFromArray(ids),
          ids.length < pageSize || last === undefined ? Option.none() : Option.some(last)
        ] as const
      })).pipe(Stream.withSpan("SqlEventStore.instances", { attributes: { machine } }))

  /**
   * Concurrent commits of different instances go out together (see
   * `groupCommit.ts`): a group of one is the lone commit's own statement,
   * a larger one `dialect.appendGroup`, written in `(machine, instance_id)`
   * order so that two groups lock rows in one order.
   */
  const group = makeGroupCommit<EncodedCommit, void, AppendFailure>({
    key: commitKey,
    maxBatch: maxGroup(dialect),
    // PostgreSQL takes a group's payloads, snapshot states, timer payloads
    // and outbox payloads as one JSON value each (at most 255 MB): a group
    // holds JSON texts of 32 Mi characters (at most 96 MB of UTF-8) in all,
    // or one commit of any size.
    weight: commitWeight,
    maxWeight: 32 * 1024 * 1024,
    // One at a time, on both: SQLite's one connection writes one transaction
    // at a time, and on PostgreSQL (2 cores, bench/durable-send) four flushes
    // in flight made smaller groups and cost more than they overlapped:
    // 1,480 / 3,054 sends/s at 8 / 64 instances against 2,371 / 4,124.
    maxInFlight: 1,
    flush: (commits) =>
      // What `Metric.update` does, in the flush's first step.
      Effect.withFiberRuntime((fiber) => {
        Metrics.commitGroupSize.unsafeUpdate(commits.length, fiber.getFiberRef(FiberRef.currentMetricLabels))
        return flushGroup(commits)
      })
  })

  const flushGroup = (
    commits: ReadonlyArray<EncodedCommit>
  ): Effect.Effect<ReadonlyArray<Either.Either<void, AppendFailure>>, PersistenceError> => {
    if (commits.length === 1) {
      return Effect.map(Effect.either(mapSqlError("append")(dialect.append(commits[0]!))), (outcome) => [outcome])
    }
    const order = commits.map((_, index) => index).sort((a, b) => {
      const x = commits[a]!
      const y = commits[b]!
      return x.machine < y.machine ? -1 : x.machine > y.machine ? 1 : x.instanceId < y.instanceId ? -1 : x.instanceId > y.instanceId ? 1 : 0
    })
    return dialect.appendGroup(order.map((index) => commits[index]!)).pipe(
      // A group the database refused (one commit's data broke a trigger or
      // a constraint, a deadlock) wrote nothing: each commit is then
      // written alone, so that only the one at fault fails. A failure
      // whose outcome is unknown (the connection lost) is every commit's
      // outcome, which each caller resolves from the log.
      Effect.catchIf(
        (error) => dialect.refused(error),
        () => Effect.forEach(order, (index) => Effect.either(mapSqlError("append")(dialect.append(commits[index]!))))
      ),
      mapSqlError("append"),
      Effect.map((sorted) => {
        const outcomes = new Array<Either.Either<void, AppendFailure>>(commits.length)
        order.forEach((index, position) => (outcomes[index] = sorted[position]!))
        return outcomes
      }),
      span("SqlEventStore.appendGroup", { attributes: { commits: commits.length } })
    )
  }

  const grouping = options?.groupCommit ?? true

  const append = (commit: EventStore.Commit) =>
    Effect.suspend(() => {
      const encoded = encodeCommit(commit)
      if (encoded instanceof PersistenceErrorClass) return Effect.fail(encoded)
      // Suspended: building a lone commit's statement is wasted on one that joins a group.
      const alone = Effect.suspend(() => mapSqlError("append")(dialect.append(encoded)))
      return Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (transaction) =>
        // Inside a caller's transaction the write is durable only once that transaction commits.
        Option.isSome(transaction)
          ? Effect.as(alone, notYetDurable)
          : Effect.as(grouping && encoded.events.length === 1 ? group.submit(encoded) : alone, durable))
    }).pipe(
      span("SqlEventStore.append", {
        attributes: {
          machine: commit.machine,
          instanceId: commit.instanceId,
          expectedSeqNr: commit.expectedSeqNr,
          events: commit.events.length
        }
      })
    )

  /** A page read by `read`, traced as `name`; none from a `fromSeqNr` past any log (Infinity). */
  const tracedPage = <A>(
    name: string,
    read: (machine: string, instanceId: string, from: number, limit: number) => Effect.Effect<ReadonlyArray<A>, PersistenceError>
  ) =>
  (machine: string, instanceId: string, fromSeqNr: number, limit: number): Effect.Effect<ReadonlyArray<A>, PersistenceError> => {
    const start = firstSeqNr(fromSeqNr)
    return Number.isFinite(start)
      ? read(machine, instanceId, start, limit).pipe(span(name, { attributes: { machine, instanceId, fromSeqNr, limit } }))
      : Effect.succeed([])
  }
  const eventsPage = tracedPage("SqlEventStore.eventsPage", readPage)
  const replayPage = tracedPage("SqlEventStore.replayPage", readReplayPage)

  // Two reads for any number of instances: their snapshots, then one range
  // of each log (seqNrs are gapless, so `(from, from + limit]` is exactly the
  // first `limit` events after the snapshot), each an index range scan:
  // `v CROSS JOIN` keeps the ranges the outer loop on SQLite, whose planner
  // would otherwise scan the machine's whole log and probe the ranges.
  const recoveryBatch = (machine: string, instanceIds: ReadonlyArray<string>, limit: number) =>
    Effect.gen(function*() {
      const snapshotRows = yield* dialect.read(sql<SnapshotRow & { readonly instance_id: string }>`SELECT instance_id, seq_nr, ${
        dialect.jsonText("state")
      } AS state, stopped, schema_version, ts FROM ${S} WHERE machine = ${machine} AND instance_id IN ${sql.in(instanceIds)}`)
      const snapshots = new Map<string, EventStore.SnapshotRecord>()
      for (
        const snapshot of yield* decodeRows("recoveryBatch", snapshotRows, decodeSnapshot(machine, (row) => String(row.instance_id)))
      ) snapshots.set(snapshot.instanceId, snapshot)
      const bigint = (value: number) => dialect.name === "pg" ? sql`${value}::bigint` : sql`${value}`
      const text = (value: string) => dialect.name === "pg" ? sql`${value}::text` : sql`${value}`
      const ranges = sql.csv(instanceIds.map((instanceId) => {
        const from = snapshots.get(instanceId)?.seqNr ?? 0
        return sql`(${text(instanceId)}, ${bigint(from)}, ${bigint(from + limit)})`
      }))
      // In `readPage`'s column order, the instance id last.
      const columns = sql`e.seq_nr, e.tag, ${
        dialect.jsonText("payload")
      } AS payload, e.state_tag, e.schema_version, e.ts, e.source, e.correlation_id, e.node, e.commit_id, e.timer, e.instance_id`
      const range = sql`e.machine = ${machine} AND e.instance_id = v.id AND e.seq_nr > v.lo AND e.seq_nr <= v.hi`
      // On PostgreSQL one index range scan per instance, whatever the
      // statistics: a plain join is planned from them, and with statistics
      // that have not caught up with a machine's events (a new machine, a
      // fast-growing log) PostgreSQL hashes the ids and reads every event of
      // the machine, on every batch. The LIMIT keeps the lateral subquery
      // from being flattened back into that join. SQLite has no LATERAL; its
      // join already probes the primary key per id.
      const eventRows = yield* dialect.readValues(dialect.name === "pg"
        ? sql`SELECT e.* FROM (VALUES ${ranges}) AS v (id, lo, hi) CROSS JOIN LATERAL (SELECT ${columns} FROM ${E} e WHERE ${range} ORDER BY e.seq_nr LIMIT v.hi - v.lo) AS e ORDER BY e.instance_id, e.seq_nr`
        : sql`WITH v (id, lo, hi) AS (VALUES ${ranges}) SELECT ${columns} FROM v CROSS JOIN ${E} e WHERE ${range} ORDER BY e.instance_id, e.seq_nr`)
      const events = new Map<string, Array<EventStore.EventRecord>>()
      for (
        const record of yield* decodeRows("recoveryBatch", eventRows, (row) => recordShape.decode(machine, String(row[11]), parsePayload)(row))
      ) {
        let log = events.get(record.instanceId)
        if (log === undefined) events.set(record.instanceId, log = [])
        log.push(record)
      }
      return instanceIds.flatMap((instanceId): Array<EventStore.Recovery> => {
        const snapshot = snapshots.get(instanceId)
        const log = events.get(instanceId)
        return snapshot === undefined && log === undefined
          ? []
          : [{ instanceId, snapshot: Option.fromNullable(snapshot), events: log ?? [] }]
      })
    }).pipe(
      mapSqlError("recoveryBatch"),
      span("SqlEventStore.recoveryBatch", {
        attributes: { machine, instances: instanceIds.length, limit }
      })
    )

  // --- Current-state table ---

  const I = sql(t.instances)
  // Kept by the commits (see the dialect): a read of a few rows per state, whatever the number of instances.
  const C = sql(t.stateCounts)

  const decodeSummary = (machine: string) => (row: InstanceRow): EventStore.InstanceSummary => ({
    machine,
    instanceId: String(row.instance_id),
    stateTag: String(row.state_tag),
    seqNr: toNumber(row.seq_nr),
    enteredAt: toNumber(row.entered_at),
    updatedAt: toNumber(row.updated_at),
    stopped: toBoolean(row.stopped)
  })

  const instance = (machine: string, instanceId: string) =>
    dialect.read(sql<InstanceRow>`SELECT instance_id, state_tag, seq_nr, entered_at, updated_at, stopped FROM ${I} WHERE machine = ${machine} AND instance_id = ${instanceId}`)
      .pipe(
        mapSqlError("instance"),
        Effect.flatMap((rows) => decodeRows("instance", rows, decodeSummary(machine))),
        Effect.map((rows) => Option.fromNullable(rows[0])),
        span("SqlEventStore.instance", { attributes: { machine, instanceId } })
      )

  // With a state: the (machine, state_tag, entered_at, instance_id) index;
  // without: (machine, entered_at, instance_id). Either is read in order from
  // the cursor on, so a page costs its own rows whatever the table holds.
  const listInstances = (query: EventStore.InstanceQuery) => {
    const conditions: Array<Fragment> = [sql`machine = ${query.machine}`]
    if (query.stateTag !== undefined) conditions.push(sql`state_tag = ${query.stateTag}`)
    if (query.enteredBefore !== undefined) conditions.push(sql`entered_at < ${query.enteredBefore}`)
    if (query.stopped !== undefined) conditions.push(sql`stopped = ${dialect.bool(query.stopped)}`)
    const after = query.after
    if (after !== undefined) conditions.push(sql`(entered_at, instance_id) > (${after.enteredAt}, ${after.instanceId})`)
    return dialect.read(sql<InstanceRow>`SELECT instance_id, state_tag, seq_nr, entered_at, updated_at, stopped FROM ${I} WHERE ${
      sql.and(conditions)
    } ORDER BY entered_at, instance_id LIMIT ${query.limit}`).pipe(
      mapSqlError("listInstances"),
      Effect.flatMap((rows) => decodeRows("listInstances", rows, decodeSummary(query.machine))),
      Effect.map((rows) => instancePage(rows, query.limit)),
      span("SqlEventStore.listInstances", {
        attributes: { machine: query.machine, stateTag: query.stateTag, limit: query.limit }
      })
    )
  }

  const stateCounts = (machine: string) =>
    dialect.read(sql<{ readonly state_tag: string; readonly stopped: unknown; readonly count: unknown }>`SELECT state_tag, stopped, SUM(n) AS count FROM ${C} WHERE machine = ${machine} GROUP BY state_tag, stopped HAVING SUM(n) > 0 ORDER BY state_tag, stopped`)
      .pipe(
        mapSqlError("stateCounts"),
        Effect.flatMap((rows) =>
          decodeRows("stateCounts", rows, (row): EventStore.StateCount => ({
            stateTag: String(row.state_tag),
            stopped: toBoolean(row.stopped),
            count: toNumber(row.count)
          }))
        ),
        span("SqlEventStore.stateCounts", { attributes: { machine } })
      )

  // The partial index on (machine, correlation_id); the few matches sorted in code-point order.
  const instancesByCorrelation = (machine: string, correlationId: string, limit: number) =>
    dialect.read(sql<{ readonly id: string }>`SELECT DISTINCT instance_id ${dialect.collateC} AS id FROM ${E} WHERE machine = ${machine} AND correlation_id = ${correlationId} ORDER BY id LIMIT ${limit}`)
      .pipe(
        mapSqlError("instancesByCorrelation"),
        Effect.map((rows) => rows.map((row) => String(row.id))),
        span("SqlEventStore.instancesByCorrelation", { attributes: { machine } })
      )

  return {
    instancesByCorrelation,
    append,
    events,
    eventsPage,
    replayPage,
    recoveryBatch,
    highestSequenceNr,
    saveSnapshot,
    loadSnapshot,
    instances,
    instance,
    listInstances,
    stateCounts
  }
}
