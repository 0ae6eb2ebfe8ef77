/**
 * Group commit: concurrent writes that arrive while the store is busy
 * writing are written together by its next flush.
 *
 * There is no timer and no minimum batch. At most `maxInFlight` flushes run
 * at once (the SQL stores use one: see `sqlEventStore.ts`). A writer that
 * finds a free place and nothing queued leads: after one yield of its fiber
 * (so that writers already running can queue: with a synchronous driver
 * nothing else runs while a flush does) it flushes its own item with
 * whatever queued, on its own fiber; a lone writer pays that yield and
 * nothing else. Otherwise it queues, and what queued is flushed, as one
 * batch, as soon as a place frees. A batch holds at most `maxBatch` items,
 * at most `maxWeight` of them by `weight` (or one item of any weight), and
 * at most one per `key`, so it never holds two writes of one instance.
 * Each caller gets its own outcome once the flush that carried its item has
 * ended; flushes are uninterruptible, so a caller interrupted while it
 * waits leaves its batch alone (its item is written or not, as if it had
 * not been interrupted).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Signal from "./signal.js"

export interface GroupCommit<I, A, E> {
  /** Writes `item` with whatever else is queued, and returns its own outcome. */
  readonly submit: (item: I) => Effect.Effect<A, E>
}

/** A queued item, and the outcome its caller waits for (see `signal.ts`). */
interface Entry<I, A, E> {
  readonly item: I
  readonly key: string
  readonly weight: number
  readonly done: Signal.Signal<A, E>
}

type Outcomes<A, E> = ReadonlyArray<Either.Either<A, E>>

export const make = <I, A, E>(options: {
  /** Items of one key never share a batch (later ones wait for the next). */
  readonly key: (item: I) => string
  readonly maxBatch: number
  /** Flushes running at once, at most. */
  readonly maxInFlight: number
  /**
   * The size of an item (0 without): a batch holds items of `maxWeight` in
   * all at most, or a single item of any size.
   */
  readonly weight?: ((item: I) => number) | undefined
  readonly maxWeight?: number | undefined
  /**
   * Writes a batch and returns one outcome per item, in order; a failure of
   * the whole flush is every item's outcome.
   */
  readonly flush: (items: ReadonlyArray<I>) => Effect.Effect<Outcomes<A, E>, E>
}): GroupCommit<I, A, E> => {
  let queue: Array<Entry<I, A, E>> = []
  let inFlight = 0

  const weightOf = options.weight ?? (() => 0)
  const maxWeight = options.maxWeight ?? Number.POSITIVE_INFINITY

  /**
   * The next batch: queued items in arrival order, one per key, up to `max`
   * and `maxWeight` (`used` of it taken by the leader's own item), none of
   * key `taken`; a first item of any weight.
   */
  const take = (max: number, taken?: string, used = 0): Array<Entry<I, A, E>> => {
    if (queue.length <= 1 && taken === undefined) {
      const all = queue
      queue = []
      return all
    }
    const batch: Array<Entry<I, A, E>> = []
    const rest: Array<Entry<I, A, E>> = []
    const keys = new Set<string>()
    if (taken !== undefined) keys.add(taken)
    let weight = used
    for (const entry of queue) {
      const first = batch.length === 0 && taken === undefined
      if (batch.length < max && !keys.has(entry.key) && (first || weight + entry.weight <= maxWeight)) {
        keys.add(entry.key)
        batch.push(entry)
        weight += entry.weight
      } else {
        rest.push(entry)
      }
    }
    queue = rest
    return batch
  }

  const outcomeAt = (outcomes: Outcomes<A, E>, index: number): Exit.Exit<A, E> => {
    const outcome = outcomes[index]
    return outcome === undefined
      ? Exit.die(new Error(`group commit: the flush returned ${outcomes.length} outcomes, none for item ${index}`))
      : outcome._tag === "Right"
      ? Exit.succeed(outcome.right)
      : Exit.fail(outcome.left)
  }

  /** Tells the callers of `batch` their outcomes: `outcomes[offset + i]` is the `i`th's. */
  const settle = (batch: ReadonlyArray<Entry<I, A, E>>, exit: Exit.Exit<Outcomes<A, E>, E>, offset: number) => {
    if (Exit.isFailure(exit)) {
      for (const entry of batch) Signal.complete(entry.done, exit as Exit.Exit<never, E>)
      return
    }
    for (let index = 0; index < batch.length; index++) {
      Signal.complete(batch[index]!.done, outcomeAt(exit.value, offset + index))
    }
  }

  /**
   * Flushes `items` (a leader's own first, then the `queued` ones) and
   * settles the queued ones; then frees its place. Uninterruptible: every
   * caller of the batch hears its outcome.
   */
  const flush = (items: ReadonlyArray<I>, queued: ReadonlyArray<Entry<I, A, E>>, offset: number) =>
    Effect.uninterruptible(
      // Suspended: a flush that throws while it builds its statement is a defect of this batch, not of the queue.
      Effect.tap(Effect.exit(Effect.suspend(() => options.flush(items))), (exit) => settle(queued, exit, offset))
    ).pipe(Effect.ensuring(release))

  /** A flush ended: its place goes to what queued meanwhile. */
  const release: Effect.Effect<void> = Effect.suspend(() => {
    inFlight--
    return drain
  })

  /**
   * Starts a flush, in a daemon fiber, of each batch that has a free place.
   * Uninterruptible: a place taken is always handed to a flush, which frees
   * it.
   */
  const drain: Effect.Effect<void> = Effect.uninterruptible(Effect.suspend(() => {
    const starts: Array<Effect.Effect<unknown>> = []
    while (inFlight < options.maxInFlight && queue.length > 0) {
      const batch = take(options.maxBatch)
      inFlight++
      starts.push(Effect.forkDaemon(flush(batch.map((entry) => entry.item), batch, 0)))
    }
    return starts.length === 0 ? Effect.void : Effect.all(starts, { discard: true })
  }))

  /** The leader's flush: its own item with up to `maxBatch - 1` queued ones (none of its key). */
  const lead = (item: I, key: string): Effect.Effect<Outcomes<A, E>, E> =>
    Effect.suspend(() => {
      const batch = take(options.maxBatch - 1, key, weightOf(item))
      if (batch.length === 0) {
        // Alone: nobody else to tell.
        return Effect.ensuring(Effect.suspend(() => options.flush([item])), release)
      }
      const items = batch.map((entry) => entry.item)
      items.unshift(item)
      return Effect.flatten(flush(items, batch, 1))
    })

  // Uninterruptible until the item is either in a flush (the leader's) or in
  // the queue: no interruption can leave a place taken or an item half
  // queued. Only the wait for a queued item's outcome is interruptible.
  const submit = (item: I): Effect.Effect<A, E> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        if (inFlight < options.maxInFlight && queue.length === 0) {
          inFlight++
          return Effect.zipRight(Effect.yieldNow(), lead(item, options.key(item))).pipe(
            Effect.flatMap((outcomes) => outcomeAt(outcomes, 0))
          )
        }
        const done = Signal.make<A, E>()
        queue.push({ item, key: options.key(item), weight: weightOf(item), done })
        // A place may have freed while this fiber was queueing.
        // Interruptible: an interrupted caller stops waiting, its item stays in its batch.
        return Effect.zipRight(drain, restore(Signal.wait(done)))
      })
    )

  return { submit }
}
