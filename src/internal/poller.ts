/**
 * The polling loop shared by the background workers that claim rows from a
 * table and settle them (the timeout sweeper, the outbox dispatcher): one
 * poll claims a batch and settles it (waiting for it only when it emptied
 * the backlog: otherwise the next batch is claimed while it runs), then
 * says how long to wait; the wait
 * ends early when a row falls due sooner (`wakeFor`, `wakeNow`). Following
 * the background-work recipe: each poll is an Effect whose failure is
 * logged, and the idle interval is jittered to spread the polls of many
 * nodes. The caller forks `loop` (in its scope, maybe under a leader
 * election).
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Random from "effect/Random"
import type * as Scope from "effect/Scope"
import { nowMillis } from "./clock.js"

export interface PollerConfig {
  /** Time between polls while rows keep coming. */
  readonly pollMillis: number
  /** Longest time between polls when idle; the interval doubles up to it. */
  readonly maxIdleMillis: number
  /** Random extra delay added to an idle wait, as a fraction of the interval. */
  readonly jitter: number
  /** Rows claimed per poll, at most. */
  readonly batchSize: number
  /**
   * Rows settled at once, at most: a poll claims only as many as there are
   * free places, once at least half of them (or `batchSize`) are free.
   */
  readonly concurrency: number
  /** Longest time a poll waits for the rows of a short batch; rows of any batch still running then are reported. */
  readonly settleMillis: number
}

export interface Poller {
  /** Polls forever; fork it. */
  readonly loop: Effect.Effect<never>
  /** Ends the current wait early if a row falls due at `dueAt`, before the planned wake-up. */
  readonly wakeFor: (dueAt: number) => Effect.Effect<void>
  /** Ends the current wait now (a row was just written). Synchronous. */
  readonly wakeNow: () => void
}

export const makePoller = <A>(options: {
  readonly config: PollerConfig
  /** Claims up to `limit` rows due at `now`. */
  readonly claim: (now: number, limit: number) => Effect.Effect<ReadonlyArray<A>, unknown>
  /** Settles one claimed row, claimed at `claimedAt` (the `now` its claim was made with); its failures are logged. */
  readonly settle: (row: A, claimedAt: number) => Effect.Effect<void, unknown>
  /** Runs once per claimed batch before its rows are settled (a batch load); its failures are logged. */
  readonly prepare?: ((rows: ReadonlyArray<A>) => Effect.Effect<void, unknown>) | undefined
  /** When a row could next be claimed. */
  readonly nextDueAt: Effect.Effect<Option.Option<number>, unknown>
  /** A row, for logs. */
  readonly describe: (row: A) => string
  /** The span of one poll (the parent of its rows' settling, which may outlast it), with the number of rows it claimed. */
  readonly span: { readonly name: string; readonly attributes: Record<string, unknown> }
}): Effect.Effect<Poller, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { batchSize, concurrency, jitter, maxIdleMillis, pollMillis, settleMillis } = options.config
    const scope = yield* Effect.scope
    const wake = yield* Queue.sliding<void>(1)
    let plannedWake = Number.POSITIVE_INFINITY
    let idleMillis = pollMillis
    let eagerPolls = 0

    // Each row settles in a fiber of the scope. A poll does not wait for a
    // full batch: more rows may be due, so the next batch is claimed (and
    // its instances read) while this one is still committing. A short batch
    // (nothing else is due) is waited for at most `settleMillis` (shorter
    // than the claim lease), so that the next due time, read after it,
    // includes its rows' retries. Either way a row stuck on a slow database
    // call or handler holds up nothing but its own place.
    // Rows being settled: a poll claims only as many as there are free
    // places (`concurrency` in all), and only once at least `refill` of them
    // are free, so a backlog is claimed in whole batches, not a few rows at
    // a time as places free up one by one.
    let inFlight = 0
    const refill = Math.min(batchSize, Math.ceil(concurrency / 2))
    /** The poller waits for free places: the row whose end frees the `refill`th place wakes it. */
    let waitingForPlaces = false

    const settled = () => {
      inFlight--
      if (waitingForPlaces && concurrency - inFlight >= refill) {
        waitingForPlaces = false
        wakeNow()
      }
    }

    /**
     * Settles one row in a fiber of the scope; its place is taken already.
     * Forked uninterruptibly (see `settleBatch`): the place is given back
     * however the fiber ends, and only the settling itself is interruptible.
     */
    const settleInScope = (
      row: A,
      claimedAt: number,
      restore: <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) => Effect.Effect<X, Y, Z>
    ) =>
      Effect.forkIn(
        restore(
          Effect.catchAllCause(options.settle(row, claimedAt), (cause) => Effect.logError(`${options.describe(row)}: settling failed`, cause))
        ).pipe(Effect.ensuring(Effect.sync(settled))),
        scope
      )

    /**
     * Settles a claimed batch, each row in its own fiber (every row has a
     * free place, taken here at once so that the next poll counts it), and
     * waits for them together (`wait`) or watches them in a fiber of its
     * own, at most `settleMillis`, then warns of those still running: one
     * deadline per batch, not one timer per row.
     */
    const settleBatch = (rows: ReadonlyArray<A>, claimedAt: number, wait: boolean) =>
      Effect.flatMap(
        // Not interrupted halfway (a leader stepping down interrupts the
        // loop, and the poller's count outlives it): every place taken is
        // given back by a fiber that was forked.
        Effect.uninterruptibleMask((restore) =>
          Effect.suspend(() => {
            inFlight += rows.length
            return Effect.forEach(rows, (row) => settleInScope(row, claimedAt, restore))
          })
        ),
        (fibers) => {
          const watched = Fiber.awaitAll(fibers).pipe(
            Effect.timeoutTo({
              duration: settleMillis,
              onSuccess: () => Effect.void,
              onTimeout: () =>
                Effect.logWarning(
                  `${fibers.filter((fiber) => fiber.unsafePoll() === null).length} of ${rows.length} rows still running after ${settleMillis} ms; the poller goes on`
                )
            }),
            Effect.flatten
          )
          return wait ? watched : Effect.asVoid(Effect.forkIn(watched, scope))
        }
      )

    /**
     * One poll: claim a batch, settle it, and say how long to wait before
     * the next one. A known due time is waited for exactly; only the idle
     * interval is jittered.
     */
    const poll = Effect.gen(function*() {
      const free = Math.min(batchSize, concurrency - inFlight)
      if (free < refill) {
        // Too few places free: wait until rows still running free enough
        // of them (or the interval passes).
        waitingForPlaces = true
        return pollMillis
      }
      const now = yield* nowMillis
      const claimed = yield* options.claim(now, free)
      yield* Effect.annotateCurrentSpan("claimed", claimed.length)
      if (options.prepare !== undefined && claimed.length > 1) {
        // A shortcut, bounded like the rows' settling: a slow batch read never holds the claims up.
        yield* options.prepare(claimed).pipe(
          Effect.timeoutTo({
            duration: settleMillis,
            onSuccess: () => Effect.void,
            onTimeout: () => Effect.logWarning(`preparing a batch of ${claimed.length} took over ${settleMillis} ms; settling without it`)
          }),
          Effect.flatten,
          Effect.catchAllCause((cause) => Effect.logWarning("preparing a batch failed", cause))
        )
      }
      const full = claimed.length >= free
      yield* settleBatch(claimed, now, !full)
      if (full) {
        idleMillis = pollMillis
        eagerPolls = 0
        return 0
      }
      idleMillis = claimed.length > 0 ? pollMillis : Math.min(maxIdleMillis, idleMillis * 2)
      const next = yield* options.nextDueAt
      const after = yield* Clock.currentTimeMillis
      const untilNext = Option.match(next, { onNone: () => Infinity, onSome: (dueAt) => Math.max(0, dueAt - after) })
      if (untilNext <= 0) {
        // Due already (it fell due while this poll ran): poll again at once,
        // but never spin if the store keeps saying so without handing it out.
        return ++eagerPolls <= 3 ? 0 : 1
      }
      eagerPolls = 0
      if (untilNext <= idleMillis) return untilNext
      // Whole milliseconds: due times are whole milliseconds, and a fraction
      // left over would wake the poller just before one.
      const spread = Math.floor(jitter * idleMillis)
      const jittered = idleMillis + (spread > 0 ? yield* Random.nextIntBetween(0, spread + 1) : 0)
      return Math.min(jittered, untilNext)
    }).pipe(Effect.withSpan(options.span.name, { attributes: options.span.attributes, captureStackTrace: false }))

    // A wake-up asked for while a poll runs (after it may have looked) is
    // kept for the wait that follows it, never dropped.
    let wakeAsked = false

    const loop = Effect.gen(function*() {
      wakeAsked = false
      const waitMillis = yield* poll.pipe(
        Effect.catchAllCause((cause) => Effect.as(Effect.logError("poll failed", cause), pollMillis))
      )
      if (waitMillis <= 0) return
      const wait = Math.ceil(waitMillis)
      const now = yield* Clock.currentTimeMillis
      // From here on a wake-up offers to the queue; one asked for until now is seen here.
      plannedWake = now + wait
      if (wakeAsked) {
        plannedWake = Number.POSITIVE_INFINITY
        return
      }
      yield* Effect.raceFirst(Effect.sleep(wait), Queue.take(wake))
      plannedWake = Number.POSITIVE_INFINITY
    }).pipe(Effect.forever)

    // Synchronous: every commit and every batch load arms its instances, so
    // this runs once or twice per delivery. A wake already pending in the
    // queue (it holds one) is enough: then the offer is refused.
    const wakeFor = (dueAt: number): Effect.Effect<void> =>
      dueAt === Number.POSITIVE_INFINITY ? Effect.void : Effect.sync(() => {
        if (dueAt < plannedWake) Queue.unsafeOffer(wake, undefined)
      })

    const wakeNow = () => {
      if (plannedWake !== Number.POSITIVE_INFINITY) Queue.unsafeOffer(wake, undefined)
      else wakeAsked = true
    }

    return { loop, wakeFor, wakeNow }
  })
