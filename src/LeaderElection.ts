/**
 * Leader election on the lease store: of all nodes campaigning for a name,
 * at most one holds its lease at any time, with a fencing token that grows
 * on every change of leader. For singleton background work (a sweeper that
 * should run on one node only, a report job).
 *
 * A campaign is scoped: it tries to take the lease, extends it while it
 * holds it, and gives it back when its scope ends, so another node takes over
 * at once; if the leader dies, its lease expires and another node takes over
 * after at most `ttl`.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { InvalidConfiguration } from "./Errors.js"
import { nowMillis } from "./internal/clock.js"
import { durationMillis } from "./internal/options.js"
import * as LeaseStore from "./LeaseStore.js"

/**
 * Options of a campaign.
 *
 * @since 0.1.0
 */
export interface Options {
  /** What is led; one lease per name. */
  readonly name: string
  /** This candidate's id: unique per campaigning runtime. */
  readonly nodeId: string
  /** Lease duration. Default 15 seconds. */
  readonly ttl?: Duration.DurationInput
  /** How often the leader extends its lease, and a follower tries to take it. Default `ttl / 3`. */
  readonly interval?: Duration.DurationInput
}

/**
 * A running campaign.
 *
 * @since 0.1.0
 */
export interface Election {
  readonly name: string
  /** Whether this candidate holds the lease now (as far as its last renewal knows). */
  readonly isLeader: Effect.Effect<boolean>
  /** The lease while leader: its fencing token orders leaders. */
  readonly lease: Effect.Effect<Option.Option<LeaseStore.Lease>>
  /** `true` / `false` on every change, starting with the current value. */
  readonly changes: Stream.Stream<boolean>
}

const millisOf = (option: string, input: unknown, fallback: number) =>
  durationMillis("LeaderElection", option, input, fallback)

/**
 * Campaigns for `options.name` in the current scope.
 *
 * @example
 * ```ts
 * const election = yield* LeaderElection.campaign({ name: "reports", nodeId: runtime.nodeId })
 * if (yield* election.isLeader) yield* sendDailyReport
 * ```
 *
 * @since 0.1.0
 */
export const campaign = (
  options: Options
): Effect.Effect<Election, InvalidConfiguration, LeaseStore.LeaseStore | Scope.Scope> =>
  Effect.gen(function*() {
    const leases = yield* LeaseStore.LeaseStore
    const ttlMillis = yield* millisOf("ttl", options.ttl, 15_000)
    const intervalMillis = yield* millisOf("interval", options.interval, Math.max(1, Math.floor(ttlMillis / 3)))
    if (intervalMillis >= ttlMillis) {
      return yield* new InvalidConfiguration({
        component: "LeaderElection",
        option: "interval",
        reason: `must be shorter than ttl (${ttlMillis} ms)`
      })
    }
    const key: LeaseStore.LeaseKey = { machine: LeaseStore.leaderMachine, instanceId: options.name }
    const ttl = Duration.millis(ttlMillis)
    /** The lease while leading, and until when (by this node's clock) it is surely still ours. */
    const current = yield* SubscriptionRef.make(Option.none<{ readonly lease: LeaseStore.Lease; readonly until: number }>())

    // Each store call is bounded, so a hung one cannot keep a stale leader
    // leading; a leader that failed to renew steps down while the next
    // rounds could no longer renew in time, before its lease can run out.
    const bounded = <A, E>(call: Effect.Effect<A, E>) =>
      Effect.timeoutFail(call, { duration: Duration.millis(Math.max(1, Math.floor(intervalMillis / 2))), onTimeout: () => "timed out" as const })

    const round = Effect.gen(function*() {
      const started = yield* nowMillis
      const held = yield* SubscriptionRef.get(current)
      if (Option.isNone(held)) {
        const won = yield* Effect.either(bounded(leases.tryAcquire(key, options.nodeId, ttl)))
        if (won._tag === "Right" && Option.isSome(won.right)) {
          yield* SubscriptionRef.set(current, Option.some({ lease: won.right.value, until: started + ttlMillis }))
        }
        return
      }
      const extended = yield* Effect.either(bounded(leases.extend(held.value.lease, ttl)))
      if (extended._tag === "Right") {
        yield* SubscriptionRef.set(current, Option.some({ lease: extended.right, until: started + ttlMillis }))
        return
      }
      const after = yield* nowMillis
      const lost = extended.left !== "timed out" && extended.left._tag === "LockLost"
      if (lost || after + 2 * intervalMillis >= held.value.until) {
        yield* SubscriptionRef.set(current, Option.none())
      } else {
        yield* Effect.logWarning("leader lease not renewed, trying again", extended.left)
      }
    })

    const rounds = yield* round.pipe(
      // One span a round: the acquisition attempt or the renewal, and whether this node leads after it.
      Effect.zipRight(Effect.flatMap(SubscriptionRef.get(current), (held) => Effect.annotateCurrentSpan("leader", Option.isSome(held)))),
      Effect.withSpan("LeaderElection.round", {
        attributes: { election: options.name, node: options.nodeId },
        captureStackTrace: false
      }),
      Effect.catchAllCause((cause) => Effect.logWarning("leader election round failed", cause)),
      // Whole-millisecond jitter (up to a tenth of the interval) spreads the candidates' rounds.
      Effect.zipRight(Effect.flatMap(Random.nextIntBetween(0, Math.floor(intervalMillis / 10) + 1), Effect.sleep)),
      Effect.repeat(Schedule.spaced(Duration.millis(intervalMillis))),
      Effect.annotateLogs({ component: "LeaderElection", election: options.name, node: options.nodeId }),
      Effect.forkScoped
    )
    // Stepping down (rounds stopped first, so none can take the lease again) hands it over at once.
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(Effect.zipRight(Fiber.interrupt(rounds), SubscriptionRef.get(current)), (held) =>
        Option.match(held, {
          onNone: () => Effect.void,
          onSome: ({ lease }) =>
            Effect.zipRight(Effect.ignore(leases.release(lease)), SubscriptionRef.set(current, Option.none()))
        }))
    )

    return {
      name: options.name,
      isLeader: Effect.zipWith(SubscriptionRef.get(current), nowMillis, (held, now) =>
        Option.isSome(held) && now < held.value.until),
      lease: Effect.map(SubscriptionRef.get(current), Option.map(({ lease }) => lease)),
      changes: current.changes.pipe(Stream.map(Option.isSome), Stream.changes)
    }
  })

/**
 * Runs `effect` whenever this candidate leads `options.name`, interrupting
 * it when leadership is lost and starting it again when it is won back.
 * Runs until its scope ends (then the lease is handed over).
 *
 * @example
 * ```ts
 * yield* LeaderElection.runWhileLeader({ name: "nightly", nodeId }, nightlyJob).pipe(Effect.forkScoped)
 * ```
 *
 * @since 0.1.0
 */
export const runWhileLeader = <A, E, R>(
  options: Options,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<void, InvalidConfiguration | E, LeaseStore.LeaseStore | Scope.Scope | R> =>
  Effect.flatMap(campaign(options), (election) =>
    election.changes.pipe(
      Stream.flatMap((leading) => leading ? Stream.fromEffect(effect) : Stream.empty, { switch: true }),
      Stream.runDrain
    ))
