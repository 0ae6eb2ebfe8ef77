/**
 * The EventStore backends every shared suite runs against. Each `layer()`
 * call must give a fresh, empty store (its own database, file or schema), so
 * tests never interfere.
 */
import type * as Layer from "effect/Layer"
import { EventStore } from "effect-fsm"

export interface Backend {
  readonly name: string
  /** A fresh, empty store each time the returned layer is built. */
  readonly layer: () => Layer.Layer<EventStore.EventStore, unknown>
}

export const memory: Backend = { name: "memory", layer: () => EventStore.layerMemory }

export const backends: ReadonlyArray<Backend> = [memory]
