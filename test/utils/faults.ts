/**
 * Fault injection for any `EventStore` (memory, SQLite, PostgreSQL): a
 * wrapper that, at the commits a plan chooses, fails before writing, fails
 * after writing with the acknowledgement lost, is interrupted before or after
 * the write, waits on a gate, or runs a hook around the write.
 */
import { Context, Effect } from "effect"
import { Errors, EventStore } from "effect-fsm"

export type Fault =
  /** Nothing is written; the append fails with `PersistenceError`. */
  | { readonly _tag: "FailBefore" }
  /** The commit lands, then the append fails with `PersistenceError` (a lost acknowledgement, a failed COMMIT reply). */
  | { readonly _tag: "FailAfter" }
  /** The append is interrupted before anything is written. */
  | { readonly _tag: "InterruptBefore" }
  /** The commit lands, then the caller is interrupted before it hears back. */
  | { readonly _tag: "InterruptAfter" }
  /**
   * Fails at once, but the write goes on in the background and lands once
   * `release` completes: a statement still running on the server after its
   * connection was cut.
   */
  | { readonly _tag: "Ghost"; readonly release: Effect.Effect<void> }
  /** Reports success but writes nothing: a store that lies, or a write lost with a transaction it joined. */
  | { readonly _tag: "Phantom" }
  /** Runs `before` (e.g. waits on a gate), then the real append, then `after`. */
  | {
    readonly _tag: "Around"
    readonly before: Effect.Effect<void>
    readonly after: Effect.Effect<void>
  }

/** Chooses the fault for the n-th commit (from 0) that reaches the wrapper, or none. */
export type FaultPlan = (commit: EventStore.Commit, n: number) => Fault | undefined

export interface Faulty {
  readonly store: EventStore.EventStore["Type"]
  /** Every commit handed to the wrapper, in order, with the fault applied to it. */
  readonly seen: Array<{ readonly commit: EventStore.Commit; readonly fault: Fault["_tag"] | undefined }>
  /** Replaces the plan from now on. */
  setPlan: (plan: FaultPlan) => void
}

const lost = (what: string) => new Errors.PersistenceError({ operation: "append", reason: `injected fault: ${what}` })

export const faulty = (inner: EventStore.EventStore["Type"], initial: FaultPlan = () => undefined): Faulty => {
  let plan = initial
  let n = 0
  const seen: Faulty["seen"] = []
  const store: EventStore.EventStore["Type"] = {
    ...inner,
    append: (commit) =>
      Effect.suspend(() => {
        const fault = plan(commit, n++)
        seen.push({ commit, fault: fault?._tag })
        if (fault === undefined) return inner.append(commit)
        switch (fault._tag) {
          case "FailBefore":
            return Effect.fail(lost("failed before the write"))
          case "FailAfter":
            return Effect.zipRight(inner.append(commit), Effect.fail(lost("acknowledgement lost after the write")))
          case "InterruptBefore":
            return Effect.interrupt
          case "InterruptAfter":
            return Effect.zipRight(inner.append(commit), Effect.interrupt)
          case "Ghost":
            return Effect.zipRight(
              Effect.forkDaemon(Effect.ignore(Effect.zipRight(fault.release, inner.append(commit)))),
              Effect.fail(lost("connection cut; the statement is still running"))
            )
          case "Phantom":
            return Effect.succeed({ durable: true })
          case "Around":
            return fault.before.pipe(Effect.zipRight(inner.append(commit)), Effect.tap(() => fault.after))
        }
      })
  }
  return {
    store,
    seen,
    setPlan: (next) => {
      plan = next
    }
  }
}

/** `context` with its `EventStore` replaced by `store`. */
export const withStore = <R>(
  context: Context.Context<R>,
  store: EventStore.EventStore["Type"]
): Context.Context<R | EventStore.EventStore> => Context.add(context, EventStore.EventStore, store)
