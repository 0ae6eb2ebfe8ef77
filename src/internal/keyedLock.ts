/**
 * One mutex per key, created on first use and dropped when nobody holds or
 * waits for it, so memory stays proportional to the keys in use.
 */
import * as Effect from "effect/Effect"

interface Slot {
  readonly semaphore: Effect.Semaphore
  users: number
}

export interface KeyedLock {
  readonly withLock: (key: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

export const makeKeyedLock = (): KeyedLock => {
  const slots = new Map<string, Slot>()
  const acquire = (key: string) =>
    Effect.sync(() => {
      let slot = slots.get(key)
      if (slot === undefined) {
        slot = { semaphore: Effect.unsafeMakeSemaphore(1), users: 0 }
        slots.set(key, slot)
      }
      slot.users++
      return slot
    })
  const release = (key: string, slot: Slot) =>
    Effect.sync(() => {
      if (--slot.users === 0) slots.delete(key)
    })
  return {
    withLock: (key) => (effect) =>
      Effect.acquireUseRelease(acquire(key), (slot) => slot.semaphore.withPermits(1)(effect), (slot) => release(key, slot))
  }
}
