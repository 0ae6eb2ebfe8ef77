/**
 * What the chaos parent (`run.ts`) and its worker processes (`worker.ts`)
 * share: the workload machine, where the database is, how a worker is
 * configured, the line protocol on the worker's stdout, and the client and
 * runtime layers (built here from `SqlEventStore.layer()` on our own
 * `@effect/sql-pg` / `@effect/sql-sqlite-node` clients, so the run does not
 * depend on which module the library's driver layers live in).
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer, Redacted, Schema } from "effect"
import { FSMRuntime, Machine, SqlEventStore, TimeoutStrategy } from "effect-fsm"

// ---------------------------------------------------------------------------
// The workload machine
// ---------------------------------------------------------------------------

/**
 * Every user event carries a token unique over the whole run, so the log can
 * be checked exactly: each acknowledged token must be there once.
 */
const Tokened = { token: Schema.String }

export const ChaosState = Schema.Union(
  Schema.TaggedStruct("Idle", { n: Schema.Number }),
  Schema.TaggedStruct("Armed", { n: Schema.Number })
)
export type ChaosState = typeof ChaosState.Type

export const ChaosEvent = Schema.Union(
  Schema.TaggedStruct("Add", Tokened),
  Schema.TaggedStruct("Bump", Tokened),
  Schema.TaggedStruct("Leave", Tokened),
  Schema.TaggedStruct("Expire", {})
)
export type ChaosEvent = typeof ChaosEvent.Type

/** The user events a worker sends, with their weights. */
export const userEvents = [
  { tag: "Add", weight: 6 },
  { tag: "Bump", weight: 2 },
  { tag: "Leave", weight: 2 }
] as const
export type UserEventTag = (typeof userEvents)[number]["tag"]

const inc = (s: { readonly n: number }) => ({ n: s.n + 1 })

/**
 * Idle --Add--> Armed (arms `expire`), Armed --Add--> stays (the deadline
 * keeps running), Armed --Bump--> re-enters Armed (a new arming, the old one
 * is cancelled), Armed --Leave--> Idle (cancelled), Armed --expire--> Idle.
 * Every user event is accepted in every state, so every send writes.
 * `Expire` is accepted in Idle as well: a stale or second delivery of a timer
 * would then be written, and the checker would see it, instead of being
 * rejected by the machine and hidden.
 */
export const makeChaosMachine = (timerMillis: number) =>
  Machine.make({
    name: "chaos",
    version: 1,
    state: ChaosState,
    event: ChaosEvent,
    transitions: {
      Idle: {
        Add: { to: "Armed", build: inc },
        Bump: { to: "Idle", build: inc },
        Leave: { to: "Idle", build: inc },
        Expire: Machine.stay
      },
      Armed: {
        Add: { to: "Armed", build: inc },
        Bump: { to: "Armed", reenter: true, build: inc },
        Leave: { to: "Idle", build: inc },
        Expire: { to: "Idle", build: (s) => ({ n: s.n }) }
      }
    },
    timeouts: { Armed: { expire: { after: `${timerMillis} millis`, event: { _tag: "Expire" } } } }
  })
export type ChaosMachine = ReturnType<typeof makeChaosMachine>

export const instanceId = (index: number): string => `i-${String(index).padStart(3, "0")}`

// ---------------------------------------------------------------------------
// Where the database is
// ---------------------------------------------------------------------------

export type Backend = "pg" | "sqlite"

export type Target =
  | { readonly backend: "pg"; readonly port: number; readonly user: string; readonly database: string; readonly schema: string }
  | { readonly backend: "sqlite"; readonly filename: string }

/** Only ever 127.0.0.1. */
export const pgUrl = (target: { readonly port: number; readonly user: string; readonly database: string }, schema?: string) => {
  const url = new URL("postgres://127.0.0.1")
  url.port = String(target.port)
  url.username = encodeURIComponent(target.user)
  url.pathname = `/${encodeURIComponent(target.database)}`
  if (schema !== undefined) url.searchParams.set("options", `-c search_path=${schema}`)
  return url.toString()
}

/** A `SqlClient` on the run's schema (PostgreSQL) or file (SQLite). */
export const clientLayer = (target: Target, maxConnections = 8): Layer.Layer<SqlClient.SqlClient, unknown> => {
  if (target.backend === "pg") {
    return PgClient.layer({
      url: Redacted.make(pgUrl(target, target.schema)),
      connectTimeout: "3 seconds",
      maxConnections
    })
  }
  // As the library's own SQLite client: WAL (the driver's default), a busy
  // timeout so that processes take turns for the write lock, NORMAL sync.
  const tune = Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe("PRAGMA busy_timeout = 5000")
    yield* sql.unsafe("PRAGMA synchronous = NORMAL")
  })
  return Layer.effectDiscard(tune).pipe(Layer.provideMerge(SqliteClient.layer({ filename: target.filename })))
}

export const durableTimeouts = TimeoutStrategy.layerDurable({
  pollInterval: "100 millis",
  maxIdleInterval: "500 millis",
  // A worker killed while holding claims releases them after this long.
  claimLease: "5 seconds"
})

/** A runtime with durable timeouts on the target's database. */
export const runtimeLayer = (
  target: Target,
  machine: ChaosMachine,
  nodeId: string,
  timeouts: Layer.Layer<TimeoutStrategy.TimeoutStrategy, unknown, never> | "durable" = "durable"
) => {
  const store = SqlEventStore.layer().pipe(Layer.provide(clientLayer(target)))
  return FSMRuntime.layer({ machines: [machine], nodeId, snapshotEvery: 20 }).pipe(
    Layer.provide(timeouts === "durable" ? durableTimeouts.pipe(Layer.provide(store)) : timeouts),
    Layer.provideMerge(store)
  )
}

/** A timeout strategy that fires nothing: for the parent's own runtimes (create, inspect). */
export const noTimers = Layer.succeed(
  TimeoutStrategy.TimeoutStrategy,
  TimeoutStrategy.TimeoutStrategy.of({ start: () => Effect.succeed({ durable: true, armed: () => Effect.void }) })
)

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

export interface WorkerConfig {
  readonly target: Target
  /** Unique over the run; tokens are `w<id>-<n>`. */
  readonly id: number
  /** `load` sends; `drain` only runs the sweeper. */
  readonly mode: "load" | "drain"
  readonly instances: number
  /** Send loops per worker. */
  readonly concurrency: number
  readonly timerMillis: number
  readonly seed: number
}

export const workerEnv = "EFFECT_FSM_CHAOS_WORKER"

/**
 * Lines a worker writes on stdout (nothing else goes there):
 *
 *   READY <epoch ms>                                   runtime built
 *   ACK <instance index> <token> <seqNr> <epoch ms>    send returned successfully
 *   ERR <error tag> <epoch ms>                         send failed (token never reused)
 *   DEFECT <text>                                      a send died with a defect
 */
export type WorkerLine =
  | { readonly _tag: "READY"; readonly at: number }
  | { readonly _tag: "ACK"; readonly instance: number; readonly token: string; readonly seqNr: number; readonly at: number }
  | { readonly _tag: "ERR"; readonly error: string; readonly at: number }
  | { readonly _tag: "DEFECT"; readonly text: string }

export const parseWorkerLine = (line: string): WorkerLine | undefined => {
  const parts = line.split(" ")
  switch (parts[0]) {
    case "READY":
      return parts.length === 2 ? { _tag: "READY", at: Number(parts[1]) } : undefined
    case "ACK": {
      if (parts.length !== 5) return undefined
      const instance = Number(parts[1])
      const seqNr = Number(parts[3])
      const at = Number(parts[4])
      if (!Number.isInteger(instance) || !Number.isInteger(seqNr) || !Number.isFinite(at)) return undefined
      return { _tag: "ACK", instance, token: parts[2]!, seqNr, at }
    }
    case "ERR":
      return parts.length === 3 ? { _tag: "ERR", error: parts[1]!, at: Number(parts[2]) } : undefined
    case "DEFECT":
      return { _tag: "DEFECT", text: parts.slice(1).join(" ") }
    default:
      return undefined
  }
}

/** A small seeded PRNG (mulberry32), so a run's random choices can be repeated with `--seed`. */
export const makeRandom = (seed: number) => {
  let a = seed >>> 0
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    between: (lo: number, hi: number) => lo + next() * (hi - lo)
  }
}
