/**
 * Leases: who may write an instance (or run a singleton job) right now.
 *
 * A lease is keyed like an instance, `(machine, instanceId)`; leader
 * election uses a reserved machine name (`"@leader"`) and the job's name as
 * the id. A lease row carries its owner (a node id, unique per runtime), its
 * expiry and a fencing token that strictly increases on every acquisition of
 * the key, across releases and expiries. Commits made under a lease carry
 * `{ owner, token }` (`EventStore.Commit.fence`), and the store refuses them
 * in the same atomic commit when the key was acquired again since, so a
 * paused node that lost its lease cannot write.
 *
 * Expiry is judged by one clock per store: on PostgreSQL the database's
 * (`clock_timestamp()`), so node clock skew cannot hand one lease to two
 * nodes; on SQLite and in memory the caller's Effect `Clock` (one machine,
 * so one clock; `TestClock` drives it in tests).
 *
 * The backends live beside the event store of the same database (every
 * store layer provides the `LeaseStore` too); `LeaseStore.make` adds what
 * they share: key and owner validation, and `acquire`, which waits.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import { InvalidInstanceId, LockLost, LockTimeout, PersistenceError } from "./Errors.js"
import { instanceIdProblem } from "./EventStore.js"
import { nowMillis } from "./internal/clock.js"

/**
 * The machine name under which leader-election leases are kept.
 *
 * @since 0.1.0
 */
export const leaderMachine = "@leader"

/**
 * What a lease is for.
 *
 * @since 0.1.0
 */
export interface LeaseKey {
  readonly machine: string
  readonly instanceId: string
}

/**
 * A lease as its holder sees it.
 *
 * @since 0.1.0
 */
export interface Lease extends LeaseKey {
  readonly owner: string
  /** Strictly increases on every acquisition of the key. */
  readonly token: number
  /** Epoch milliseconds, by the store's clock (see the module doc). */
  readonly expiresAt: number
}

/**
 * What a lease backend implements. Keys and owners reaching it have been
 * validated; `ttlMillis` is a whole number > 0; `now` is the caller's Clock,
 * which backends that judge expiry by their own clock (PostgreSQL) ignore.
 *
 * @since 0.1.0
 */
export interface Backend {
  /**
   * Takes the lease when nobody holds it or its holder's lease expired, with
   * a new token; `None` when it is held (by another owner, or by `owner`
   * itself: leases are not re-entrant). Atomic: of many concurrent calls for
   * one key, at most one succeeds.
   */
  readonly tryAcquire: (
    key: LeaseKey,
    owner: string,
    ttlMillis: number,
    now: number
  ) => Effect.Effect<Option.Option<Lease>, PersistenceError>
  /**
   * Extends a lease its owner still holds (same owner and token, not
   * expired), or `None` when it was lost.
   */
  readonly extend: (lease: Lease, ttlMillis: number, now: number) => Effect.Effect<Option.Option<Lease>, PersistenceError>
  /** Ends a lease its owner holds (same owner and token); `false` when it was not held. The token is kept for the next acquisition. */
  readonly release: (lease: Lease, now: number) => Effect.Effect<boolean, PersistenceError>
  /** The lease held now, if any (a released or expired lease is `None`). */
  readonly get: (key: LeaseKey, now: number) => Effect.Effect<Option.Option<Lease>, PersistenceError>
}

/**
 * Options of `acquire`.
 *
 * @since 0.1.0
 */
export interface AcquireOptions {
  /** How long the lease lasts unless extended. */
  readonly ttl: Duration.DurationInput
  /** How long to wait for a held lease before failing with `LockTimeout`. */
  readonly wait: Duration.DurationInput
  /** Time between attempts while waiting (jittered). Default 50 ms. */
  readonly retryInterval?: Duration.DurationInput
}

/**
 * The lease store service.
 *
 * @since 0.1.0
 */
export class LeaseStore extends Context.Tag("effect-fsm/LeaseStore")<LeaseStore, {
  readonly tryAcquire: (
    key: LeaseKey,
    owner: string,
    ttl: Duration.DurationInput
  ) => Effect.Effect<Option.Option<Lease>, PersistenceError | InvalidInstanceId>
  /** Waits (polling, jittered) until the lease is acquired, or fails with `LockTimeout` after `wait`. */
  readonly acquire: (
    key: LeaseKey,
    owner: string,
    options: AcquireOptions
  ) => Effect.Effect<Lease, LockTimeout | PersistenceError | InvalidInstanceId>
  /** Extends a held lease; `LockLost` when it is no longer held by its owner with its token. */
  readonly extend: (lease: Lease, ttl: Duration.DurationInput) => Effect.Effect<Lease, LockLost | PersistenceError>
  /** Releases a held lease; `LockLost` when it was not held (by a non-owner, or expired and taken). */
  readonly release: (lease: Lease) => Effect.Effect<void, LockLost | PersistenceError>
  readonly get: (key: LeaseKey) => Effect.Effect<Option.Option<Lease>, PersistenceError | InvalidInstanceId>
}>() {}

const millisOf = (input: Duration.DurationInput): number => {
  const decoded = Duration.decodeUnknown(input)
  const millis = Option.isSome(decoded) ? Duration.toMillis(decoded.value) : NaN
  // Callers pass validated options; anything odd is the shortest lease rather than a throw.
  return Number.isFinite(millis) ? Math.max(1, Math.ceil(millis)) : 1
}

const keyProblem = (key: LeaseKey): InvalidInstanceId | undefined => {
  const problem = typeof key?.machine !== "string" || key.machine.length === 0
    ? "the machine name must be a non-empty string"
    : instanceIdProblem(key.instanceId)
  return problem === undefined
    ? undefined
    : new InvalidInstanceId({ machine: String(key?.machine), instanceId: String(key?.instanceId), reason: problem })
}

const ownerProblem = (key: LeaseKey, owner: string): InvalidInstanceId | undefined =>
  typeof owner === "string" && owner.length > 0 && instanceIdProblem(owner) === undefined
    ? undefined
    : new InvalidInstanceId({
      machine: key.machine,
      instanceId: key.instanceId,
      reason: `the lease owner must be a non-empty, well-formed string, got ${JSON.stringify(String(owner))}`
    })

const wholeMillis = nowMillis

const lost = (lease: Lease) =>
  new LockLost({ machine: lease.machine, instanceId: lease.instanceId, owner: lease.owner, token: lease.token })

/**
 * Wraps a backend into the service: validation, and a waiting `acquire`.
 *
 * @since 0.1.0
 */
export const make = (backend: Backend): LeaseStore["Type"] => {
  const tryAcquire = (key: LeaseKey, owner: string, ttl: Duration.DurationInput) =>
    Effect.suspend((): Effect.Effect<Option.Option<Lease>, PersistenceError | InvalidInstanceId> => {
      const problem = keyProblem(key) ?? ownerProblem(key, owner)
      if (problem !== undefined) return Effect.fail(problem)
      return Effect.flatMap(wholeMillis, (now) => backend.tryAcquire(key, owner, millisOf(ttl), now))
    })

  const acquire = (key: LeaseKey, owner: string, options: AcquireOptions) =>
    Effect.gen(function*() {
      const waitMillis = millisOf(options.wait)
      const interval = millisOf(options.retryInterval ?? "50 millis")
      const started = yield* Clock.currentTimeMillis
      while (true) {
        const lease = yield* tryAcquire(key, owner, options.ttl)
        if (Option.isSome(lease)) return lease.value
        const waited = (yield* Clock.currentTimeMillis) - started
        if (waited >= waitMillis) {
          return yield* new LockTimeout({ machine: key.machine, instanceId: key.instanceId, waitedMillis: waited })
        }
        const pause = Math.min(waitMillis - waited, interval + (yield* Random.nextIntBetween(0, interval + 1)))
        yield* Effect.sleep(pause)
      }
    })

  return {
    tryAcquire,
    acquire,
    extend: (lease, ttl) =>
      Effect.flatMap(wholeMillis, (now) =>
        Effect.flatMap(
          backend.extend(lease, millisOf(ttl), now),
          Option.match({ onNone: () => Effect.fail(lost(lease)), onSome: Effect.succeed })
        )),
    release: (lease) =>
      Effect.flatMap(wholeMillis, (now) =>
        Effect.flatMap(backend.release(lease, now), (released) => released ? Effect.void : Effect.fail(lost(lease)))),
    get: (key) =>
      Effect.suspend((): Effect.Effect<Option.Option<Lease>, PersistenceError | InvalidInstanceId> => {
        const problem = keyProblem(key)
        if (problem !== undefined) return Effect.fail(problem)
        return Effect.flatMap(wholeMillis, (now) => backend.get(key, now))
      })
  }
}
