/**
 * The EventStore (and TimeoutStore) conformance suite: one function of a
 * backend, run against memory, SQLite and PostgreSQL alike.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Either, Layer, Option, Stream } from "effect"
import { EventStore, OutboxStore, TimeoutStore } from "effect-fsm"
import { allBackends, type Backend } from "./utils/backends.js"

const machine = "order"

const metadata = (overrides: Partial<EventStore.Metadata> = {}): EventStore.Metadata => ({
  timestamp: 1_700_000_000_000,
  source: "user",
  correlationId: null,
  node: "node-a",
  commitId: null,
  timer: null,
  ...overrides
})

const event = (
  tag: string,
  payload: unknown = { _tag: tag },
  stateTag = "Pending",
  meta: EventStore.Metadata = metadata(),
  schemaVersion = 1
): EventStore.NewEvent => ({ tag, payload, stateTag, schemaVersion, metadata: meta })

const commit = (
  instanceId: string,
  expectedSeqNr: number,
  events: ReadonlyArray<EventStore.NewEvent>,
  extra: Partial<Pick<EventStore.Commit, "snapshot" | "timers" | "outbox" | "machine">> = {}
): EventStore.Commit => ({ machine, instanceId, expectedSeqNr, events, ...extra })

const snapshot = (
  instanceId: string,
  seqNr: number,
  state: unknown,
  extra: Partial<EventStore.SnapshotRecord> = {}
): EventStore.SnapshotRecord => ({
  machine,
  instanceId,
  seqNr,
  state,
  stopped: false,
  schemaVersion: 1,
  timestamp: 1_700_000_000_500,
  ...extra
})

const timer = (name: string, generation: number, dueAt: number, payload: unknown = { _tag: "Timeout", name }) => ({
  name,
  stateTag: "Pending",
  generation,
  dueAt,
  payload
})

/** Well-formed Unicode is required of ids: each of these is rejected (NUL, or a lone surrogate). */
const badWellFormedIds = ["nul\u0000byte", "s\uD800", "s\uDBFF", "\uDC00x", "\uD800", "x\uDFFF", "a\uDC00\uD800b"]

/** Values that JSON does not carry exactly, or that some backend cannot store: each must be refused. */
const badJsonValues = (): ReadonlyArray<readonly [string, unknown]> => {
  const cycle: Record<string, unknown> = { _tag: "Loop" }
  cycle["self"] = { back: cycle }
  const sparse: Array<number> = [1]
  sparse[2] = 3
  return [
    ["NaN", { _tag: "Pay", amount: Number.NaN }],
    ["Infinity", { _tag: "Pay", amount: Number.POSITIVE_INFINITY }],
    ["-Infinity", [1, Number.NEGATIVE_INFINITY]],
    ["NUL in a string", { note: "a\u0000b" }],
    ["lone high surrogate in a string", { note: "s\uD800" }],
    ["lone low surrogate in a string", ["\uDC00x"]],
    ["lone surrogate in a key", { ["k\uDBFF"]: 1 }],
    ["NUL in a key", { ["k\u0000"]: 1 }],
    ["an undefined property", { _tag: "Pay", amount: undefined }],
    ["an undefined element", [1, undefined]],
    ["a hole", sparse],
    ["undefined", undefined],
    ["a Date", { at: new Date(0) }],
    ["a Map", new Map([["a", 1]])],
    ["a class instance", new (class Money { amount = 1 })()],
    ["a bigint", { amount: BigInt(1) }],
    ["a function", { f: () => 1 }],
    ["a cycle", cycle]
  ]
}

const byName = <A extends { readonly name: string }>(timers: ReadonlyArray<A>) =>
  [...timers].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)

export const eventStoreSuite = (backend: Backend) =>
  describe.skipIf(backend.skip !== undefined)(`EventStore conformance on ${backend.name}`, () => {
    const setup = Effect.map(Layer.build(backend.layer()), (context) => ({
      store: Context.get(context, EventStore.EventStore),
      timers: Context.get(context, TimeoutStore.TimeoutStore)
    }))

    const readAll = (store: EventStore.EventStore["Type"], instanceId: string, fromSeqNr = 1, ofMachine = machine) =>
      Effect.map(Stream.runCollect(store.events(ofMachine, instanceId, fromSeqNr)), Chunk.toArray)

    const instancesOf = (store: EventStore.EventStore["Type"], ofMachine: string) =>
      Effect.map(Stream.runCollect(store.instances(ofMachine)), (ids) => [...ids].sort())

    it.scoped("appends and reads back events in order with their metadata", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const created = event("@created", { _tag: "Pending", orderId: "o1" }, "Pending", metadata({
          timestamp: 1_000,
          correlationId: "corr-1"
        }))
        const paid = event("Pay", { _tag: "Pay", amount: 42.5 }, "Paid", metadata({
          timestamp: 2_000,
          source: "timeout",
          node: null
        }), 2)
        const stopped = event("@stopped", null, "Paid", metadata({ timestamp: 3_000, source: "outbox", node: "node-b" }), 2)
        yield* store.append(commit("o1", 0, [created, paid]))
        yield* store.append(commit("o1", 2, [stopped]))

        expect(yield* readAll(store, "o1")).toEqual([
          { ...created, machine, instanceId: "o1", seqNr: 1 },
          { ...paid, machine, instanceId: "o1", seqNr: 2 },
          { ...stopped, machine, instanceId: "o1", seqNr: 3 }
        ])
        expect(yield* store.highestSequenceNr(machine, "o1")).toBe(3)
      }))

    it.scoped("an unknown instance has highestSequenceNr 0, no events and no snapshot", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        yield* store.append(commit("known", 0, [event("@created")]))
        expect(yield* store.highestSequenceNr(machine, "unknown")).toBe(0)
        expect(yield* store.highestSequenceNr("other-machine", "known")).toBe(0)
        expect(yield* readAll(store, "unknown")).toEqual([])
        expect(yield* store.loadSnapshot(machine, "unknown")).toEqual(Option.none())
      }))

    it.scoped("events(fromSeqNr) starts in the middle of the log", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        yield* store.append(commit("o1", 0, ["a", "b", "c", "d", "e"].map((tag) => event(tag))))
        const seqNrs = (from: number) => Effect.map(readAll(store, "o1", from), (records) => records.map((r) => r.seqNr))
        expect(yield* seqNrs(3)).toEqual([3, 4, 5])
        expect((yield* readAll(store, "o1", 3)).map((r) => r.tag)).toEqual(["c", "d", "e"])
        expect(yield* seqNrs(5)).toEqual([5])
        expect(yield* seqNrs(6)).toEqual([])
        expect(yield* seqNrs(0)).toEqual([1, 2, 3, 4, 5])
      }))

    it.scoped("streams a long log in order, from the start and from the middle", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        // 512 rows: a multiple of the SQL stores' page size (256) as well as more than one page.
        for (let batch = 0; batch < 4; batch++) {
          yield* store.append(
            commit("long", batch * 128, Array.from({ length: 128 }, (_, i) => event(`e${batch * 128 + i + 1}`)))
          )
        }
        const all = yield* readAll(store, "long")
        expect(all.map((r) => r.seqNr)).toEqual(Array.from({ length: 512 }, (_, i) => i + 1))
        expect(all.every((r) => r.tag === `e${r.seqNr}`)).toBe(true)
        const tail = yield* readAll(store, "long", 200)
        expect(tail.map((r) => r.seqNr)).toEqual(Array.from({ length: 313 }, (_, i) => i + 200))
      }))

    it.scoped("eventsPage reads one page: at most limit events from fromSeqNr, the same records as events", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        yield* store.append(commit("p", 0, ["a", "b", "c", "d", "e"].map((tag) => event(tag))))
        const seqNrs = (from: number, limit: number) =>
          Effect.map(store.eventsPage(machine, "p", from, limit), (records) => records.map((r) => r.seqNr))
        expect(yield* seqNrs(1, 2)).toEqual([1, 2])
        expect(yield* seqNrs(2, 10)).toEqual([2, 3, 4, 5])
        expect(yield* seqNrs(5, 1)).toEqual([5])
        expect(yield* seqNrs(6, 3)).toEqual([])
        expect(yield* seqNrs(Number.NaN, 3)).toEqual([1, 2, 3])
        expect(yield* seqNrs(2.7, 1)).toEqual([2])
        expect(yield* store.eventsPage(machine, "unknown", 1, 5)).toEqual([])
        expect(yield* store.eventsPage(machine, "p", 1, EventStore.maxPageSize)).toEqual(yield* readAll(store, "p"))
        for (const limit of [0, -1, 1.5, Number.NaN, EventStore.maxPageSize + 1]) {
          const refused = yield* Effect.flip(store.eventsPage(machine, "p", 1, limit))
          expect(refused._tag).toBe("PersistenceError")
        }
        expect((yield* Effect.flip(store.eventsPage(machine, "s\uD800", 1, 5)))._tag).toBe("InvalidInstanceId")
      }))

    it.scoped("an expectedSeqNr behind or ahead of the log is a SequenceConflict with the actual end, and writes nothing", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const early = yield* Effect.flip(store.append(commit("o1", 2, [event("x")])))
        expect(early).toMatchObject({ _tag: "SequenceConflict", machine, instanceId: "o1", expected: 2, actual: 0 })
        expect(yield* store.highestSequenceNr(machine, "o1")).toBe(0)
        expect(yield* instancesOf(store, machine)).toEqual([])

        yield* store.append(commit("o1", 0, [event("a"), event("b"), event("c")]))
        const behind = yield* Effect.flip(store.append(commit("o1", 1, [event("x"), event("y")])))
        expect(behind).toMatchObject({ _tag: "SequenceConflict", expected: 1, actual: 3 })
        const ahead = yield* Effect.flip(store.append(commit("o1", 5, [event("x")])))
        expect(ahead).toMatchObject({ _tag: "SequenceConflict", expected: 5, actual: 3 })
        const again = yield* Effect.flip(store.append(commit("o1", 0, [event("x")])))
        expect(again).toMatchObject({ _tag: "SequenceConflict", expected: 0, actual: 3 })
        expect((yield* readAll(store, "o1")).map((r) => r.tag)).toEqual(["a", "b", "c"])
      }))

    it.scoped("100 concurrent appends at the same expectedSeqNr: exactly 1 succeeds, 99 get SequenceConflict", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const race = (expectedSeqNr: number) =>
          Effect.all(
            Array.from({ length: 100 }, (_, i) => Effect.either(store.append(commit("hot", expectedSeqNr, [event(`w${i}`)])))),
            { concurrency: "unbounded" }
          )
        for (const expectedSeqNr of [0, 1]) {
          const results = yield* race(expectedSeqNr)
          const winners = results.flatMap((result, i) => Either.isRight(result) ? [i] : [])
          const losers = results.flatMap((result) => Either.isLeft(result) ? [result.left] : [])
          expect(winners).toHaveLength(1)
          expect(losers).toHaveLength(99)
          for (const loser of losers) {
            expect(loser).toMatchObject({ _tag: "SequenceConflict", expected: expectedSeqNr, actual: expectedSeqNr + 1 })
          }
          const log = yield* readAll(store, "hot")
          expect(log).toHaveLength(expectedSeqNr + 1)
          expect(log[expectedSeqNr]!.tag).toBe(`w${winners[0]}`)
        }
      }))

    it.scoped("50 instances x 10 appends, concurrently: every log is present and gapless", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const ids = Array.from({ length: 50 }, (_, i) => `inst-${i}`)
        yield* Effect.forEach(
          ids,
          (id) =>
            Effect.forEach(
              Array.from({ length: 10 }, (_, n) => n),
              (n) => store.append(commit(id, n, [event(`${id}:${n + 1}`)])),
              { discard: true }
            ),
          { concurrency: "unbounded", discard: true }
        )
        expect(yield* instancesOf(store, machine)).toEqual([...ids].sort())
        for (const id of ids) {
          const log = yield* readAll(store, id)
          expect(log.map((r) => [r.seqNr, r.tag])).toEqual(
            Array.from({ length: 10 }, (_, n) => [n + 1, `${id}:${n + 1}`])
          )
          expect(yield* store.highestSequenceNr(machine, id)).toBe(10)
        }
      }))

    it.scoped("a multi-event commit with a snapshot is atomic: a conflicting one writes neither events nor snapshot", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const first = snapshot("o1", 2, { _tag: "Paid", at: 2 })
        yield* store.append(commit("o1", 0, [event("@created"), event("Pay"), event("Note")], { snapshot: first }))
        expect((yield* readAll(store, "o1")).map((r) => r.tag)).toEqual(["@created", "Pay", "Note"])
        expect(yield* store.loadSnapshot(machine, "o1")).toEqual(Option.some(first))

        // Its snapshot (seqNr 4) would replace the stored one (seqNr 2) if anything of it were written.
        const loser = commit("o1", 1, [event("X"), event("Y"), event("Z")], { snapshot: snapshot("o1", 4, { lost: true }) })
        expect(yield* Effect.flip(store.append(loser))).toMatchObject({ _tag: "SequenceConflict", actual: 3 })
        expect((yield* readAll(store, "o1")).map((r) => r.tag)).toEqual(["@created", "Pay", "Note"])
        expect(yield* store.loadSnapshot(machine, "o1")).toEqual(Option.some(first))
      }))

    it.scoped("snapshots are monotonic: an older one never replaces a newer one, via saveSnapshot or a commit", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const at5 = snapshot("s", 5, { v: 5 }, { stopped: true, schemaVersion: 3, timestamp: 55 })
        yield* store.saveSnapshot(at5)
        yield* store.saveSnapshot(snapshot("s", 3, { v: 3 }))
        yield* store.saveSnapshot(snapshot("s", 5, { v: "same seqNr" }))
        expect(yield* store.loadSnapshot(machine, "s")).toEqual(Option.some(at5))
        const at7 = snapshot("s", 7, { v: 7 })
        yield* store.saveSnapshot(at7)
        expect(yield* store.loadSnapshot(machine, "s")).toEqual(Option.some(at7))

        // Through commits: the log is at 2, a newer snapshot (8) is stored.
        yield* store.append(commit("c", 0, [event("@created"), event("a")]))
        const at8 = snapshot("c", 8, { v: 8 })
        yield* store.saveSnapshot(at8)
        yield* store.append(commit("c", 2, [event("b"), event("c"), event("d")], { snapshot: snapshot("c", 5, { v: 5 }) }))
        expect(yield* store.highestSequenceNr(machine, "c")).toBe(5)
        expect(yield* store.loadSnapshot(machine, "c")).toEqual(Option.some(at8))
        const at9 = snapshot("c", 9, { v: 9 })
        yield* store.append(commit("c", 5, [event("e"), event("f"), event("g"), event("h")], { snapshot: at9 }))
        expect(yield* store.loadSnapshot(machine, "c")).toEqual(Option.some(at9))
      }))

    it.scoped("lists the instances of a machine, and of no other", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        for (const id of ["o2", "o1", "o3"]) yield* store.append(commit(id, 0, [event("@created")]))
        yield* store.append(commit("o1", 1, [event("more")]))
        for (const id of ["o1", "i9"]) yield* store.append(commit(id, 0, [event("@created")], { machine: "invoice" }))
        expect(yield* instancesOf(store, machine)).toEqual(["o1", "o2", "o3"])
        expect(yield* instancesOf(store, "invoice")).toEqual(["i9", "o1"])
        expect(yield* instancesOf(store, "nothing")).toEqual([])

        // More than one page (256) of the SQL stores' instance listing.
        const bulk = Array.from({ length: 300 }, (_, i) => `bulk-${String(i).padStart(4, "0")}`)
        yield* Effect.forEach(bulk, (id) => store.append(commit(id, 0, [event("@created")], { machine: "bulk" })), {
          concurrency: 20,
          discard: true
        })
        const listed = yield* Effect.map(Stream.runCollect(store.instances("bulk")), Chunk.toArray)
        expect(listed).toHaveLength(300)
        expect([...listed].sort()).toEqual(bulk)
      }))

    it.scoped("unicode and 1 MiB payloads round-trip exactly", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const unicode = {
          text: "Grüße, 世界, مرحبا, שלום, 🎉👩‍👩‍👧‍👦, e\u0301, \u2028\u2029 tab\t nl\n quote\" backslash\\ slash/",
          "clé avec espaces & ü": "ß",
          "": "empty key",
          nested: { emoji: "🦄", list: [1, -2.5, 1e21, 0.1, 9007199254740991, true, false, null, "ä", []] },
          empty: {}
        }
        const big = { blob: "ab€😀\"\\\n".repeat(Math.ceil((1024 * 1024) / 8)) }
        expect(big.blob.length).toBeGreaterThanOrEqual(1024 * 1024)
        const withUnicode = event("Ünïcödé ✓", unicode, "Zustand-ä", metadata({ correlationId: "корреляция-🔗" }))
        yield* store.append(
          commit("u", 0, [withUnicode, event("Big", big)], { snapshot: snapshot("u", 2, { unicode, big }) })
        )
        const [first, second] = yield* readAll(store, "u")
        expect(first).toEqual({ ...withUnicode, machine, instanceId: "u", seqNr: 1 })
        expect(second!.payload).toEqual(big)
        expect(yield* store.loadSnapshot(machine, "u")).toEqual(Option.some(snapshot("u", 2, { unicode, big })))
      }))

    it.scoped("hostile instance ids are stored and read back; empty, over-long and NUL ids are InvalidInstanceId", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const hostile = [
          "it's",
          "\"double\"",
          "'; DROP TABLE fsm_events; --",
          "Robert'); DROP TABLE fsm_snapshots;--",
          "back\\slash",
          "%_like*?[]",
          "$1 ? :name @p0",
          "line\nbreak\ttab",
          "ユニコード🚀",
          " leading and trailing ",
          "x".repeat(EventStore.maxInstanceIdLength)
        ]
        for (const id of hostile) {
          yield* store.append(commit(id, 0, [event("@created", { id })], { snapshot: snapshot(id, 1, { id }) }))
        }
        for (const id of hostile) {
          const log = yield* readAll(store, id)
          expect(log.map((r) => [r.instanceId, r.payload])).toEqual([[id, { id }]])
          expect(yield* store.highestSequenceNr(machine, id)).toBe(1)
          expect(Option.map(yield* store.loadSnapshot(machine, id), (s) => s.state)).toEqual(Option.some({ id }))
        }
        expect(yield* instancesOf(store, machine)).toEqual([...hostile].sort())
        // The tables are still there.
        yield* store.append(commit("after", 0, [event("@created")]))
        expect(yield* store.highestSequenceNr(machine, "after")).toBe(1)

        for (const bad of ["", "x".repeat(EventStore.maxInstanceIdLength + 1), ...badWellFormedIds]) {
          const failures = [
            yield* Effect.flip(store.append(commit(bad, 0, [event("@created")]))),
            yield* Effect.flip(readAll(store, bad)),
            yield* Effect.flip(store.highestSequenceNr(machine, bad)),
            yield* Effect.flip(store.saveSnapshot(snapshot(bad, 1, {}))),
            yield* Effect.flip(store.loadSnapshot(machine, bad))
          ]
          for (const failure of failures) expect(failure).toMatchObject({ _tag: "InvalidInstanceId", instanceId: bad })
        }
        expect(yield* instancesOf(store, machine)).toEqual([...hostile, "after"].sort())
      }))

    it.scoped("ids with lone surrogates or NUL are InvalidInstanceId on every operation and write nothing", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        for (const bad of badWellFormedIds) {
          const failures = [
            yield* Effect.flip(store.append(commit(bad, 0, [event("@created")], {
              snapshot: snapshot(bad, 1, {}),
              timers: { cancelAll: false, schedule: [timer("t", 1, 10)] }
            }))),
            yield* Effect.flip(readAll(store, bad)),
            yield* Effect.flip(store.highestSequenceNr(machine, bad)),
            yield* Effect.flip(store.saveSnapshot(snapshot(bad, 1, {}))),
            yield* Effect.flip(store.loadSnapshot(machine, bad))
          ]
          for (const failure of failures) {
            expect(failure).toMatchObject({ _tag: "InvalidInstanceId", machine, instanceId: bad })
          }
        }
        expect(yield* instancesOf(store, machine)).toEqual([])
        expect(yield* timers.nextDueAt([machine])).toEqual(Option.none())
        // What a lossy encoder would have turned them into: nothing was written there either.
        for (const collapsed of ["s\uFFFD", "\uFFFDx", "s", "x"]) {
          expect(yield* store.highestSequenceNr(machine, collapsed)).toBe(0)
          expect(yield* store.loadSnapshot(machine, collapsed)).toEqual(Option.none())
        }
      }))

    it.scoped("\"s\\uD800\" and \"s\\uDBFF\" are both rejected, not collapsed into one id next to a real \"s\\uFFFD\"", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        yield* store.append(commit("s\uFFFD", 0, [event("@created", { id: "s\uFFFD" })]))
        for (const lone of ["s\uD800", "s\uDBFF"]) {
          expect(yield* Effect.flip(store.append(commit(lone, 0, [event("@created")])))).toMatchObject({
            _tag: "InvalidInstanceId",
            instanceId: lone
          })
          expect(yield* Effect.flip(store.append(commit(lone, 1, [event("more")])))).toMatchObject({
            _tag: "InvalidInstanceId",
            instanceId: lone
          })
        }
        expect(yield* instancesOf(store, machine)).toEqual(["s\uFFFD"])
        expect((yield* readAll(store, "s\uFFFD")).map((r) => [r.instanceId, r.tag, r.payload])).toEqual([
          ["s\uFFFD", "@created", { id: "s\uFFFD" }]
        ])
      }))

    it.scoped("ids with surrogate pairs round-trip exactly, up to 255 UTF-16 code units", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const paired = ["🔗", "a\uD83D\uDD17b", "👩‍👩‍👧‍👦", "\uDBFF\uDFFF", "x".repeat(EventStore.maxInstanceIdLength - 2) + "🔗"]
        expect(paired.at(-1)).toHaveLength(EventStore.maxInstanceIdLength)
        for (const id of paired) {
          expect(EventStore.instanceIdProblem(id)).toBeUndefined()
          yield* store.append(commit(id, 0, [event("@created", { id })], { snapshot: snapshot(id, 1, { id }) }))
        }
        for (const id of paired) {
          const log = yield* readAll(store, id)
          expect(log.map((r) => [r.instanceId, r.payload])).toEqual([[id, { id }]])
          expect(log[0]!.instanceId === id).toBe(true)
          expect(Option.map(yield* store.loadSnapshot(machine, id), (s) => [s.instanceId, s.state])).toEqual(
            Option.some([id, { id }])
          )
        }
        const listed = yield* instancesOf(store, machine)
        expect(listed).toEqual([...paired].sort())
        expect(listed.every((id) => paired.includes(id))).toBe(true)
        const tooLong = "x".repeat(EventStore.maxInstanceIdLength - 1) + "🔗"
        expect(yield* Effect.flip(store.append(commit(tooLong, 0, [event("@created")])))).toMatchObject({
          _tag: "InvalidInstanceId"
        })
      }))

    it.scoped("values JSON cannot carry exactly, in payloads, snapshot states or timer payloads, are a PersistenceError and write nothing", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        const armed = timer("t", 1, 100)
        const first = snapshot("p", 1, { ok: true })
        yield* store.append(commit("p", 0, [event("@created")], { snapshot: first, timers: { cancelAll: false, schedule: [armed] } }))
        const unchanged = Effect.gen(function*() {
          expect((yield* readAll(store, "p")).map((r) => r.tag)).toEqual(["@created"])
          expect(yield* store.loadSnapshot(machine, "p")).toEqual(Option.some(first))
          expect(yield* timers.pending(machine, "p")).toEqual([
            { ...armed, machine, instanceId: "p", attempts: 0, lastError: null }
          ])
          expect(yield* store.highestSequenceNr(machine, "fresh")).toBe(0)
          expect(yield* store.loadSnapshot(machine, "fresh")).toEqual(Option.none())
          expect(yield* timers.pending(machine, "fresh")).toEqual([])
          expect(yield* instancesOf(store, machine)).toEqual(["p"])
        })
        for (const [name, bad] of badJsonValues()) {
          // Spelt out rather than through `event(tag, payload)`, which puts a default in place of `undefined`.
          const withPayload = (tag: string, payload: unknown): EventStore.NewEvent => ({ ...event(tag), payload })
          const timerWith = (payload: unknown) => ({ ...timer("u", 2, 5), payload })
          const attempts = [
            commit("p", 1, [withPayload("Pay", bad)]),
            commit("p", 1, [event("Ok"), event("Pay", { _tag: "Pay", nested: [bad] })]),
            commit("fresh", 0, [withPayload("@created", bad)]),
            commit("p", 1, [event("Ok")], { snapshot: snapshot("p", 2, bad) }),
            commit("fresh", 0, [event("@created")], { snapshot: snapshot("fresh", 1, { state: bad }) }),
            commit("p", 1, [event("Ok")], { timers: { cancelAll: true, schedule: [timerWith(bad)] } }),
            commit("fresh", 0, [event("@created")], {
              timers: { cancelAll: false, schedule: [timer("v", 1, 5), timerWith({ bad })] }
            })
          ]
          for (const [i, attempt] of attempts.entries()) {
            const result = yield* Effect.either(store.append(attempt))
            expect(Either.isLeft(result) ? result.left : "the append succeeded", `${name}, attempt ${i}`).toMatchObject({
              _tag: "PersistenceError",
              operation: "append"
            })
          }
          for (const id of ["p", "fresh"]) {
            const result = yield* Effect.either(store.saveSnapshot(snapshot(id, 9, bad)))
            expect(Either.isLeft(result) ? result.left : "the save succeeded", `${name}, saveSnapshot ${id}`).toMatchObject({
              _tag: "PersistenceError",
              operation: "saveSnapshot"
            })
          }
          yield* unchanged
        }
      }))

    it.scoped("metadata strings and tags with NUL or a lone surrogate are a PersistenceError and write nothing", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        yield* store.append(commit("m", 0, [event("@created")]))
        const bad = ["nul\u0000", "lone\uD800", "\uDC00lone"]
        for (const text of bad) {
          const attempts = [
            event("Pay", null, "Paid", metadata({ correlationId: text })),
            event("Pay", null, "Paid", metadata({ node: text })),
            event("Pay", null, "Paid", metadata({ commitId: text })),
            event("Pay", null, "Paid", metadata({ source: "timeout", timer: text })),
            event(text, null, "Paid"),
            event("Pay", null, text)
          ]
          for (const attempt of attempts) {
            const failure = yield* Effect.flip(store.append(commit("m", 1, [event("Ok"), attempt])))
            expect(failure).toMatchObject({ _tag: "PersistenceError", operation: "append" })
          }
          const badTimer = { ...timer("t", 2, 5), name: text }
          const failure = yield* Effect.flip(
            store.append(commit("m", 1, [event("Ok")], { timers: { cancelAll: false, schedule: [badTimer] } }))
          )
          expect(failure).toMatchObject({ _tag: "PersistenceError", operation: "append" })
        }
        expect((yield* readAll(store, "m")).map((r) => r.tag)).toEqual(["@created"])
        // Well-formed metadata with every kind of character is stored as given.
        const fancy = metadata({ correlationId: "🔗 корр \u2028", node: "n\uFFFD", commitId: "c-😀", timer: "⏰" })
        yield* store.append(commit("m", 1, [event("Ok", null, "Paid", fancy)]))
        expect((yield* readAll(store, "m", 2))[0]!.metadata).toEqual(fancy)
      }))

    it.scoped("a 5 MiB payload round-trips exactly, as an event, a snapshot and a timer payload", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        const items = Array.from({ length: 20_000 }, (_, i) => ({
          sku: `sku-${i}-ü`,
          qty: i % 7,
          price: i / 8,
          tags: ["a", "😀", ""],
          ok: i % 2 === 0,
          note: null
        }))
        const big = { _tag: "Big", items, blob: "ab€😀\"\\\n\u2028".repeat(300_000) }
        expect(JSON.stringify(big).length).toBeGreaterThan(5 * 1024 * 1024)
        yield* store.append(commit("big", 0, [event("@created", big)], {
          snapshot: snapshot("big", 1, big),
          timers: { cancelAll: false, schedule: [timer("t", 1, 100, big)] }
        }))
        const [record] = yield* readAll(store, "big")
        expect(record!.payload).toEqual(big)
        expect(Option.map(yield* store.loadSnapshot(machine, "big"), (s) => s.state)).toEqual(Option.some(big))
        expect((yield* timers.pending(machine, "big"))[0]!.payload).toEqual(big)
      }))

    it.scoped("nesting up to 1000 levels is stored; deeper is a PersistenceError", () =>
      Effect.gen(function*() {
        const { store } = yield* setup
        const nested = (levels: number): unknown => {
          let value: unknown = "leaf"
          for (let i = 0; i < levels; i++) value = i % 2 === 0 ? [value] : { next: value }
          return value
        }
        yield* store.append(commit("deep", 0, [event("@created", nested(1000))]))
        expect((yield* readAll(store, "deep"))[0]!.payload).toEqual(nested(1000))
        expect(yield* Effect.flip(store.append(commit("deep", 1, [event("Deeper", nested(1001))])))).toMatchObject({
          _tag: "PersistenceError",
          operation: "append"
        })
        expect(yield* store.highestSequenceNr(machine, "deep")).toBe(1)
      }))

    it.scoped("what is stored is a copy: mutating what was appended, or what was read, changes nothing stored", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        const fresh = () => ({
          payload: { _tag: "Pay", items: [{ sku: "a", qty: 1 }] as Array<{ sku: string; qty: number }> },
          state: { _tag: "Paid", items: [{ sku: "a", qty: 1 }] as Array<{ sku: string; qty: number }> },
          timerPayload: { _tag: "Timeout", nested: { n: 1 } as { n: number; extra?: boolean } },
          meta: { ...metadata({ correlationId: "c-1" }) }
        })
        const given = fresh()
        const expected = fresh()
        const armed = timer("t", 1, 100, given.timerPayload)
        yield* store.append(commit("copy", 0, [event("@created", given.payload, "Paid", given.meta)], {
          snapshot: snapshot("copy", 1, given.state),
          timers: { cancelAll: false, schedule: [armed] }
        }))
        given.payload.items[0]!.qty = 99
        given.payload.items.push({ sku: "b", qty: 2 })
        given.state.items.length = 0
        given.timerPayload.nested.n = 99
        Object.assign(given.meta, { node: "mutated", correlationId: "mutated" })
        Object.assign(armed, { dueAt: 1, name: "mutated" })

        const expectedEvent = { ...event("@created", expected.payload, "Paid", expected.meta), machine, instanceId: "copy", seqNr: 1 }
        const expectedTimer = { ...timer("t", 1, 100, expected.timerPayload), machine, instanceId: "copy", attempts: 0, lastError: null }
        const expectedSnapshot = snapshot("copy", 1, expected.state)

        for (let round = 0; round < 2; round++) {
          const [read] = yield* readAll(store, "copy")
          expect(read).toEqual(expectedEvent)
          expect(read!.payload).not.toBe(given.payload)
          const loaded = Option.getOrThrow(yield* store.loadSnapshot(machine, "copy"))
          expect(loaded).toEqual(expectedSnapshot)
          expect(loaded.state).not.toBe(given.state)
          const [pending] = yield* timers.pending(machine, "copy")
          expect(pending).toEqual(expectedTimer)
          expect(pending!.payload).not.toBe(given.timerPayload)
          // Vandalize everything that was handed out; the next round must not see it.
          ;(read!.payload as typeof given.payload).items[0]!.qty = -1
          Object.assign(read!.metadata, { node: "vandal" })
          Object.assign(read!, { seqNr: 42, tag: "vandal" })
          ;(loaded.state as typeof given.state).items.push({ sku: "vandal", qty: 0 })
          Object.assign(loaded, { seqNr: 42 })
          ;(pending!.payload as typeof given.timerPayload).nested.extra = true
          Object.assign(pending!, { dueAt: -1, generation: 42 })
        }

        const [claimed] = yield* timers.claimDue({ machines: [machine], now: 100, limit: 10, nodeId: "n", claimUntil: 200 })
        expect(claimed).toEqual(expectedTimer)
        ;(claimed!.payload as typeof given.timerPayload).nested.n = -1
        yield* timers.deadLetter({ machine, instanceId: "copy", name: "t", generation: 1 }, { error: "boom", now: 300 })
        const expectedLetter = { ...expectedTimer, attempts: 1, lastError: "boom", failedAt: 300 }
        const [letter] = yield* timers.deadLetters(machine)
        expect(letter).toEqual(expectedLetter)
        ;(letter!.payload as typeof given.timerPayload).nested.n = -1
        expect(yield* timers.deadLetters(machine)).toEqual([expectedLetter])
        expect(yield* timers.redrive({ machine, instanceId: "copy", name: "t" }, 400)).toBe(true)
        expect(yield* timers.pending(machine, "copy")).toEqual([{ ...expectedTimer, dueAt: 400, lastError: "boom" }])
      }))

    it.scoped("a commit writes its timer changes with its events; a stale fired timer fails it and writes nothing", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        const pending = Effect.map(timers.pending(machine, "t"), byName)
        const stored = (t: ReturnType<typeof timer>) => ({ ...t, machine, instanceId: "t", attempts: 0, lastError: null })
        const payment = timer("payment", 1, 300_000)
        const reminder = timer("reminder", 1, 60_000, { _tag: "Remind", text: "ü😀" })
        yield* store.append(commit("t", 0, [event("@created")], { timers: { cancelAll: false, schedule: [payment, reminder] } }))
        expect(yield* pending).toEqual([stored(payment), stored(reminder)])

        // A conflicting commit's timers are not written.
        const lost = { cancelAll: true, schedule: [timer("lost", 1, 1)] }
        expect(yield* Effect.flip(store.append(commit("t", 0, [event("x")], { timers: lost })))).toMatchObject({
          _tag: "SequenceConflict"
        })
        // A delivery of a timer that is not armed (wrong generation) writes nothing at all.
        const stale = yield* Effect.flip(
          store.append(commit("t", 1, [event("PaymentTimeout")], {
            snapshot: snapshot("t", 2, { stale: true }),
            timers: { cancelAll: true, schedule: [], fired: { name: "payment", generation: 9 } }
          }))
        )
        expect(stale).toMatchObject({ _tag: "StaleTimer", machine, instanceId: "t", name: "payment", generation: 9 })
        expect(yield* store.highestSequenceNr(machine, "t")).toBe(1)
        expect(yield* store.loadSnapshot(machine, "t")).toEqual(Option.none())
        expect(yield* pending).toEqual([stored(payment), stored(reminder)])

        // A stay that delivers "reminder": only that timer goes.
        yield* store.append(commit("t", 1, [event("Remind")], {
          timers: { cancelAll: false, schedule: [], fired: { name: "reminder", generation: 1 } }
        }))
        expect(yield* pending).toEqual([stored(payment)])

        // Leaving the state on "payment": everything is cancelled, the new state's timers armed.
        const shipping = timer("shipping", 3, 900_000)
        const paymentAgain = timer("payment", 3, 600_000)
        yield* store.append(commit("t", 2, [event("PaymentTimeout")], {
          timers: { cancelAll: true, schedule: [shipping, paymentAgain], fired: { name: "payment", generation: 1 } }
        }))
        expect(yield* pending).toEqual([stored(paymentAgain), stored(shipping)])

        // Re-arming a name without cancelAll replaces that timer (attempts reset), keeps the others.
        yield* timers.retryLater({ machine, instanceId: "t", name: "shipping", generation: 3 }, { dueAt: 5, error: "boom" })
        const rearmed = timer("shipping", 4, 950_000)
        yield* store.append(commit("t", 3, [event("Touch")], { timers: { cancelAll: false, schedule: [rearmed] } }))
        expect(yield* pending).toEqual([stored(paymentAgain), stored(rearmed)])
        expect(yield* store.highestSequenceNr(machine, "t")).toBe(4)
      }))
  })

export const timeoutStoreSuite = (backend: Backend) =>
  describe.skipIf(backend.skip !== undefined)(`TimeoutStore conformance on ${backend.name}`, () => {
    const setup = Effect.map(Layer.build(backend.layer()), (context) => ({
      store: Context.get(context, EventStore.EventStore),
      timers: Context.get(context, TimeoutStore.TimeoutStore)
    }))

    const arm = (
      store: EventStore.EventStore["Type"],
      instanceId: string,
      schedule: ReadonlyArray<ReturnType<typeof timer>>,
      ofMachine = machine
    ) => store.append(commit(instanceId, 0, [event("@created")], { machine: ofMachine, timers: { cancelAll: false, schedule } }))

    const key = (instanceId: string, name: string, generation = 1) => ({ machine, instanceId, name, generation })

    it.scoped("claims due timers oldest first, up to the limit, and skips live claims until their lease ends", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        yield* arm(store, "a", [timer("t", 1, 300)])
        yield* arm(store, "b", [timer("t", 1, 100), timer("later", 1, 10_000)])
        yield* arm(store, "c", [timer("t", 1, 200)])
        yield* arm(store, "x", [timer("t", 1, 50)], "invoice")

        expect(yield* timers.nextDueAt([machine])).toEqual(Option.some(100))
        expect(yield* timers.nextDueAt([machine, "invoice"])).toEqual(Option.some(50))
        expect(yield* timers.nextDueAt(["nothing"])).toEqual(Option.none())
        expect(yield* timers.claimDue({ machines: [], now: 1_000, limit: 10, nodeId: "n", claimUntil: 2_000 })).toEqual([])

        const first = yield* timers.claimDue({ machines: [machine], now: 1_000, limit: 2, nodeId: "n1", claimUntil: 2_000 })
        expect(first.map((t) => [t.instanceId, t.name, t.dueAt])).toEqual([["b", "t", 100], ["c", "t", 200]])
        expect(first[0]).toEqual({
          machine,
          instanceId: "b",
          name: "t",
          generation: 1,
          stateTag: "Pending",
          dueAt: 100,
          payload: { _tag: "Timeout", name: "t" },
          attempts: 0,
          lastError: null
        })
        const second = yield* timers.claimDue({ machines: [machine], now: 1_500, limit: 10, nodeId: "n2", claimUntil: 2_500 })
        expect(second.map((t) => t.instanceId)).toEqual(["a"])
        expect(yield* timers.claimDue({ machines: [machine], now: 1_999, limit: 10, nodeId: "n3", claimUntil: 3_000 }))
          .toEqual([])
        // A claimed timer is next claimable when its claim ends.
        expect(yield* timers.nextDueAt([machine])).toEqual(Option.some(2_000))
        expect(yield* timers.nextDueAt([machine, "invoice"])).toEqual(Option.some(50))
        // n1's lease ends at 2_000, n2's does not.
        const retaken = yield* timers.claimDue({ machines: [machine], now: 2_000, limit: 10, nodeId: "n3", claimUntil: 9_000 })
        expect(retaken.map((t) => t.instanceId)).toEqual(["b", "c"])
        expect(yield* timers.nextDueAt([machine])).toEqual(Option.some(2_500))
      }))

    it.scoped("nodes claiming at once never get the same timer", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        yield* Effect.forEach(
          Array.from({ length: 50 }, (_, i) => i),
          (i) => arm(store, `i${i}`, [timer("t", 1, i)]),
          { concurrency: 10, discard: true }
        )
        const claims = yield* Effect.all(
          ["a", "b", "c", "d", "e"].map((nodeId) =>
            timers.claimDue({ machines: [machine], now: 100, limit: 20, nodeId, claimUntil: 1_000 })
          ),
          { concurrency: "unbounded" }
        )
        const claimed = claims.flat().map((t) => t.instanceId)
        expect(claimed).toHaveLength(50)
        expect(new Set(claimed).size).toBe(50)
      }))

    it.scoped("complete, retryLater, deadLetter and redrive act only on the stored generation", () =>
      Effect.gen(function*() {
        const { store, timers } = yield* setup
        yield* arm(store, "r", [timer("t", 1, 100), timer("u", 1, 100)])
        const pendingNames = Effect.map(timers.pending(machine, "r"), (ts) => ts.map((t) => t.name).sort())

        yield* timers.complete(key("r", "t", 2))
        expect(yield* pendingNames).toEqual(["t", "u"])
        yield* timers.complete(key("r", "u"))
        expect(yield* pendingNames).toEqual(["t"])

        yield* timers.claimDue({ machines: [machine], now: 100, limit: 10, nodeId: "n", claimUntil: 10_000 })
        yield* timers.retryLater(key("r", "t", 2), { dueAt: 1, error: "wrong generation" })
        yield* timers.retryLater(key("r", "t"), { dueAt: 500, error: "boom" })
        const [retried] = yield* timers.pending(machine, "r")
        expect(retried).toMatchObject({ dueAt: 500, attempts: 1, lastError: "boom" })
        // The claim is released: it is claimable again once due, although the lease ran to 10_000.
        expect(yield* timers.claimDue({ machines: [machine], now: 499, limit: 10, nodeId: "m", claimUntil: 20_000 }))
          .toEqual([])
        expect((yield* timers.claimDue({ machines: [machine], now: 500, limit: 10, nodeId: "m", claimUntil: 20_000 })).length)
          .toBe(1)

        yield* timers.deadLetter(key("r", "t", 2), { error: "wrong generation", now: 1 })
        expect(yield* timers.deadLetters(machine)).toEqual([])
        yield* timers.deadLetter(key("r", "t"), { error: "gave up", now: 700 })
        expect(yield* timers.pending(machine, "r")).toEqual([])
        expect(yield* timers.deadLetters(machine)).toEqual([{
          machine,
          instanceId: "r",
          name: "t",
          generation: 1,
          stateTag: "Pending",
          dueAt: 500,
          payload: { _tag: "Timeout", name: "t" },
          attempts: 2,
          lastError: "gave up",
          failedAt: 700
        }])
        expect(yield* timers.deadLetters("invoice")).toEqual([])

        expect(yield* timers.redrive({ machine, instanceId: "r", name: "t" }, 800)).toBe(true)
        expect(yield* timers.deadLetters(machine)).toEqual([])
        expect(yield* timers.pending(machine, "r")).toEqual([{
          machine,
          instanceId: "r",
          name: "t",
          generation: 1,
          stateTag: "Pending",
          dueAt: 800,
          payload: { _tag: "Timeout", name: "t" },
          attempts: 0,
          lastError: "gave up"
        }])
        expect(yield* timers.redrive({ machine, instanceId: "r", name: "t" }, 900)).toBe(false)

        // A dead letter is not redriven over a live timer of the same name.
        yield* timers.deadLetter(key("r", "t"), { error: "again", now: 1_000 })
        yield* store.append(commit("r", 1, [event("Touch")], { timers: { cancelAll: false, schedule: [timer("t", 2, 5_000)] } }))
        expect(yield* timers.redrive({ machine, instanceId: "r", name: "t" }, 1_100)).toBe(false)
        expect((yield* timers.deadLetters(machine)).map((d) => d.lastError)).toEqual(["again"])
        expect((yield* timers.pending(machine, "r")).map((t) => [t.generation, t.dueAt])).toEqual([[2, 5_000]])
      }))
  })

export const outboxStoreSuite = (backend: Backend) =>
  describe.skipIf(backend.skip !== undefined)(`OutboxStore conformance on ${backend.name}`, () => {
    const setup = Effect.map(Layer.build(backend.layer()), (context) => ({
      store: Context.get(context, EventStore.EventStore),
      outbox: Context.get(context, OutboxStore.OutboxStore)
    }))

    const command = (index: number, extra: Partial<OutboxStore.NewCommand> = {}): OutboxStore.NewCommand => ({
      index,
      kind: "handler",
      tag: "Charge",
      payload: { _tag: "Charge", amount: index },
      target: null,
      correlationId: null,
      fenceToken: null,
      ...extra
    })

    /** Creates `instanceId` (seqNr 1, at `at`) producing `commands`. */
    const produce = (
      store: EventStore.EventStore["Type"],
      instanceId: string,
      commands: ReadonlyArray<OutboxStore.NewCommand>,
      at = 1_000,
      ofMachine = machine
    ) =>
      store.append(
        commit(instanceId, 0, [event("@created", { _tag: "Pending" }, "Pending", metadata({ timestamp: at }))], {
          machine: ofMachine,
          outbox: { produce: commands }
        })
      )

    const key = (instanceId: string, index: number, seqNr = 1) => ({ machine, instanceId, seqNr, index })

    it.scoped("commands are stored with the commit that produced them, exactly as given", () =>
      Effect.gen(function*() {
        const { outbox, store } = yield* setup
        yield* produce(store, "a", [
          command(0, { correlationId: "corr", fenceToken: 7 }),
          command(1, {
            kind: "send",
            tag: "Approve",
            payload: { _tag: "Approve", note: "héllo 🔗" },
            target: { machine: "payment", instanceId: "p'1" }
          })
        ])
        expect(yield* outbox.pending(machine, "a")).toEqual([
          {
            machine,
            instanceId: "a",
            seqNr: 1,
            index: 0,
            kind: "handler",
            tag: "Charge",
            payload: { _tag: "Charge", amount: 0 },
            target: null,
            correlationId: "corr",
            fenceToken: 7,
            createdAt: 1_000,
            dueAt: 1_000,
            attempts: 0,
            lastError: null
          },
          expect.objectContaining({
            index: 1,
            kind: "send",
            tag: "Approve",
            payload: { _tag: "Approve", note: "héllo 🔗" },
            target: { machine: "payment", instanceId: "p'1" }
          })
        ])
        // The next commit's commands are keyed by its own seqNr.
        yield* store.append(commit("a", 1, [event("Touch")], { outbox: { produce: [command(0)] } }))
        expect((yield* outbox.pending(machine, "a")).map((c) => [c.seqNr, c.index])).toEqual([[1, 0], [1, 1], [2, 0]])
      }))

    it.scoped("a commit that fails writes no command; a command that cannot be stored fails the commit", () =>
      Effect.gen(function*() {
        const { outbox, store } = yield* setup
        yield* produce(store, "a", [command(0)])
        const conflict = yield* Effect.flip(produce(store, "a", [command(5)]))
        expect(conflict._tag).toBe("SequenceConflict")
        for (
          const bad of [
            command(0, { payload: { amount: Number.NaN } }),
            command(0, { tag: "a\u0000b" }),
            command(-1),
            command(0, { kind: "send" }),
            command(0, { target: { machine: "m", instanceId: "" } }),
            command(0, { fenceToken: 0 })
          ]
        ) {
          const refused = yield* Effect.flip(produce(store, "b", [bad]))
          expect(refused._tag).toBe("PersistenceError")
        }
        const twice = yield* Effect.flip(produce(store, "b", [command(0), command(0)]))
        expect(twice.message).toContain("used twice")
        expect(yield* store.highestSequenceNr(machine, "b")).toBe(0)
        expect((yield* outbox.pending(machine, "a")).map((c) => c.index)).toEqual([0])
        expect(yield* outbox.pending(machine, "b")).toEqual([])
      }))

    it.scoped("a commit completing a command deletes it; completing it again is StaleCommand and writes nothing", () =>
      Effect.gen(function*() {
        const { outbox, store } = yield* setup
        yield* produce(store, "a", [command(0), command(1)])
        yield* produce(store, "target", [])
        yield* store.append(commit("target", 1, [event("Reply")], { outbox: { produce: [], complete: key("a", 0) } }))
        expect((yield* outbox.pending(machine, "a")).map((c) => c.index)).toEqual([1])
        const stale = yield* Effect.flip(
          store.append(commit("target", 2, [event("Reply")], { outbox: { produce: [command(0)], complete: key("a", 0) } }))
        )
        expect(stale).toMatchObject({ _tag: "StaleCommand", machine, instanceId: "a", seqNr: 1, index: 0 })
        expect(yield* store.highestSequenceNr(machine, "target")).toBe(2)
        expect(yield* outbox.pending(machine, "target")).toEqual([])
        // A conflict is reported before a stale command.
        const conflict = yield* Effect.flip(
          store.append(commit("target", 1, [event("Reply")], { outbox: { produce: [], complete: key("a", 0) } }))
        )
        expect(conflict._tag).toBe("SequenceConflict")
        expect(yield* outbox.complete(key("a", 1))).toBe(true)
        expect(yield* outbox.complete(key("a", 1))).toBe(false)
      }))

    it.scoped("claims due commands oldest first, skips live claims, extends only its own; retry, dead letter, re-drive, discard", () =>
      Effect.gen(function*() {
        const { outbox, store } = yield* setup
        yield* produce(store, "late", [command(0)], 300)
        yield* produce(store, "early", [command(0), command(1)], 100)
        yield* produce(store, "other", [command(0)], 50, "invoice")
        expect(yield* outbox.nextDueAt([machine])).toEqual(Option.some(100))
        expect(yield* outbox.nextDueAt([])).toEqual(Option.none())
        const first = yield* outbox.claimDue({ machines: [machine], now: 1_000, limit: 2, nodeId: "n1", claimUntil: 2_000 })
        expect(first.map((c) => [c.instanceId, c.index])).toEqual([["early", 0], ["early", 1]])
        const second = yield* outbox.claimDue({ machines: [machine], now: 1_000, limit: 10, nodeId: "n2", claimUntil: 2_000 })
        expect(second.map((c) => c.instanceId)).toEqual(["late"])
        expect(yield* outbox.claimDue({ machines: [machine], now: 1_500, limit: 10, nodeId: "n3", claimUntil: 3_000 })).toEqual([])
        expect(yield* outbox.nextDueAt([machine])).toEqual(Option.some(2_000))
        expect(yield* outbox.extendClaim(key("early", 0), { nodeId: "n2", claimUntil: 9_000 })).toBe(false)
        expect(yield* outbox.extendClaim(key("early", 0), { nodeId: "n1", claimUntil: 9_000 })).toBe(true)
        const taken = yield* outbox.claimDue({ machines: [machine], now: 2_000, limit: 10, nodeId: "n3", claimUntil: 3_000 })
        expect(taken.map((c) => [c.instanceId, c.index])).toEqual([["early", 1], ["late", 0]])

        // Only the node holding the claim may complete, retry or dead-letter.
        expect(yield* outbox.complete(key("early", 1), { claimedBy: "n1" })).toBe(false)
        expect(yield* outbox.complete(key("early", 1), { claimedBy: "n3" })).toBe(true)
        yield* outbox.retryLater(key("late", 0), { dueAt: 5_000, error: "not mine", nodeId: "n1" })
        expect((yield* outbox.pending(machine, "late"))[0]).toMatchObject({ attempts: 0, lastError: null })
        yield* outbox.retryLater(key("late", 0), { dueAt: 5_000, error: "boom 1", nodeId: "n3" })
        expect((yield* outbox.pending(machine, "late"))[0]).toMatchObject({ dueAt: 5_000, attempts: 1, lastError: "boom 1" })
        expect(yield* outbox.claimDue({ machines: [machine], now: 4_999, limit: 10, nodeId: "n", claimUntil: 6_000 }))
          .toEqual([])
        const again = yield* outbox.claimDue({ machines: [machine], now: 5_000, limit: 10, nodeId: "n4", claimUntil: 9_000 })
        expect(again.map((c) => c.instanceId)).toEqual(["late"])
        yield* outbox.deadLetter(key("late", 0), { error: "not mine", now: 6_000, nodeId: "n3" })
        expect((yield* outbox.pending(machine, "late")).length).toBe(1)
        yield* outbox.deadLetter(key("late", 0), { error: "boom 2", now: 6_000, nodeId: "n4" })
        yield* outbox.deadLetter(key("late", 0), { error: "again", now: 7_000, nodeId: "n4" }) // no longer pending: nothing
        expect(yield* outbox.pending(machine, "late")).toEqual([])
        const letters = yield* outbox.deadLetters(machine)
        expect(letters).toEqual([expect.objectContaining({ instanceId: "late", attempts: 2, lastError: "boom 2", failedAt: 6_000 })])
        expect(yield* outbox.deadLetters("invoice")).toEqual([])
        expect(yield* outbox.redrive(key("late", 0), 8_000)).toBe(true)
        expect(yield* outbox.redrive(key("late", 0), 8_000)).toBe(false)
        expect((yield* outbox.pending(machine, "late"))[0]).toMatchObject({ dueAt: 8_000, attempts: 0, lastError: "boom 2" })
        yield* outbox.claimDue({ machines: [machine], now: 8_000, limit: 10, nodeId: "n5", claimUntil: 9_500 })
        yield* outbox.deadLetter(key("late", 0), { error: "final", now: 9_000, nodeId: "n5" })
        expect(yield* outbox.discard(key("late", 0))).toBe(true)
        expect(yield* outbox.discard(key("late", 0))).toBe(false)
        expect(yield* outbox.deadLetters(machine)).toEqual([])
      }))
  })

for (const backend of allBackends) {
  eventStoreSuite(backend)
  timeoutStoreSuite(backend)
  outboxStoreSuite(backend)
}
