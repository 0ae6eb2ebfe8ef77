/**
 * Group commit: concurrent writes that arrive while a flush is running are
 * written together by the next flush, one batch per flush.
 *
 * There is no timer and no minimum batch: a lone writer finds no flush
 * running and is flushed at once, alone; a batch is whatever queued while
 * the previous flush ran (at most `maxBatch`, and at most one item per
 * `key`, so that a batch never holds two writes of one instance). Each
 * caller gets its own outcome, once the flush that carried its item has
 * ended. Flushes run one at a time in a daemon fiber of their own, so a
 * caller that is interrupted while it waits leaves the batch alone (its
 * item is written or not, as if it had not been interrupted).
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

  /** The next batch: queued items in arrival order, one per key, up to `maxBatch`. */
  const take = (): Array<Entry<I, A, E>> => {
    if (queue.length <= 1) {
      const all = queue
      queue = []
      return all
    }
    const batch: Array<Entry<I, A, E>> = []
    const rest: Array<Entry<I, A, E>> = []
    const keys = new Set<string>()
    for (const entry of queue) {
      if (batch.length < options.maxBatch && !keys.has(entry.key)) {
        keys.add(entry.key)
        batch.push(entry)
      } else {
        rest.push(entry)
      }
    }
    queue = rest
    return batch
  }

  const settle = (batch: ReadonlyArray<Entry<I, A, E>>, exit: Exit.Exit<ReadonlyArray<Either.Either<A, E>>, E>) =>
    Effect.sync(() => {
      if (Exit.isFailure(exit)) {
        for (const entry of batch) Deferred.unsafeDone(entry.done, exit as Exit.Exit<never, E>)
        return
      }
      const outcomes = exit.value
      for (let index = 0; index < batch.length; index++) {
        const outcome = outcomes[index]
        const entry = batch[index]!
        Deferred.unsafeDone(
          entry.done,
          outcome === undefined
            ? Exit.die(new Error(`group commit: the flush returned ${outcomes.length} outcomes for ${batch.length} items`))
            : outcome._tag === "Right"
            ? Exit.succeed(outcome.right)
            : Exit.fail(outcome.left)
        )
      }
    })

  /** Flushes the next batch; `false` when there was none (then a later write starts a new loop). */
  const flushNext: Effect.Effect<boolean> = Effect.suspend(() => {
    const batch = take()
    if (batch.length === 0) {
      flushing = false
      return Effect.succeed(false)
    }
    // Uninterruptible: every caller of the batch hears its outcome.
    return Effect.exit(options.flush(batch.map((entry) => entry.item))).pipe(
      Effect.flatMap((exit) => settle(batch, exit)),
      Effect.uninterruptible,
      Effect.as(true)
    )
  })

  const loop = Effect.iterate(true, { while: (more) => more, body: () => flushNext }).pipe(
    // Only when the process shuts its fibers down.
    Effect.onInterrupt(() => Effect.sync(() => (flushing = false)))
  )

  const submit = (item: I): Effect.Effect<A, E> =>
    Effect.flatMap(Deferred.make<A, E>(), (done) =>
      Effect.suspend(() => {
        queue.push({ item, key: options.key(item), done })
        if (flushing) return Deferred.await(done)
        flushing = true
        return Effect.zipRight(Effect.forkDaemon(loop), Deferred.await(done))
      }))

  return { submit }
}
