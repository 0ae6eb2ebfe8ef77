/**
 * The group commit queue on its own (src/internal/groupCommit.ts): how
 * batches form, that every caller hears its own outcome, and that no
 * failure, defect or interruption leaves the queue stalled.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Exit, Fiber } from "effect"
import { make } from "../src/internal/groupCommit.js"

interface Item {
  readonly key: string
  readonly value: number
}

/** A queue whose flushes are recorded, wait for `gate` when one is given, and answer each item as `answer` says. */
const recorded = (options: {
  readonly maxBatch?: number
  /** Weighs an item by its value. */
  readonly maxWeight?: number
  readonly answer?: (item: Item) => Either.Either<number, string>
  readonly gate?: Deferred.Deferred<void>
  readonly flush?: (items: ReadonlyArray<Item>) => Effect.Effect<ReadonlyArray<Either.Either<number, string>>, string>
}) => {
  const batches: Array<Array<string>> = []
  const queue = make<Item, number, string>({
    key: (item) => item.key,
    maxBatch: options.maxBatch ?? 64,
    maxInFlight: 1,
    ...(options.maxWeight === undefined ? {} : { weight: (item: Item) => item.value, maxWeight: options.maxWeight }),
    flush: (items) =>
      Effect.suspend(() => {
        batches.push(items.map((item) => `${item.key}:${item.value}`))
        const answered = options.flush !== undefined
          ? options.flush(items)
          : Effect.succeed(items.map((item) => options.answer?.(item) ?? Either.right(item.value * 10)))
        return options.gate === undefined ? answered : Effect.zipRight(Deferred.await(options.gate), answered)
      })
  })
  return { batches, queue }
}

const items = (n: number, prefix = "k"): Array<Item> => Array.from({ length: n }, (_, i) => ({ key: `${prefix}${i}`, value: i }))

describe("group commit", () => {
  it.effect("a lone writer is flushed alone, at once", () =>
    Effect.gen(function*() {
      const { batches, queue } = recorded({})
      expect(yield* queue.submit({ key: "a", value: 1 })).toBe(10)
      expect(yield* queue.submit({ key: "a", value: 2 })).toBe(20)
      expect(batches).toEqual([["a:1"], ["a:2"]])
    }))

  it.effect("writers that arrive while a flush runs go out together in the next; each hears its own outcome, in order", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const { batches, queue } = recorded({ gate, answer: (item) => item.value % 3 === 0 ? Either.left(`no ${item.value}`) : Either.right(item.value) })
      const first = yield* Effect.fork(queue.submit({ key: "first", value: 1 }))
      yield* Effect.yieldNow()
      yield* Effect.yieldNow()
      const rest = yield* Effect.fork(Effect.all(items(10).map((item) => Effect.either(queue.submit(item))), { concurrency: "unbounded" }))
      yield* Effect.yieldNow()
      yield* Deferred.succeed(gate, undefined)
      expect(yield* Fiber.join(first)).toBe(1)
      const outcomes = yield* Fiber.join(rest)
      expect(outcomes).toEqual(items(10).map((item) => item.value % 3 === 0 ? Either.left(`no ${item.value}`) : Either.right(item.value)))
      expect(batches).toEqual([["first:1"], items(10).map((item) => `${item.key}:${item.value}`)])
    }))

  it.effect("a batch holds at most maxBatch items and one per key: the others wait for the next", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const { batches, queue } = recorded({ gate, maxBatch: 4 })
      const first = yield* Effect.fork(queue.submit({ key: "x", value: 0 }))
      yield* Effect.yieldNow()
      yield* Effect.yieldNow()
      const others = [{ key: "x", value: 1 }, { key: "a", value: 2 }, { key: "x", value: 3 }, ...items(4, "b")]
      const rest = yield* Effect.fork(Effect.all(others.map((item) => queue.submit(item)), { concurrency: "unbounded" }))
      yield* Effect.yieldNow()
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(first)
      expect(yield* Fiber.join(rest)).toEqual(others.map((item) => item.value * 10))
      expect(batches).toEqual([["x:0"], ["x:1", "a:2", "b0:0", "b1:1"], ["x:3", "b2:2", "b3:3"]])
    }))

  it.effect("a batch holds items of maxWeight in all, or one heavier item alone; the others wait for the next", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const { batches, queue } = recorded({ gate, maxWeight: 10 })
      const first = yield* Effect.fork(queue.submit({ key: "lead", value: 0 }))
      yield* Effect.yieldNow()
      yield* Effect.yieldNow()
      const others = [{ key: "a", value: 4 }, { key: "b", value: 5 }, { key: "c", value: 3 }, { key: "d", value: 1 }, {
        key: "big",
        value: 25
      }, { key: "e", value: 2 }]
      const rest = yield* Effect.fork(Effect.all(others.map((item) => queue.submit(item)), { concurrency: "unbounded" }))
      yield* Effect.yieldNow()
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(first)
      expect(yield* Fiber.join(rest)).toEqual(others.map((item) => item.value * 10))
      expect(batches).toEqual([["lead:0"], ["a:4", "b:5", "d:1"], ["c:3", "e:2"], ["big:25"]])
    }))

  it.effect("a leader heavier than maxWeight takes none of the items queued behind it", () =>
    Effect.gen(function*() {
      const { batches, queue } = recorded({ maxWeight: 10 })
      // The leader yields once before it flushes: the light items queue meanwhile.
      const all = [{ key: "heavy", value: 30 }, ...items(3, "l")]
      expect(yield* Effect.all(all.map((item) => queue.submit(item)), { concurrency: "unbounded" })).toEqual(all.map((item) => item.value * 10))
      expect(batches).toEqual([["heavy:30"], ["l0:0", "l1:1", "l2:2"]])
    }))

  it.effect("a failed flush is every item's failure; a flush that throws is a defect of its batch only; the queue goes on", () =>
    Effect.gen(function*() {
      let mode: "fail" | "throw" | "ok" = "fail"
      const { queue } = recorded({
        flush: (batch) => {
          if (mode === "throw") throw new Error("boom while building the statement")
          return mode === "fail" ? Effect.fail("database down") : Effect.succeed(batch.map((item) => Either.right(item.value)))
        }
      })
      const failed = yield* Effect.all(items(5).map((item) => Effect.flip(queue.submit(item))), { concurrency: "unbounded" })
      expect(failed).toEqual(Array.from({ length: 5 }, () => "database down"))
      mode = "throw"
      const died = yield* Effect.exit(queue.submit({ key: "d", value: 1 }))
      expect(Exit.isFailure(died) && Exit.causeOption(died)._tag === "Some").toBe(true)
      expect(Exit.isFailure(died) && !Exit.isInterrupted(died) && died.cause._tag).toBe("Die")
      mode = "ok"
      expect(yield* Effect.all(items(3).map((item) => queue.submit(item)), { concurrency: "unbounded" })).toEqual([0, 1, 2])
    }))

  it.effect("an interrupted waiter leaves its batch alone (its item is still written), and the queue goes on", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const { batches, queue } = recorded({ gate })
      const first = yield* Effect.fork(queue.submit({ key: "first", value: 1 }))
      yield* Effect.yieldNow()
      yield* Effect.yieldNow()
      const waiter = yield* Effect.fork(queue.submit({ key: "w", value: 2 }))
      yield* Effect.yieldNow()
      expect(Exit.isInterrupted(yield* Fiber.interrupt(waiter))).toBe(true)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(first)
      expect(yield* queue.submit({ key: "after", value: 3 })).toBe(30)
      expect(batches).toEqual([["first:1"], ["w:2"], ["after:3"]])
    }))

  it.effect("interrupting writers at any point never stalls the queue", () =>
    Effect.gen(function*() {
      const { queue } = recorded({})
      // Each writer of a burst interrupted after each number of scheduler
      // turns: before it ran, while it leads (its yield, its flush) or waits.
      for (let victim = 0; victim < 4; victim++) {
        for (let turns = 0; turns < 6; turns++) {
          const fibers = yield* Effect.forEach(items(4, `v${victim}t${turns}-`), (item) => Effect.fork(queue.submit(item)))
          for (let i = 0; i < turns; i++) yield* Effect.yieldNow()
          yield* Fiber.interrupt(fibers[victim]!)
          yield* Effect.forEach(fibers, Fiber.await, { discard: true })
        }
      }
      expect(yield* queue.submit({ key: "last", value: 7 })).toBe(70)
    }))
})
