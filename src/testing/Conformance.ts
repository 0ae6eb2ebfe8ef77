/**
 * Conformance suites for storage backends: the tests every `EventStore`,
 * `TimeoutStore`, `OutboxStore` and `LeaseStore` implementation must pass,
 * the same ones the built-in memory, SQLite and PostgreSQL backends run.
 * Each suite is a function of a layer that registers `@effect/vitest`
 * tests, so a backend of your own is checked by one call per suite in a
 * vitest test file:
 *
 * ```ts
 * import { Conformance } from "effect-fsm/testing"
 *
 * const MyStores = MyEventStore.layer({ ... }) // a fresh, empty store per build
 *
 * Conformance.eventStoreSuite("my-store", MyStores)
 * Conformance.timeoutStoreSuite("my-store", MyStores)
 * Conformance.outboxStoreSuite("my-store", MyStores)
 * Conformance.leaseStoreSuite("my-store", MyStores)
 * ```
 *
 * This module loads `vitest` (an optional peer dependency of effect-fsm):
 * the rest of the testkit does not, and can be imported on its own
 * (`effect-fsm/testing/MachineSpec`, `effect-fsm/testing/TestDeadlines`)
 * from any test runner.
 *
 * @since 0.1.0
 */
export { eventStoreSuite } from "./conformance/EventStoreSuite.js"
export { leaseStoreSuite } from "./conformance/LeaseStoreSuite.js"
export type { SuiteOptions } from "./conformance/options.js"
export { outboxStoreSuite } from "./conformance/OutboxStoreSuite.js"
export { timeoutStoreSuite } from "./conformance/TimeoutStoreSuite.js"
