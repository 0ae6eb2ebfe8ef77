/**
 * effect-fsm: durable finite-state-machine workflows on Effect.
 *
 * The database drivers are not re-exported here, so importing this module
 * loads neither pg nor better-sqlite3: import them by subpath,
 * `effect-fsm/SqliteEventStore` and `effect-fsm/PgEventStore`.
 *
 * @since 0.1.0
 */
export * as Errors from "./Errors.js"
export * as EventStore from "./EventStore.js"
export * as FSMRuntime from "./FSMRuntime.js"
export * as Inspector from "./Inspector.js"
export * as LeaderElection from "./LeaderElection.js"
export * as LeaseStore from "./LeaseStore.js"
export * as LockingStrategy from "./LockingStrategy.js"
export * as Machine from "./Machine.js"
export * as Metrics from "./Metrics.js"
export * as Outbox from "./Outbox.js"
export * as OutboxStore from "./OutboxStore.js"
export * as SqlEventStore from "./SqlEventStore.js"
export * as TimeoutStore from "./TimeoutStore.js"
export * as TimeoutStrategy from "./TimeoutStrategy.js"
export * as Visualize from "./Visualize.js"
