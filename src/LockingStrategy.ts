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
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
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
import { nowMillis } from "./internal/clock.js"
import { describeValue } from "./internal/describe.js"
import { durationMillis } from "./internal/options.js"
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
  /**
   * Run as the command's commit begins. Fails with `LockLost` when the lease
   * is already lost (`FailFast`); from then on losing the lease no longer
   * interrupts the command, whose commit is fenced instead, so a caller is
   * never told `LockLost` for a commit that landed.
   */
  readonly committing: Effect.Effect<void, LockLost>
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
 * What a runtime tells the strategy when it starts it.
 *
 * @since 0.1.0
 */
export interface Target {
  readonly nodeId: string
  /** Whether the runtime has the instance loaded now (sticky leases are kept only then). */
  readonly isLoaded: (machine: string, instanceId: string) => boolean
}

/**
 * The strategy service.
 *
 * @since 0.1.0
 */
export class LockingStrategy extends Context.Tag("effect-fsm/LockingStrategy")<LockingStrategy, {
  /** Starts the strategy for one runtime, in the runtime's scope. */
  readonly start: (target: Target) => Effect.Effect<Running, never, Scope.Scope>
}>() {}

// ---------------------------------------------------------------------------
// Optimistic
// ---------------------------------------------------------------------------

const unlocked: Held = { fence: undefined, continuous: false, committing: Effect.void }

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

const durationOption = (option: string, input: unknown, fallback: number) =>
  durationMillis(component, option, input, fallback)

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
  /**
   * By this node's clock, until when the lease is surely still ours: the
   * start of the acquisition or extension that gave it, plus its ttl (never
   * compared with the store's clock, which may be the database's).
   */
  until: number
  /** Commands running under it now. */
  users: number
  /** Completed (with `LockLost`) when the heartbeat finds the lease gone. */
  readonly lost: Deferred.Deferred<never, LockLost>
  /** Set with `lost`, readable synchronously. */
  gone: boolean
  /** Whether a command ran under it already (sticky reuse). */
  used: boolean
}

const keyOf = (machine: string, instanceId: string) => `${machine}\u0000${instanceId}`

/** Leases extended at once by one heartbeat. */
const heartbeatConcurrency = 16

const startDistributed = (
  leases: LeaseStore.LeaseStore["Type"],
  config: DistributedConfig,
  target: Target
): Effect.Effect<Running, never, Scope.Scope> =>
  Effect.gen(function*() {
    const held = new Map<string, Holding>()
    const ttl = Duration.millis(config.ttlMillis)

    const lose = (key: string, holding: Holding) =>
      Effect.suspend(() => {
        if (held.get(key) === holding) held.delete(key)
        holding.gone = true
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
    // Each extension is bounded by the heartbeat interval, so one stuck call
    // cannot hold up the others; a lease is given up when it could not be
    // renewed before its local deadline would pass at the next beat.
    const extendOne = ([key, holding]: readonly [string, Holding]) =>
      Effect.gen(function*() {
        const started = yield* nowMillis
        const extended = yield* Effect.either(
          Effect.timeoutFail(leases.extend(holding.lease, ttl), {
            duration: Duration.millis(config.heartbeatMillis),
            onTimeout: () => "timed out" as const
          })
        )
        if (held.get(key) !== holding) return // released meanwhile
        yield* Effect.annotateCurrentSpan("renewed", extended._tag === "Right")
        if (extended._tag === "Right") {
          holding.lease = extended.right
          holding.until = started + config.ttlMillis
          return
        }
        const after = yield* nowMillis
        if (extended.left === "timed out" || extended.left._tag !== "LockLost") {
          if (after + config.heartbeatMillis < holding.until) {
            return yield* Effect.logWarning(`lease of ${key.replace("\u0000", "/")} not extended, retrying`, extended.left)
          }
        }
        // Gone, or it may run out before the next beat could renew it.
        yield* lose(key, holding)
      }).pipe(
        Effect.withSpan("LockingStrategy.renew", {
          attributes: {
            machine: holding.lease.machine,
            instanceId: holding.lease.instanceId,
            node: target.nodeId,
            token: holding.lease.token
          },
          captureStackTrace: false
        })
      )
    yield* Effect.suspend(() => Effect.forEach([...held], extendOne, { concurrency: heartbeatConcurrency, discard: true })).pipe(
      Effect.catchAllCause((cause) => Effect.logError("lease heartbeat failed", cause)),
      Effect.repeat(Schedule.spaced(Duration.millis(config.heartbeatMillis))),
      Effect.annotateLogs({ component: "LeaseHeartbeat", node: target.nodeId }),
      Effect.forkScoped
    )
    // At scope end every lease still held is handed back at once.
    yield* Effect.addFinalizer(() =>
      Effect.forEach([...held], ([key, holding]) => releaseHolding(key, holding), { discard: true, concurrency: "unbounded" })
    )

    const acquire = (machine: string, instanceId: string) =>
      Effect.flatMap(nowMillis, (started) =>
        leases.acquire({ machine, instanceId }, target.nodeId, {
          ttl,
          wait: Duration.millis(config.waitMillis),
          retryInterval: Duration.millis(config.retryMillis)
        }).pipe(
          Effect.map((lease): Holding => ({
            lease,
            until: started + config.ttlMillis,
            users: 0,
            lost: Deferred.unsafeMake(FiberId.none),
            gone: false,
            used: false
          })),
          Effect.tap((holding) =>
            Effect.zipRight(Metric.increment(Metrics.locksAcquired), Effect.annotateCurrentSpan("token", holding.lease.token))
          ),
          Effect.withSpan("LockingStrategy.acquire", {
            attributes: { machine, instanceId, node: target.nodeId },
            captureStackTrace: false
          })
        ))

    /** After a command: a per-command lease, or a sticky one whose instance is not loaded, is handed back. */
    const afterUse = (machine: string, instanceId: string, key: string, holding: Holding) =>
      Effect.suspend(() => {
        holding.users--
        holding.used = true
        if (holding.users > 0) return Effect.void
        return config.sticky && target.isLoaded(machine, instanceId) ? Effect.void : releaseHolding(key, holding)
      })

    const withLock: Running["withLock"] = (machine, instanceId, use) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          const key = keyOf(machine, instanceId)
          const existing = config.sticky ? held.get(key) : undefined
          // Waiting for a lease stays interruptible; once it is ours, its release is certain.
          const obtain = existing !== undefined
            ? Effect.succeed(existing)
            : Effect.tap(restore(acquire(machine, instanceId)), (holding) => Effect.sync(() => held.set(key, holding)))
          return Effect.flatMap(obtain, (holding) =>
            Effect.flatMap(nowMillis, (now) => {
              holding.users++
              // FailFast interrupts a command only before its commit begins:
              // whichever of "lost" and "committing" comes first wins.
              const phase = { committing: false, interrupted: false }
              const lostError = () =>
                new LockLost({ machine, instanceId, owner: holding.lease.owner, token: holding.lease.token })
              const run = use({
                fence: { owner: holding.lease.owner, token: holding.lease.token },
                // Authoritative only while the lease has surely not run out.
                continuous: holding.used && now < holding.until - config.heartbeatMillis,
                committing: Effect.suspend(() => {
                  if (phase.interrupted || holding.gone) {
                    return Effect.fail(lostError())
                  }
                  phase.committing = true
                  return Effect.void
                })
              })
              const watcher = Effect.catchAll(Deferred.await(holding.lost), (error) =>
                Effect.suspend(() => {
                  if (phase.committing) return Effect.never
                  phase.interrupted = true
                  return Effect.fail(error)
                }))
              const guarded = config.failFast ? Effect.raceFirst(run, watcher) : run
              return Effect.ensuring(restore(guarded), afterUse(machine, instanceId, key, holding))
            }))
        })
      )

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
      LockingStrategy.of({ start: (target) => startDistributed(leases, config, target) }))
  )
