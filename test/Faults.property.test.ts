/**
 * Integrity under random faults, as properties, on every backend: random
 * commands over several runtimes sharing one store, each runtime behind its
 * own fault-injection wrapper, with a random fault at each commit (a failure
 * before or after the write, a lost log read, an interruption, a delay),
 * restarts and evictions; then the log is checked against what the callers
 * were told and what reached the store. A second property does the same for
 * timer deliveries (in-process and durable), with TestClock advanced in
 * random steps.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Chunk,
  Context,
  Effect,
  ExecutionStrategy,
  Exit,
  FastCheck as fc,
  Fiber,
  Option,
  Schedule,
  Schema,
  Scope,
  Stream,
  TestClock
} from "effect"
import { Errors, EventStore, FSMRuntime, Machine, TimeoutStore, TimeoutStrategy } from "effect-fsm"
import { Counter, type CounterState } from "./fixtures/machines.js"
import { type Backend, backends } from "./utils/backends.js"
import { countsOf, expectedSummary } from "./utils/currentState.js"
import { eventually } from "./utils/eventually.js"
import { type Fault, faulty, withStore } from "./utils/faults.js"
import { buildStore, runtimeOn, withDurableTimeouts } from "./utils/runtime.js"

// Conflicts retried at once: TestClock would hold back-off sleeps forever.
const retry = Schedule.recurs(1000)

type Store = EventStore.EventStore["Type"]
type Runtime = FSMRuntime.FSMRuntime["Type"]
type StoreContext = Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>

const runsOn = (backend: Backend, memoryRuns: number, sqlRuns: number) =>
  backend.name === "memory" ? memoryRuns : sqlRuns

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

/** The fault one commit meets. */
type Injected =
  | { readonly _tag: "None" }
  /**
   * `blind`: the runtime's next read of the instance's log fails too, so it
   * cannot tell whether the commit landed (the connection dropped with the
   * COMMIT in flight).
   */
  | { readonly _tag: "FailBefore" | "FailAfter"; readonly blind: boolean }
  | { readonly _tag: "InterruptBefore" | "InterruptAfter" }
  /** Yields to other fibers before and after the write. */
  | { readonly _tag: "Yield"; readonly before: number; readonly after: number }
  /** Holds the write (and the instance's lock) for a while of TestClock time. */
  | { readonly _tag: "Sleep"; readonly millis: number }

const none: Injected = { _tag: "None" }

const injected = (options: { readonly sleeps: boolean; readonly noneWeight: number }): fc.Arbitrary<Injected> =>
  fc.oneof(
    { weight: options.noneWeight, arbitrary: fc.constant(none) },
    {
      weight: 2,
      arbitrary: fc.record({
        _tag: fc.constantFrom("FailBefore" as const, "FailAfter" as const),
        blind: fc.integer({ min: 0, max: 3 }).map((n) => n === 0)
      })
    },
    { weight: 2, arbitrary: fc.record({ _tag: fc.constantFrom("InterruptBefore" as const, "InterruptAfter" as const) }) },
    {
      weight: 2,
      arbitrary: fc.record({ _tag: fc.constant("Yield" as const), before: fc.nat(40), after: fc.nat(10) })
    },
    {
      weight: options.sleeps ? 1 : 0,
      arbitrary: fc.record({ _tag: fc.constant("Sleep" as const), millis: fc.integer({ min: 1, max: 40_000 }) })
    }
  )

const yields = (n: number) => Effect.repeatN(Effect.yieldNow(), n)

const toFault = (fault: Injected): Fault | undefined => {
  switch (fault._tag) {
    case "None":
      return undefined
    case "FailBefore":
    case "FailAfter":
      return { _tag: fault._tag }
    case "InterruptBefore":
    case "InterruptAfter":
      return { _tag: fault._tag }
    case "Yield":
      return { _tag: "Around", before: yields(fault.before), after: yields(fault.after) }
    case "Sleep":
      return { _tag: "Around", before: Effect.sleep(fault.millis), after: Effect.void }
  }
}

const keyOf = (machine: string, instanceId: string) => `${machine}\u0000${instanceId}`

/**
 * One runtime's view of the shared store, from the store up: `reached` is
 * told of every commit the store applied (the ground truth the log must
 * agree with); `faulty` injects the planned fault; after a blind failure the
 * next read of that instance's log fails as well.
 */
const wrapStore = (
  inner: Store,
  plan: (commit: EventStore.Commit) => Injected,
  reached: (commit: EventStore.Commit) => void
): Store => {
  const counted: Store = { ...inner, append: (commit) => Effect.tap(inner.append(commit), () => reached(commit)) }
  const blindCommits = new WeakSet<EventStore.Commit>()
  const faults = faulty(counted, (commit) => {
    const fault = plan(commit)
    if ((fault._tag === "FailBefore" || fault._tag === "FailAfter") && fault.blind) blindCommits.add(commit)
    return toFault(fault)
  })
  const blindSpots = new Set<string>()
  /** `read`, unless it is the first read of the instance's log since a blind failure: that one fails too. */
  const blindRead = <A, E>(operation: string, machine: string, instanceId: string, read: Effect.Effect<A, E>) =>
    Effect.suspend((): Effect.Effect<A, E | Errors.PersistenceError> =>
      blindSpots.delete(keyOf(machine, instanceId))
        ? Effect.fail(new Errors.PersistenceError({ operation, reason: "injected fault: connection dropped" }))
        : read
    )
  return {
    ...faults.store,
    append: (commit) =>
      Effect.tapErrorTag(faults.store.append(commit), "PersistenceError", () =>
        Effect.sync(() => {
          if (blindCommits.has(commit)) blindSpots.add(keyOf(commit.machine, commit.instanceId))
        })),
    events: (machine, instanceId, fromSeqNr) =>
      Stream.suspend(() =>
        blindSpots.delete(keyOf(machine, instanceId))
          ? Stream.fail(new Errors.PersistenceError({ operation: "events", reason: "injected fault: connection dropped" }))
          : faults.store.events(machine, instanceId, fromSeqNr)
      ),
    eventsPage: (machine, instanceId, fromSeqNr, limit) =>
      blindRead("eventsPage", machine, instanceId, faults.store.eventsPage(machine, instanceId, fromSeqNr, limit)),
    replayPage: (machine, instanceId, fromSeqNr, limit) =>
      blindRead("replayPage", machine, instanceId, faults.store.replayPage(machine, instanceId, fromSeqNr, limit))
  }
}

/** A timeout strategy that arms nothing: a runtime that only looks. */
const observing = TimeoutStrategy.TimeoutStrategy.of({
  start: () => Effect.succeed({ durable: false, armed: () => Effect.void })
})

/** A runtime over the unwrapped store that fires no timers of its own. */
const observerOn = <const Ms extends ReadonlyArray<Machine.Any>>(store: StoreContext, machines: Ms) =>
  Effect.map(
    runtimeOn(Context.add(store, TimeoutStrategy.TimeoutStrategy, observing) as Context.Context<EventStore.EventStore>, {
      machines,
      retry
    }),
    ({ runtime }) => runtime
  )

const logOf = (store: StoreContext, machine: string, instanceId: string) =>
  Effect.map(
    Stream.runCollect(Context.get(store, EventStore.EventStore).events(machine, instanceId, 1)),
    Chunk.toReadonlyArray
  )

const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1)

const yieldToEventLoop = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/** Lets background fibers and database I/O run for a while, without moving any clock. */
const settle = (rounds: number) => Effect.repeatN(Effect.zipRight(Effect.yieldNow(), yieldToEventLoop), rounds)

// ---------------------------------------------------------------------------
// Commands: random sends over runtimes and instances, a fault per commit
// ---------------------------------------------------------------------------

interface Send {
  /** Unique per command: identifies it in `trail` and in the log. */
  readonly by: number
  readonly runtime: number
  readonly instance: number
  /** The fault of each attempt to commit it (a conflict retry or a commit retried without its snapshot is another attempt). */
  readonly faults: ReadonlyArray<Injected>
}

type Step =
  | { readonly _tag: "Sends"; readonly sends: ReadonlyArray<Send> }
  | { readonly _tag: "Evict"; readonly runtime: number }
  | { readonly _tag: "Restart"; readonly runtime: number; readonly snapshotEvery: number }

interface Scenario {
  readonly runtimes: number
  readonly instances: number
  readonly snapshotEvery: ReadonlyArray<number>
  /** The faults of each instance's `create` (by runtime `instance % runtimes`). */
  readonly createFaults: ReadonlyArray<ReadonlyArray<Injected>>
  readonly steps: ReadonlyArray<Step>
}

const snapshotEvery = fc.constantFrom(0, 1, 3)

type RawStep =
  | { readonly _tag: "Sends"; readonly sends: ReadonlyArray<Omit<Send, "by">> }
  | Exclude<Step, { readonly _tag: "Sends" }>

const scenario: fc.Arbitrary<Scenario> = fc.record({
  runtimes: fc.integer({ min: 2, max: 3 }),
  instances: fc.integer({ min: 2, max: 3 }),
  snapshotEvery: fc.array(snapshotEvery, { minLength: 3, maxLength: 3 }),
  createFaults: fc.array(fc.array(injected({ sleeps: false, noneWeight: 6 }), { maxLength: 2 }), {
    minLength: 3,
    maxLength: 3
  }),
  steps: fc.array(
    fc.oneof(
      {
        weight: 8,
        arbitrary: fc.record({
          _tag: fc.constant("Sends" as const),
          sends: fc.array(
            fc.record({
              runtime: fc.nat(2),
              instance: fc.nat(2),
              faults: fc.array(injected({ sleeps: false, noneWeight: 14 }), { maxLength: 3 })
            }),
            { minLength: 1, maxLength: 4 }
          )
        }) as fc.Arbitrary<RawStep>
      },
      { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Evict" as const), runtime: fc.nat(2) }) },
      { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Restart" as const), runtime: fc.nat(2), snapshotEvery }) }
    ),
    { minLength: 1, maxLength: 12, size: "max" }
  )
}).map(({ createFaults, instances, runtimes, snapshotEvery, steps }) => {
  // Commands are numbered in order, 1, 2, 3, ...; indices wrap to the counts drawn.
  let by = 0
  return {
    runtimes,
    instances,
    snapshotEvery,
    createFaults: createFaults.slice(0, instances),
    steps: steps.map((step): Step =>
      step._tag === "Sends"
        ? {
          _tag: "Sends",
          sends: step.sends.map((send) => ({
            ...send,
            by: ++by,
            runtime: send.runtime % runtimes,
            instance: send.instance % instances
          }))
        }
        : { ...step, runtime: step.runtime % runtimes }
    )
  }
})

/** What the caller of a command was told. */
type Verdict = "Acked" | "NotLanded" | "Unknown" | "Interrupted" | "Exists"

/**
 * The contract of `send` and `create` (src/internal/runtime/commit.ts): a
 * success is committed; a `PersistenceError` means the commit did not land,
 * unless its reason says whether it landed is unknown; an exhausted conflict
 * retry did not land; an interrupted caller knows nothing. Anything else is
 * a bug here.
 */
const verdictOf = (
  exit: Exit.Exit<unknown, FSMRuntime.SendError | FSMRuntime.CreateError>,
  what: string
): Verdict => {
  if (Exit.isSuccess(exit)) return "Acked"
  if (Cause.isInterruptedOnly(exit.cause)) return "Interrupted"
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`${what} died: ${Cause.pretty(exit.cause)}`)
  const error = failure.value
  switch (error._tag) {
    case "PersistenceError":
      return /whether it landed is unknown/.test(error.reason) ? "Unknown" : "NotLanded"
    case "SequenceConflict":
      return "NotLanded"
    case "InstanceAlreadyExists":
      return "Exists"
    default:
      throw new Error(`${what} failed unexpectedly: ${error._tag}: ${error.message}`)
  }
}

const counterState = (bys: ReadonlyArray<number>) => {
  const count = bys.reduce((a, b) => a + b, 0)
  return { _tag: count % 2 === 0 ? "Even" : "Odd", count, trail: bys }
}

const runCommands = (backend: Backend, s: Scenario) =>
  Effect.gen(function*() {
    const store = (yield* buildStore(backend)) as StoreContext
    const inner = Context.get(store, EventStore.EventStore)
    const parent = yield* Effect.scope

    // Commits are told apart by command: `by` for a send, the instance for a create.
    const commandOf = (commit: EventStore.Commit): string | undefined => {
      const event = commit.events[0]
      if (event?.tag === "Add") return `send ${(event.payload as { readonly by: number }).by}`
      if (event?.tag === EventStore.CreatedTag) return `create ${commit.instanceId}`
      return undefined
    }
    const faultsOf = new Map<string, ReadonlyArray<Injected>>()
    const attempts = new Map<string, number>()
    const reachedStore = new Map<string, number>()
    const plan = (commit: EventStore.Commit): Injected => {
      const command = commandOf(commit)
      if (command === undefined) return none
      const attempt = attempts.get(command) ?? 0
      attempts.set(command, attempt + 1)
      return faultsOf.get(command)?.[attempt] ?? none
    }
    const reached = (commit: EventStore.Commit) => {
      const command = commandOf(commit)
      if (command !== undefined) reachedStore.set(command, (reachedStore.get(command) ?? 0) + 1)
    }

    const start = (every: number) =>
      Effect.gen(function*() {
        const scope = yield* Scope.fork(parent, ExecutionStrategy.sequential)
        const wrapped = wrapStore(inner, plan, reached)
        const { runtime } = yield* Scope.extend(
          runtimeOn(withStore(store, wrapped), { machines: [Counter], retry, snapshotEvery: every }),
          scope
        )
        return { runtime, scope }
      })

    const nodes: Array<{ runtime: Runtime; scope: Scope.CloseableScope }> = []
    for (let r = 0; r < s.runtimes; r++) nodes.push(yield* start(s.snapshotEvery[r] ?? 0))
    const ids = range(s.instances).map((i) => `c${i - 1}`)

    // --- Creates, with faults; one that may not have landed is tried again ---
    for (const [i, id] of ids.entries()) {
      const command = `create ${id}`
      const node = nodes[i % nodes.length]!
      faultsOf.set(command, s.createFaults[i] ?? [])
      const first = verdictOf(yield* Effect.exit(node.runtime.create(Counter, id)), command)
      faultsOf.set(command, [])
      const landed = reachedStore.get(command) ?? 0
      const what = `${command} (faults ${(s.createFaults[i] ?? []).map((f) => f._tag).join(",") || "none"})`
      expect(landed, `${what}: reached the store at most once`).toBeLessThanOrEqual(1)
      if (first === "Acked") {
        expect(landed, `${what}: acknowledged, so committed`).toBe(1)
        continue
      }
      if (first === "NotLanded") expect(landed, `${what}: reported as not landed`).toBe(0)
      const again = verdictOf(yield* Effect.exit(node.runtime.create(Counter, id)), command)
      expect(again, `${what}: created again`).toBe(landed === 1 ? "Exists" : "Acked")
      expect(reachedStore.get(command), `${what}: created once`).toBe(1)
    }

    const sent: Array<{
      readonly send: Send
      readonly id: string
      readonly exit: Exit.Exit<FSMRuntime.Outcome<CounterState>, FSMRuntime.SendError>
    }> = []
    for (const step of s.steps) {
      switch (step._tag) {
        case "Sends": {
          for (const send of step.sends) faultsOf.set(`send ${send.by}`, send.faults)
          const exits = yield* Effect.all(
            step.sends.map((send) =>
              Effect.exit(nodes[send.runtime]!.runtime.send(Counter, ids[send.instance]!, { _tag: "Add", by: send.by }))
            ),
            { concurrency: "unbounded" }
          )
          step.sends.forEach((send, i) => sent.push({ send, id: ids[send.instance]!, exit: exits[i]! }))
          break
        }
        case "Evict":
          yield* nodes[step.runtime]!.runtime.evictAll
          break
        case "Restart":
          yield* Scope.close(nodes[step.runtime]!.scope, Exit.void)
          nodes[step.runtime] = yield* start(step.snapshotEvery)
          break
      }
    }

    // --- The log, read by a fresh runtime and straight from the store ---
    const fresh = yield* observerOn(store, [Counter])
    const bysOf = new Map<string, ReadonlyArray<number>>()
    for (const id of ids) {
      const raw = yield* logOf(store, Counter.name, id)
      const history = yield* fresh.history(Counter, id)
      expect(raw.map((r) => r.seqNr), `${id}: gapless from 1`).toEqual(range(raw.length))
      expect(history.map((h) => h.seqNr)).toEqual(range(raw.length))
      expect(history[0]?._tag).toBe("Created")
      const bys = history.flatMap((h) => h._tag === "Event" && h.event._tag === "Add" ? [h.event.by] : [])
      expect(bys.length, `${id}: every event after Created is an Add`).toBe(history.length - 1)
      expect(new Set(bys).size, `${id}: no command committed twice: ${bys.join(",")}`).toBe(bys.length)
      const mine = new Set(sent.filter((x) => x.id === id).map((x) => x.send.by))
      for (const by of bys) expect(mine.has(by), `${id}: ${by} was sent to this instance`).toBe(true)
      bysOf.set(id, bys)

      expect(
        yield* Context.get(store, EventStore.EventStore).instance(Counter.name, id),
        `${id}: the current-state row is the fold of the log`
      ).toEqual(Option.fromNullable(expectedSummary(Counter, id, history)))

      const view = yield* fresh.inspect(Counter, id)
      expect(view, `${id}: the replayed state is the fold of the log`).toEqual({
        state: counterState(bys),
        seqNr: history.length,
        stopped: false,
        timeouts: []
      })
      for (const [r, node] of nodes.entries()) {
        expect(yield* node.runtime.inspect(Counter, id), `${id}: runtime ${r} agrees with a fresh one`).toEqual(view)
      }
    }

    const events = Context.get(store, EventStore.EventStore)
    const rows = yield* Effect.forEach(ids, (id) => Effect.map(events.instance(Counter.name, id), Option.toArray))
    expect(yield* events.stateCounts(Counter.name), "the counts per state are those of the rows").toEqual(countsOf(rows.flat()))

    // --- Each command against what its caller was told ---
    for (const { exit, id, send } of sent) {
      const bys = bysOf.get(id)!
      const at = bys.indexOf(send.by)
      const inLog = at < 0 ? 0 : 1
      const what = `${id} by ${send.by} (faults ${send.faults.map((f) => f._tag).join(",") || "none"})`
      expect(inLog, `${what}: in the log as often as it reached the store`).toBe(reachedStore.get(`send ${send.by}`) ?? 0)
      switch (verdictOf(exit, what)) {
        case "Acked": {
          expect(inLog, `${what}: acknowledged, so committed`).toBe(1)
          const outcome = Exit.isSuccess(exit) ? exit.value : undefined
          expect(outcome?.seqNr, `${what}: the acknowledged seqNr`).toBe(at + 2)
          expect(outcome?.state, `${what}: the acknowledged state`).toEqual(counterState(bys.slice(0, at + 1)))
          break
        }
        case "NotLanded":
          expect(inLog, `${what}: reported as not landed`).toBe(0)
          break
        case "Unknown":
        case "Interrupted":
          // At most once: checked above for the whole log.
          break
        case "Exists":
          throw new Error(`${what}: a send failed with InstanceAlreadyExists`)
      }
    }
  })

// ---------------------------------------------------------------------------
// Timers: random deliveries, faults on their commits, TestClock in steps
// ---------------------------------------------------------------------------

const bump = (s: { readonly count: number }) => ({ count: s.count + 1 })

/**
 * Two timeouts of `Waiting` share their event; `Ping` and `Poke` stay (the
 * other timer keeps running), `Rearm` re-enters (new generation), `Leave`
 * and `Back` leave and enter again. Every event counts.
 */
const Beeper = Machine.make({
  name: "beeper",
  version: 1,
  state: Schema.Union(
    Schema.TaggedStruct("Waiting", { count: Schema.Number }),
    Schema.TaggedStruct("Resting", { count: Schema.Number })
  ),
  event: Schema.Union(
    Schema.TaggedStruct("Ping", {}),
    Schema.TaggedStruct("Poke", {}),
    Schema.TaggedStruct("Rearm", {}),
    Schema.TaggedStruct("Leave", {}),
    Schema.TaggedStruct("Back", {})
  ),
  transitions: {
    Waiting: {
      Ping: { to: "Waiting", build: bump },
      Poke: { to: "Waiting", build: bump },
      Rearm: { to: "Waiting", reenter: true, build: bump },
      Leave: { to: "Resting", build: bump }
    },
    Resting: {
      Poke: { to: "Resting", build: bump },
      Back: { to: "Waiting", build: bump }
    }
  },
  timeouts: {
    Waiting: {
      early: { after: "1 minute", event: { _tag: "Ping" } },
      late: { after: "3 minutes", event: { _tag: "Ping" } }
    }
  }
})

const timerAfter: Record<string, number> = { early: 60_000, late: 180_000 }

type UserEvent = "Poke" | "Rearm" | "Leave" | "Back"

type TimerStep =
  | { readonly _tag: "Advance"; readonly millis: number }
  | { readonly _tag: "Send"; readonly runtime: number; readonly instance: number; readonly event: UserEvent }
  | { readonly _tag: "Inspect"; readonly runtime: number; readonly instance: number }
  | { readonly _tag: "Restart"; readonly runtime: number }

interface TimerScenario {
  readonly durable: boolean
  /** Of each runtime slot: snapshots carry the armed deadlines across restarts. */
  readonly snapshotEvery: ReadonlyArray<number>
  readonly instances: number
  /** The faults met by each runtime slot's successive timer-delivery commits. */
  readonly faults: ReadonlyArray<ReadonlyArray<Injected>>
  readonly steps: ReadonlyArray<TimerStep>
}

const timerScenario: fc.Arbitrary<TimerScenario> = fc.record({
  durable: fc.boolean(),
  snapshotEvery: fc.array(snapshotEvery, { minLength: 2, maxLength: 2 }),
  instances: fc.integer({ min: 1, max: 3 }),
  faults: fc.array(fc.array(injected({ sleeps: true, noneWeight: 4 }), { maxLength: 16 }), { minLength: 2, maxLength: 2 }),
  steps: fc.array(
    fc.oneof(
      {
        weight: 4,
        arbitrary: fc.record({
          _tag: fc.constant("Advance" as const),
          millis: fc.constantFrom(1_000, 5_000, 20_000, 45_000, 60_000, 61_000, 120_000, 180_000)
        })
      },
      {
        weight: 5,
        arbitrary: fc.record({
          _tag: fc.constant("Send" as const),
          runtime: fc.nat(1),
          instance: fc.nat(2),
          event: fc.constantFrom<UserEvent>("Poke", "Rearm", "Leave", "Back")
        })
      },
      {
        weight: 1,
        arbitrary: fc.record({ _tag: fc.constant("Inspect" as const), runtime: fc.nat(1), instance: fc.nat(2) })
      },
      { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Restart" as const), runtime: fc.nat(1) }) }
    ),
    { minLength: 2, maxLength: 40, size: "max" }
  )
})

// Small, capped back-off and enough attempts that random faults never exhaust them.
const timerRetry = { retryBase: "1 second", retryMax: "20 seconds", maxAttempts: 100 } as const

/** One arming of `Waiting`: its entry event and the timers it fired. */
interface Arming {
  readonly generation: number
  readonly enteredAt: number
  readonly fired: Map<string, Array<number>>
}

type BeeperHistory = ReadonlyArray<FSMRuntime.HistoryEntry<typeof Beeper.stateSchema.Type, typeof Beeper.eventSchema.Type>>

/** Every arming in the log, in order; the last is still current when the instance is `Waiting`. */
const armingsOf = (id: string, history: BeeperHistory) => {
  const armings: Array<Arming> = []
  let current: Arming | undefined
  const enter = (seqNr: number, at: number) => {
    current = { generation: seqNr, enteredAt: at, fired: new Map() }
    armings.push(current)
  }
  for (const entry of history) {
    const where = `${id}@${entry.seqNr}`
    if (entry._tag === "Created") {
      enter(entry.seqNr, entry.metadata.timestamp)
      continue
    }
    if (entry._tag !== "Event") throw new Error(`${where}: unexpected ${entry._tag}`)
    const { timer } = entry.metadata
    if (timer !== null) {
      expect(entry.event._tag, `${where}: a timer fires Ping`).toBe("Ping")
      expect(entry.metadata.source, where).toBe("timeout")
      expect(current, `${where}: ${timer} fired outside Waiting`).toBeDefined()
      const due = current!.enteredAt + timerAfter[timer]!
      expect(entry.metadata.timestamp, `${where}: ${timer} of generation ${current!.generation} fired before ${due}`)
        .toBeGreaterThanOrEqual(due)
      current!.fired.set(timer, [...(current!.fired.get(timer) ?? []), entry.seqNr])
      continue
    }
    expect(entry.metadata.source, where).toBe("user")
    switch (entry.event._tag) {
      case "Ping":
        throw new Error(`${where}: a Ping that no timer fired`)
      case "Poke":
        break
      case "Rearm":
      case "Back":
        enter(entry.seqNr, entry.metadata.timestamp)
        break
      case "Leave":
        current = undefined
        break
    }
  }
  return { armings, current }
}

const runTimers = (backend: Backend, s: TimerScenario) =>
  Effect.gen(function*() {
    yield* TestClock.setTime(0)
    const store = (yield* buildStore(backend)) as StoreContext
    const inner = Context.get(store, EventStore.EventStore)
    const parent = yield* Effect.scope

    let calm = false
    const plans = s.faults.map((faults) => {
      let n = 0
      return (commit: EventStore.Commit): Injected =>
        calm || commit.events[0]?.metadata.source !== "timeout" ? none : faults[n++] ?? none
    })

    const start = (slot: number) =>
      Effect.gen(function*() {
        const scope = yield* Scope.fork(parent, ExecutionStrategy.sequential)
        const base = withStore(store, wrapStore(inner, plans[slot]!, () => {})) as StoreContext
        const context = s.durable
          ? yield* Scope.extend(withDurableTimeouts(base, timerRetry), scope)
          : Context.add(base, TimeoutStrategy.TimeoutStrategy, yield* Effect.orDie(TimeoutStrategy.makeInProcess(timerRetry)))
        const { runtime } = yield* Scope.extend(
          runtimeOn(context as Context.Context<EventStore.EventStore>, {
            machines: [Beeper],
            retry,
            snapshotEvery: s.snapshotEvery[slot] ?? 0
          }),
          scope
        )
        return { runtime, scope, epoch: 0 }
      })

    const nodes = [yield* start(0), yield* start(1)]
    const ids = range(s.instances).map((i) => `b${i - 1}`)
    for (const id of ids) {
      yield* nodes[0]!.runtime.create(Beeper, id, { _tag: "Waiting", count: 0 })
      yield* nodes[1]!.runtime.inspect(Beeper, id) // both runtimes arm in-process timers: their deliveries race
    }

    const sends: Array<{
      readonly what: string
      readonly slot: number
      readonly epoch: number
      readonly fiber: Fiber.RuntimeFiber<Exit.Exit<unknown, FSMRuntime.SendError>>
    }> = []
    const restartedAt: Array<Array<number>> = [[], []]
    let epoch = 0
    for (const step of s.steps) {
      switch (step._tag) {
        case "Advance":
          yield* TestClock.adjust(step.millis)
          yield* settle(20)
          break
        case "Send": {
          const slot = step.runtime
          const id = ids[step.instance % ids.length]!
          // Forked: a delivery held on TestClock holds the instance's lock.
          const fiber = yield* Effect.fork(Effect.exit(nodes[slot]!.runtime.send(Beeper, id, { _tag: step.event })))
          sends.push({ what: `${step.event} to ${id} on runtime ${slot}`, slot, epoch, fiber })
          yield* settle(3)
          break
        }
        case "Inspect":
          yield* Effect.fork(Effect.ignore(nodes[step.runtime]!.runtime.inspect(Beeper, ids[step.instance % ids.length]!)))
          yield* settle(3)
          break
        case "Restart":
          yield* Scope.close(nodes[step.runtime]!.scope, Exit.void)
          restartedAt[step.runtime]!.push(++epoch)
          nodes[step.runtime] = yield* start(step.runtime)
          break
      }
    }

    // --- Enough time and retries, faults off: every current arming fires ---
    calm = true
    const fresh = yield* observerOn(store, [Beeper])
    const armingsNow = (id: string) => Effect.map(fresh.history(Beeper, id), (history) => armingsOf(id, history))
    yield* eventually(Effect.gen(function*() {
      yield* TestClock.adjust("10 minutes")
      // Loading re-arms in-process timers of an instance whose delivery was interrupted.
      for (const node of nodes) for (const id of ids) yield* Effect.ignore(node.runtime.inspect(Beeper, id))
      yield* settle(5)
      for (const { fiber, what } of sends) {
        if (Option.isNone(yield* Fiber.poll(fiber))) return yield* Effect.fail(`${what}: still running`)
      }
      for (const id of ids) {
        const { current } = yield* armingsNow(id)
        if (current !== undefined && current.fired.size < 2) {
          return yield* Effect.fail(`${id}: generation ${current.generation} fired only ${[...current.fired.keys()]}`)
        }
      }
    }))

    for (const { epoch: sentAt, fiber, slot, what } of sends) {
      const exit = yield* Fiber.join(fiber)
      if (Exit.isSuccess(exit)) continue
      // A runtime shut down under a send may leave its caller interrupted.
      const restartedMeanwhile = restartedAt[slot]!.some((e) => e > sentAt)
      if (restartedMeanwhile && Cause.isInterruptedOnly(exit.cause)) continue
      const failure = Cause.failureOption(exit.cause)
      expect(
        Option.isSome(failure) && ["InvalidTransition"].includes(failure.value._tag),
        `${what}: ${Cause.pretty(exit.cause)}`
      ).toBe(true)
    }

    const timers = Context.get(store, TimeoutStore.TimeoutStore)
    for (const id of ids) {
      const history = yield* fresh.history(Beeper, id)
      expect(history.map((h) => h.seqNr), `${id}: gapless from 1`).toEqual(range(history.length))
      expect((yield* logOf(store, Beeper.name, id)).length).toBe(history.length)
      const { armings, current } = armingsOf(id, history)
      for (const arming of armings) {
        for (const [name, seqNrs] of arming.fired) {
          expect(seqNrs.length, `${id}: ${name} of generation ${arming.generation} fired at ${seqNrs}`).toBe(1)
        }
      }
      if (current !== undefined) {
        expect([...current.fired.keys()].sort(), `${id}: the current arming fired both`).toEqual(["early", "late"])
      }
      expect(
        yield* Context.get(store, EventStore.EventStore).instance(Beeper.name, id),
        `${id}: the current-state row is the fold of the log`
      ).toEqual(Option.fromNullable(expectedSummary(Beeper, id, history)))
      const view = yield* fresh.inspect(Beeper, id)
      expect(view.state.count, `${id}: every event counted once`).toBe(history.length - 1)
      expect(view.timeouts).toEqual([])
      for (const [r, node] of nodes.entries()) {
        expect(yield* node.runtime.inspect(Beeper, id), `${id}: runtime ${r} agrees with a fresh one`).toEqual(view)
      }
      if (s.durable) expect(yield* timers.pending(Beeper.name, id), `${id}: timer rows left`).toEqual([])
    }
    if (s.durable) expect(yield* timers.deadLetters(Beeper.name)).toEqual([])
    const events = Context.get(store, EventStore.EventStore)
    const rows = yield* Effect.forEach(ids, (id) => Effect.map(events.instance(Beeper.name, id), Option.toArray))
    expect(yield* events.stateCounts(Beeper.name), "the counts per state are those of the rows").toEqual(countsOf(rows.flat()))
  })

// ---------------------------------------------------------------------------

for (const backend of backends) {
  describe(`faults on ${backend.name}`, () => {
    it.scoped.prop(
      "random sends over runtimes, with a fault per commit: nothing lost, nothing twice, every view agrees",
      { s: scenario },
      ({ s }) => runCommands(backend, s),
      { timeout: 120_000, fastCheck: { numRuns: runsOn(backend, 40, 15) } }
    )

    it.scoped.prop(
      "random timer deliveries with faults: each arming fires at most once, the current one exactly once",
      { s: timerScenario },
      ({ s }) => runTimers(backend, s),
      { timeout: 120_000, fastCheck: { numRuns: runsOn(backend, 30, 12) } }
    )
  })
}
