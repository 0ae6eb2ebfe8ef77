/**
 * One mutex per key, created on first use and dropped when nobody holds or
 * waits for it, so memory stays proportional to the keys in use. Waiters
 * are served first come, first served, the lock being handed to the next
 * one on release; taking a free lock is a flag flip.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Signal from "./signal.js"

/** A fiber waiting for its turn: completed once the lock is handed over to it. */
type Waiter = Signal.Signal<void, never>

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
      Signal.complete(next, Exit.void)
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
          const waiter: Waiter = Signal.make()
          s.waiters.push(waiter)
          return restore(Signal.wait(waiter)).pipe(
            Effect.onInterrupt(() =>
              Effect.sync(() => {
                // Interrupted while waiting: leave the queue, or pass on a lock handed over meanwhile.
                if (waiter.outcome !== undefined) unlock(s)
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
