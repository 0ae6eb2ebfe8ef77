/**
 * Group commit: concurrent writes that arrive while a flush is running are
 * written together by the next flush, one batch per flush.
 *
 * There is no timer and no minimum batch. A writer that finds no flush
 * running leads: after one yield of its fiber (so that writers already
 * running can queue: with a synchronous driver nothing else runs while a
 * flush does) it flushes its own item with whatever queued, on its own
 * fiber; a lone writer pays that yield and nothing else. A batch holds at most `maxBatch`
 * items and at most one per `key`, so it never holds two writes of one
 * instance. What queues during a flush is the next batch, flushed by a
 * daemon fiber, one flush at a time. Each caller gets its own outcome once
 * the flush that carried its item has ended; flushes are uninterruptible,
 * so a caller interrupted while it waits leaves its batch alone (its item
 * is written or not, as if it had not been interrupted).
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import * as Exit from "effect/Exit"

export interface GroupCommit<I, A, E> {
  /** Writes `item` with whatever else is queued, and returns its own outcome. */
  readonly submit: (item: I) => Effect.Effect<A, E>
}

interface Entry<I, A, E> {
  readonly item: I
  readonly key: string
  readonly done: Deferred.Deferred<A, E>
}

export const make = <I, A, E>(options: {
  /** Items of one key never share a batch (later ones wait for the next). */
  readonly key: (item: I) => string
  readonly maxBatch: number
  /**
   * Writes a batch and returns one outcome per item, in order; a failure of
   * the whole flush is every item's outcome.
   */
  readonly flush: (items: ReadonlyArray<I>) => Effect.Effect<ReadonlyArray<Either.Either<A, E>>, E>
}): GroupCommit<I, A, E> => {
  let queue: Array<Entry<I, A, E>> = []
  let flushing = false

  /** The next batch: queued items in arrival order, one per key, up to `max`, none of key `taken`. */
  const take = (max: number, taken?: string): Array<Entry<I, A, E>> => {
    if (queue.length <= 1 && taken === undefined) {
      const all = queue
      queue = []
      return all
    }
    const batch: Array<Entry<I, A, E>> = []
    const rest: Array<Entry<I, A, E>> = []
    const keys = new Set<string>()
    if (taken !== undefined) keys.add(taken)
    for (const entry of queue) {
      if (batch.length < max && !keys.has(entry.key)) {
        keys.add(entry.key)
        batch.push(entry)
      } else {
        rest.push(entry)
      }
    }
    queue = rest
    return batch
  }

  /** Tells the callers of `batch` their outcomes: `outcomes[offset + i]` is the `i`th's. */
  const settle = (
    batch: ReadonlyArray<Entry<I, A, E>>,
    exit: Exit.Exit<ReadonlyArray<Either.Either<A, E>>, E>,
    offset: number
  ) => {
    if (Exit.isFailure(exit)) {
      for (const entry of batch) Deferred.unsafeDone(entry.done, exit as Exit.Exit<never, E>)
      return
    }
    for (let index = 0; index < batch.length; index++) {
      Deferred.unsafeDone(batch[index]!.done, outcomeAt(exit.value, offset + index))
    }
  }

  const outcomeAt = (outcomes: ReadonlyArray<Either.Either<A, E>>, index: number): Exit.Exit<A, E> => {
    const outcome = outcomes[index]
    return outcome === undefined
      ? Exit.die(new Error(`group commit: the flush returned ${outcomes.length} outcomes, none for item ${index}`))
      : outcome._tag === "Right"
      ? Exit.succeed(outcome.right)
      : Exit.fail(outcome.left)
  }

  /**
   * Flushes `own` (the leader's item, if any) with up to `maxBatch` queued
   * ones, and settles the queued ones. Uninterruptible: every caller of the
   * batch hears its outcome.
   */
  const flushWith = (own: { readonly item: I; readonly key: string } | undefined) =>
    Effect.uninterruptible(Effect.suspend(() => {
      const queued = take(own === undefined ? options.maxBatch : options.maxBatch - 1, own?.key)
      const items = queued.map((entry) => entry.item)
      if (own !== undefined) items.unshift(own.item)
      const offset = own === undefined ? 0 : 1
      return Effect.tap(Effect.exit(options.flush(items)), (exit) => settle(queued, exit, offset))
    }))

  /** Flushes the next batch; `false` when there was none (then a later write starts a new loop). */
  const flushNext: Effect.Effect<boolean> = Effect.suspend(() => {
    if (queue.length === 0) {
      flushing = false
      return Effect.succeed(false)
    }
    return Effect.as(flushWith(undefined), true)
  })

  const loop = Effect.iterate(true, { while: (more) => more, body: () => flushNext }).pipe(
    // Only when the process shuts its fibers down.
    Effect.onInterrupt(() => Effect.sync(() => (flushing = false)))
  )

  /** After a leader's flush: what queued meanwhile is flushed by a loop of its own. */
  const handOver = Effect.suspend(() => {
    if (queue.length === 0) {
      flushing = false
      return Effect.void
    }
    return Effect.asVoid(Effect.forkDaemon(loop))
  })

  const submit = (item: I): Effect.Effect<A, E> =>
    Effect.suspend(() => {
      if (!flushing) {
        // The leader yields once, so that writers already running can queue
        // (with a synchronous driver nothing else runs while it flushes, and
        // writers started together, a sweeper's deliveries, share one flush),
        // then flushes its item with theirs on its own fiber.
        flushing = true
        const own = { item, key: options.key(item) }
        return Effect.zipRight(Effect.yieldNow(), flushWith(own)).pipe(
          Effect.flatMap((exit) => Effect.flatMap(exit, (outcomes) => outcomeAt(outcomes, 0))),
          Effect.ensuring(handOver)
        )
      }
      return Effect.flatMap(Deferred.make<A, E>(), (done) => {
        queue.push({ item, key: options.key(item), done })
        return Deferred.await(done)
      })
    })

  return { submit }
}
