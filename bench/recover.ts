/**
 * Recovery of one long-lived instance: how long a fresh runtime takes to load
 * an instance with `--events` (100,000) events, on SQLite and PostgreSQL.
 *
 * Prints (each the median of the repetitions, after the warm-ups):
 * - `recover.<pg|sqlite>.100k` (ms): the latest snapshot plus the tail, as
 *   `snapshotEvery: 1000` leaves it at worst (the snapshot 999 events
 *   before the end). Baseline: the target, 10 ms (ratio = 10 / value).
 * - `recover.<pg|sqlite>.100k.replay` (events/s): the whole log replayed,
 *   no snapshot. Baseline: the target, 1,000,000 events/s on SQLite and
 *   300,000 on PostgreSQL (ratio = value / target).
 *
 * Each sample is a fresh `FSMRuntime` (empty cache) over the same store, timed
 * around `inspect`, whose result is checked (the count the log sums to).
 *
 *   npm run bench -- recover [--events 100000] [--reps 3] [--warmup 1]
 */
import { Context, Effect, Schema, type Scope } from "effect"
import { EventStore, FSMRuntime, Machine } from "effect-fsm"
import { type Backend, openBenchDatabase, pgUnreachable, runScript } from "./db.js"
import { commonFlags, isMain, median, parseFlags, printBench, progress } from "./run.js"

const Counter = Machine.make({
  name: "counter",
  version: 1,
  state: Schema.Union(Schema.TaggedStruct("Counting", { count: Schema.Number })),
  event: Schema.Union(Schema.TaggedStruct("Add", { by: Schema.Number })),
  transitions: { Counting: { Add: { to: "Counting", build: (s, e) => ({ count: s.count + e.by }) } } }
})

const snapshotTargetMs = 10
const replayTarget: Record<Backend, number> = { sqlite: 1_000_000, pg: 300_000 }

/**
 * Appends `count` Add events after `from`, a thousand per commit (filling,
 * untimed), each with the metadata a runtime writes: its node and a commit
 * id of its own (a UUID).
 */
const fill = (store: EventStore.EventStore["Type"], instanceId: string, from: number, count: number) =>
  Effect.gen(function*() {
    const metadata = (timestamp: number): EventStore.Metadata => ({
      timestamp,
      source: "user",
      correlationId: null,
      node: "bench",
      commitId: crypto.randomUUID(),
      timer: null
    })
    if (from === 0) {
      yield* store.append({
        machine: Counter.name,
        instanceId,
        expectedSeqNr: 0,
        events: [{
          tag: EventStore.CreatedTag,
          payload: { _tag: "Counting", count: 0 },
          stateTag: "Counting",
          schemaVersion: 1,
          metadata: metadata(0)
        }]
      })
      from = 1
      count -= 1
    }
    for (let done = 0; done < count; done += 1_000) {
      const batch = Math.min(1_000, count - done)
      yield* store.append({
        machine: Counter.name,
        instanceId,
        expectedSeqNr: from + done,
        events: Array.from({ length: batch }, () => ({
          tag: "Add",
          payload: { _tag: "Add", by: 1 },
          stateTag: "Counting",
          schemaVersion: 1,
          metadata: metadata(1)
        }))
      })
    }
  })

/** Milliseconds a fresh runtime takes to load `instanceId`, checked to sum to `events - 1`. */
const timedLoad = (context: Context.Context<EventStore.EventStore>, instanceId: string, events: number) =>
  Effect.scoped(Effect.gen(function*() {
    const runtime = yield* FSMRuntime.make({ machines: [Counter], snapshotEvery: 0 }).pipe(Effect.provide(context))
    const started = performance.now()
    const view = yield* runtime.inspect(Counter, instanceId)
    const ms = performance.now() - started
    if (view.seqNr !== events || view.state.count !== events - 1) {
      return yield* Effect.fail(new Error(`${instanceId}: loaded seqNr ${view.seqNr}, count ${view.state.count}`))
    }
    return ms
  }))

const measure = (
  backend: Backend,
  flags: { readonly events: number; readonly reps: number; readonly warmup: number }
): Effect.Effect<void, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const db = yield* openBenchDatabase(backend, { maxConnections: 4 })
    const store = Context.get(db.store, EventStore.EventStore)
    const fillStarted = performance.now()
    // The snapshot where snapshotEvery: 1000 leaves it at worst: 999 events before the end.
    const snapshotAt = flags.events - 999
    yield* fill(store, "snap", 0, snapshotAt)
    yield* Effect.scoped(Effect.gen(function*() {
      const runtime = yield* FSMRuntime.make({ machines: [Counter] }).pipe(Effect.provide(db.store))
      yield* runtime.saveSnapshot(Counter, "snap")
    }))
    yield* fill(store, "snap", snapshotAt, 999)
    yield* fill(store, "full", 0, flags.events)
    progress(`recover.${backend}: filled 2 x ${flags.events} events in ${Math.round(performance.now() - fillStarted)} ms`)

    const snapshotMs: Array<number> = []
    const replayMs: Array<number> = []
    for (let round = 0; round < flags.warmup + flags.reps; round++) {
      const label = round < flags.warmup ? `warmup ${round + 1}/${flags.warmup}` : `rep ${round - flags.warmup + 1}/${flags.reps}`
      const withSnapshot = yield* timedLoad(db.store, "snap", flags.events)
      const full = yield* timedLoad(db.store, "full", flags.events)
      progress(
        `  recover.${backend} ${label}: snapshot + 999 events ${withSnapshot.toFixed(1)} ms; ${flags.events} events replayed in ${
          full.toFixed(0)
        } ms (${Math.round(flags.events / (full / 1000))} events/s)`
      )
      if (round >= flags.warmup) {
        snapshotMs.push(withSnapshot)
        replayMs.push(full)
      }
    }
    const label = flags.events === 100_000 ? "100k" : String(flags.events)
    printBench(`recover.${backend}.${label}`, {
      value: median(snapshotMs),
      unit: "ms",
      baseline: snapshotTargetMs,
      lowerIsBetter: true
    })
    printBench(`recover.${backend}.${label}.replay`, {
      value: flags.events / (median(replayMs) / 1000),
      unit: "events/s",
      baseline: replayTarget[backend]
    })
  })

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const flags = parseFlags("recover", args, {
    reps: { ...commonFlags.reps, default: 3 },
    warmup: { ...commonFlags.warmup, default: 1 },
    events: { default: 100_000, description: "events in the log of the recovered instance (at least 1,000)" }
  })
  if (flags.events < 1_000) throw new Error("--events must be at least 1000")
  await runScript(Effect.scoped(Effect.gen(function*() {
    const unreachable = yield* pgUnreachable
    if (unreachable === undefined) yield* Effect.scoped(measure("pg", flags))
    else progress(`recover.pg skipped: ${unreachable}`)
    yield* Effect.scoped(measure("sqlite", flags))
  })))
}

if (isMain(import.meta.url)) await main(process.argv.slice(2))
