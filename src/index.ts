/**
 * effect-fsm: durable finite-state-machine workflows on Effect.
 *
 * @since 0.1.0
 */
export * as Errors from "./Errors.js"
export * as EventStore from "./EventStore.js"
export * as FSMRuntime from "./FSMRuntime.js"
export * as Machine from "./Machine.js"
