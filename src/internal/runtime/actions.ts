/**
 * Entry and exit actions: Effects of the machine, run after the commit that
 * entered (or left) a state, with the runtime layer's context. They are best
 * effort (at most once): a crash after the commit loses them; anything that
 * must happen belongs in a durable command.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { ActionFailed } from "../../Errors.js"
import type * as Machine from "../../Machine.js"
import type { MachineCodec } from "./codec.js"
import type { Traced } from "./tracing.js"

/** A transition whose actions may run: the state it left and the state it entered. */
export interface Transition {
  readonly instanceId: string
  readonly seqNr: number
  readonly previous: Machine.Tagged
  readonly state: Machine.Tagged
  /** The event, `undefined` for the entry of the initial state. */
  readonly event: unknown
  /** `false` for a stay: no action runs. */
  readonly entered: boolean
  /** `true` for `create`: only the entry action runs. */
  readonly initial: boolean
}

/**
 * Runs a committed transition's actions (`undefined`: it has none) in their
 * own fiber in `scope`, so a slow or hung action holds nothing up; a failure
 * is logged with `warning`. Nothing is forked when there is nothing to run.
 */
export const forkActions = (
  actions: Effect.Effect<void, unknown> | undefined,
  scope: Scope.Scope,
  warning: string
): Effect.Effect<void> =>
  actions === undefined
    ? Effect.void
    : Effect.asVoid(Effect.forkIn(Effect.catchAllCause(actions, (cause) => Effect.logWarning(warning, cause)), scope))

export const makeActions = (context: Context.Context<never>, traced: Traced) => {
  const run = (
    codec: MachineCodec,
    kind: "entry" | "exit",
    state: Machine.Tagged,
    ctx: Machine.ActionContext<unknown, unknown>
  ): Effect.Effect<void, ActionFailed> => {
    const action = (kind === "entry" ? codec.machine.entry : codec.machine.exit).get(state._tag) as
      | ((s: unknown, c: unknown) => Effect.Effect<unknown, unknown, unknown>)
      | undefined
    if (action === undefined) return Effect.void
    return Effect.suspend(() => action(state, ctx)).pipe(
      Effect.provide(context as Context.Context<unknown>),
      Effect.asVoid,
      // Defects too: a user's action that throws is its failure, not the runtime's.
      Effect.catchAllCause((cause) =>
        Cause.isInterruptedOnly(cause)
          ? Effect.failCause(cause as Cause.Cause<never>)
          : Effect.fail(
            new ActionFailed({
              machine: codec.machine.name,
              instanceId: ctx.instanceId,
              seqNr: ctx.seqNr,
              state: state._tag,
              action: kind,
              cause: Cause.squash(cause)
            })
          )
      ),
      traced(`FSMRuntime.${kind}`, { machine: codec.machine.name, state: state._tag })
    ) as Effect.Effect<void, ActionFailed>
  }

  /** The exit action of the state left, then the entry action of the state entered. */
  const runTransition = (codec: MachineCodec, t: Transition): Effect.Effect<void, ActionFailed> => {
    const machine = codec.machine
    if (!t.entered || (machine.entry.size === 0 && machine.exit.size === 0)) return Effect.void
    const base = { machine: machine.name, instanceId: t.instanceId, seqNr: t.seqNr, event: t.event }
    const entry = run(codec, "entry", t.state, { ...base, other: t.initial ? undefined : t.previous })
    return t.initial ? entry : Effect.zipRight(run(codec, "exit", t.previous, { ...base, other: t.state }), entry)
  }

  return { runTransition }
}
