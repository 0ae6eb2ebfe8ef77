/**
 * What only the SQL stores have: transactions and their failure modes,
 * migrations, table prefixes, SQLite's file locking and PostgreSQL's
 * configuration. Each test gets its own SQLite file or PostgreSQL schema.
 */
import { describe, expect, it } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import {
  Chunk,
  Config,
  ConfigProvider,
  Context,
  Deferred,
  Effect,
  Either,
  Exit,
  Fiber,
  Layer,
  Metric,
  Option,
  Redacted,
  type Scope,
  Stream,
  TestClock
} from "effect"
import { EventStore, LeaseStore, Metrics, SqlEventStore, TimeoutStore } from "effect-fsm"
import * as PgEventStore from "effect-fsm/PgEventStore"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import * as fs from "node:fs"
import * as path from "node:path"
import { makeNamer } from "../src/internal/pgPool.js"
import { postgres, sqlite, tempDirectory } from "./utils/backends.js"
import * as Pg from "./utils/pg.js"

/** A database the tests can open several clients on. */
interface Database {
  readonly client: () => Layer.Layer<SqlClient.SqlClient, unknown>
  /** The driver module's own store layer on this database (`SqliteEventStore.layer`, `PgEventStore.layer`). */
  readonly convenience: (options: SqlEventStore.Options) => Layer.Layer<EventStore.EventStore | TimeoutStore.TimeoutStore, unknown>
}

interface Target {
  readonly name: "sqlite" | "postgres"
  readonly skip?: string | undefined
  readonly fresh: Effect.Effect<Database, unknown, Scope.Scope>
}

const sqliteTarget: Target = {
  name: "sqlite",
  skip: sqlite.skip,
  fresh: Effect.map(tempDirectory, (directory) => {
    const filename = path.join(directory, "store.db")
    return {
      client: () => SqliteEventStore.layerClient({ filename }),
      convenience: (options) => SqliteEventStore.layer({ filename, ...options })
    }
  })
}

const pgTarget: Target = {
  name: "postgres",
  skip: postgres.skip,
  fresh: Effect.map(Pg.freshSchema, (schema) => ({
    client: () => Pg.layerClient(schema),
    convenience: (options) => PgEventStore.layer({ ...Pg.clientConfig(schema), ...options })
  }))
}

const machine = "order"

const event = (tag: string, payload: unknown = { _tag: tag }): EventStore.NewEvent => ({
  tag,
  payload,
  stateTag: "Pending",
  schemaVersion: 1,
  metadata: { timestamp: 1_700_000_000_000, source: "user", correlationId: null, node: "node-a", commitId: null, timer: null }
})

const commit = (
  instanceId: string,
  expectedSeqNr: number,
  events: ReadonlyArray<EventStore.NewEvent>,
  extra: Partial<Pick<EventStore.Commit, "snapshot" | "timers" | "fence">> = {}
): EventStore.Commit => ({ machine, instanceId, expectedSeqNr, events, ...extra })

const snapshot = (instanceId: string, seqNr: number): EventStore.SnapshotRecord => ({
  machine,
  instanceId,
  seqNr,
  state: { at: seqNr },
  stopped: false,
  schemaVersion: 1,
  timestamp: 1_700_000_000_000
})

/** The commit most tests write: two events, a snapshot and a timer. */
const fullCommit = (instanceId: string) =>
  commit(instanceId, 0, [event("@created"), event("Pay")], {
    snapshot: snapshot(instanceId, 2),
    timers: {
      cancelAll: false,
      schedule: [{ name: "payment", stateTag: "Pending", generation: 1, dueAt: 300_000, payload: { _tag: "T" } }]
    }
  })

/** A store (event store, timer store, lease store and the client under them) on `client`. */
const storeOn = (client: Layer.Layer<SqlClient.SqlClient, unknown>, options: SqlEventStore.Options = {}) =>
  Effect.map(Layer.build(SqlEventStore.layer(options).pipe(Layer.provideMerge(client))), (context) => ({
    store: Context.get(context, EventStore.EventStore),
    timers: Context.get(context, TimeoutStore.TimeoutStore),
    leases: Context.get(context, LeaseStore.LeaseStore),
    sql: Context.get(context, SqlClient.SqlClient)
  }))

const leaseKey: LeaseStore.LeaseKey = { machine, instanceId: "o1" }

/** Takes the lease of o1 for 1 ms and waits (real time: PostgreSQL judges by its own clock) until it has expired. */
const expiredLease = (leases: LeaseStore.LeaseStore["Type"], owner: string) =>
  Effect.gen(function*() {
    const lease = Option.getOrThrow(yield* leases.tryAcquire(leaseKey, owner, "1 millis"))
    yield* TestClock.adjust("1 millis")
    for (let tries = 0; tries < 10_000 && Option.isSome(yield* leases.get(leaseKey)); tries++) {
      yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
    }
    expect(yield* leases.get(leaseKey)).toEqual(Option.none())
    return lease
  })

/** Polls until the connection named `applicationName` waits for a lock. */
const blockedOnLock = (sql: SqlClient.SqlClient, applicationName: string) =>
  Effect.gen(function*() {
    const waiting = sql<{ readonly n: unknown }>`SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = ${applicationName} AND wait_event_type = 'Lock'`
    for (let tries = 0; tries < 10_000; tries++) {
      if (Number((yield* waiting)[0]!.n) === 1) return true
    }
    return false
  })

/**
 * Every event tagged "Poison" adds a row that breaks a deferred foreign key:
 * each statement succeeds, the COMMIT fails. On SQLite the failed COMMIT
 * leaves the transaction open unless it is rolled back.
 */
const poisonOnCommit = (sql: SqlClient.SqlClient) =>
  Effect.gen(function*() {
    yield* sql`CREATE TABLE fsm_test_parent (id integer PRIMARY KEY)`
    yield* sql`CREATE TABLE fsm_test_child (parent integer REFERENCES fsm_test_parent (id) DEFERRABLE INITIALLY DEFERRED)`
    yield* sql.onDialectOrElse({
      pg: () =>
        sql`CREATE FUNCTION fsm_test_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO fsm_test_child VALUES (1); RETURN NULL; END $$`
          .pipe(
            Effect.zipRight(
              sql`CREATE TRIGGER poison AFTER INSERT ON fsm_events FOR EACH ROW WHEN (NEW.tag = 'Poison') EXECUTE FUNCTION fsm_test_poison()`
            )
          ),
      orElse: () =>
        sql`PRAGMA foreign_keys = ON`.pipe(
          Effect.zipRight(
            sql`CREATE TRIGGER poison AFTER INSERT ON fsm_events WHEN NEW.tag = 'Poison' BEGIN INSERT INTO fsm_test_child VALUES (1); END`
          )
        )
    })
  })

/**
 * A fresh PostgreSQL schema with two stores on it: `mine` (its connections
 * named `applicationName`, for `blockedOnLock`) and another connection's,
 * which has appended o1's first event in a transaction it keeps open until
 * `commitOther`.
 */
const uncommittedOtherWriter = Effect.gen(function*() {
  const schema = yield* Pg.freshSchema
  const applicationName = `fsm-test-${crypto.randomUUID().slice(0, 8)}`
  const mine = yield* storeOn(PgClient.layer({ ...Pg.clientConfig(schema), applicationName }))
  const other = yield* storeOn(Pg.layerClient(schema))
  const holding = yield* Deferred.make<void>()
  const release = yield* Deferred.make<void>()
  const otherWriter = yield* other.sql.withTransaction(
    other.store.append(commit("o1", 0, [event("@created", { by: "other" })])).pipe(
      Effect.zipRight(Deferred.succeed(holding, undefined)),
      Effect.zipRight(Deferred.await(release))
    )
  ).pipe(Effect.fork)
  yield* Deferred.await(holding)
  const commitOther = Effect.zipRight(Deferred.succeed(release, undefined), Fiber.join(otherWriter))
  return { applicationName, commitOther, mine }
})

/** Asserts that nothing of `instanceId` is stored. */
const expectNothingStored = (
  store: EventStore.EventStore["Type"],
  timers: TimeoutStore.TimeoutStore["Type"],
  instanceId: string
) =>
  Effect.gen(function*() {
    expect(yield* store.highestSequenceNr(machine, instanceId)).toBe(0)
    expect(Chunk.toArray(yield* Stream.runCollect(store.events(machine, instanceId, 1)))).toEqual([])
    expect(yield* store.loadSnapshot(machine, instanceId)).toEqual(Option.none())
    expect(yield* timers.pending(machine, instanceId)).toEqual([])
    expect(Chunk.toArray(yield* Stream.runCollect(store.instances(machine)))).not.toContain(instanceId)
  })

const tablesIn = (sql: SqlClient.SqlClient) =>
  Effect.map(
    sql.onDialectOrElse({
      pg: () =>
        sql<{ readonly name: string }>`SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()`,
      orElse: () =>
        sql<{ readonly name: string }>`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`
    }),
    (rows) => rows.map((row) => row.name).sort()
  )

const sqlSuite = (target: Target) =>
  describe.skipIf(target.skip !== undefined)(`SqlEventStore on ${target.name}`, () => {
    it.scoped("a failing statement after the events insert rolls the whole commit back", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { sql, store, timers } = yield* storeOn(db.client())
        // The snapshot write fails, after the events are in (SQLite checks
        // that they are; a PostgreSQL commit is one statement).
        yield* sql.onDialectOrElse({
          pg: () =>
            sql`CREATE FUNCTION fsm_test_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom (test)'; END $$`
              .pipe(
                Effect.zipRight(
                  sql`CREATE TRIGGER boom BEFORE INSERT ON fsm_snapshots FOR EACH ROW EXECUTE FUNCTION fsm_test_boom()`
                )
              ),
          orElse: () =>
            sql`CREATE TRIGGER boom BEFORE INSERT ON fsm_snapshots WHEN EXISTS (SELECT 1 FROM fsm_events WHERE instance_id = NEW.instance_id) BEGIN SELECT RAISE(ABORT, 'boom (test)'); END`
        })
        const failed = yield* Effect.flip(store.append(fullCommit("o1")))
        expect(failed).toMatchObject({ _tag: "PersistenceError", operation: "append" })
        expect(failed.message).toContain("boom (test)")
        yield* expectNothingStored(store, timers, "o1")

        // The same for a failing timer write.
        yield* sql`DROP TRIGGER boom${sql.onDialectOrElse({ pg: () => sql.literal(" ON fsm_snapshots"), orElse: () => sql.literal("") })}`
        yield* sql.onDialectOrElse({
          pg: () => sql`CREATE TRIGGER boom BEFORE INSERT ON fsm_timers FOR EACH ROW EXECUTE FUNCTION fsm_test_boom()`,
          orElse: () =>
            sql`CREATE TRIGGER boom BEFORE INSERT ON fsm_timers WHEN EXISTS (SELECT 1 FROM fsm_events WHERE instance_id = NEW.instance_id) BEGIN SELECT RAISE(ABORT, 'boom (test)'); END`
        })
        expect(yield* Effect.flip(store.append(fullCommit("o1")))).toMatchObject({ _tag: "PersistenceError" })
        yield* expectNothingStored(store, timers, "o1")

        // Without the failure the same commit goes through.
        yield* sql`DROP TRIGGER boom${sql.onDialectOrElse({ pg: () => sql.literal(" ON fsm_timers"), orElse: () => sql.literal("") })}`
        yield* store.append(fullCommit("o1"))
        expect(yield* store.highestSequenceNr(machine, "o1")).toBe(2)
        expect((yield* timers.pending(machine, "o1")).map((t) => t.name)).toEqual(["payment"])
      }))

    it.scoped("a commit whose COMMIT fails (a deferred foreign key) writes nothing, and the store works after it", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { sql, store, timers } = yield* storeOn(db.client())
        yield* poisonOnCommit(sql)
        const poisoned = commit("o1", 0, [event("@created"), event("Poison")], {
          snapshot: snapshot("o1", 2),
          timers: {
            cancelAll: false,
            schedule: [{ name: "payment", stateTag: "Pending", generation: 1, dueAt: 300_000, payload: { _tag: "T" } }]
          }
        })
        for (let attempt = 0; attempt < 2; attempt++) {
          const failed = yield* Effect.flip(store.append(poisoned))
          expect(failed).toMatchObject({ _tag: "PersistenceError", operation: "append" })
          expect(failed.message).toMatch(/foreign key/i)
          yield* expectNothingStored(store, timers, "o1")
          expect(Number((yield* sql<{ readonly n: unknown }>`SELECT COUNT(*) AS n FROM fsm_test_child`)[0]!.n)).toBe(0)
        }

        // The connection is not left inside the failed transaction: writes
        // commit, and transactions begin, as before.
        yield* store.append(fullCommit("o1"))
        expect(yield* store.highestSequenceNr(machine, "o1")).toBe(2)
        expect((yield* timers.pending(machine, "o1")).map((t) => t.name)).toEqual(["payment"])
        yield* timers.deadLetter({ machine, instanceId: "o1", name: "payment", generation: 1 }, { error: "gave up", now: 1 })
        expect((yield* timers.deadLetters(machine)).map((d) => d.name)).toEqual(["payment"])
        yield* sql.withTransaction(store.append(commit("o1", 2, [event("Ship")])))
        const other = yield* storeOn(db.client())
        expect(yield* other.store.highestSequenceNr(machine, "o1")).toBe(3)
      }))

    it.scoped("group commit: concurrent commits of many instances go out together (fsm_commit_group_size), not with groupCommit: false", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const groups = Effect.map(Metric.value(Metrics.commitGroupSize), (state) => ({ count: state.count, sum: state.sum }))
        const burst = (store: EventStore.EventStore["Type"], prefix: string) =>
          Effect.all(
            Array.from({ length: 40 }, (_, i) => store.append(commit(`${prefix}${i}`, 0, [event("@created")]))),
            { concurrency: "unbounded", discard: true }
          )
        const grouped = yield* storeOn(db.client())
        const before = yield* groups
        yield* burst(grouped.store, "a")
        const after = yield* groups
        // 40 commits in fewer writes than commits: at least one group held several.
        expect(after.sum - before.sum).toBe(40)
        expect(after.count - before.count).toBeLessThan(40)
        for (let i = 0; i < 40; i++) expect(yield* grouped.store.highestSequenceNr(machine, `a${i}`)).toBe(1)

        const alone = yield* storeOn(db.client(), { groupCommit: false })
        yield* burst(alone.store, "b")
        expect(yield* groups).toEqual(after)
        for (let i = 0; i < 40; i++) expect(yield* alone.store.highestSequenceNr(machine, `b${i}`)).toBe(1)
      }))

    it.scoped("group commit: a group writes every part of its commits as they are given (payloads, snapshots, timers scheduled, fired and cancelled, outbox commands), and refuses the one stale commit alone (in one statement on PostgreSQL)", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { sql, store, timers } = yield* storeOn(db.client())
        // 13: a group of several chunks on SQLite (see `chunked`), the stale commit in its second chunk
        // (j8: tenth or eleventh in (machine, instance_id) order, whether or not the first commit led alone).
        const ids = Array.from({ length: 13 }, (_, i) => `j${i}`)
        const stale = 8
        // Text JSON must escape, at the edges of what a double holds; a key that is also a column of the group's records.
        const odd = (i: number) => ({
          _tag: "Pay",
          text: `"quoted" \\ back\\slash \n tab\t </script> ∑ 😀 ${i}`,
          big: 2 ** 53 - 1,
          small: 5e-324,
          huge: 1.7976931348623157e308,
          nested: { payload: [null, true, { k: i }], seq_nr: "x" }
        })
        // And text columns with what array literals and JSON quote: quotes, a backslash, braces, commas, NULL.
        const corr = (i: number) => `c"\\{a,b} NULL ' ${i}`
        // 0, 1 or 2 timers and 2, 0 or 1 commands a commit: their rows are not their commit's index.
        const schedule = (i: number) =>
          Array.from({ length: i % 3 }, (_, n) => ({ name: `ship${n}`, stateTag: "Paid", generation: 2, dueAt: 400_000 + 10 * i + n, payload: odd(100 + 10 * i + n) }))
        const produce = (i: number) =>
          Array.from({ length: (i + 2) % 3 }, (_, n) => ({
            index: n,
            kind: "handler" as const,
            tag: `Charge${n}`,
            payload: odd(200 + 10 * i + n),
            target: null,
            correlationId: null,
            fenceToken: null
          }))
        const cancels = (i: number) => i % 4 === 0
        for (const [i, id] of ids.entries()) {
          yield* store.append(commit(id, 0, [event("@created")], {
            timers: {
              cancelAll: false,
              schedule: [
                { name: "payment", stateTag: "Pending", generation: 1, dueAt: 300_000, payload: { _tag: "T" } },
                ...(cancels(i) ? [{ name: "reminder", stateTag: "Pending", generation: 1, dueAt: 350_000, payload: { _tag: "R" } }] : [])
              ]
            }
          }))
          // Logs of one and of two events: a check read matched to the wrong commit refuses it.
          if (i % 2 === 1) yield* store.append(commit(id, 1, [event("Note")]))
        }
        const last = (i: number) => 1 + (i % 2)
        // Statements that insert events, counted by a statement trigger (PostgreSQL: a refused group that was
        // written commit by commit would count one a commit).
        if (target.name === "postgres") {
          yield* sql`CREATE TABLE fsm_test_statements (n integer NOT NULL)`
          yield* sql`CREATE FUNCTION fsm_test_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO fsm_test_statements VALUES (1); RETURN NULL; END $$`
          yield* sql`CREATE TRIGGER counted AFTER INSERT ON fsm_events FOR EACH STATEMENT EXECUTE FUNCTION fsm_test_count()`
        }
        const groups = Effect.map(Metric.value(Metrics.commitGroupSize), (state) => state.count)
        const before = yield* groups
        const outcomes = yield* Effect.all(
          ids.map((id, i) =>
            Effect.either(store.append({
              ...commit(id, i === stale ? 5 : last(i), [{ ...event("Pay", odd(i)), metadata: { ...event("Pay").metadata, correlationId: corr(i), commitId: `id-${i}` } }]),
              snapshot: { ...snapshot(id, last(i) + 1), state: odd(1000 + i) },
              timers: { cancelAll: cancels(i), fired: { name: "payment", generation: 1 }, schedule: schedule(i) },
              outbox: { produce: produce(i) }
            }))
          ),
          { concurrency: "unbounded" }
        )
        const written = (yield* groups) - before
        // At most two groups: one of at least 7 commits, several chunks on SQLite.
        expect(written).toBeLessThanOrEqual(2)
        if (target.name === "postgres") {
          // Each group one statement (the stale commit, refused by the group's checks, reads the log once more).
          const statements = Number((yield* sql<{ readonly n: unknown }>`SELECT COUNT(*) AS n FROM fsm_test_statements`)[0]!.n)
          expect(statements).toBe(written)
        }
        const parsed = (value: unknown) => typeof value === "string" ? JSON.parse(value) : value
        for (const [i, id] of ids.entries()) {
          const outcome = outcomes[i]!
          const page = yield* store.eventsPage(machine, id, 1, 10)
          const pending = yield* timers.pending(machine, id)
          const commands = yield* sql<{ readonly tag: string; readonly payload: unknown }>`SELECT tag, payload FROM fsm_outbox WHERE instance_id = ${id} ORDER BY idx`
          if (i === stale) {
            expect(Either.isLeft(outcome) && outcome.left).toMatchObject({ _tag: "SequenceConflict", expected: 5, actual: last(i) })
            expect(page.map((e) => e.tag)).toEqual(i % 2 === 1 ? ["@created", "Note"] : ["@created"])
            expect(pending.map((t) => t.name).sort()).toEqual(cancels(i) ? ["payment", "reminder"] : ["payment"])
            expect(commands).toEqual([])
            expect(yield* store.loadSnapshot(machine, id)).toEqual(Option.none())
            continue
          }
          expect(Either.isRight(outcome)).toBe(true)
          expect(page.map((e) => e.tag)).toEqual(i % 2 === 1 ? ["@created", "Note", "Pay"] : ["@created", "Pay"])
          expect(page[page.length - 1]).toMatchObject({
            seqNr: last(i) + 1,
            tag: "Pay",
            payload: odd(i),
            metadata: { correlationId: corr(i), commitId: `id-${i}` }
          })
          expect(Option.getOrThrow(yield* store.loadSnapshot(machine, id))).toMatchObject({ seqNr: last(i) + 1, state: odd(1000 + i) })
          // The fired timer consumed, the reminder cancelled, the scheduled ones written with their own payloads.
          expect(pending).toMatchObject(schedule(i).map(({ name, dueAt, payload }) => ({ name, generation: 2, dueAt, payload })))
          expect(commands.map((c) => [c.tag, parsed(c.payload)])).toEqual(produce(i).map((c) => [c.tag, c.payload]))
        }
      }))

    it.scoped("group commit: a group the database refuses (one commit breaks a trigger) is written commit by commit, so only that one fails", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { sql, store, timers } = yield* storeOn(db.client())
        yield* sql.onDialectOrElse({
          pg: () =>
            sql`CREATE FUNCTION fsm_test_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.tag = 'Poison' THEN RAISE EXCEPTION 'boom (test)'; END IF; RETURN NEW; END $$`
              .pipe(Effect.zipRight(sql`CREATE TRIGGER boom BEFORE INSERT ON fsm_events FOR EACH ROW EXECUTE FUNCTION fsm_test_boom()`)),
          orElse: () =>
            sql`CREATE TRIGGER boom BEFORE INSERT ON fsm_events WHEN NEW.tag = 'Poison' BEGIN SELECT RAISE(ABORT, 'boom (test)'); END`
        })
        const ids = Array.from({ length: 12 }, (_, i) => `p${i}`)
        const groups = Effect.map(Metric.value(Metrics.commitGroupSize), (state) => state.count)
        const before = yield* groups
        const outcomes = yield* Effect.all(
          ids.map((id) =>
            Effect.either(store.append(commit(id, 0, [event(id === "p5" ? "Poison" : "@created")], {
              timers: {
                cancelAll: false,
                schedule: [{ name: "payment", stateTag: "Pending", generation: 1, dueAt: 300_000, payload: { _tag: "T" } }]
              }
            })))
          ),
          { concurrency: "unbounded" }
        )
        expect(yield* groups).toBeGreaterThan(before)
        for (const [index, id] of ids.entries()) {
          const outcome = outcomes[index]!
          if (id === "p5") {
            expect(Either.isLeft(outcome) && outcome.left).toMatchObject({ _tag: "PersistenceError", operation: "append" })
            yield* expectNothingStored(store, timers, id)
          } else {
            expect(Either.isRight(outcome)).toBe(true)
            expect(yield* store.highestSequenceNr(machine, id)).toBe(1)
            expect((yield* timers.pending(machine, id)).map((t) => t.name)).toEqual(["payment"])
          }
        }
      }))

    it.scoped("group commit: a group whose COMMIT fails (a deferred foreign key) writes none of it, then each commit goes alone and only the poisoned one fails", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { sql, store, timers } = yield* storeOn(db.client())
        yield* poisonOnCommit(sql)
        const ids = Array.from({ length: 10 }, (_, i) => `f${i}`)
        const groups = Effect.map(Metric.value(Metrics.commitGroupSize), (state) => ({ count: state.count, sum: state.sum }))
        const before = yield* groups
        const outcomes = yield* Effect.all(
          ids.map((id) => Effect.either(store.append(commit(id, 0, [event(id === "f3" ? "Poison" : "@created")])))),
          { concurrency: "unbounded" }
        )
        const after = yield* groups
        expect(after.sum - before.sum).toBe(10)
        expect(after.count - before.count).toBeLessThan(10)
        for (const [index, id] of ids.entries()) {
          const outcome = outcomes[index]!
          if (id === "f3") {
            expect(Either.isLeft(outcome) && outcome.left).toMatchObject({ _tag: "PersistenceError", operation: "append" })
            expect(Either.isLeft(outcome) && outcome.left.message).toMatch(/foreign key/i)
            yield* expectNothingStored(store, timers, id)
          } else {
            expect(Either.isRight(outcome)).toBe(true)
            expect(yield* store.highestSequenceNr(machine, id)).toBe(1)
          }
        }
        expect(Number((yield* sql<{ readonly n: unknown }>`SELECT COUNT(*) AS n FROM fsm_test_child`)[0]!.n)).toBe(0)
        // The connection is not left inside the failed transaction.
        yield* store.append(commit("after", 0, [event("@created")]))
        yield* sql.withTransaction(store.append(commit("after", 1, [event("Ship")])))
        expect(yield* (yield* storeOn(db.client())).store.highestSequenceNr(machine, "after")).toBe(2)
      }))

    it.scoped("interrupting the fiber inside a transaction that holds a commit leaves nothing", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { sql, store, timers } = yield* storeOn(db.client())
        const committed = yield* Deferred.make<void>()
        const fiber = yield* sql.withTransaction(
          store.append(fullCommit("o1")).pipe(
            Effect.zipRight(Deferred.succeed(committed, undefined)),
            Effect.zipRight(Effect.never)
          )
        ).pipe(Effect.fork)
        yield* Deferred.await(committed)
        expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
        yield* expectNothingStored(store, timers, "o1")
      }))

    it.scoped("inside a caller's transaction a conflict is a SequenceConflict and the transaction goes on", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { sql, store } = yield* storeOn(db.client())
        yield* sql.withTransaction(Effect.gen(function*() {
          yield* store.append(commit("o1", 0, [event("@created")]))
          const conflict = yield* Effect.flip(store.append(commit("o1", 0, [event("@created")])))
          expect(conflict).toMatchObject({ _tag: "SequenceConflict", expected: 0, actual: 1 })
          yield* store.append(commit("o1", 1, [event("Pay")]))
        }))
        expect(yield* store.highestSequenceNr(machine, "o1")).toBe(2)
      }))

    it.scoped("inside a caller's transaction a fenced-off commit is a FencingRejected that writes nothing, and the transaction goes on", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { leases, sql, store, timers } = yield* storeOn(db.client())
        const old = Option.getOrThrow(yield* leases.tryAcquire(leaseKey, "node-a", "1 hour"))
        yield* leases.release(old)
        const current = Option.getOrThrow(yield* leases.tryAcquire(leaseKey, "node-b", "1 hour"))
        yield* sql.withTransaction(Effect.gen(function*() {
          // On SQLite the events are inserted before the lease is read: they must be rolled back.
          const refused = yield* Effect.flip(store.append({ ...fullCommit("o1"), fence: { owner: "node-a", token: old.token } }))
          expect(refused).toMatchObject({ _tag: "FencingRejected", owner: "node-a", token: 1 })
          yield* expectNothingStored(store, timers, "o1")
          yield* store.append({ ...fullCommit("o1"), fence: { owner: current.owner, token: current.token } })
        }))
        expect(yield* store.highestSequenceNr(machine, "o1")).toBe(2)
        expect((yield* timers.pending(machine, "o1")).map((t) => t.name)).toEqual(["payment"])
        expect(Option.map(yield* store.loadSnapshot(machine, "o1"), (s) => s.seqNr)).toEqual(Option.some(2))
      }))

    it.scoped("migrations are idempotent: a second run does nothing and keeps the data", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const client = Context.get(yield* Layer.build(db.client()), SqlClient.SqlClient)
        const migrate = (options?: { readonly tablePrefix?: string }) =>
          Effect.provideService(SqlEventStore.migrate(options), SqlClient.SqlClient, client)
        expect(yield* migrate()).toEqual([[1, "create_tables"], [2, "commit_columns"], [3, "leases"], [4, "outbox"], [
          5,
          "instances"
        ]])
        expect(yield* migrate()).toEqual([])

        const first = yield* storeOn(db.client())
        yield* first.store.append(fullCommit("o1"))
        const second = yield* storeOn(db.client())
        expect(yield* second.store.highestSequenceNr(machine, "o1")).toBe(2)
        expect(yield* migrate()).toEqual([])
        const recorded = yield* client<{ readonly migration_id: unknown; readonly name: string }>`SELECT migration_id, name FROM fsm_migrations`
        expect(recorded.map((row) => [Number(row.migration_id), row.name])).toEqual([
          [1, "create_tables"],
          [2, "commit_columns"],
          [3, "leases"],
          [4, "outbox"],
          [5, "instances"]
        ])

        // migrate: false leaves a database alone.
        const untouched = yield* storeOn(db.client(), { tablePrefix: "untouched_", migrate: false })
        expect((yield* tablesIn(untouched.sql)).filter((name) => name.startsWith("untouched_"))).toEqual([])
        expect(yield* Effect.flip(untouched.store.highestSequenceNr(machine, "o1"))).toMatchObject({
          _tag: "PersistenceError",
          operation: "highestSequenceNr"
        })
      }))

    it.scoped("three nodes starting at once on one database migrate it once, and all work", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const nodes = yield* Effect.all([storeOn(db.client()), storeOn(db.client()), storeOn(db.client())], {
          concurrency: "unbounded"
        })
        const recorded = yield* nodes[0].sql<{ readonly name: string }>`SELECT name FROM fsm_migrations`
        expect(recorded.map((row) => row.name)).toEqual(["create_tables", "commit_columns", "leases", "outbox", "instances"])
        yield* Effect.forEach(nodes, (node, i) => node.store.append(commit(`from-${i}`, 0, [event("@created")])), {
          concurrency: "unbounded"
        })
        for (const node of nodes) {
          expect(Chunk.toArray(yield* Stream.runCollect(node.store.instances(machine))).sort()).toEqual([
            "from-0",
            "from-1",
            "from-2"
          ])
        }
      }))

    it.scoped("an invalid table prefix fails with InvalidTablePrefix and creates nothing", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const client = Context.get(yield* Layer.build(db.client()), SqlClient.SqlClient)
        const bad = [
          "",
          "Orders_",
          "orders-",
          "1orders",
          "fsm_events; DROP TABLE x; --",
          "x\"y",
          "ü_",
          "a".repeat(32)
        ]
        for (const prefix of bad) {
          const errors = [
            yield* Effect.flip(Layer.build(SqlEventStore.layer({ tablePrefix: prefix }).pipe(Layer.provide(db.client())))),
            yield* Effect.flip(Layer.build(db.convenience({ tablePrefix: prefix }))),
            yield* Effect.flip(Effect.provideService(SqlEventStore.make({ tablePrefix: prefix }), SqlClient.SqlClient, client)),
            yield* Effect.flip(Effect.provideService(SqlEventStore.migrate({ tablePrefix: prefix }), SqlClient.SqlClient, client)),
            yield* Effect.flip(SqlEventStore.tableNames(prefix))
          ]
          for (const error of errors) expect(error).toMatchObject({ _tag: "InvalidTablePrefix", prefix })
        }
        expect(yield* tablesIn(client)).toEqual([])
        for (const prefix of ["_", "a", "x_1", "a".repeat(31)]) {
          expect((yield* SqlEventStore.tableNames(prefix)).events).toBe(`${prefix}events`)
        }
      }))

    it.scoped("migration 5 rebuilds the current-state rows of logs written before it, as commits keep them", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { sql, store } = yield* storeOn(db.client())
        const at = (e: EventStore.NewEvent, timestamp: number, stateTag = e.stateTag): EventStore.NewEvent => ({
          ...e,
          stateTag,
          metadata: { ...e.metadata, timestamp }
        })
        // o1: Pending, then Paid at 2000, a stay at 3000. o2: stopped. o3: two commits in Pending.
        yield* store.append(commit("o1", 0, [at(event("@created"), 1000), at(event("Note"), 1500)]))
        yield* store.append(commit("o1", 2, [at(event("Pay"), 2000, "Paid")]))
        yield* store.append(commit("o1", 3, [at(event("Note"), 3000, "Paid")]))
        yield* store.append(commit("o2", 0, [at(event("@created"), 1000)]))
        yield* store.append(commit("o2", 1, [at(event("@stopped"), 4000)]))
        yield* store.append(commit("o3", 0, [at(event("@created"), 500), at(event("Pay"), 600, "Paid"), at(event("Note"), 700, "Paid")]))
        yield* store.append(commit("o3", 3, [at(event("Back"), 800, "Pending")]))
        const ids = ["o1", "o2", "o3"]
        const rows = Effect.forEach(ids, (id) => store.instance(machine, id))
        const kept = yield* rows
        expect(kept.map(Option.map((row) => [row.stateTag, row.seqNr, row.enteredAt, row.updatedAt, row.stopped]))).toEqual([
          Option.some(["Paid", 4, 2000, 3000, false]),
          Option.some(["Pending", 2, 1000, 4000, true]),
          Option.some(["Pending", 4, 800, 800, false])
        ])

        yield* sql`DROP TABLE fsm_instances`
        yield* sql`DROP TABLE fsm_state_counts`
        yield* sql`DELETE FROM fsm_migrations WHERE migration_id = 5`
        expect(yield* Effect.provideService(SqlEventStore.migrate(), SqlClient.SqlClient, sql)).toEqual([[5, "instances"]])
        expect(yield* rows).toEqual(kept)
        expect(yield* store.stateCounts(machine)).toEqual([
          { stateTag: "Paid", stopped: false, count: 1 },
          { stateTag: "Pending", stopped: false, count: 1 },
          { stateTag: "Pending", stopped: true, count: 1 }
        ])
      }))

    it.scoped("a commit inside a caller's transaction that rolls back leaves no current-state row", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { sql, store } = yield* storeOn(db.client())
        const rolledBack = sql.withTransaction(
          Effect.zipRight(store.append(fullCommit("o1")), Effect.fail("caller gives up" as const))
        )
        expect(yield* Effect.flip(rolledBack)).toBe("caller gives up")
        expect(yield* store.instance(machine, "o1")).toEqual(Option.none())
        yield* store.append(fullCommit("o1"))
        expect(Option.map(yield* store.instance(machine, "o1"), (row) => row.seqNr)).toEqual(Option.some(2))
      }))

    it.scoped("the table prefix names every table, and stores with different prefixes do not see each other", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const orders = yield* Layer.build(db.convenience({ tablePrefix: "orders_" }))
        const billing = yield* storeOn(db.client(), { tablePrefix: "billing_" })
        expect(yield* tablesIn(billing.sql)).toEqual([
          "billing_dead_letters",
          "billing_events",
          "billing_instances",
          "billing_leases",
          "billing_migrations",
          "billing_outbox",
          "billing_outbox_dead_letters",
          "billing_snapshots",
          "billing_state_counts",
          "billing_timers",
          "orders_dead_letters",
          "orders_events",
          "orders_instances",
          "orders_leases",
          "orders_migrations",
          "orders_outbox",
          "orders_outbox_dead_letters",
          "orders_snapshots",
          "orders_state_counts",
          "orders_timers"
        ])
        expect(yield* SqlEventStore.tableNames("orders_")).toEqual({
          events: "orders_events",
          snapshots: "orders_snapshots",
          timers: "orders_timers",
          deadLetters: "orders_dead_letters",
          leases: "orders_leases",
          outbox: "orders_outbox",
          outboxDeadLetters: "orders_outbox_dead_letters",
          instances: "orders_instances",
          stateCounts: "orders_state_counts",
          migrations: "orders_migrations"
        })
        yield* Context.get(orders, EventStore.EventStore).append(fullCommit("o1"))
        const rows = yield* billing.sql<{ readonly n: unknown }>`SELECT COUNT(*) AS n FROM orders_events WHERE instance_id = ${"o1"}`
        expect(Number(rows[0]!.n)).toBe(2)
        yield* expectNothingStored(billing.store, billing.timers, "o1")
      }))

    it.scoped("a log with gaps (rows another writer deleted): a page still holds the first limit events from fromSeqNr", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { sql, store } = yield* storeOn(db.client())
        yield* store.append(commit("g", 0, Array.from({ length: 12 }, (_, i) => event(`e${i + 1}`))))
        yield* sql`DELETE FROM fsm_events WHERE instance_id = ${"g"} AND seq_nr IN (5, 6, 11)`
        const seqNrs = (records: ReadonlyArray<{ readonly seqNr: number }>) => records.map((r) => r.seqNr)
        const pages = [[1, 4], [1, 6], [3, 3], [4, 5], [7, 4], [7, 10], [12, 3], [13, 2]] as const
        for (const [from, limit] of pages) {
          const expected = [1, 2, 3, 4, 7, 8, 9, 10, 12].filter((n) => n >= from).slice(0, limit)
          expect([from, limit, seqNrs(yield* store.eventsPage(machine, "g", from, limit))]).toEqual([from, limit, expected])
          expect([from, limit, seqNrs(yield* store.replayPage(machine, "g", from, limit))]).toEqual([from, limit, expected])
        }
      }))

    it.scoped("driver failures and unreadable rows are PersistenceErrors naming the operation", () =>
      Effect.gen(function*() {
        const db = yield* target.fresh
        const { sql, store, timers } = yield* storeOn(db.client())
        yield* store.append(commit("o1", 0, [event("@created")]))
        // A row the store did not write, with a payload that is not JSON (only SQLite lets it in).
        if (target.name === "sqlite") {
          yield* sql`UPDATE fsm_events SET payload = ${"{not json"} WHERE instance_id = ${"o1"}`
          expect(yield* Effect.flip(Stream.runCollect(store.events(machine, "o1", 1)))).toMatchObject({
            _tag: "PersistenceError",
            operation: "events"
          })
          // The page SQLite cannot build as one JSON text is read as rows, whose error is the row's.
          expect(yield* Effect.flip(store.replayPage(machine, "o1", 1, 10))).toMatchObject({
            _tag: "PersistenceError",
            operation: "replayPage"
          })
          expect(yield* Effect.flip(store.eventsPage(machine, "o1", 1, 10))).toMatchObject({
            _tag: "PersistenceError",
            operation: "events"
          })
          // JSON5, which SQLite's json() would take and rewrite (NaN to null), is refused as the row query refuses it.
          for (const lenient of ["{a: 1}", "{\"x\": NaN}", "{\"x\": 1,}", "{\"x\": 0x10}"]) {
            yield* sql`UPDATE fsm_events SET payload = ${lenient} WHERE instance_id = ${"o1"}`
            expect([lenient, yield* Effect.flip(store.replayPage(machine, "o1", 1, 10))]).toMatchObject([lenient, {
              _tag: "PersistenceError",
              operation: "replayPage"
            }])
            expect((yield* Effect.flip(store.eventsPage(machine, "o1", 1, 10)))._tag).toBe("PersistenceError")
          }
          // Payloads that are not JSON alone, but whose texts joined into one array of a page's payloads
          // would parse, with as many elements as the page has rows: still refused, as each row alone is.
          yield* store.append(commit("o3", 0, [event("@created"), event("e2")]))
          yield* sql`UPDATE fsm_events SET payload = ${"1,[2"} WHERE instance_id = ${"o3"} AND seq_nr = 1`
          yield* sql`UPDATE fsm_events SET payload = ${"3]"} WHERE instance_id = ${"o3"} AND seq_nr = 2`
          expect(yield* Effect.flip(store.replayPage(machine, "o3", 1, 10))).toMatchObject({
            _tag: "PersistenceError",
            operation: "replayPage"
          })
          expect((yield* Effect.flip(store.eventsPage(machine, "o3", 1, 10)))._tag).toBe("PersistenceError")
        }
        yield* sql`DROP TABLE fsm_events`
        yield* sql`DROP TABLE fsm_timers`
        const failures = [
          yield* Effect.flip(store.append(commit("o2", 0, [event("@created")]))),
          yield* Effect.flip(store.highestSequenceNr(machine, "o1")),
          yield* Effect.flip(Stream.runCollect(store.events(machine, "o1", 1))),
          yield* Effect.flip(Stream.runCollect(store.instances(machine))),
          yield* Effect.flip(timers.claimDue({ machines: [machine], now: 1, limit: 1, nodeId: "n", claimUntil: 2 }))
        ]
        expect(failures.map((failure) => failure._tag === "PersistenceError" && failure.operation)).toEqual([
          "append",
          "highestSequenceNr",
          "events",
          "instances",
          "claimDue"
        ])
        for (const failure of failures) {
          expect(failure._tag).toBe("PersistenceError")
          expect(failure.message).toMatch(/fsm_events|fsm_timers/)
        }
      }))
  })

sqlSuite(sqliteTarget)
sqlSuite(pgTarget)

describe("SqlEventStore on sqlite: options", () => {
  it.scoped("the schema option is refused: SQLite has no schemas", () =>
    Effect.gen(function*() {
      const db = yield* sqliteTarget.fresh
      const error = (yield* Effect.flip(storeOn(db.client(), { schema: "orders" }))) as SqlEventStore.MakeError
      expect(error._tag).toBe("InvalidConfiguration")
      expect(error.message).toContain("PostgreSQL")
    }))
})

describe("SqlEventStore on sqlite: one file, several connections", () => {
  it.scoped("SqliteEventStore.layerClient creates the file and tunes the connection (WAL, synchronous NORMAL, busy timeout)", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const filename = path.join(directory, "new.db")
      expect(fs.existsSync(filename)).toBe(false)
      const sql = Context.get(
        yield* Layer.build(SqliteEventStore.layerClient({ filename, busyTimeout: "1234 millis" })),
        SqlClient.SqlClient
      )
      expect(fs.existsSync(filename)).toBe(true)
      expect(yield* sql`PRAGMA journal_mode`).toEqual([{ journal_mode: "wal" }])
      expect(yield* sql`PRAGMA synchronous`).toEqual([{ synchronous: 1 }])
      expect(yield* sql`PRAGMA busy_timeout`).toEqual([{ timeout: 1234 }])

      const missing = path.join(directory, "no-such-directory", "x.db")
      const failed = yield* Effect.flip(Layer.build(SqliteEventStore.layer({ filename: missing })))
      expect(failed).toMatchObject({ _tag: "PersistenceError" })
      expect(failed.message).toContain(missing)
    }))

  it.scoped("two layers on one file writing one instance at once get SequenceConflicts, never SQLITE_BUSY", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const filename = path.join(directory, "shared.db")
      // A short busy timeout, so a lock held across a fiber switch would show
      // up as SQLITE_BUSY at once instead of as a slow test.
      const open = Effect.map(
        Layer.build(SqliteEventStore.layer({ filename, busyTimeout: "20 millis" })),
        (context) => Context.get(context, EventStore.EventStore)
      )
      const [a, b] = yield* Effect.all([open, open], { concurrency: "unbounded" })
      const rounds = 15
      const results = yield* Effect.forEach(Array.from({ length: rounds }, (_, round) => round), (round) =>
        Effect.all(
          Array.from({ length: 20 }, (_, i) =>
            Effect.either((i % 2 === 0 ? a : b).append(commit("shared", round, [event(`r${round}-w${i}`)])))),
          { concurrency: "unbounded" }
        ))
        // Fibers switch as often as possible, to give a lock every chance to be held across a switch.
        .pipe(Effect.withMaxOpsBeforeYield(32))
      for (const [round, outcomes] of results.entries()) {
        expect(outcomes.filter(Either.isRight)).toHaveLength(1)
        for (const outcome of outcomes) {
          if (Either.isLeft(outcome)) {
            expect(outcome.left).toMatchObject({ _tag: "SequenceConflict", expected: round, actual: round + 1 })
          }
        }
      }
      // Writers of different instances on the two connections all succeed.
      yield* Effect.forEach(Array.from({ length: 40 }, (_, i) => i), (i) =>
        (i % 2 === 0 ? a : b).append(commit(`own-${i}`, 0, [event("@created")])), { concurrency: "unbounded" })
        .pipe(Effect.withMaxOpsBeforeYield(32))
      for (const store of [a, b]) {
        const log = Chunk.toArray(yield* Stream.runCollect(store.events(machine, "shared", 1)))
        expect(log.map((r) => r.seqNr)).toEqual(Array.from({ length: rounds }, (_, i) => i + 1))
        expect(Chunk.size(yield* Stream.runCollect(store.instances(machine)))).toBe(41)
      }
    }))
})

describe("PgEventStore's statement names", () => {
  it("a text with parameters is named on its second use, each text its own name, up to the limit", () => {
    const nameOf = makeNamer(2)
    expect(nameOf("a")).toBeUndefined()
    expect(nameOf("b")).toBeUndefined()
    const a = nameOf("a")
    expect(a).toBeDefined()
    expect(nameOf("a")).toBe(a)
    const b = nameOf("b")
    expect(b).toBeDefined()
    expect(b).not.toBe(a)
    // Two texts are named: a third stays unnamed however often it comes, the named keep their names.
    for (let i = 0; i < 3; i++) expect(nameOf("c")).toBeUndefined()
    expect([nameOf("a"), nameOf("b")]).toEqual([a, b])
  })

  it("the texts seen once are bounded: when full they are forgotten, and a text then needs two more uses", () => {
    const nameOf = makeNamer(2)
    nameOf("a")
    nameOf("b")
    nameOf("c") // the set of texts seen once was full: it now holds only c
    expect(nameOf("a")).toBeUndefined()
    expect(nameOf("a")).toBeDefined()
    expect(nameOf("c")).toBeDefined()
  })
})

describe.skipIf(pgTarget.skip !== undefined)("SqlEventStore on postgres: statements and configuration", () => {
  it.scoped("PgEventStore.layerClient prepares the store's repeated statements once per connection; preparedStatements: false prepares none", () =>
    Effect.gen(function*() {
      const prepared = (preparedStatements: boolean) =>
        Effect.gen(function*() {
          const schema = yield* Pg.freshSchema
          const { sql, store } = yield* storeOn(
            PgEventStore.layerClient({ ...Pg.clientConfig(schema), maxConnections: 1, preparedStatements })
          )
          for (let i = 0; i < 8; i++) yield* store.append(commit(`p${i}`, 0, [event("@created")]))
          // One connection: the session that ran the commits answers.
          return yield* sql<{ readonly statement: string; readonly plans: unknown }>`
            SELECT statement, generic_plans + custom_plans AS plans FROM pg_prepared_statements`
        })
      const named = yield* Effect.scoped(prepared(true))
      const commits = named.filter((row) => row.statement.includes("fsm_events") && row.statement.includes("INSERT"))
      expect(commits).toHaveLength(1)
      // The first use ran unnamed, the second prepared it, the rest reused it.
      expect(Number(commits[0]!.plans)).toBe(7)
      expect(yield* Effect.scoped(prepared(false))).toEqual([])
    }))

  it.scoped("interrupting a commit blocked in the middle of its statement leaves nothing", () =>
    Effect.gen(function*() {
      const db = yield* pgTarget.fresh
      const { sql, store, timers } = yield* storeOn(db.client())
      const key = 1 + Math.floor(Math.random() * 2_000_000_000)
      // The snapshot write waits for an advisory lock the test holds: the
      // commit's statement is then running, its events already handled.
      yield* sql.unsafe(
        `CREATE FUNCTION fsm_test_wait() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_xact_lock(${key}); RETURN NEW; END $$`
      )
      yield* sql`CREATE TRIGGER wait BEFORE INSERT ON fsm_snapshots FOR EACH ROW EXECUTE FUNCTION fsm_test_wait()`
      const holder = yield* sql.reserve
      yield* holder.executeUnprepared(`SELECT pg_advisory_lock(${key})`, [], undefined)

      const fiber = yield* Effect.fork(store.append(fullCommit("o1")))
      const waiting = sql<{ readonly n: unknown }>`SELECT COUNT(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = 0 AND objid = ${key}`
      let blocked = false
      for (let tries = 0; tries < 10_000 && !blocked; tries++) {
        blocked = Number((yield* waiting)[0]!.n) === 1
      }
      expect(blocked).toBe(true)
      expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
      yield* holder.executeUnprepared(`SELECT pg_advisory_unlock(${key})`, [], undefined)

      yield* expectNothingStored(store, timers, "o1")
      // The store still works, and the same commit can now go through.
      yield* sql`DROP TRIGGER wait ON fsm_snapshots`
      yield* store.append(fullCommit("o1"))
      expect(yield* store.highestSequenceNr(machine, "o1")).toBe(2)
    }))

  it.scoped("losing a race on the primary key inside a caller's transaction is a SequenceConflict, and the transaction goes on", () =>
    Effect.gen(function*() {
      // Another writer has appended o1's seqNr 1 and not committed yet.
      const { applicationName, commitOther, mine } = yield* uncommittedOtherWriter

      // Our commit does not see that row, so its insert waits on the key...
      const ours = yield* mine.sql.withTransaction(Effect.gen(function*() {
        const lost = yield* Effect.flip(mine.store.append(commit("o1", 0, [event("@created", { by: "mine" })])))
        yield* mine.store.append(commit("o1", 1, [event("Pay")]))
        return lost
      })).pipe(Effect.fork)
      expect(yield* blockedOnLock(mine.sql, applicationName)).toBe(true)
      // ...and fails on it once the other writer commits.
      yield* commitOther
      expect(yield* Fiber.join(ours)).toMatchObject({ _tag: "SequenceConflict", expected: 0, actual: 1 })
      const log = Chunk.toArray(yield* Stream.runCollect(mine.store.events(machine, "o1", 1)))
      expect(log.map((r) => [r.seqNr, r.payload])).toEqual([[1, { by: "other" }], [2, { _tag: "Pay" }]])
    }))

  it.scoped("group commit: a commit of a group beaten to its key by another connection gets SequenceConflict alone; the others are written", () =>
    Effect.gen(function*() {
      // Another writer has appended o1's seqNr 1 and not committed yet.
      const { applicationName, commitOther, mine } = yield* uncommittedOtherWriter
      const groups = Effect.map(Metric.value(Metrics.commitGroupSize), (state) => state.sum - state.count)
      const grouped = yield* groups
      // The group's checks do not see that row, so its insert of o1 waits on the key...
      const ours = yield* Effect.all(
        ["p1", "o1", "p2", "p3"].map((id) => Effect.either(mine.store.append(commit(id, 0, [event("@created", { by: "mine" })])))),
        { concurrency: "unbounded" }
      ).pipe(Effect.fork)
      expect(yield* blockedOnLock(mine.sql, applicationName)).toBe(true)
      // ...and skips it once the other writer commits: o1 alone conflicts, with the log's real end.
      yield* commitOther
      const [p1, o1, p2, p3] = yield* Fiber.join(ours)
      expect(Either.isLeft(o1!) && o1.left).toMatchObject({ _tag: "SequenceConflict", expected: 0, actual: 1 })
      for (const outcome of [p1, p2, p3]) expect(Either.isRight(outcome!)).toBe(true)
      expect(yield* groups).toBeGreaterThan(grouped)
      const log = Chunk.toArray(yield* Stream.runCollect(mine.store.events(machine, "o1", 1)))
      expect(log.map((r) => [r.seqNr, r.payload])).toEqual([[1, { by: "other" }]])
      expect(Option.map(yield* mine.store.instance(machine, "o1"), (row) => row.seqNr)).toEqual(Option.some(1))
      for (const id of ["p1", "p2", "p3"]) expect(yield* mine.store.highestSequenceNr(machine, id)).toBe(1)
      expect(yield* mine.store.stateCounts(machine)).toEqual([{ stateTag: "Pending", stopped: false, count: 4 }])
    }))

  it.scoped("a takeover waits for a fenced commit holding the lease row and comes after it; a fenced commit waiting on a takeover is refused", () =>
    Effect.gen(function*() {
      const schema = yield* Pg.freshSchema
      const applicationName = `fsm-test-${crypto.randomUUID().slice(0, 8)}`
      const mine = yield* storeOn(PgClient.layer({ ...Pg.clientConfig(schema), applicationName }))
      const other = yield* storeOn(Pg.layerClient(schema))
      // Forked into the scope: a failing check ends them before the schema is dropped.

      // 1. node-a's lease expired, nobody took it: its fenced commit is
      // allowed, and while its transaction is open the takeover waits.
      const a = yield* expiredLease(other.leases, "node-a")
      const holding = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const commitUnderA = yield* other.sql.withTransaction(
        other.store.append(commit("o1", 0, [event("@created")], { fence: { owner: a.owner, token: a.token } })).pipe(
          Effect.zipRight(Deferred.succeed(holding, undefined)),
          Effect.zipRight(Deferred.await(release))
        )
      ).pipe(Effect.forkScoped)
      yield* Deferred.await(holding)
      const takeover = yield* Effect.forkScoped(mine.leases.tryAcquire(leaseKey, "node-b", "1 millis"))
      expect(yield* blockedOnLock(mine.sql, applicationName)).toBe(true)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(commitUnderA)
      const b = Option.getOrThrow(yield* Fiber.join(takeover))
      expect(b).toMatchObject({ owner: "node-b", token: 2 })
      expect(yield* mine.store.highestSequenceNr(machine, "o1")).toBe(1)

      // 2. While node-c's takeover of node-b's expired lease is uncommitted,
      // node-b's fenced commit waits for it, then finds the new token.
      yield* Effect.repeat(mine.leases.get(leaseKey), { until: Option.isNone })
      const taken = yield* Deferred.make<void>()
      const commitTakeover = yield* Deferred.make<void>()
      const takeoverByC = yield* other.sql.withTransaction(
        other.leases.tryAcquire(leaseKey, "node-c", "1 hour").pipe(
          Effect.tap(() => Deferred.succeed(taken, undefined)),
          Effect.zipLeft(Deferred.await(commitTakeover))
        )
      ).pipe(Effect.forkScoped)
      yield* Deferred.await(taken)
      const commitUnderB = yield* Effect.forkScoped(
        mine.store.append(commit("o1", 1, [event("Pay")], {
          fence: { owner: b.owner, token: b.token },
          snapshot: snapshot("o1", 2),
          timers: { cancelAll: false, schedule: [{ name: "t", stateTag: "Paid", generation: 2, dueAt: 1, payload: {} }] }
        }))
      )
      expect(yield* blockedOnLock(mine.sql, applicationName)).toBe(true)
      yield* Deferred.succeed(commitTakeover, undefined)
      expect(Option.getOrThrow(yield* Fiber.join(takeoverByC))).toMatchObject({ owner: "node-c", token: 3 })
      expect(yield* Effect.flip(Fiber.join(commitUnderB))).toMatchObject({ _tag: "FencingRejected", owner: "node-b", token: 2 })
      expect(yield* mine.store.highestSequenceNr(machine, "o1")).toBe(1)
      expect(yield* mine.store.loadSnapshot(machine, "o1")).toEqual(Option.none())
      expect(yield* mine.timers.pending(machine, "o1")).toEqual([])
    }))

  it.scoped("the schema option puts every table in that schema (created by the migrations); two schemas do not see each other", () =>
    Effect.gen(function*() {
      const home = yield* Pg.freshSchema
      const client = Pg.layerClient(home)
      const names = [0, 1].map(() => `fsm_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`)
      const sql = Context.get(yield* Layer.build(client), SqlClient.SqlClient)
      yield* Effect.addFinalizer(() =>
        Effect.ignore(Effect.forEach(names, (name) => sql.unsafe(`DROP SCHEMA IF EXISTS "${name}" CASCADE`)))
      )
      const first = yield* storeOn(client, { schema: names[0]! })
      const second = yield* storeOn(client, { schema: names[1]! })
      yield* first.store.append(fullCommit("o1"))
      expect(yield* first.store.highestSequenceNr(machine, "o1")).toBe(2)
      expect(yield* second.store.highestSequenceNr(machine, "o1")).toBe(0)
      const tablesOf = (schema: string) =>
        Effect.map(
          sql<{ readonly table_name: string }>`SELECT table_name FROM information_schema.tables WHERE table_schema = ${schema} ORDER BY table_name`,
          (rows) => rows.map((row) => row.table_name)
        )
      expect(yield* tablesOf(names[0]!)).toEqual([
        "fsm_dead_letters",
        "fsm_events",
        "fsm_instances",
        "fsm_leases",
        "fsm_migrations",
        "fsm_outbox",
        "fsm_outbox_dead_letters",
        "fsm_snapshots",
        "fsm_state_counts",
        "fsm_timers"
      ])
      // Nothing in the connection's own schema.
      expect(yield* tablesOf(home)).toEqual([])
      // Timers, conflicts and migrations work there like anywhere.
      expect((yield* first.timers.pending(machine, "o1")).map((t) => t.name)).toEqual(["payment"])
      expect((yield* Effect.flip(first.store.append(fullCommit("o1"))))._tag).toBe("SequenceConflict")
      expect(yield* Effect.provideService(SqlEventStore.migrate({ schema: names[0]! }), SqlClient.SqlClient, sql)).toEqual([])
      for (const bad of ["Orders", "a-b", "1x", "x".repeat(64)]) {
        const error = (yield* Effect.flip(storeOn(client, { schema: bad }))) as SqlEventStore.MakeError
        expect(error._tag).toBe("InvalidConfiguration")
      }
    }))

  it.scoped("lease expiry is judged by the database's clock, not the caller's", () =>
    Effect.gen(function*() {
      const { leases } = yield* storeOn(Pg.layerFreshClient)
      const a = Option.getOrThrow(yield* leases.tryAcquire(leaseKey, "node-a", "1 hour"))
      // The caller's clock (TestClock) is at 0 and expiresAt is the database's.
      expect(Math.abs(a.expiresAt - 3_600_000 - Date.now())).toBeLessThan(60_000)
      yield* TestClock.adjust("2 hours")
      expect(yield* leases.get(leaseKey)).toEqual(Option.some(a))
      expect(yield* leases.tryAcquire(leaseKey, "node-b", "1 hour")).toEqual(Option.none())
      const extended = yield* leases.extend(a, "1 hour")
      expect(extended.token).toBe(1)
    }))

  it.scoped("a delivery committing while deadLetter moves its timer leaves no dead letter to redrive", () =>
    Effect.gen(function*() {
      const schema = yield* Pg.freshSchema
      const applicationName = `fsm-test-${crypto.randomUUID().slice(0, 8)}`
      const sweeper = yield* storeOn(PgClient.layer({ ...Pg.clientConfig(schema), applicationName }))
      const runtime = yield* storeOn(Pg.layerClient(schema))
      yield* runtime.store.append(fullCommit("o1"))
      const payment = { machine, instanceId: "o1", name: "payment", generation: 1 }

      // The delivery of the timer has deleted its row (with the timeout
      // event) and not committed yet.
      const holding = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const timeout: EventStore.NewEvent = {
        ...event("PaymentTimeout"),
        metadata: { ...event("PaymentTimeout").metadata, source: "timeout", timer: "payment" }
      }
      const delivery = yield* runtime.sql.withTransaction(
        runtime.store.append(
          commit("o1", 2, [timeout], { timers: { cancelAll: false, schedule: [], fired: { name: "payment", generation: 1 } } })
        ).pipe(
          Effect.zipRight(Deferred.succeed(holding, undefined)),
          Effect.zipRight(Deferred.await(release))
        )
      ).pipe(Effect.fork)
      yield* Deferred.await(holding)

      // The sweeper gives up on the same timer: it waits on the row...
      const moving = yield* Effect.fork(sweeper.timers.deadLetter(payment, { error: "gave up", now: 1 }))
      const waiting = sweeper.sql<{ readonly n: unknown }>`SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = ${applicationName} AND wait_event_type = 'Lock'`
      let blocked = false
      for (let tries = 0; tries < 10_000 && !blocked; tries++) {
        blocked = Number((yield* waiting)[0]!.n) === 1
      }
      expect(blocked).toBe(true)
      // ...and, once the delivery commits, finds it gone: nothing to move.
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(delivery)
      yield* Fiber.join(moving)

      expect(yield* sweeper.timers.deadLetters(machine)).toEqual([])
      expect(yield* sweeper.timers.pending(machine, "o1")).toEqual([])
      expect(yield* sweeper.timers.redrive(payment, 2)).toBe(false)
      expect(yield* sweeper.timers.pending(machine, "o1")).toEqual([])
      const log = Chunk.toArray(yield* Stream.runCollect(sweeper.store.events(machine, "o1", 1)))
      expect(log.map((r) => r.tag)).toEqual(["@created", "Pay", "PaymentTimeout"])
    }))

  it.scoped("redrive racing a commit that schedules a timer of the same name keeps the dead letter", () =>
    Effect.gen(function*() {
      const schema = yield* Pg.freshSchema
      const applicationName = `fsm-test-${crypto.randomUUID().slice(0, 8)}`
      const operator = yield* storeOn(PgClient.layer({ ...Pg.clientConfig(schema), applicationName }))
      const runtime = yield* storeOn(Pg.layerClient(schema))
      yield* runtime.store.append(fullCommit("o1"))
      const payment = { machine, instanceId: "o1", name: "payment" }
      yield* runtime.timers.deadLetter({ ...payment, generation: 1 }, { error: "gave up", now: 1 })

      // A commit arms a new "payment" timer and has not committed yet.
      const holding = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const rearm = yield* runtime.sql.withTransaction(
        runtime.store.append(commit("o1", 2, [event("Retry")], {
          timers: {
            cancelAll: false,
            schedule: [{ name: "payment", stateTag: "Pending", generation: 2, dueAt: 600_000, payload: { _tag: "T" } }]
          }
        })).pipe(
          Effect.zipRight(Deferred.succeed(holding, undefined)),
          Effect.zipRight(Deferred.await(release))
        )
      ).pipe(Effect.fork)
      yield* Deferred.await(holding)

      // The redrive does not see that timer yet, so its insert waits on the key...
      const redriving = yield* Effect.fork(operator.timers.redrive(payment, 2))
      const waiting = operator.sql<{ readonly n: unknown }>`SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = ${applicationName} AND wait_event_type = 'Lock'`
      let blocked = false
      for (let tries = 0; tries < 10_000 && !blocked; tries++) {
        blocked = Number((yield* waiting)[0]!.n) === 1
      }
      expect(blocked).toBe(true)
      // ...and loses to it once it commits, deleting nothing.
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(rearm)
      expect(yield* Fiber.join(redriving)).toBe(false)
      expect((yield* operator.timers.deadLetters(machine)).map((d) => [d.generation, d.lastError])).toEqual([[1, "gave up"]])
      expect((yield* operator.timers.pending(machine, "o1")).map((t) => [t.generation, t.dueAt])).toEqual([[2, 600_000]])
    }))

  it.effect("PgEventStore.configFromEnv reads DATABASE_URL, else the PG* variables", () =>
    Effect.gen(function*() {
      const read = (env: Record<string, string>) =>
        Effect.withConfigProvider(PgEventStore.configFromEnv, ConfigProvider.fromMap(new Map(Object.entries(env))))
      const fromUrl = yield* read({ DATABASE_URL: "postgres://u:p@db:6543/app", PGHOST: "ignored" })
      expect(Object.keys(fromUrl)).toEqual(["url"])
      expect(Redacted.value(fromUrl.url!)).toBe("postgres://u:p@db:6543/app")
      const fromParts = yield* read({ PGHOST: "db", PGPORT: "6543", PGUSER: "u", PGPASSWORD: "p", PGDATABASE: "app" })
      expect({ ...fromParts, password: fromParts.password && Redacted.value(fromParts.password) }).toEqual({
        host: "db",
        port: 6543,
        username: "u",
        password: "p",
        database: "app"
      })
      expect(yield* read({ DATABASE_URL: "" })).toEqual({
        host: undefined,
        port: undefined,
        username: undefined,
        password: undefined,
        database: undefined
      })
      expect(yield* Effect.flip(read({ PGPORT: "not-a-port" }))).toMatchObject({ _op: "InvalidData", path: ["PGPORT"] })
    }))

  it.scoped("PgEventStore.layerConfig and layerFromConfig connect with what the config says", () =>
    Effect.gen(function*() {
      const schema = yield* Pg.freshSchema
      const url = Redacted.value(Pg.clientConfig(schema).url!)
      const provider = ConfigProvider.fromMap(new Map([["DATABASE_URL", url]]))
      const fromEnv = yield* Layer.build(PgEventStore.layerConfig({ tablePrefix: "env_" })).pipe(
        Effect.withConfigProvider(provider)
      )
      yield* Context.get(fromEnv, EventStore.EventStore).append(fullCommit("o1"))
      const fromConfig = yield* Layer.build(PgEventStore.layerFromConfig({
          url: Config.succeed(Redacted.make(url)),
          tablePrefix: Config.succeed("env_")
        }))
      expect(yield* Context.get(fromConfig, EventStore.EventStore).highestSequenceNr(machine, "o1")).toBe(2)

      const unreachable = yield* Effect.flip(
        Layer.build(PgEventStore.layer({ host: "127.0.0.1", port: 1, connectTimeout: "2 seconds" }))
      )
      expect(unreachable).toMatchObject({ _tag: "PersistenceError", operation: "connect" })
    }))
})
