/**
 * One mutex per key, created on first use and dropped when nobody holds or
 * waits for it, so memory stays proportional to the keys in use. Waiters
 * are served first come, first served, the lock being handed to the next
 * one on release; taking a free lock is a flag flip.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"

/**
 * A fiber waiting for its turn: `resume` while it waits (a plain callback,
 * not a `Deferred`, which costs a copy of Effect's whole commit prototype
 * per wait), `handedOver` once the lock is its.
 */
interface Waiter {
  resume: ((turn: Effect.Effect<void>) => void) | undefined
  handedOver: boolean
}

interface Slot {
  held: boolean
  users: number
  readonly waiters: Array<Waiter>
}

export interface KeyedLock {
  /**
   * Runs `effect` holding the lock of `key`. `interrupted`, when given, runs
   * (synchronously, before the lock is passed on) if `effect` is interrupted
   * after it got the lock.
   */
  readonly withLock: (
    key: string,
    interrupted?: () => void
  ) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

export const makeKeyedLock = (): KeyedLock => {
  const slots = new Map<string, Slot>()

  const leave = (key: string, slot: Slot) => {
    if (--slot.users === 0) slots.delete(key)
  }

  // Hands the lock to the first waiter (it stays held), or frees it.
  const unlock = (slot: Slot) => {
    const next = slot.waiters.shift()
    if (next === undefined) {
      slot.held = false
    } else {
      next.handedOver = true
      const resume = next.resume
      next.resume = undefined
      resume?.(Effect.void)
    }
  }

  return {
    withLock: (key, interrupted) => (effect) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          let slot = slots.get(key)
          if (slot === undefined) slots.set(key, slot = { held: false, users: 0, waiters: [] })
          const s = slot
          s.users++
          // Released in the continuation itself (the mask already makes it
          // uninterruptible): no finalizer Effect on the hot path.
          const release = () => {
            unlock(s)
            leave(key, s)
          }
          const run = Effect.matchCauseEffect(restore(effect), {
            onFailure: (cause) => {
              if (interrupted !== undefined && Cause.isInterrupted(cause)) interrupted()
              release()
              return Effect.failCause(cause)
            },
            onSuccess: (value) => {
              release()
              return Effect.succeed(value)
            }
          })
          if (!s.held) {
            s.held = true
            return run
          }
          const waiter: Waiter = { resume: undefined, handedOver: false }
          s.waiters.push(waiter)
          const turn = Effect.async<void>((resume) => {
            if (waiter.handedOver) return resume(Effect.void)
            waiter.resume = resume
            return Effect.sync(() => {
              waiter.resume = undefined
            })
          })
          return restore(turn).pipe(
            Effect.onInterrupt(() =>
              Effect.sync(() => {
                // Interrupted while waiting: leave the queue, or pass on a lock handed over meanwhile.
                if (waiter.handedOver) unlock(s)
                else s.waiters.splice(s.waiters.indexOf(waiter), 1)
                leave(key, s)
              })
            ),
            Effect.zipRight(run)
          )
        })
      )
  }
}
