import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Ref } from "effect"
import { makeKeyedLock } from "../src/internal/keyedLock.js"

describe("keyedLock", () => {
  it.effect("serializes one key, FIFO, and lets other keys through", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const log = yield* Ref.make<Array<string>>([])
      const gate = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(lock.withLock("a")(Effect.zipRight(Deferred.await(gate), Ref.update(log, (l) => [...l, "first"]))))
      yield* Effect.yieldNow()
      const waiters = yield* Effect.forEach([1, 2, 3], (i) =>
        Effect.fork(lock.withLock("a")(Ref.update(log, (l) => [...l, `w${i}`]))).pipe(Effect.tap(() => Effect.yieldNow())))
      yield* lock.withLock("b")(Ref.update(log, (l) => [...l, "other key"]))
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(holder)
      yield* Effect.forEach(waiters, Fiber.join)
      expect(yield* Ref.get(log)).toEqual(["other key", "first", "w1", "w2", "w3"])
    }))

  it.effect("an interrupted waiter neither runs nor blocks the next one", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const ran = yield* Ref.make<Array<string>>([])
      const gate = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(lock.withLock("a")(Deferred.await(gate)))
      yield* Effect.yieldNow()
      const doomed = yield* Effect.fork(lock.withLock("a")(Ref.update(ran, (l) => [...l, "doomed"])))
      yield* Effect.yieldNow()
      const next = yield* Effect.fork(lock.withLock("a")(Ref.update(ran, (l) => [...l, "next"])))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(doomed)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(holder)
      yield* Fiber.join(next)
      expect(yield* Ref.get(ran)).toEqual(["next"])
      // and the lock is free again
      yield* lock.withLock("a")(Effect.void)
    }))

  it.live("a waiter interrupted while the lock is handed to it passes it on", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const gate = yield* Deferred.make<void>()
      const waiterRef = yield* Deferred.make<Fiber.RuntimeFiber<void>>()
      const holder = yield* Effect.fork(lock.withLock("a")(
        Effect.zipRight(Deferred.await(gate), Effect.flatMap(Deferred.await(waiterRef), Fiber.interruptFork))
      ))
      yield* Effect.yieldNow()
      const waiter = yield* Effect.fork(lock.withLock("a")(Effect.never))
      yield* Deferred.succeed(waiterRef, waiter)
      yield* Effect.yieldNow()
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(holder)
      yield* Fiber.await(waiter)
      const free = yield* lock.withLock("a")(Effect.succeed("free")).pipe(Effect.timeout("1 second"), Effect.orElseSucceed(() => "lock leaked"))
      expect(free).toBe("free")
    }))

  it.effect("a failing or interrupted holder releases the lock", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      yield* Effect.exit(lock.withLock("a")(Effect.fail("boom")))
      yield* Effect.exit(lock.withLock("a")(Effect.die("defect")))
      const f = yield* Effect.fork(lock.withLock("a")(Effect.never))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(f)
      yield* lock.withLock("a")(Effect.void)
    }))
})
