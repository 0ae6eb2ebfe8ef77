/** Builds runtimes over one shared store, the way several nodes share a database. */
import { Context, Effect, Layer, Ref, Scope } from "effect"
import { EventStore, FSMRuntime, Machine, TimeoutStore, TimeoutStrategy } from "effect-fsm"
import { ActionLog } from "../fixtures/machines.js"
import type { Backend } from "./backends.js"

/** Builds a fresh store of `backend` in the current scope. */
export const buildStore = (backend: Backend): Effect.Effect<Context.Context<EventStore.EventStore>, unknown, Scope.Scope> =>
  Layer.build(backend.layer())

/** A runtime over `store`, with a fresh `ActionLog` for the fixtures' actions. */
export const runtimeOn = <const Ms extends ReadonlyArray<Machine.Any>>(
  store: Context.Context<EventStore.EventStore>,
  options: FSMRuntime.Options<Ms>,
  actionLog?: Ref.Ref<ReadonlyArray<string>>
) =>
  Effect.gen(function*() {
    const log = actionLog ?? (yield* Ref.make<ReadonlyArray<string>>([]))
    const runtime = yield* FSMRuntime.make(options).pipe(
      Effect.provide(Context.add(store, ActionLog, log)),
      Effect.orDie
    )
    return { runtime, log }
  })

/**
 * `store` with the durable timeout strategy added: a sweeper polling every
 * second (up to 10 minutes when idle) with 30-second claims, unless
 * `options` say otherwise.
 */
export const withDurableTimeouts = (
  store: Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>,
  options: TimeoutStrategy.DurableOptions = {}
) =>
  Effect.map(
    Layer.build(Layer.provide(
      TimeoutStrategy.layerDurable({ pollInterval: "1 second", maxIdleInterval: "10 minutes", claimLease: "30 seconds", ...options }),
      Layer.succeedContext(store)
    )),
    (strategy) => Context.merge(store, strategy) as Context.Context<EventStore.EventStore | TimeoutStore.TimeoutStore>
  )
