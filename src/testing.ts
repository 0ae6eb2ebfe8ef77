/**
 * effect-fsm/testing: the testkit for machines and storage backends.
 *
 * - `MachineSpec`: given/when/then on the pure core, without a store or a
 *   runtime: given an initial state and the steps since, when an event (or
 *   a timer firing, or a stop) is decided, then this outcome and state,
 *   these produced commands and timer changes, or this error. Synchronous,
 *   for any test runner; a failed expectation throws with a diff.
 * - `TestDeadlines`: moves `TestClock` to the next deadline of an instance
 *   (or of every instance of some machines) and waits until the runtime's
 *   timeout strategy has delivered it, so tests need not know durations.
 * - `Conformance`: the `@effect/vitest` suites a storage backend must pass,
 *   the ones the built-in memory, SQLite and PostgreSQL backends run.
 *
 * The testkit modules live in `src/testing/` rather than beside the
 * engine's modules: they form this one entry, and the main `effect-fsm`
 * entry never imports them (so a user of the engine never loads vitest).
 * Importing this entry loads vitest (for `Conformance`, an optional peer
 * dependency); under another test runner import
 * `effect-fsm/testing/MachineSpec` and `effect-fsm/testing/TestDeadlines`
 * directly: neither loads vitest.
 *
 * @since 0.1.0
 */
export * as Conformance from "./testing/Conformance.js"
export * as MachineSpec from "./testing/MachineSpec.js"
export * as TestDeadlines from "./testing/TestDeadlines.js"
