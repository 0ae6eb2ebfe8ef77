/**
 * Waits for background fibers (timeout deliveries, sweepers) to settle
 * without any clock: retries `check` after yielding to the event loop, so
 * database I/O can complete. TestClock time does not move. The testkit's
 * own helper, which its conformance suites and `TestDeadlines` use too.
 */
export { eventually } from "../../src/testing/settle.js"
