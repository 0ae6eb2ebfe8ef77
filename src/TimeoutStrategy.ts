/**
 * How due timeouts reach their instances.
 *
 * - `TimeoutStrategy.inProcess`: one fiber per instance sleeping on Effect's
 *   `Clock` until its next deadline, armed when an instance enters a state
 *   and re-armed from its state when it is loaded. Timers live only in the
 *   process: for tests and single-process use. The default when a runtime is
 *   given no strategy.
 * - `TimeoutStrategy.durable`: timers are rows written in the same commit as
 *   the event that entered the state (`TimeoutStore`), and a sweeper claims
 *   due rows in batches and fires them. Any number of nodes may run a
 *   sweeper against one database: a claim lease ensures each timer is
 *   delivered by one node at a time, and the delivery commit deletes the row
 *   only if it still has the generation it was armed with, so each timeout
 *   event is committed exactly once.
 *
 * Either way a timeout is delivered through the runtime's normal send path,
 * with `source: "timeout"` in the event's metadata.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Order from "effect/Order"
import * as Queue from "effect/Queue"
import * as RedBlackTree from "effect/RedBlackTree"
import type * as Scope from "effect/Scope"
import * as Clock from "effect/Clock"
import { InvalidConfiguration } from "./Errors.js"
import { fiberNowMillis, nowMillis } from "./internal/clock.js"
import { describeValue, storableText } from "./internal/describe.js"
import { makePoller } from "./internal/poller.js"
import * as LeaderElection from "./LeaderElection.js"
import * as LeaseStore from "./LeaseStore.js"
import * as Metrics from "./Metrics.js"
import * as TimeoutStore from "./TimeoutStore.js"

/**
 * A due timer, as the strategy hands it to the runtime.
 *
 * @since 0.1.0
 */
export interface Delivery {
  readonly machine: string
  readonly instanceId: string
  readonly name: string
  readonly generation: number
  readonly dueAt: number
  /** The encoded timeout event, when the strategy stored it (durable). */
  readonly payload?: unknown
}

/**
 * What happened to a delivery.
 *
 * - `Fired`: the timeout event was committed.
 * - `Stale`: the instance left (and maybe re-entered) the state, or (`raced`)
 *   another node delivered this timer first; nothing written.
 * - `Rejected`: the machine rejected the event (or the instance is gone or
 *   stopped); the timer is done, nothing written.
 * - `Failed`: a transient failure; the timer should be tried again.
 * - `Busy`: another node holds the instance's lease (distributed locking):
 *   the timer is tried again later (after its claim lease, for the durable
 *   strategy) without counting a failed attempt.
 * - `Undeliverable`: trying again would decide the same thing (the stored
 *   event no longer decodes, a machine function throws, the instance's log
 *   does not replay): the timer is dead-lettered at once, to be inspected
 *   and re-driven after a fix.
 *
 * @since 0.1.0
 */
export type DeliveryResult =
  | { readonly _tag: "Fired"; readonly seqNr: number }
  | { readonly _tag: "Stale"; readonly raced: boolean }
  | { readonly _tag: "Rejected"; readonly reason: string }
  | { readonly _tag: "Failed"; readonly error: string }
  | { readonly _tag: "Undeliverable"; readonly error: string }
  | { readonly _tag: "Busy"; readonly reason: string }

/**
 * What a runtime offers the strategy when it starts.
 *
 * @since 0.1.0
 */
export interface Target {
  readonly nodeId: string
  /** Names of the machines the runtime has registered. */
  readonly machines: ReadonlyArray<string>
  readonly deliver: (delivery: Delivery) => Effect.Effect<DeliveryResult>
  /**
   * Called with a batch of claimed timers before their deliveries start:
   * loads their instances together (one batch read rather than one
   * recovery per timer). A shortcut only: it never fails, and a strategy
   * may skip it.
   */
  readonly prepare?: ((deliveries: ReadonlyArray<Delivery>) => Effect.Effect<void>) | undefined
}

/**
 * A running strategy, per runtime.
 *
 * @since 0.1.0
 */
export interface Running {
  /**
   * Timers belong in the commit (`TimeoutStore` rows) rather than in
   * process memory only.
   */
  readonly durable: boolean
  /**
   * The instance now has exactly these deadlines (epoch ms), armed by the
   * entry event `generation`; called after every commit that changes them
   * and when an instance is loaded.
   */
  readonly armed: (
    machine: string,
    instanceId: string,
    generation: number,
    deadlines: ReadonlyArray<{ readonly name: string; readonly dueAt: number }>
  ) => Effect.Effect<void>
}

/**
 * The strategy service.
 *
 * @since 0.1.0
 */
export class TimeoutStrategy extends Context.Tag("effect-fsm/TimeoutStrategy")<TimeoutStrategy, {
  /** Starts the strategy for one runtime, in the runtime's scope. */
  readonly start: (target: Target) => Effect.Effect<Running, never, Scope.Scope>
}>() {}

// ---------------------------------------------------------------------------
// Retry policy shared by both strategies
// ---------------------------------------------------------------------------

/**
 * How failed deliveries are retried.
 *
 * @since 0.1.0
 */
export interface RetryOptions {
  /** Attempts before a timer is dead-lettered (durable) or dropped with an error log (in-process). Default 5. */
  readonly maxAttempts?: number
  /** Delay before the first retry, doubled each time. Default 1 second. */
  readonly retryBase?: Duration.DurationInput
  /** Longest delay between retries. Default 5 minutes (or `retryBase`, when that is longer). */
  readonly retryMax?: Duration.DurationInput
}

const component = "TimeoutStrategy"

const invalid = (option: string, reason: string) => Effect.fail(new InvalidConfiguration({ component, option, reason }))

/** A duration option in milliseconds, or a typed error naming the option. */
const millisOption = (
  option: string,
  input: unknown,
  fallback: Duration.DurationInput,
  check: { readonly min: number; readonly allowZero?: boolean }
): Effect.Effect<number, InvalidConfiguration> => {
  const decoded = Duration.decodeUnknown(input === undefined ? fallback : input)
  if (Option.isNone(decoded)) return invalid(option, `is not a duration: ${describeValue(input)}`)
  const millis = Duration.toMillis(decoded.value)
  if (!Number.isFinite(millis)) return invalid(option, `must be finite, got ${describeValue(input)}`)
  if (millis < check.min || (millis === 0 && check.allowZero !== true)) {
    return invalid(option, `must be at least ${Math.max(check.min, 1)} ms, got ${describeValue(input)}`)
  }
  // Whole milliseconds: times are stored in integer columns.
  return Effect.succeed(Math.ceil(millis))
}

const countOption = (option: string, input: unknown, fallback: number, min: number) =>
  input === undefined
    ? Effect.succeed(fallback)
    : typeof input === "number" && Number.isSafeInteger(input) && input >= min
    ? Effect.succeed(input)
    : invalid(option, `must be a whole number >= ${min}, got ${describeValue(input)}`)

interface RetryPolicy {
  readonly maxAttempts: number
  readonly baseMillis: number
  readonly maxMillis: number
}

const resolveRetry = (options: RetryOptions) =>
  Effect.gen(function*() {
    const maxAttempts = yield* countOption("maxAttempts", options.maxAttempts, 5, 1)
    const baseMillis = yield* millisOption("retryBase", options.retryBase, "1 second", { min: 1 })
    // Left out, the cap grows with a longer base rather than contradicting it.
    const maxMillis = options.retryMax === undefined
      ? Math.max(baseMillis, 300_000)
      : yield* millisOption("retryMax", options.retryMax, "5 minutes", { min: 1 })
    if (maxMillis < baseMillis) return yield* invalid("retryMax", `must not be below retryBase (${baseMillis} ms)`)
    return { maxAttempts, baseMillis, maxMillis } satisfies RetryPolicy
  })

const retryDelayMillis = (policy: RetryPolicy, attempts: number): number =>
  Math.min(policy.maxMillis, policy.baseMillis * 2 ** Math.max(0, attempts - 1))

const logResult = (delivery: Delivery, result: DeliveryResult) => {
  const where = `${delivery.machine}/${delivery.instanceId} timer "${delivery.name}"`
  switch (result._tag) {
    case "Fired":
      // One Effect for both metrics and the clock: this runs once per delivered timer.
      return Effect.withFiberRuntime<void>((fiber) => {
        const labels = fiber.getFiberRef(FiberRef.currentMetricLabels)
        Metrics.timeoutsFired.unsafeUpdate(1, labels)
        Metrics.timeoutsLateness.unsafeUpdate(Math.max(0, fiberNowMillis(fiber) - delivery.dueAt), labels)
        return Effect.void
      })
    case "Stale":
      return result.raced
        ? Effect.zipRight(
          Metric.increment(Metrics.timeoutsClaimConflicts),
          Effect.logDebug(`${where}: already delivered by another node`)
        )
        : Effect.zipRight(
          Metric.increment(Metrics.timeoutsStaleSkipped),
          Effect.logDebug(`${where}: stale (generation ${delivery.generation}), dropped`)
        )
    case "Rejected":
      return Effect.zipRight(
        Metric.increment(Metrics.timeoutsRejected),
        Effect.logInfo(`${where}: event rejected (${result.reason}), timer completed`)
      )
    case "Failed":
    case "Undeliverable":
      return Effect.void
    case "Busy":
      return Effect.logDebug(`${where}: instance busy on another node (${result.reason}), later`)
  }
}

// ---------------------------------------------------------------------------
// In-process
// ---------------------------------------------------------------------------

/**
 * Timers in process memory on Effect's `Clock`: the deadlines of every
 * armed instance in one ordered tree, and one fiber sleeping until the
 * earliest (woken early when an earlier one is armed), which hands each due
 * deadline to its own delivery fiber. Re-armed from the instance's state
 * whenever it is loaded. Nothing is stored: after a restart, an instance's
 * timers run again once the instance is loaded (by a send, an `inspect`,
 * ...), with their original deadlines. Memory is a small tree entry per
 * armed deadline, not a fiber per instance.
 *
 * @since 0.1.0
 */
export const makeInProcess = (
  options: RetryOptions = {}
): Effect.Effect<TimeoutStrategy["Type"], InvalidConfiguration> =>
  Effect.map(resolveRetry(options), (policy) => ({
    start: (target) =>
      Effect.gen(function*() {
        const scope = yield* Effect.scope

        const drop = (delivery: Delivery, why: string) =>
          Effect.zipRight(
            Metric.increment(Metrics.timeoutsDeadLettered),
            Effect.logError(`${delivery.machine}/${delivery.instanceId} timer "${delivery.name}": dropped ${why}`)
          )

        const deliverWithRetry = (delivery: Delivery, attempt: number): Effect.Effect<void> =>
          Effect.flatMap(target.deliver(delivery), (result) => {
            if (result._tag === "Undeliverable") return drop(delivery, `as undeliverable: ${result.error}`)
            if (result._tag === "Busy") {
              return Effect.zipRight(Effect.sleep(retryDelayMillis(policy, 1)), deliverWithRetry(delivery, attempt))
            }
            if (result._tag !== "Failed") return logResult(delivery, result)
            if (attempt >= policy.maxAttempts) return drop(delivery, `after ${attempt} attempts: ${result.error}`)
            return Metric.increment(Metrics.timeoutsRetries).pipe(
              Effect.zipRight(Effect.sleep(retryDelayMillis(policy, attempt))),
              Effect.zipRight(deliverWithRetry(delivery, attempt + 1))
            )
          })

        // Deadlines by (dueAt, arming order); the tree keys of each instance's
        // current arming, so that arming it again replaces them.
        let due = RedBlackTree.empty<readonly [number, number], Delivery>(byDueThenOrder)
        const byInstance = new Map<string, ReadonlyArray<readonly [number, number]>>()
        let order = 0
        const wake = yield* Queue.sliding<void>(1)
        let plannedWake = Number.POSITIVE_INFINITY

        const armed: Running["armed"] = (machine, instanceId, generation, deadlines) =>
          Effect.suspend(() => {
            const key = `${machine}\u0000${instanceId}`
            for (const old of byInstance.get(key) ?? []) due = RedBlackTree.removeFirst(due, old)
            if (deadlines.length === 0) {
              byInstance.delete(key)
              return Effect.void
            }
            const keys: Array<readonly [number, number]> = []
            let earliest = Number.POSITIVE_INFINITY
            for (const deadline of deadlines) {
              const treeKey = [deadline.dueAt, order++] as const
              due = RedBlackTree.insert(due, treeKey, {
                machine,
                instanceId,
                generation,
                name: deadline.name,
                dueAt: deadline.dueAt
              })
              keys.push(treeKey)
              if (deadline.dueAt < earliest) earliest = deadline.dueAt
            }
            byInstance.set(key, keys)
            return earliest < plannedWake ? Queue.offer(wake, undefined) : Effect.void
          }).pipe(Effect.asVoid)

        /** Takes every deadline due at `now` out of the tree; says when the next one is due. */
        const takeDue = (now: number, into: Array<Delivery>): number => {
          while (true) {
            const first = RedBlackTree.first(due)
            if (Option.isNone(first)) return Number.POSITIVE_INFINITY
            const [treeKey, delivery] = first.value
            if (treeKey[0] > now) return treeKey[0]
            due = RedBlackTree.removeFirst(due, treeKey)
            const key = `${delivery.machine}\u0000${delivery.instanceId}`
            const left = (byInstance.get(key) ?? []).filter((k) => k !== treeKey)
            if (left.length === 0) byInstance.delete(key)
            else byInstance.set(key, left)
            into.push(delivery)
          }
        }

        yield* Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const dueNow: Array<Delivery> = []
          const next = takeDue(now, dueNow)
          // Each in a fiber of its own; a delivery re-arms its instance with what is left of its deadlines.
          yield* Effect.forEach(dueNow, (delivery) => Effect.forkIn(deliverWithRetry(delivery, 1), scope), {
            discard: true
          })
          plannedWake = next
          yield* Number.isFinite(next)
            ? Effect.raceFirst(Effect.sleep(Math.max(0, next - now)), Queue.take(wake))
            : Queue.take(wake)
          plannedWake = Number.POSITIVE_INFINITY
        }).pipe(
          Effect.catchAllCause((cause) =>
            Effect.zipRight(Effect.logError("in-process timer scheduling failed", cause), Effect.sleep("100 millis"))
          ),
          Effect.forever,
          Effect.annotateLogs({ component: "InProcessTimers", node: target.nodeId }),
          Effect.forkScoped
        )
        return { durable: false, armed }
      })
  }))

const byDueThenOrder = Order.tuple(Order.number, Order.number)

/**
 * The in-process strategy as a layer. Fails to build with
 * `InvalidConfiguration` when an option is unusable.
 *
 * @example
 * ```ts
 * const Runtime = FSMRuntime.layer({ machines: [Order] }).pipe(
 *   Layer.provide(TimeoutStrategy.layerInProcess({ maxAttempts: 3 })),
 *   Layer.provide(EventStore.layerMemory)
 * )
 * ```
 *
 * @since 0.1.0
 */
export const layerInProcess = (options: RetryOptions = {}): Layer.Layer<TimeoutStrategy, InvalidConfiguration> =>
  Layer.effect(TimeoutStrategy, makeInProcess(options))

/**
 * The in-process strategy with default retry options.
 *
 * @since 0.1.0
 */
export const inProcess: Layer.Layer<TimeoutStrategy> = Layer.orDie(layerInProcess())

// ---------------------------------------------------------------------------
// Durable
// ---------------------------------------------------------------------------

/**
 * Options of the durable strategy's sweeper.
 *
 * Claim leases assume node clocks agree to within a few seconds: a node
 * whose clock runs ahead of the others by more than `claimLease` could take
 * over a claim that is still live elsewhere. The delivery itself stays
 * exactly-once even then (its commit deletes the timer row only while it
 * still has its generation); only the work may be done twice.
 *
 * @since 0.1.0
 */
export interface DurableOptions extends RetryOptions {
  /** Time between polls while timers keep coming. Default 500 ms. */
  readonly pollInterval?: Duration.DurationInput
  /** Longest time between polls when idle; the interval doubles up to it. Default 2 seconds. */
  readonly maxIdleInterval?: Duration.DurationInput
  /** Random extra delay added to every poll, as a fraction of the interval. Default 0.1. */
  readonly jitter?: number
  /** Timers claimed per poll. Default 200. */
  readonly batchSize?: number
  /** How long a claim protects a timer from other nodes. Default 30 seconds. */
  readonly claimLease?: Duration.DurationInput
  /**
   * Deliveries run at once, at most. A poll claims as many timers as there
   * are free places (at most `batchSize`), once at least half of them are
   * free, and does not wait for a full batch's deliveries: with a backlog,
   * one batch is claimed and its instances read while the batch before it
   * commits.
   * Default 256: a claimed batch's instances are loaded with one read and
   * its commits share group commits, so larger batches cost fewer
   * statements (draining 10,000 due timers on PostgreSQL, 256 ran 14-21%
   * more timers a second than 128).
   */
  readonly concurrency?: number
  /**
   * Longest time a poll waits for the deliveries of a batch that emptied
   * the backlog (then it reads the next due time, which their retries may
   * have moved) before it goes on without them; a full batch is not waited
   * for. Deliveries still running after it are reported (a warning in the
   * log). So a delivery stuck on a slow database call holds up no other
   * timer, only its own place among `concurrency`; it settles its timer
   * when it ends. Must be shorter than `claimLease`. Default 10 seconds, or
   * half the claim lease when that is shorter.
   */
  readonly deliveryTimeout?: Duration.DurationInput
  /**
   * Sweep on one node at a time: the node that leads the election `name`
   * (default `"timeout-sweeper"`) on the `LeaseStore` of the same database.
   * The others only write timer rows; a new leader takes over when the
   * leader steps down (at once) or dies (after the election's `ttl`).
   * Default: every node sweeps.
   */
  readonly leaderOnly?: boolean | {
    readonly name?: string
    readonly ttl?: Duration.DurationInput
  }
  /**
   * `false`: this node writes timer rows with its commits but runs no
   * sweeper (an API-only node); the sweepers of other nodes on the same
   * database fire them. Default `true`.
   */
  readonly sweep?: boolean
}

interface SweeperConfig {
  readonly pollMillis: number
  readonly maxIdleMillis: number
  readonly leaseMillis: number
  readonly deliveryMillis: number
  readonly jitter: number
  readonly batchSize: number
  readonly concurrency: number
  readonly retry: RetryPolicy
  readonly leader: { readonly name: string; readonly ttl: Duration.DurationInput } | undefined
  readonly sweep: boolean
}

const resolveDurable = (options: DurableOptions): Effect.Effect<SweeperConfig, InvalidConfiguration> =>
  Effect.gen(function*() {
    if (typeof options !== "object" || options === null) return yield* invalid("options", "must be an object")
    const pollMillis = yield* millisOption("pollInterval", options.pollInterval, "500 millis", { min: 1 })
    const maxIdleMillis = yield* millisOption("maxIdleInterval", options.maxIdleInterval, "2 seconds", { min: 1 })
    if (maxIdleMillis < pollMillis) {
      return yield* invalid("maxIdleInterval", `must not be below pollInterval (${pollMillis} ms)`)
    }
    const leaseMillis = yield* millisOption("claimLease", options.claimLease, "30 seconds", { min: 1 })
    const deliveryMillis = options.deliveryTimeout === undefined
      ? Math.max(1, Math.min(10_000, Math.floor(leaseMillis / 2)))
      : yield* millisOption("deliveryTimeout", options.deliveryTimeout, "10 seconds", { min: 1 })
    if (deliveryMillis >= leaseMillis) {
      return yield* invalid("deliveryTimeout", `must be shorter than claimLease (${leaseMillis} ms), got ${deliveryMillis} ms`)
    }
    const jitter = options.jitter ?? 0.1
    if (typeof jitter !== "number" || !Number.isFinite(jitter) || jitter < 0 || jitter > 10) {
      return yield* invalid("jitter", `must be a number from 0 to 10, got ${describeValue(jitter)}`)
    }
    const batchSize = yield* countOption("batchSize", options.batchSize, 200, 1)
    const concurrency = yield* countOption("concurrency", options.concurrency, 256, 1)
    const retry = yield* resolveRetry(options)
    const leaderOnly = options.leaderOnly ?? false
    let leader: SweeperConfig["leader"]
    if (leaderOnly !== false) {
      const chosen = leaderOnly === true ? {} : leaderOnly
      if (typeof chosen !== "object" || chosen === null) return yield* invalid("leaderOnly", "must be a boolean or an object")
      const name = chosen.name ?? "timeout-sweeper"
      if (typeof name !== "string" || name.length === 0) return yield* invalid("leaderOnly.name", "must be a non-empty string")
      const ttl = yield* millisOption("leaderOnly.ttl", chosen.ttl, "15 seconds", { min: 3 })
      leader = { name, ttl: Duration.millis(ttl) }
    }
    const sweep = options.sweep ?? true
    if (typeof sweep !== "boolean") return yield* invalid("sweep", `must be a boolean, got ${describeValue(sweep)}`)
    return { pollMillis, maxIdleMillis, leaseMillis, deliveryMillis, jitter, batchSize, concurrency, retry, leader, sweep }
  })

/**
 * Durable timers: rows in the `TimeoutStore` written with the commits, and a
 * sweeper that claims and fires them. Needs the `TimeoutStore` of the same
 * database as the `EventStore` (every store layer provides both).
 *
 * @example
 * ```ts
 * const Runtime = FSMRuntime.layer({ machines: [Order] }).pipe(
 *   Layer.provide(TimeoutStrategy.layerDurable({ pollInterval: "1 second" })),
 *   Layer.provide(SqliteEventStore.layer({ filename: "orders.db" }))
 * )
 * ```
 *
 * @since 0.1.0
 */
export const layerDurable = (
  options: DurableOptions = {}
): Layer.Layer<TimeoutStrategy, InvalidConfiguration, TimeoutStore.TimeoutStore> =>
  Layer.effect(
    TimeoutStrategy,
    Effect.gen(function*() {
      const config = yield* resolveDurable(options)
      const store = yield* TimeoutStore.TimeoutStore
      const leases = yield* Effect.serviceOption(LeaseStore.LeaseStore)
      if (config.leader !== undefined && Option.isNone(leases)) {
        return yield* invalid("leaderOnly", "needs the LeaseStore of the database (every store layer provides one)")
      }
      return TimeoutStrategy.of({ start: (target) => startSweeper(store, target, config, Option.getOrUndefined(leases)) })
    })
  )

/**
 * The durable strategy with default options.
 *
 * @since 0.1.0
 */
export const durable: Layer.Layer<TimeoutStrategy, never, TimeoutStore.TimeoutStore> = Layer.orDie(layerDurable())

const startSweeper = (
  store: TimeoutStore.TimeoutStore["Type"],
  target: Target,
  config: SweeperConfig,
  leases: LeaseStore.LeaseStore["Type"] | undefined
): Effect.Effect<Running, never, Scope.Scope> =>
  Effect.gen(function*() {
    // An API-only node: the rows go with its commits, other nodes fire them.
    if (!config.sweep) return { durable: true, armed: () => Effect.void }
    const { batchSize, concurrency, deliveryMillis, jitter, leaseMillis, maxIdleMillis, pollMillis } = config

    const deadLetter = (timer: TimeoutStore.TimerRecord, error: string, why: string) =>
      Effect.flatMap(nowMillis, (now) =>
        store.deadLetter(timer, { error: storableText(error), now }).pipe(
          Effect.zipRight(Metric.increment(Metrics.timeoutsDeadLettered)),
          Effect.zipRight(
            Effect.logError(`${timer.machine}/${timer.instanceId} timer "${timer.name}": dead-lettered ${why}: ${error}`)
          )
        ))

    const settle = (timer: TimeoutStore.TimerRecord) =>
      Effect.flatMap(target.deliver(timer), (result): Effect.Effect<void, unknown> => {
        switch (result._tag) {
          case "Fired":
            return logResult(timer, result)
          case "Stale":
          case "Rejected":
            // The row (if it is still this generation's) is done for good.
            return Effect.zipRight(store.complete(timer), logResult(timer, result))
          case "Undeliverable":
            return deadLetter(timer, result.error, "as undeliverable")
          case "Busy":
            // Left claimed: another poll takes it again once the claim runs out.
            return logResult(timer, result)
          case "Failed": {
            const attempts = timer.attempts + 1
            if (attempts >= config.retry.maxAttempts) return deadLetter(timer, result.error, `after ${attempts} attempts`)
            return Effect.flatMap(nowMillis, (now) =>
              store.retryLater(timer, {
                dueAt: now + retryDelayMillis(config.retry, attempts),
                error: storableText(result.error)
              }).pipe(
                Effect.zipRight(Metric.increment(Metrics.timeoutsRetries)),
                Effect.zipRight(Effect.logWarning(
                  `${timer.machine}/${timer.instanceId} timer "${timer.name}": attempt ${attempts} failed, retrying: ${result.error}`
                ))
              ))
          }
        }
      })

    // Should a delivery outlive its claim (the poller waits for it at most
    // `deliveryTimeout`), another delivery of the same row is still harmless:
    // a delivery commits only while the row has its generation.
    const poller = yield* makePoller({
      config: { pollMillis, maxIdleMillis, jitter, batchSize, concurrency, settleMillis: deliveryMillis },
      claim: (now, limit) =>
        store.claimDue({ machines: target.machines, now, limit, nodeId: target.nodeId, claimUntil: now + leaseMillis }),
      settle,
      prepare: target.prepare,
      nextDueAt: store.nextDueAt(target.machines),
      describe: (timer) => `${timer.machine}/${timer.instanceId} timer "${timer.name}"`,
      span: { name: "TimeoutStrategy.sweep", attributes: { node: target.nodeId } }
    })

    const sweeping = config.leader === undefined || leases === undefined
      ? poller.loop
      : LeaderElection.runWhileLeader({ name: config.leader.name, nodeId: target.nodeId, ttl: config.leader.ttl }, poller.loop).pipe(
        Effect.provideService(LeaseStore.LeaseStore, leases),
        // The election's options were checked with the strategy's.
        Effect.orDie
      )
    yield* sweeping.pipe(
      Effect.annotateLogs({ component: "TimeoutSweeper", node: target.nodeId }),
      Effect.forkScoped
    )

    // Called when the instance's deadlines are known (after its commit or load).
    const armed: Running["armed"] = (_machine, _instanceId, _generation, deadlines) => {
      let earliest = Number.POSITIVE_INFINITY
      for (const deadline of deadlines) if (deadline.dueAt < earliest) earliest = deadline.dueAt
      return poller.wakeFor(earliest)
    }

    return { durable: true, armed }
  })
