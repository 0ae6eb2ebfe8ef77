/**
 * The SQLite client of `SqliteEventStore.layerClient` (src/internal/sqliteClient.ts):
 * the `SqliteClient` service of `@effect/sql-sqlite-node` on a better-sqlite3
 * connection of its own, whose store commits outside a transaction run in
 * one synchronous step, and which never runs one inside another fiber's
 * transaction.
 */
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Metric, Scheduler } from "effect"
import { EventStore, Metrics, SqlEventStore } from "effect-fsm"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import * as fs from "node:fs"
import * as path from "node:path"
import Sqlite from "better-sqlite3"
import { chunked } from "../src/internal/sqlDialect.js"
import { tempDirectory } from "./utils/backends.js"

const machine = "order"

const created = (instanceId: string): EventStore.Commit => ({
  machine,
  instanceId,
  expectedSeqNr: 0,
  events: [{
    tag: "@created",
    payload: { _tag: "Pending" },
    stateTag: "Pending",
    schemaVersion: 1,
    metadata: { timestamp: 1_700_000_000_000, source: "user", correlationId: null, node: "n", commitId: null, timer: null }
  }]
})

/** A store and the client under it, on a new file. */
const storeOn = (client: (filename: string) => Layer.Layer<SqlClient.SqlClient, unknown>) =>
  Effect.gen(function*() {
    const filename = path.join(yield* tempDirectory, "store.db")
    const context = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(client(filename))))
    return { filename, store: Context.get(context, EventStore.EventStore), sql: Context.get(context, SqlClient.SqlClient) }
  })

const ours = (filename: string) => SqliteEventStore.layerClient({ filename })
const upstream = (filename: string) => SqliteClient.layer({ filename })

/** The Effect operations `effect` runs (a scheduler whose `shouldYield`, asked once per operation, counts). */
const operations = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    let count = 0
    const counting: Scheduler.Scheduler = {
      scheduleTask: (task, priority) => Scheduler.defaultScheduler.scheduleTask(task, priority),
      shouldYield: (fiber) => {
        count++
        return Scheduler.defaultScheduler.shouldYield(fiber)
      }
    }
    yield* Effect.withScheduler(effect, counting)
    return count
  })

/** What `measure` counts on a fresh store over this client and over `@effect/sql-sqlite-node`'s. */
const onBothClients = <E>(measure: (store: EventStore.EventStore["Type"]) => Effect.Effect<number, E>) =>
  Effect.gen(function*() {
    const direct = yield* Effect.flatMap(storeOn(ours), ({ store }) => measure(store))
    const usual = yield* Effect.flatMap(storeOn(upstream), ({ store }) => measure(store))
    return { direct, usual }
  })

/**
 * A transaction of `sql`'s on a fiber of its own that holds the connection
 * (after `first`) until `release` is completed, then rolls back.
 */
const heldTransaction = <A, E>(sql: SqlClient.SqlClient, first: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const inside = yield* Deferred.make<void>()
    const release = yield* Deferred.make<void>()
    const holder = yield* sql.withTransaction(
      first.pipe(
        Effect.zipRight(Deferred.succeed(inside, undefined)),
        Effect.zipRight(Deferred.await(release)),
        Effect.zipRight(Effect.fail("rolled back" as const))
      )
    ).pipe(Effect.fork)
    yield* Deferred.await(inside)
    return { holder, release: Deferred.succeed(release, undefined) }
  })

describe("SqliteEventStore.layerClient's client", () => {
  it.scoped("is @effect/sql-sqlite-node's SqliteClient service: export, backup and a failed loadExtension as SqlErrors", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const context = yield* Layer.build(SqliteEventStore.layerClient({ filename: path.join(directory, "a.db") }))
      const client = Context.get(context, SqliteClient.SqliteClient)
      expect(Context.get(context, SqlClient.SqlClient)).toBe(client)
      yield* client`CREATE TABLE t (x INTEGER)`
      yield* client`INSERT INTO t VALUES (1), (2)`
      const bytes = yield* client.export
      expect(Buffer.from(bytes.subarray(0, 15)).toString("latin1")).toBe("SQLite format 3")
      const copy = path.join(directory, "copy.db")
      yield* client.backup(copy)
      expect(fs.existsSync(copy)).toBe(true)
      const copied = Context.get(yield* Layer.build(SqliteEventStore.layerClient({ filename: copy })), SqlClient.SqlClient)
      expect(yield* copied<{ readonly n: number }>`SELECT COUNT(*) AS n FROM t`).toEqual([{ n: 2 }])
      const failed = yield* Effect.flip(client.loadExtension(path.join(directory, "no-such-extension")))
      expect(failed._tag).toBe("SqlError")
    }))

  it.scoped("runs statements as @effect/sql-sqlite-node's does: rows, raw values, unprepared text, typed errors, and bigints only under SafeIntegers", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const sql = Context.get(yield* Layer.build(SqliteEventStore.layerClient({ filename: path.join(directory, "b.db") })), SqlClient.SqlClient)
      yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY, big INTEGER, name TEXT)`
      yield* sql`INSERT INTO t ${sql.insert([{ id: 1, big: 2 ** 53 + 2, name: "a" }, { id: 2, big: 7, name: "b" }])}`
      expect(yield* sql`SELECT id, name FROM t ORDER BY id`).toEqual([{ id: 1, name: "a" }, { id: 2, name: "b" }])
      expect(yield* sql`SELECT id, name FROM t ORDER BY id`.values).toEqual([[1, "a"], [2, "b"]])
      expect(yield* sql`SELECT id FROM t WHERE id = ${2}`.unprepared).toEqual([{ id: 2 }])
      expect(yield* sql`UPDATE t SET name = 'c' WHERE id = 2`).toEqual([])
      const safe = yield* Effect.provideService(sql`SELECT big FROM t WHERE id = 1`, SqlClient.SafeIntegers, true)
      expect(safe).toEqual([{ big: 2n ** 53n + 2n }])
      // The statement is cached: without SafeIntegers it reads numbers again.
      expect(yield* sql`SELECT big FROM t WHERE id = 1`).toEqual([{ big: 2 ** 53 + 2 }])
      const broken = yield* Effect.flip(sql`SELECT * FROM no_such_table`)
      expect(broken._tag).toBe("SqlError")
      expect(String((broken.cause as Error).message)).toMatch(/no such table/)
    }))

  it.scoped("a store commit outside any transaction runs in one synchronous step: under half the Effect operations of the same commit through @effect/sql-sqlite-node's client", () =>
    Effect.gen(function*() {
      const { direct, usual } = yield* onBothClients((store) =>
        Effect.gen(function*() {
          // Statements prepared, the store warmed up.
          yield* store.append(created("warm"))
          const ids = Array.from({ length: 20 }, (_, i) => `o${i}`)
          const ops = yield* operations(Effect.forEach(ids, (id) => store.append(created(id)), { discard: true }))
          expect(yield* store.highestSequenceNr(machine, "o19")).toBe(1)
          return ops / ids.length
        })
      )
      expect(direct).toBeLessThan(usual / 2)
    }))

  it.scoped("a store commit while another fiber's transaction holds the connection waits for it, and is not part of it: that transaction's rollback leaves the commit", () =>
    Effect.gen(function*() {
      const { sql, store } = yield* storeOn(ours)
      yield* sql`CREATE TABLE mine (x INTEGER)`
      const caller = yield* heldTransaction(sql, sql`INSERT INTO mine VALUES (1)`)
      const commit = yield* Effect.fork(store.append(created("o1")))
      // It waits for the connection while the caller's transaction is open.
      yield* Effect.yieldNow({ priority: 1 })
      expect(commit.unsafePoll()).toBeNull()
      yield* caller.release
      expect(Exit.isFailure(yield* Fiber.await(caller.holder))).toBe(true)
      expect(yield* Fiber.join(commit)).toEqual({ durable: true })
      expect(yield* sql`SELECT COUNT(*) AS n FROM mine`).toEqual([{ n: 0 }])
      expect(yield* store.highestSequenceNr(machine, "o1")).toBe(1)
    }))

  it.scoped("store reads outside any transaction run in one synchronous step: under half the Effect operations of the same reads through @effect/sql-sqlite-node's client", () =>
    Effect.gen(function*() {
      const { direct, usual } = yield* onBothClients((store) =>
        Effect.gen(function*() {
          yield* store.append(created("o1"))
          const reads = Effect.all([
            store.highestSequenceNr(machine, "o1"),
            store.loadSnapshot(machine, "o1"),
            store.eventsPage(machine, "o1", 1, 10),
            store.replayPage(machine, "o1", 1, 10),
            store.instance(machine, "o1")
          ])
          // Statements prepared.
          yield* reads
          const ops = yield* operations(Effect.repeatN(reads, 9))
          const [highest, , page, replay] = yield* reads
          expect([highest, page.length, replay.length]).toEqual([1, 1, 1])
          return ops
        })
      )
      expect(direct).toBeLessThan(usual / 2)
    }))

  it.scoped("a page of a log without gaps is one statement: fewer Effect operations than a page read again as rows", () =>
    Effect.gen(function*() {
      const { sql, store } = yield* storeOn(ours)
      const events = (id: string) => ({
        ...created(id),
        events: Array.from({ length: 6 }, (_, i) => i === 0 ? created(id).events[0]! : { ...created(id).events[0]!, tag: `e${i}` })
      })
      yield* store.append(events("whole"))
      yield* store.append(events("gap"))
      yield* sql`DELETE FROM fsm_events WHERE instance_id = ${"gap"} AND seq_nr = 3`
      const pageOps = (id: string) =>
        Effect.gen(function*() {
          // Statements prepared.
          yield* store.replayPage(machine, id, 1, 4)
          return yield* operations(store.replayPage(machine, id, 1, 4))
        })
      const whole = yield* pageOps("whole")
      const gap = yield* pageOps("gap")
      expect((yield* store.replayPage(machine, "gap", 1, 4)).map((r) => r.seqNr)).toEqual([1, 2, 4, 5])
      expect(whole).toBeLessThan(gap)
    }))

  it.scoped("a store read while another fiber's transaction holds the connection waits for it and does not see its writes", () =>
    Effect.gen(function*() {
      const { sql, store } = yield* storeOn(ours)
      const caller = yield* heldTransaction(sql, store.append(created("o1")))
      // Each read on a fiber of its own, so that each is the one waiting.
      const highest = yield* Effect.fork(store.highestSequenceNr(machine, "o1"))
      const replay = yield* Effect.fork(store.replayPage(machine, "o1", 1, 10))
      const page = yield* Effect.fork(store.eventsPage(machine, "o1", 1, 10))
      const snapshot = yield* Effect.fork(store.loadSnapshot(machine, "o1"))
      const instance = yield* Effect.fork(store.instance(machine, "o1"))
      yield* Effect.yieldNow({ priority: 1 })
      expect([highest, replay, page, snapshot, instance].map((read) => read.unsafePoll())).toEqual([null, null, null, null, null])
      yield* caller.release
      expect(Exit.isFailure(yield* Fiber.await(caller.holder))).toBe(true)
      expect([
        yield* Fiber.join(highest),
        yield* Fiber.join(replay),
        yield* Fiber.join(page),
        (yield* Fiber.join(snapshot))._tag,
        (yield* Fiber.join(instance))._tag
      ]).toEqual([0, [], [], "None", "None"])
    }))
})

describe("SQLite group commits: statements of a few texts whatever the group's size", () => {
  it("chunked: chunks of powers of two, largest first, that are the items in order", () => {
    for (let n = 0; n <= 300; n++) {
      const items = Array.from({ length: n }, (_, i) => i)
      const chunks = chunked(items)
      expect(chunks.flat()).toEqual(items)
      const sizes = chunks.map((chunk) => chunk.length)
      for (const size of sizes) expect(Number.isInteger(Math.log2(size))).toBe(true)
      expect([...sizes].sort((a, b) => b - a)).toEqual(sizes)
      // The binary digits of n: no size twice.
      expect(new Set(sizes).size).toBe(sizes.length)
    }
  })

  it.scoped("groups of 1 to 40 commits prepare one event insert per power of two, not one per group size", () =>
    Effect.gen(function*() {
      const { store } = yield* storeOn(ours)
      const texts = new Set<string>()
      const prepare = Sqlite.prototype.prepare
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          Sqlite.prototype.prepare = function(this: Sqlite.Database, source: string) {
            if (source.startsWith("INSERT INTO \"fsm_events\"")) texts.add(source)
            return prepare.call(this, source)
          } as typeof prepare
        }),
        () => Effect.sync(() => void (Sqlite.prototype.prepare = prepare))
      )
      const sizes = Effect.map(Metric.value(Metrics.commitGroupSize), (state) => state.max)
      for (let n = 1; n <= 40; n++) {
        yield* Effect.all(Array.from({ length: n }, (_, i) => store.append(created(`g${n}-${i}`))), {
          concurrency: "unbounded",
          discard: true
        })
      }
      // Groups as large as 32 formed (else the count below proves nothing)...
      expect(yield* sizes).toBeGreaterThanOrEqual(32)
      // ... and their events went in by statements of 1, 2, 4, 8, 16 and 32 rows (and a lone commit's own).
      expect(texts.size).toBeLessThanOrEqual(7)
    }))
})

