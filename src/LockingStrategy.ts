/**
 * Who may write an instance: how writers of one instance in different
 * runtimes (nodes, processes) are coordinated.
 *
 * - `LockingStrategy.optimistic` (the default): no lock. Every commit
 *   carries the sequence number it expects; a writer that lost the race gets
 *   a `SequenceConflict`, reloads the tail and decides again under a retry
 *   schedule (time-bounded by default). Within one runtime, commands to one
 *   instance are serialized anyway, so conflicts only come from other
 *   runtimes.
 * - `LockingStrategy.distributed(options)`: a lease per instance in the
 *   `LeaseStore` of the same database, with an owner (the runtime's node id),
 *   an expiry and a fencing token that increases on every acquisition. A
 *   heartbeat extends held leases. Every commit made under a lease carries its
 *   token and is refused in the same atomic commit (`FencingRejected`,
 *   nothing written) when the instance was acquired again since, so a paused
 *   node that lost its lease cannot write. By default a lease is taken per
 *   command; `scope: "sticky"` keeps it while the instance stays loaded, which
 *   makes the cache authoritative (no catch-up read per command).
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import {
  type FencingRejected,
  type InvalidInstanceId,
  InvalidConfiguration,
  LockLost,
  type LockTimeout,
  type PersistenceError
} from "./Errors.js"
import { describeValue } from "./internal/describe.js"
import * as LeaseStore from "./LeaseStore.js"
import * as Metrics from "./Metrics.js"

/**
 * What a commit made under a lease carries: the lease's owner and fencing token.
 *
 * @since 0.1.0
 */
export interface Fence {
  readonly owner: string
  readonly token: number
}

/**
 * What the runtime is given to run a command under the strategy's lock.
 *
 * @since 0.1.0
 */
export interface Held {
  /** The fence the command's commits carry; `undefined` without a lease (optimistic). */
  readonly fence: Fence | undefined
  /**
   * `true` when this node has held the instance's lease without interruption
   * since it last ran a command on it (sticky ownership): nothing else can
   * have written, so the cached instance is up to date.
   */
  readonly continuous: boolean
}

/**
 * Failures of taking or keeping a lock.
 *
 * @since 0.1.0
 */
export type LockError = LockTimeout | LockLost | PersistenceError | InvalidInstanceId

/**
 * A running strategy, per runtime.
 *
 * @since 0.1.0
 */
export interface Running {
  /** Runs `use` while this node may write the instance. */
  readonly withLock: <A, E>(
    machine: string,
    instanceId: string,
    use: (held: Held) => Effect.Effect<A, E>
  ) => Effect.Effect<A, E | LockError>
  /** The runtime no longer has the instance loaded (sticky leases are released). */
  readonly unloaded: (machine: string, instanceId: string) => Effect.Effect<void>
  /** A commit under `fence` was fenced off: the lease is gone, forget it. */
  readonly fenced: (machine: string, instanceId: string, error: FencingRejected) => Effect.Effect<void>
}

/**
 * The strategy service.
 *
 * @since 0.1.0
 */
export class LockingStrategy extends Context.Tag("effect-fsm/LockingStrategy")<LockingStrategy, {
  /** Starts the strategy for one runtime, in the runtime's scope. */
  readonly start: (target: { readonly nodeId: string }) => Effect.Effect<Running, never, Scope.Scope>
}>() {}

// ---------------------------------------------------------------------------
// Optimistic
// ---------------------------------------------------------------------------

const unlocked: Held = { fence: undefined, continuous: false }

const optimisticRunning: Running = {
  withLock: (_machine, _instanceId, use) => use(unlocked),
  unloaded: () => Effect.void,
  fenced: () => Effect.void
}

/**
 * Optimistic locking: sequence numbers and the runtime's conflict retry.
 *
 * @since 0.1.0
 */
export const optimistic: Layer.Layer<LockingStrategy> = Layer.succeed(
  LockingStrategy,
  LockingStrategy.of({ start: () => Effect.succeed(optimisticRunning) })
)

/** @internal the strategy a runtime uses when none is provided. */
export const defaultStrategy: LockingStrategy["Type"] = { start: () => Effect.succeed(optimisticRunning) }

// ---------------------------------------------------------------------------
// Distributed
// ---------------------------------------------------------------------------

/**
 * What happens to a command in flight when its lease is lost (the heartbeat
 * could not extend it before it expired).
 *
 * - `FailFast`: the command is interrupted and fails with `LockLost`.
 * - `Continue`: it runs on; its commit is fenced (`FencingRejected`, nothing
 *   written) if another node acquired the instance meanwhile.
 *
 * @since 0.1.0
 */
export type OnLockLost = "FailFast" | "Continue"

/**
 * Options of `distributed`.
 *
 * @since 0.1.0
 */
export interface DistributedOptions {
  /** How long a lease lasts unless extended. Default 15 seconds. */
  readonly ttl?: Duration.DurationInput
  /** How often the heartbeat extends held leases; must be shorter than `ttl`. Default `ttl / 3`. */
  readonly heartbeat?: Duration.DurationInput
  /** How long a command waits for a lease another node holds (then `LockTimeout`). Default 5 seconds. */
  readonly wait?: Duration.DurationInput
  /** Time between attempts while waiting, jittered. Default 25 ms. */
  readonly retryInterval?: Duration.DurationInput
  /** `"command"` (default): a lease per command. `"sticky"`: kept while the instance is loaded. */
  readonly scope?: "command" | "sticky"
  /** Default `"FailFast"`. */
  readonly onLockLost?: OnLockLost
}

/**
 * Option presets: `default` (15 s leases, 5 s heartbeat), `fastFailover`
 * (3 s leases, 1 s heartbeat: a dead node's instances are free after about 3
 * seconds), `longTransitions` (60 s leases, 20 s heartbeat, 30 s wait: for
 * commands whose actions or handlers take long).
 *
 * @since 0.1.0
 */
export const presets = {
  default: { ttl: "15 seconds", heartbeat: "5 seconds", wait: "5 seconds" },
  fastFailover: { ttl: "3 seconds", heartbeat: "1 second", wait: "5 seconds" },
  longTransitions: { ttl: "60 seconds", heartbeat: "20 seconds", wait: "30 seconds" }
} as const satisfies Record<string, DistributedOptions>

interface DistributedConfig {
  readonly ttlMillis: number
  readonly heartbeatMillis: number
  readonly waitMillis: number
  readonly retryMillis: number
  readonly sticky: boolean
  readonly failFast: boolean
}

const component = "LockingStrategy"

const durationOption = (option: string, input: unknown, fallback: number): Effect.Effect<number, InvalidConfiguration> => {
  if (input === undefined) return Effect.succeed(fallback)
  const decoded = Duration.decodeUnknown(input)
  const millis = Option.isSome(decoded) ? Duration.toMillis(decoded.value) : NaN
  return Number.isFinite(millis) && millis >= 1
    ? Effect.succeed(Math.ceil(millis))
    : Effect.fail(
      new InvalidConfiguration({ component, option, reason: `must be a finite duration of at least 1 ms, got ${describeValue(input)}` })
    )
}

const resolveDistributed = (options: DistributedOptions): Effect.Effect<DistributedConfig, InvalidConfiguration> =>
  Effect.gen(function*() {
    if (typeof options !== "object" || options === null) {
      return yield* new InvalidConfiguration({ component, option: "options", reason: "must be an object" })
    }
    const ttlMillis = yield* durationOption("ttl", options.ttl, 15_000)
    const heartbeatMillis = yield* durationOption("heartbeat", options.heartbeat, Math.max(1, Math.floor(ttlMillis / 3)))
    if (heartbeatMillis >= ttlMillis) {
      return yield* new InvalidConfiguration({
        component,
        option: "heartbeat",
        reason: `must be shorter than ttl (${ttlMillis} ms), got ${heartbeatMillis} ms`
      })
    }
    const waitMillis = yield* durationOption("wait", options.wait, 5_000)
    const retryMillis = yield* durationOption("retryInterval", options.retryInterval, 25)
    const scope = options.scope ?? "command"
    if (scope !== "command" && scope !== "sticky") {
      return yield* new InvalidConfiguration({ component, option: "scope", reason: `must be "command" or "sticky", got ${describeValue(scope)}` })
    }
    const onLockLost = options.onLockLost ?? "FailFast"
    if (onLockLost !== "FailFast" && onLockLost !== "Continue") {
      return yield* new InvalidConfiguration({
        component,
        option: "onLockLost",
        reason: `must be "FailFast" or "Continue", got ${describeValue(onLockLost)}`
      })
    }
    return { ttlMillis, heartbeatMillis, waitMillis, retryMillis, sticky: scope === "sticky", failFast: onLockLost === "FailFast" }
  })

/** A lease this runtime holds, with the signal of its loss. */
interface Holding {
  lease: LeaseStore.Lease
  /** Commands running under it now. */
  users: number
  /** Completed (with `LockLost`) when the heartbeat finds the lease gone. */
  readonly lost: Deferred.Deferred<never, LockLost>
  /** Whether a command ran under it already (sticky reuse). */
  used: boolean
}

const keyOf = (machine: string, instanceId: string) => `${machine}\u0000${instanceId}`

const startDistributed = (
  leases: LeaseStore.LeaseStore["Type"],
  config: DistributedConfig,
  nodeId: string
): Effect.Effect<Running, never, Scope.Scope> =>
  Effect.gen(function*() {
    const held = new Map<string, Holding>()

    const lose = (key: string, holding: Holding) =>
      Effect.suspend(() => {
        if (held.get(key) === holding) held.delete(key)
        const { lease } = holding
        return Effect.zipRight(
          Metric.increment(Metrics.locksLost),
          Deferred.fail(
            holding.lost,
            new LockLost({ machine: lease.machine, instanceId: lease.instanceId, owner: lease.owner, token: lease.token })
          )
        )
      })

    const releaseHolding = (key: string, holding: Holding) =>
      Effect.suspend(() => {
        if (held.get(key) === holding) held.delete(key)
        return leases.release(holding.lease).pipe(
          Effect.catchAll((error) => Effect.logDebug(`lease of ${key.replace("\u0000", "/")} not released`, error))
        )
      })

    // --- Heartbeat ---------------------------------------------------------
    const beat = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      for (const [key, holding] of [...held]) {
        const extended = yield* Effect.either(leases.extend(holding.lease, Duration.millis(config.ttlMillis)))
        if (extended._tag === "Right") {
          holding.lease = extended.right
        } else if (extended.left._tag === "LockLost" || now >= holding.lease.expiresAt) {
          // Gone, or unreachable past its expiry: another node may hold it now.
          yield* lose(key, holding)
        } else {
          yield* Effect.logWarning(`lease of ${key.replace("\u0000", "/")} not extended, retrying`, extended.left)
        }
      }
    })
    yield* beat.pipe(
      Effect.catchAllCause((cause) => Effect.logError("lease heartbeat failed", cause)),
      Effect.repeat(Schedule.spaced(Duration.millis(config.heartbeatMillis))),
      Effect.annotateLogs({ component: "LeaseHeartbeat", node: nodeId }),
      Effect.forkScoped
    )
    // At scope end every lease still held is handed back at once.
    yield* Effect.addFinalizer(() =>
      Effect.forEach([...held], ([key, holding]) => releaseHolding(key, holding), { discard: true, concurrency: "unbounded" })
    )

    const acquire = (machine: string, instanceId: string) =>
      Effect.map(
        leases.acquire({ machine, instanceId }, nodeId, {
          ttl: Duration.millis(config.ttlMillis),
          wait: Duration.millis(config.waitMillis),
          retryInterval: Duration.millis(config.retryMillis)
        }),
        (lease): Holding => ({ lease, users: 0, lost: Deferred.unsafeMake(FiberId.none), used: false })
      ).pipe(Effect.tap(() => Metric.increment(Metrics.locksAcquired)))

    const withLock: Running["withLock"] = (machine, instanceId, use) =>
      Effect.suspend(() => {
        const key = keyOf(machine, instanceId)
        const existing = config.sticky ? held.get(key) : undefined
        const obtain = existing !== undefined
          ? Effect.succeed(existing)
          : Effect.tap(acquire(machine, instanceId), (holding) => Effect.sync(() => held.set(key, holding)))
        return Effect.acquireUseRelease(
          Effect.tap(obtain, (holding) => Effect.sync(() => holding.users++)),
          (holding) => {
            const run = use({
              fence: { owner: holding.lease.owner, token: holding.lease.token },
              continuous: holding.used
            })
            const guarded = config.failFast ? Effect.raceFirst(run, Deferred.await(holding.lost)) : run
            return Effect.ensuring(guarded, Effect.sync(() => holding.used = true))
          },
          (holding) =>
            Effect.suspend(() => {
              holding.users--
              return config.sticky || holding.users > 0 ? Effect.void : releaseHolding(key, holding)
            })
        )
      })

    return {
      withLock,
      unloaded: (machine, instanceId) =>
        Effect.suspend(() => {
          const key = keyOf(machine, instanceId)
          const holding = held.get(key)
          return holding === undefined || holding.users > 0 ? Effect.void : releaseHolding(key, holding)
        }),
      fenced: (machine, instanceId) =>
        Effect.suspend(() => {
          const key = keyOf(machine, instanceId)
          const holding = held.get(key)
          return holding === undefined ? Effect.void : lose(key, holding)
        })
    }
  })

/**
 * The distributed strategy: leases in the `LeaseStore` of the same database
 * as the events (every store layer provides one), a heartbeat, and fencing
 * of every commit. Fails to build with `InvalidConfiguration` on unusable
 * options.
 *
 * @example
 * ```ts
 * const Node = FSMRuntime.layer({ machines: [Order] }).pipe(
 *   Layer.provide(LockingStrategy.distributed({ ...LockingStrategy.presets.fastFailover, scope: "sticky" })),
 *   Layer.provide(TimeoutStrategy.durable),
 *   Layer.provideMerge(PgEventStore.layerConfig())
 * )
 * ```
 *
 * @since 0.1.0
 */
export const distributed = (
  options: DistributedOptions = {}
): Layer.Layer<LockingStrategy, InvalidConfiguration, LeaseStore.LeaseStore> =>
  Layer.effect(
    LockingStrategy,
    Effect.zipWith(resolveDistributed(options), LeaseStore.LeaseStore, (config, leases) =>
      LockingStrategy.of({ start: (target) => startDistributed(leases, config, target.nodeId) }))
  )
