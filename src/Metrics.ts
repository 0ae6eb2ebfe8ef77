/**
 * Every metric effect-fsm records, in one place. Names are stable; export
 * them with any `@effect/opentelemetry` metrics exporter.
 *
 * | name                            | kind      | meaning                                                      |
 * | ------------------------------- | --------- | ------------------------------------------------------------ |
 * | `fsm_timeouts_fired`            | counter   | timeout events committed                                     |
 * | `fsm_timeouts_stale_skipped`    | counter   | timers dropped because their state was left or re-entered    |
 * | `fsm_timeouts_rejected`         | counter   | timers completed because the machine rejected their event    |
 * | `fsm_timeouts_claim_conflicts`  | counter   | claimed timers whose delivery lost a race with another node  |
 * | `fsm_timeouts_retries`          | counter   | failed deliveries scheduled again                            |
 * | `fsm_timeouts_dead_lettered`    | counter   | timers moved to the dead-letter table                        |
 * | `fsm_timeouts_lateness_ms`      | histogram | deadline to commit of a fired timeout, in milliseconds       |
 * | `fsm_conflicts`                 | counter   | commits that lost the sequence-number race to another writer |
 * | `fsm_locks_acquired`            | counter   | instance leases acquired (distributed locking)               |
 * | `fsm_locks_lost`                | counter   | held leases lost (expired or taken over before released)     |
 * | `fsm_fencing_rejected`          | counter   | commits refused because their lease was acquired again since |
 * | `fsm_outbox_dispatched`         | counter   | outbox commands done (handler ran, or event/creation committed) |
 * | `fsm_outbox_failed`             | counter   | failed attempts of outbox commands                           |
 * | `fsm_outbox_retries`            | counter   | failed outbox commands scheduled again                       |
 * | `fsm_outbox_dead_lettered`      | counter   | outbox commands moved to the dead letters                    |
 * | `fsm_outbox_rejected`           | counter   | outbox commands completed because their target rejected them |
 * | `fsm_outbox_latency_ms`         | histogram | commit of a command to the start of its first attempt, in ms  |
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"

/** @since 0.1.0 */
export const timeoutsFired = Metric.counter("fsm_timeouts_fired", { description: "timeout events committed" })

/** @since 0.1.0 */
export const timeoutsStaleSkipped = Metric.counter("fsm_timeouts_stale_skipped", {
  description: "timers dropped because their state was left or re-entered"
})

/** @since 0.1.0 */
export const timeoutsRejected = Metric.counter("fsm_timeouts_rejected", {
  description: "timers completed because the machine rejected their event"
})

/** @since 0.1.0 */
export const timeoutsClaimConflicts = Metric.counter("fsm_timeouts_claim_conflicts", {
  description: "claimed timers whose delivery lost a race with another writer"
})

/** @since 0.1.0 */
export const timeoutsRetries = Metric.counter("fsm_timeouts_retries", { description: "failed deliveries scheduled again" })

/** @since 0.1.0 */
export const timeoutsDeadLettered = Metric.counter("fsm_timeouts_dead_lettered", {
  description: "timers moved to the dead-letter table"
})

/** @since 0.1.0 */
export const timeoutsLateness = Metric.histogram(
  "fsm_timeouts_lateness_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 20 }),
  "deadline to commit of a fired timeout, in milliseconds"
)

/** @since 0.1.0 */
export const conflicts = Metric.counter("fsm_conflicts", {
  description: "commits that lost the sequence-number race to another writer"
})

/** @since 0.1.0 */
export const locksAcquired = Metric.counter("fsm_locks_acquired", { description: "instance leases acquired" })

/** @since 0.1.0 */
export const locksLost = Metric.counter("fsm_locks_lost", {
  description: "held leases lost (expired or taken over before released)"
})

/** @since 0.1.0 */
export const fencingRejected = Metric.counter("fsm_fencing_rejected", {
  description: "commits refused because their lease was acquired again since"
})

/** @since 0.1.0 */
export const outboxDispatched = Metric.counter("fsm_outbox_dispatched", {
  description: "outbox commands done (handler ran, or event or creation committed)"
})

/** @since 0.1.0 */
export const outboxFailed = Metric.counter("fsm_outbox_failed", { description: "failed attempts of outbox commands" })

/** @since 0.1.0 */
export const outboxRetries = Metric.counter("fsm_outbox_retries", { description: "failed outbox commands scheduled again" })

/** @since 0.1.0 */
export const outboxDeadLettered = Metric.counter("fsm_outbox_dead_lettered", {
  description: "outbox commands moved to the dead letters"
})

/** @since 0.1.0 */
export const outboxRejected = Metric.counter("fsm_outbox_rejected", {
  description: "outbox commands completed because their target rejected them"
})

/** @since 0.1.0 */
export const outboxLatency = Metric.histogram(
  "fsm_outbox_latency_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 20 }),
  "commit of an outbox command to the start of its first attempt, in milliseconds"
)
